"""The etcd coordinator against a real three-member etcd: it keeps working with
one member down and refuses, in time, when there is no quorum."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from coordinators import etcd_member

from etcdd import EtcdCluster3, EtcdFixtureError
from harness import wait_for
from penin.ha import CoordinatorError, Leader

TIMEOUT_S = 1.0
SLACK_S = 1.0


@pytest.fixture
def cluster(etcd_cluster: EtcdCluster3) -> Iterator[EtcdCluster3]:
    """The module's cluster, all three members running again after the test."""
    yield etcd_cluster
    etcd_cluster.heal()


def _stop_and_wait_for_election(cluster: EtcdCluster3, index: int) -> None:
    cluster.stop_member(index)
    wait_for(lambda: _has_leader(cluster), 10, "the members left to elect a leader")


def _has_leader(cluster: EtcdCluster3) -> bool:
    try:
        cluster.leader_index()
    except EtcdFixtureError:
        return False

    return True


def test_with_the_etcd_leader_stopped_the_leader_renews_and_hands_over(
    cluster: EtcdCluster3,
) -> None:
    stopped = cluster.leader_index()
    # The stopped member comes first in every list: each call must move on.
    endpoints = cluster.endpoints
    endpoints.insert(0, endpoints.pop(stopped))

    async def scenario() -> dict[str, Any]:
        a = etcd_member("a", endpoints, cluster="one-down", timeout_s=TIMEOUT_S)
        b = etcd_member("b", endpoints, cluster="one-down", timeout_s=TIMEOUT_S)
        first = await a.acquire()
        await asyncio.to_thread(_stop_and_wait_for_election, cluster, stopped)
        renewed = await a.acquire()
        seen = await b.leader()
        await a.release()
        taken = await b.acquire()
        await a.close()
        await b.close()
        return {"first": first, "renewed": renewed, "seen": seen, "taken": taken}

    outcome = asyncio.run(scenario())
    first, renewed, taken = outcome["first"], outcome["renewed"], outcome["taken"]

    assert first is not None
    assert renewed is not None
    assert renewed.term == first.term
    assert outcome["seen"] == Leader(
        name="a", url="http://a.test:8080", term=first.term
    )
    assert taken is not None
    assert taken.term > first.term


def test_with_two_of_three_members_stopped_calls_fail_within_the_timeout(
    cluster: EtcdCluster3,
) -> None:
    async def scenario() -> list[tuple[str, float]]:
        a = etcd_member(
            "a", cluster.endpoints, cluster="no-quorum", timeout_s=TIMEOUT_S
        )
        assert await a.acquire() is not None
        await asyncio.to_thread(cluster.stop_member, 0)
        await asyncio.to_thread(cluster.stop_member, 1)
        failures = []
        for call in (a.acquire, a.leader, a.members):
            started = time.monotonic()
            with pytest.raises(CoordinatorError) as caught:
                await call()
            failures.append((str(caught.value), time.monotonic() - started))
        await a.gateway.close()
        return failures

    failures = asyncio.run(scenario())

    for message, seconds in failures:
        assert seconds < TIMEOUT_S + SLACK_S, message
        assert "no endpoint answered" in message
        for endpoint in cluster.endpoints:
            assert endpoint in message
    # The member still running is the one that was waited for, not refused.
    assert f"{cluster.endpoints[2]}: no answer within" in failures[0][0]
