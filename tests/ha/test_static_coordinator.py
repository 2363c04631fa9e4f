"""The static coordinator: the configured primary leads in term 1, and nobody else
ever does."""

from __future__ import annotations

import asyncio
from typing import Any

from coordinators import node

from penin.ha import (
    ClusterConfig,
    EtcdCoordinator,
    HAConfig,
    Leader,
    StaticCoordinator,
    SyncSet,
    coordinator_for,
)

STATIC = ClusterConfig(coordinator="static", primary="n1")


def test_the_configured_primary_always_leads_in_term_one() -> None:
    async def scenario() -> dict[str, Any]:
        async with StaticCoordinator(node("n1"), STATIC) as primary:
            first = await primary.acquire()
            await primary.release()
            again = await primary.acquire()
            seen = await primary.leader()
        return {"first": first, "again": again, "seen": seen}

    outcome = asyncio.run(scenario())

    assert outcome["first"] is not None
    assert outcome["first"].term == 1
    assert outcome["first"].held(margin_s=1e9)
    assert outcome["again"] == outcome["first"]
    assert outcome["seen"] == Leader(name="n1", url="http://n1.test:8080", term=1)


def test_a_static_replica_never_takes_over_and_names_the_configured_primary() -> None:
    async def scenario() -> dict[str, Any]:
        replica = StaticCoordinator(node("n2"), STATIC)
        # Nothing from the primary is ever seen here: it might as well be dead.
        ticks = [await replica.acquire() for _ in range(50)]
        seen = await replica.leader()
        await replica.close()
        return {"ticks": ticks, "seen": seen}

    outcome = asyncio.run(scenario())

    assert outcome["ticks"] == [None] * 50
    assert outcome["seen"] == Leader(name="n1", url=None, term=1)


def test_static_states_and_sync_set_stay_in_this_process() -> None:
    async def scenario() -> dict[str, Any]:
        primary = StaticCoordinator(node("n1"), STATIC)
        replica = StaticCoordinator(node("n2"), STATIC)
        leadership = await primary.acquire()
        assert leadership is not None
        await primary.publish_state(role="primary", applied_seq=4, healthy=True)
        published = await primary.publish_sync_set(leadership, ["n2"])
        refused = await replica.publish_sync_set(leadership, ["n3"])
        outcome = {
            "primary_sees": await primary.members(),
            "replica_sees": await replica.members(),
            "sync_set": await primary.sync_set(),
            "replica_sync_set": await replica.sync_set(),
            "published": published,
            "refused": refused,
        }
        await primary.close()
        outcome["after_close"] = await primary.members()
        return outcome

    outcome = asyncio.run(scenario())

    assert list(outcome["primary_sees"]) == ["n1"]
    assert outcome["primary_sees"]["n1"].applied_seq == 4
    assert outcome["replica_sees"] == {}
    assert outcome["published"] is True
    assert outcome["sync_set"] == SyncSet(
        leader="n1", term=1, members=frozenset({"n2"})
    )
    assert outcome["refused"] is False
    assert outcome["replica_sync_set"] is None
    assert outcome["after_close"] == {}


def test_the_configuration_picks_the_backend() -> None:
    static = HAConfig(node=node("n1"), cluster=STATIC)
    etcd = HAConfig(
        node=node("n1"),
        cluster=ClusterConfig(
            coordinator="etcd", etcd_endpoints=["http://127.0.0.1:2379"]
        ),
    )

    assert isinstance(coordinator_for(static), StaticCoordinator)
    assert isinstance(coordinator_for(etcd), EtcdCoordinator)
