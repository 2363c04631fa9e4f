"""The Redis budget store: exact under concurrency across nodes, and fail-closed."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from penin.router.budget import (
    BudgetUnavailableError,
    DayNotSeededError,
    Limits,
    Reservation,
)
from penin.router.budget_redis import RedisBudgetStore
from penin.router.errors import BudgetExceededError
from redisd import RedisCluster3, RedisServer

DAY = "2026-12-04"
UNLIMITED = Limits(global_nusd=None, key_nusd=None, soft_fraction=0.9)


def test_two_nodes_admit_exactly_what_the_limit_allows_and_never_more(
    redis_server: RedisServer,
) -> None:
    admitted_calls, amount, attempts = 40, 1_000_000, 400
    limit = admitted_calls * amount
    limits = Limits(global_nusd=limit, key_nusd=None, soft_fraction=0.9)

    async def scenario() -> tuple[list[Reservation | BaseException], list[int]]:
        nodes = [RedisBudgetStore(redis_server.url) for _ in range(2)]
        seen: list[int] = []
        done = asyncio.Event()

        async def watch() -> None:
            while not done.is_set():
                seen.append((await nodes[0].spend(DAY, None)).global_nusd)
                await asyncio.sleep(0)

        watcher = asyncio.create_task(watch())
        outcomes = await asyncio.gather(
            *(
                nodes[i % 2].reserve(DAY, f"key-{i % 7}", amount, limits)
                for i in range(attempts)
            ),
            return_exceptions=True,
        )
        done.set()
        await watcher
        seen.append((await nodes[1].spend(DAY, None)).global_nusd)
        for store in nodes:
            await store.close()
        return outcomes, seen

    outcomes, seen = asyncio.run(scenario())
    admitted = [o for o in outcomes if isinstance(o, Reservation)]
    refused = [o for o in outcomes if isinstance(o, BudgetExceededError)]

    assert len(admitted) == admitted_calls
    assert len(refused) == attempts - admitted_calls
    assert {e.scope for e in refused} == {"global"}
    assert max(seen) <= limit
    assert seen[-1] == limit
    assert len({r.reservation_id for r in admitted}) == admitted_calls


def test_the_per_key_limit_refuses_one_key_and_admits_another(
    redis_server: RedisServer,
) -> None:
    limits = Limits(global_nusd=None, key_nusd=3_000, soft_fraction=0.5)

    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url)
        first = await store.reserve(DAY, "alice", 2_000, limits)
        with pytest.raises(BudgetExceededError) as caught:
            await store.reserve(DAY, "alice", 1_001, limits)
        other = await store.reserve(DAY, "bob", 1_000, limits)
        spend = await store.spend(DAY, "alice")
        await store.close()

        assert first.soft
        assert first.soft_scope == "key"
        assert not other.soft
        assert caught.value.scope == "key"
        assert caught.value.committed_usd == pytest.approx(2e-6)
        assert (spend.global_nusd, spend.key_nusd) == (3_000, 2_000)

    asyncio.run(scenario())


def test_a_reservation_reaching_the_soft_fraction_says_so(
    redis_server: RedisServer,
) -> None:
    limits = Limits(global_nusd=1_000, key_nusd=None, soft_fraction=0.9)

    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url)
        below = await store.reserve(DAY, "k", 899, limits)
        at = await store.reserve(DAY, "k", 1, limits)
        await store.close()

        assert (below.soft, below.soft_scope) == (False, None)
        assert (at.soft, at.soft_scope) == (True, "global")

    asyncio.run(scenario())


def test_settling_replaces_the_reserved_amount_once_even_above_it(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        nodes = [RedisBudgetStore(redis_server.url) for _ in range(2)]
        reservation = await nodes[0].reserve(DAY, "alice", 500, UNLIMITED)
        await nodes[0].settle(reservation, 800)
        await nodes[1].settle(reservation, 800)  # another node, the same call
        await nodes[1].release(reservation)
        spend = await nodes[1].spend(DAY, "alice")
        for store in nodes:
            await store.close()

        assert (spend.global_nusd, spend.key_nusd) == (800, 800)

    asyncio.run(scenario())


def test_releasing_gives_the_amount_back_once(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url)
        kept = await store.reserve(DAY, "alice", 300, UNLIMITED)
        released = await store.reserve(DAY, "alice", 700, UNLIMITED)
        await store.release(released)
        await store.release(released)
        await store.settle(released, 10_000)
        spend = await store.spend(DAY, "alice")
        await store.close()

        assert kept.amount_nusd == 300
        assert (spend.global_nusd, spend.key_nusd) == (300, 300)

    asyncio.run(scenario())


def test_seeding_adds_each_ledgers_totals_once(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        node_a = RedisBudgetStore(redis_server.url, ledger_id="ledger-a")
        node_a_again = RedisBudgetStore(redis_server.url, ledger_id="ledger-a")
        node_b = RedisBudgetStore(redis_server.url, ledger_id="ledger-b")
        await node_a.seed(DAY, 5_000, {"alice": 3_000, "bob": 2_000})
        await node_a_again.seed(DAY, 5_000, {"alice": 3_000})  # the same ledger
        await node_b.seed(DAY, 700, {"alice": 700})  # a ledger of its own
        alice = await node_a.spend(DAY, "alice")
        bob = await node_b.spend(DAY, "bob")
        for store in (node_a, node_a_again, node_b):
            await store.close()

        assert (alice.global_nusd, alice.key_nusd) == (5_700, 3_700)
        assert bob.key_nusd == 2_000

    asyncio.run(scenario())


def test_a_day_redis_lost_is_refused_until_the_ledger_seeds_it_again(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> list[str]:
        store = RedisBudgetStore(redis_server.url, ledger_id="ledger-a")
        reader = RedisBudgetStore(redis_server.url)  # requires no seed
        outcomes = []
        for step in ("new day", "seeded", "lost"):
            if step == "seeded":
                await store.seed(DAY, 1_000, {})
            if step == "lost":
                redis_server.client().flushall()
            try:
                await store.reserve(DAY, "alice", 100, UNLIMITED)
                outcomes.append("reserved")
            except DayNotSeededError as exc:
                outcomes.append(f"{exc.day} not seeded")
        await reader.reserve(DAY, "alice", 100, UNLIMITED)
        for client in (store, reader):
            await client.close()

        return outcomes

    lost = f"{DAY} not seeded"
    assert asyncio.run(scenario()) == [lost, "reserved", lost]


def test_days_are_separate_counters_that_expire_after_48_hours(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url)
        await store.reserve(DAY, "alice", 100, UNLIMITED)
        other_day = await store.spend("2026-12-03", "alice")
        await store.close()

        assert (other_day.global_nusd, other_day.key_nusd) == (0, 0)

    asyncio.run(scenario())
    raw = redis_server.client()
    names = sorted(k.decode() for k in raw.keys("penin:budget:*"))  # type: ignore[union-attr]

    assert len(names) == 3  # global, key, open reservation
    assert all(name.startswith(f"penin:budget:{{{DAY}}}:") for name in names)
    for name in names:
        assert 47 * 3600_000 < int(raw.pttl(name)) <= 48 * 3600_000  # type: ignore[arg-type]


def test_a_bad_day_or_a_negative_amount_is_refused_before_redis(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url)
        with pytest.raises(ValueError, match="YYYY-MM-DD"):
            await store.reserve("2026-12-04}", "k", 1, UNLIMITED)
        with pytest.raises(ValueError, match="negative"):
            await store.reserve(DAY, "k", -1, UNLIMITED)
        await store.close()

    asyncio.run(scenario())


def test_on_redis_cluster_every_operation_works_across_the_slots(
    redis_cluster: RedisCluster3,
) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    limits = Limits(global_nusd=10_000, key_nusd=None, soft_fraction=0.9)
    days = [f"2026-01-{d:02d}" for d in range(1, 13)]  # hash tags on every node

    async def scenario() -> None:
        nodes = [RedisBudgetStore(url) for _ in range(2)]
        for day in days:
            await nodes[0].seed(day, 1_000, {"alice": 1_000})
            outcomes = await asyncio.gather(
                *(nodes[i % 2].reserve(day, "bob", 1_000, limits) for i in range(12)),
                return_exceptions=True,
            )
            admitted = [o for o in outcomes if isinstance(o, Reservation)]
            await nodes[1].settle(admitted[0], 500)
            await nodes[0].release(admitted[1])
            spend = await nodes[1].spend(day, "bob")

            assert len(admitted) == 9
            assert (spend.global_nusd, spend.key_nusd) == (8_500, 7_500)
        for store in nodes:
            await store.close()

    asyncio.run(scenario())


def test_a_dead_redis_refuses_every_operation_quickly(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", password="hunter2").start()
    url = f"redis://:hunter2@127.0.0.1:{server.port}"

    async def scenario() -> None:
        store = RedisBudgetStore(url)
        reservation = await store.reserve(DAY, "k", 10, UNLIMITED)
        server.kill()
        started = time.monotonic()
        calls = [
            store.reserve(DAY, "k", 10, UNLIMITED),
            store.settle(reservation, 5),
            store.release(reservation),
            store.spend(DAY, "k"),
            store.seed(DAY, 0, {}),
        ]
        for call in calls:
            with pytest.raises(BudgetUnavailableError) as caught:
                await call
            assert "hunter2" not in str(caught.value)
            assert "127.0.0.1" in str(caught.value)
        await store.close()

        assert time.monotonic() - started < 2.0

    try:
        asyncio.run(scenario())
    finally:
        server.stop()


def test_a_hung_redis_refuses_within_the_timeout(redis_server: RedisServer) -> None:
    async def scenario() -> None:
        store = RedisBudgetStore(redis_server.url, timeout_s=0.25)
        await store.spend(DAY, None)
        redis_server.pause()
        try:
            started = time.monotonic()
            with pytest.raises(BudgetUnavailableError, match="reserve"):
                await store.reserve(DAY, "k", 10, UNLIMITED)
            assert time.monotonic() - started < 1.5
        finally:
            redis_server.resume()
        await store.close()

    asyncio.run(scenario())
