"""The etcd coordinator against a real one-member etcd: leadership, terms,
leases, member states, the sync set, and what happens when etcd goes away."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from coordinators import CALL_TIMEOUT_S, LEASE_TTL_S, etcd_member, eventually

from etcdd import EtcdServer
from penin.ha import CoordinatorError, EtcdCoordinator, Leader, Leadership, SyncSet

# A lapsed lease is noticed by etcd's periodic check, up to ~0.5 s after its TTL.
LAPSE_TIMEOUT_S = LEASE_TTL_S + 3.0
# Scheduling on a loaded machine; a hung call would take far longer.
SLACK_S = 1.0


async def close_all(*members: EtcdCoordinator) -> None:
    for member in members:
        await member.close()


# -- leadership and terms -----------------------------------------------------


def test_only_one_of_several_members_racing_for_the_leader_key_gets_it(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> tuple[list[Leadership | None], list[Leader | None]]:
        members = [etcd_member(f"n{i}", [etcd_server.url]) for i in range(5)]
        outcomes = await asyncio.gather(*(m.acquire() for m in members))
        seen = [await m.leader() for m in members]
        await close_all(*members)
        return outcomes, seen

    outcomes, seen = asyncio.run(scenario())
    winners = [i for i, outcome in enumerate(outcomes) if outcome is not None]

    assert len(winners) == 1
    won = outcomes[winners[0]]
    assert won is not None
    assert won.held()
    expected = Leader(
        name=f"n{winners[0]}", url=f"http://n{winners[0]}.test:8080", term=won.term
    )
    assert seen == [expected] * 5


def test_the_leader_keeps_its_term_when_it_renews_and_others_keep_being_refused(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> list[Leadership | None]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        ticks: list[Leadership | None] = []
        # Renewing for twice the TTL proves the lease is really kept alive.
        deadline = time.monotonic() + 2 * LEASE_TTL_S
        while time.monotonic() < deadline:
            ticks += [await a.acquire(), await b.acquire()]
            await asyncio.sleep(0.2)
        await close_all(a, b)
        return ticks

    ticks = asyncio.run(scenario())
    leader_ticks, other_ticks = ticks[::2], ticks[1::2]

    assert all(tick is not None for tick in leader_ticks)
    assert len({tick.term for tick in leader_ticks if tick}) == 1
    assert other_ticks == [None] * len(other_ticks)
    valid = [tick.valid_until for tick in leader_ticks if tick]
    assert valid == sorted(valid)
    assert valid[-1] > valid[0]


def test_the_term_rises_on_every_change_of_leader(etcd_server: EtcdServer) -> None:
    async def scenario() -> tuple[list[int], list[Leader | None]]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        terms: list[int] = []
        seen: list[Leader | None] = []
        for winner, loser in [(a, b), (b, a), (a, b)]:
            leadership = await winner.acquire()
            assert leadership is not None
            terms.append(leadership.term)
            seen.append(await loser.leader())
            await winner.release()
            seen.append(await loser.leader())
        await close_all(a, b)
        return terms, seen

    terms, seen = asyncio.run(scenario())

    assert terms[0] < terms[1] < terms[2]
    assert [leader.name if leader else None for leader in seen] == [
        "a", None, "b", None, "a", None,
    ]  # fmt: skip
    assert [leader.term for leader in seen if leader] == terms


def test_a_term_asked_above_etcds_revisions_raises_the_base_and_terms_keep_rising(
    etcd_server: EtcdServer,
) -> None:
    # As on a new etcd cluster under ledgers that already hold high terms.
    above = 1_000_000

    async def scenario() -> dict[str, Any]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        first = await a.acquire(above=above)
        assert first is not None
        seen: dict[str, Any] = {
            "first": first,
            "leader": await b.leader(),
            "published": await a.publish_sync_set(first, ["b"]),
            "sync_set": await b.sync_set(),
            "by_non_holder": await b.publish_sync_set(first, ["b"]),
            "renewed": await a.acquire(),
        }
        await a.release()
        seen["second"] = await b.acquire()
        await b.release()
        seen["third"] = await a.acquire(above=10)
        await close_all(a, b)
        return seen

    seen = asyncio.run(scenario())
    first, second, third = seen["first"], seen["second"], seen["third"]

    assert first.term > above
    assert seen["leader"] == Leader(name="a", url="http://a.test:8080", term=first.term)
    assert seen["published"] is True
    assert seen["sync_set"].term == first.term
    assert seen["by_non_holder"] is False
    assert seen["renewed"].term == first.term
    # The base stays where it was raised: later terms rise by etcd's revisions.
    assert first.term < second.term < third.term < first.term + 100


def test_a_lapsed_lease_frees_the_key_for_another_member_in_a_higher_term(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> tuple[Leadership, Leadership, float, Leadership | None]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        first = await a.acquire()
        assert first is not None
        # a stops renewing, as a paused or cut-off primary would.
        second = await eventually(b.acquire, LAPSE_TIMEOUT_S, "b to take the key")
        taken_at = time.monotonic()
        a_again = await a.acquire()
        await close_all(a, b)
        return first, second, taken_at, a_again

    first, second, taken_at, a_again = asyncio.run(scenario())

    assert second.term > first.term
    # a's deadline is safe: the key was free only after it had passed.
    assert taken_at >= first.valid_until
    assert not first.held()
    assert a_again is None


def test_a_leader_whose_key_an_operator_deleted_learns_it_has_lost_leadership(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> tuple[Leadership | None, Leadership | None, Leader | None]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        first = await a.acquire()
        deleted = etcdctl(etcd_server, "del", "/penin/t/leader")
        assert deleted.stdout.strip() == "1", deleted
        second = await b.acquire()
        renewed = await a.acquire()
        seen = await a.leader()
        await close_all(a, b)
        return first, renewed, seen if second else None

    first, renewed, seen = asyncio.run(scenario())

    assert first is not None
    assert renewed is None
    assert seen is not None
    assert seen.name == "b"
    assert seen.term > first.term


def etcdctl(server: EtcdServer, *args: str) -> subprocess.CompletedProcess[str]:
    """etcdctl as an operator runs it against the test etcd."""
    return subprocess.run(
        ["etcdctl", "--endpoints", server.url, *args],
        capture_output=True,
        text=True,
        timeout=10,
        env={"ETCDCTL_API": "3", "PATH": os.environ["PATH"]},
        check=True,
    )


# -- member states and the sync set ----------------------------------------


def test_members_states_are_read_back_and_vanish_when_their_lease_lapses(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> dict[str, Any]:
        a, b, reader = (etcd_member(n, [etcd_server.url]) for n in ("a", "b", "r"))
        await a.publish_state(role="primary", applied_seq=10, healthy=True)
        await b.publish_state(role="replica", applied_seq=7, healthy=False)
        both = await reader.members()
        await b.publish_state(role="replica", applied_seq=9, healthy=True)
        updated = await reader.members()

        async def b_gone_while_a_publishes() -> bool:
            await a.publish_state(role="primary", applied_seq=11, healthy=True)
            return "b" not in await reader.members()

        await eventually(b_gone_while_a_publishes, LAPSE_TIMEOUT_S, "b's state to go")
        after_lapse = await reader.members()
        await a.close()
        after_close = await reader.members()
        await close_all(b, reader)
        return {
            "both": both,
            "updated": updated,
            "after_lapse": after_lapse,
            "after_close": after_close,
        }

    seen = asyncio.run(scenario())
    both = seen["both"]

    assert list(both) == ["a", "b"]
    assert (both["a"].role, both["a"].applied_seq, both["a"].healthy) == (
        "primary", 10, True,
    )  # fmt: skip
    assert (both["b"].role, both["b"].applied_seq, both["b"].healthy) == (
        "replica", 7, False,
    )  # fmt: skip
    assert both["b"].url == "http://b.test:8080"
    assert abs(both["b"].updated_at - time.time()) < 30
    assert seen["updated"]["b"].applied_seq == 9
    assert seen["updated"]["b"].updated_at >= both["b"].updated_at
    assert list(seen["after_lapse"]) == ["a"]
    assert seen["after_lapse"]["a"].applied_seq == 11
    assert seen["after_close"] == {}


def test_the_leader_publishes_the_sync_set_and_a_deposed_leader_cannot(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> dict[str, Any]:
        a, b = etcd_member("a", [etcd_server.url]), etcd_member("b", [etcd_server.url])
        before = await b.sync_set()
        a_leads = await a.acquire()
        assert a_leads is not None
        published = await a.publish_sync_set(a_leads, ["c", "b", "c"])
        read = await b.sync_set()
        await a.release()
        b_leads = await b.acquire()
        assert b_leads is not None
        stale = await a.publish_sync_set(a_leads, ["a"])
        after_stale = await b.sync_set()
        await close_all(a, b)
        return {
            "before": before,
            "published": published,
            "read": read,
            "term": a_leads.term,
            "stale": stale,
            "after_stale": after_stale,
        }

    seen = asyncio.run(scenario())

    assert seen["before"] is None
    assert seen["published"] is True
    expected = SyncSet(leader="a", term=seen["term"], members=frozenset({"b", "c"}))
    assert seen["read"] == expected
    assert seen["stale"] is False
    assert seen["after_stale"] == expected


# -- etcd gone -----------------------------------------------------------------


def _calls(
    member: EtcdCoordinator, held: Leadership
) -> dict[str, Callable[[], Awaitable[object]]]:
    return {
        "acquire": member.acquire,
        "leader": member.leader,
        "members": member.members,
        "sync_set": member.sync_set,
        "publish_state": lambda: member.publish_state(
            role="replica", applied_seq=1, healthy=True
        ),
        "publish_sync_set": lambda: member.publish_sync_set(held, ["b"]),
    }


async def _errors(
    member: EtcdCoordinator, held: Leadership
) -> dict[str, tuple[str, float]]:
    """Each call's error message and how long it took to come, from a member
    that took the leader key as ``held``."""
    errors: dict[str, tuple[str, float]] = {}
    for name, call in _calls(member, held).items():
        started = time.monotonic()
        with pytest.raises(CoordinatorError) as caught:
            await call()
        errors[name] = (str(caught.value), time.monotonic() - started)

    return errors


def test_with_etcd_killed_every_call_fails_naming_the_endpoint_and_none_leads(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> tuple[dict[str, tuple[str, float]], str]:
        a = etcd_member("a", [etcd_server.url])
        held = await a.acquire()
        assert held is not None
        etcd_server.kill()
        errors = await _errors(a, held)
        with pytest.raises(CoordinatorError) as caught:
            await a.release()
        await a.close()
        return errors, str(caught.value)

    errors, release_error = asyncio.run(scenario())

    for name, (message, seconds) in errors.items():
        assert etcd_server.url in message, name
        assert seconds < CALL_TIMEOUT_S + SLACK_S, name
    assert errors["acquire"][0].startswith("renew the leader lease failed at ")
    assert errors["leader"][0].startswith("read the leader key failed at ")
    assert "release the leader key" in release_error


def test_with_etcd_paused_calls_give_up_within_the_timeout(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> dict[str, tuple[str, float]]:
        a = etcd_member("a", [etcd_server.url])
        held = await a.acquire()
        assert held is not None
        etcd_server.pause()
        try:
            return await _errors(a, held)
        finally:
            etcd_server.resume()
            await a.close()

    errors = asyncio.run(scenario())

    for name, (message, seconds) in errors.items():
        assert f"{etcd_server.url}: no answer within" in message, name
        assert seconds < CALL_TIMEOUT_S + SLACK_S, name


def test_after_etcd_restarts_the_coordinator_works_again_in_a_higher_term(
    etcd_server: EtcdServer,
) -> None:
    async def scenario() -> tuple[Leadership, Leadership, Leader | None]:
        a = etcd_member("a", [etcd_server.url])
        first = await a.acquire()
        assert first is not None
        etcd_server.kill()
        with pytest.raises(CoordinatorError):
            await a.release()
        etcd_server.start()

        async def acquired() -> Leadership | None:
            try:
                return await a.acquire()
            except CoordinatorError:
                return None

        # etcd restores a's lease with a full TTL; once it lapses, a retakes the key.
        second = await eventually(acquired, LAPSE_TIMEOUT_S + 2, "a to lead again")
        seen = await a.leader()
        await a.close()
        return first, second, seen

    first, second, seen = asyncio.run(scenario())

    assert second.term > first.term
    assert seen == Leader(name="a", url="http://a.test:8080", term=second.term)
