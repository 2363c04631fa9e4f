"""The sync set's rules, without a cluster: who joins, when it is published,
who may leave, and which writes may be acknowledged."""

from __future__ import annotations

import asyncio
import time

import pytest

from penin.ha.coordinator import MemberState
from penin.ha.sync import SyncReplicas
from penin.ledger.errors import SyncReplicationError


def _states(*names: str, healthy: bool = True) -> dict[str, MemberState]:
    return {
        name: MemberState(
            name=name,
            url=f"http://{name}:8080",
            role="replica",
            applied_seq=0,
            healthy=healthy,
            updated_at=time.time(),
        )
        for name in names
    }


def test_a_replica_is_published_only_once_it_holds_what_came_before_it() -> None:
    sync = SyncReplicas(1, fallback_async=False, timeout_s=1)
    sync.confirm("n2", 3)

    first = sync.next_set(_states("n2"), ttl_s=3, head_seq=9, may_degrade=True)
    sync.confirm("n2", 9)
    second = sync.next_set(_states("n2"), ttl_s=3, head_seq=12, may_degrade=True)

    assert first is None  # joining: waited for, not yet published
    assert sync.required == {"n2"}
    assert second == {"n2"}


def test_a_silent_member_is_replaced_by_a_replica_that_holds_everything() -> None:
    sync = SyncReplicas(1, fallback_async=False, timeout_s=1)
    sync.published_as({"n2"})
    sync.confirm("n3", 20)  # n2 never asks again; n3 holds every record

    replaced = sync.next_set(
        _states("n2", "n3"), ttl_s=3, head_seq=20, may_degrade=False
    )

    assert replaced == {"n3"}


def test_without_replicas_a_strict_set_never_shrinks() -> None:
    sync = SyncReplicas(1, fallback_async=False, timeout_s=1)
    sync.published_as({"n2"})

    assert sync.next_set({}, ttl_s=3, head_seq=5, may_degrade=True) is None
    assert sync.published == {"n2"}


def test_the_async_fallback_publishes_a_short_set_once_it_may_degrade() -> None:
    sync = SyncReplicas(1, fallback_async=True, timeout_s=1)
    sync.published_as({"n2"})

    early = sync.next_set({}, ttl_s=3, head_seq=5, may_degrade=False)
    late = sync.next_set({}, ttl_s=3, head_seq=5, may_degrade=True)

    assert early is None
    assert late == frozenset()
    sync.published_as(late)
    assert sync.degraded


def test_a_write_waits_for_every_required_replica_and_times_out_without() -> None:
    async def scenario() -> None:
        sync = SyncReplicas(1, fallback_async=False, timeout_s=0.2)
        sync.published_as({"n2"})
        waiting = asyncio.ensure_future(sync.wait(7))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        sync.confirm("n2", 7)
        await asyncio.wait_for(waiting, 1)

        with pytest.raises(SyncReplicationError) as refused:
            await sync.wait(8)
        assert refused.value.seq == 8
        assert "n2" in str(refused.value)

    asyncio.run(scenario())


def test_a_degraded_set_acknowledges_without_replicas() -> None:
    async def scenario() -> None:
        sync = SyncReplicas(1, fallback_async=True, timeout_s=0.2)
        sync.published_as(frozenset())
        await asyncio.wait_for(sync.wait(3), 1)

    asyncio.run(scenario())


def test_writes_are_released_in_seq_order_only_by_the_required_replicas() -> None:
    async def scenario() -> list[int]:
        sync = SyncReplicas(1, fallback_async=False, timeout_s=5)
        sync.published_as({"n2"})
        released: list[int] = []

        async def write(seq: int) -> None:
            await sync.wait(seq)
            released.append(seq)

        writes = [asyncio.ensure_future(write(seq)) for seq in (9, 3, 6, 4)]
        await asyncio.sleep(0)
        sync.confirm("n3", 100)  # not in the set: releases nothing
        await asyncio.sleep(0)
        assert released == []
        sync.confirm("n2", 5)
        await asyncio.sleep(0)
        assert sorted(released) == [3, 4]
        sync.confirm("n2", 9)
        await asyncio.wait_for(asyncio.gather(*writes), 1)
        return released

    released = asyncio.run(scenario())

    assert sorted(released[2:]) == [6, 9]


def test_writes_that_timed_out_do_not_pile_up_while_the_replicas_are_gone() -> None:
    async def scenario() -> int:
        sync = SyncReplicas(1, fallback_async=False, timeout_s=0.01)
        sync.published_as({"n2"})
        for round_ in range(5):
            outcomes = await asyncio.gather(
                *(sync.wait(round_ * 100 + i) for i in range(100)),
                return_exceptions=True,
            )
            assert all(isinstance(o, SyncReplicationError) for o in outcomes)
        # 500 writes gave up; what the primary still keeps for them is swept.
        return len(sync._waiters)

    assert asyncio.run(scenario()) <= 100
