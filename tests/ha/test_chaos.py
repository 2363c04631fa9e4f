"""Chaos on an etcd-elected cluster in sync mode: faults under load lose no
acknowledged write, never let two members acknowledge in one term, and leave
every member's ledger verified and consistent with the others'.

Each scenario runs three ``penin serve`` members against a three-member etcd,
with two clients appending without pause, injects one fault, and records the
time from the fault to the first write acknowledged after it (printed, and
appended to $PENIN_CHAOS_TIMES when set). Timings are only bounded loosely:
the machine is shared.

The last test pins down what the partition scenario first caught: a retry
answered from the stored record must be fenced like the first answer.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from chaos import (
    ChaosCluster,
    check_ledgers,
    check_none_lost,
    check_one_node_per_term,
    check_terms_rise,
    first_ack_after,
    longest_pause,
    record_times,
    settle,
)
from elected_cluster import RECOVERY_BOUND_S, Ack, Writers
from etcd_link import EtcdLink, etcd_links

from etcdd import EtcdCluster3
from harness import assert_problem, bearer, wait_for
from penin.keys import Scope

NAMES = ("n1", "n2", "n3")
# Longer than the lease TTL (3 s), so that another member takes the lead.
PAUSE_S = 6.0


@pytest.fixture
def links(etcd_cluster: EtcdCluster3) -> Iterator[dict[str, EtcdLink]]:
    """Each member's own proxies to the etcd members, which a test can cut."""
    with etcd_links(NAMES, etcd_cluster.endpoints) as found:
        yield found


@pytest.fixture
def cluster(tmp_path: Path, etcd_cluster: EtcdCluster3) -> Iterator[ChaosCluster]:
    chaos = ChaosCluster(
        tmp_path, etcd_cluster.endpoints, NAMES, replication="sync", sync_replicas=1
    )
    try:
        yield chaos
    finally:
        chaos.stop_all()


@pytest.fixture
def impatient(tmp_path: Path, etcd_cluster: EtcdCluster3) -> Iterator[ChaosCluster]:
    """A sync cluster whose primary waits only 1 s for its sync set."""
    chaos = ChaosCluster(
        tmp_path,
        etcd_cluster.endpoints,
        NAMES,
        replication="sync",
        sync_replicas=1,
        sync_timeout_s=1,
    )
    try:
        yield chaos
    finally:
        chaos.stop_all()


def _under_load(cluster: ChaosCluster) -> tuple[Writers, str]:
    """Start the members and the writers; the primary once writes flow."""
    cluster.start_all()
    writers = Writers(cluster, cluster.token_of(Scope.APPEND)).start()
    writers.wait_more(20)

    return writers, cluster.wait_for_primary()


def _finish(cluster: ChaosCluster, writers: Writers) -> list[Ack]:
    """Stop writing, let the cluster settle and check what every scenario must
    hold; every acknowledgement."""
    writers.stop()
    acks = writers.snapshot()
    primary = settle(cluster)
    check_none_lost(cluster, primary, acks)
    check_terms_rise(cluster, primary)
    check_one_node_per_term(acks)
    check_ledgers(cluster)

    return acks


def _term_now(writers: Writers) -> int:
    return max(ack.term for ack in writers.snapshot())


def test_killing_the_primary_loses_no_acknowledged_write(
    cluster: ChaosCluster,
) -> None:
    writers, old = _under_load(cluster)
    term = _term_now(writers)

    fault = time.monotonic()
    cluster.kill(old)
    new = cluster.wait_for_primary(other_than=old, timeout=RECOVERY_BOUND_S)
    writers.wait_more(20)
    cluster.start(old)
    writers.wait_more(10)
    acks = _finish(cluster, writers)

    failover = first_ack_after(acks, fault, term_above=term)
    record_times("kill_primary", first_ack_s=failover)
    assert new != old
    assert failover < RECOVERY_BOUND_S
    assert {a.node for a in acks if a.term > term and not a.replayed} == {new}


def test_a_primary_paused_past_its_lease_never_acknowledges_again(
    cluster: ChaosCluster,
) -> None:
    writers, old = _under_load(cluster)
    term = _term_now(writers)

    paused = time.monotonic()
    cluster.pause(old)
    try:
        new = cluster.wait_for_primary(other_than=old, timeout=RECOVERY_BOUND_S)
        writers.wait_more(10)
        time.sleep(max(0.0, paused + PAUSE_S - time.monotonic()))
    finally:
        cluster.resume(old)
    resumed = time.monotonic()
    cluster.wait_following(old, timeout=RECOVERY_BOUND_S)
    writers.wait_more(10)
    acks = _finish(cluster, writers)

    failover = first_ack_after(acks, paused, term_above=term)
    record_times(
        "pause_primary",
        first_ack_s=failover,
        paused_s=resumed - paused,
        quarantined=len(cluster.quarantined(old)),
    )
    assert new != old
    assert failover < RECOVERY_BOUND_S
    assert [a for a in acks if a.node == old and a.sent >= paused] == []


def test_a_replica_killed_and_restarted_under_load_catches_up(
    cluster: ChaosCluster,
) -> None:
    writers, primary = _under_load(cluster)
    token = cluster.token_of(Scope.READ)
    sync_set: list[str] = wait_for(
        lambda: cluster.status(primary, token).get("sync_set") or [], 10, "a sync set"
    )
    victim = sync_set[0]

    fault = time.monotonic()
    cluster.kill(victim)
    writers.wait_more(20)
    cluster.start(victim)
    cluster.wait_following(victim, timeout=RECOVERY_BOUND_S)
    writers.wait_more(10)
    acks = _finish(cluster, writers)

    resumed = first_ack_after(acks, fault)
    record_times(
        "kill_replica",
        first_ack_s=resumed,
        longest_pause_s=longest_pause(acks, fault),
    )
    assert resumed < RECOVERY_BOUND_S
    assert {a.node for a in acks} == {primary}


def test_writes_go_on_when_the_etcd_leader_is_killed(
    cluster: ChaosCluster, etcd_cluster: EtcdCluster3
) -> None:
    writers, _ = _under_load(cluster)

    fault = time.monotonic()
    etcd_cluster.stop_member(etcd_cluster.leader_index())
    try:
        writers.wait_more(30)
    finally:
        etcd_cluster.heal()
    writers.wait_more(10)
    acks = _finish(cluster, writers)

    resumed = first_ack_after(acks, fault)
    record_times(
        "kill_etcd_leader",
        first_ack_s=resumed,
        longest_pause_s=longest_pause(acks, fault),
    )
    assert resumed < RECOVERY_BOUND_S


def test_a_primary_cut_off_from_etcd_steps_down_and_rejoins(
    links: dict[str, EtcdLink], cluster: ChaosCluster
) -> None:
    cluster.endpoints_of = {name: link.endpoints for name, link in links.items()}
    writers, old = _under_load(cluster)
    term = _term_now(writers)

    fault = time.monotonic()
    links[old].cut()
    try:
        step_down = cluster.wait_not_primary(old)
        stepped_down = time.monotonic()
        new = cluster.wait_for_primary(other_than=old, timeout=RECOVERY_BOUND_S)
        writers.wait_more(10)
    finally:
        links[old].heal()
    cluster.wait_following(old, timeout=RECOVERY_BOUND_S)
    writers.wait_more(10)
    acks = _finish(cluster, writers)

    failover = first_ack_after(acks, fault, term_above=term)
    record_times(
        "cut_primary_from_etcd",
        step_down_s=step_down,
        first_ack_s=failover,
        quarantined=len(cluster.quarantined(old)),
    )
    assert new != old
    assert failover < RECOVERY_BOUND_S
    assert [a for a in acks if a.node == old and a.sent >= stepped_down] == []


def test_a_retry_is_not_acknowledged_before_the_sync_set_holds_the_record(
    impatient: ChaosCluster,
) -> None:
    impatient.start_all()
    primary = impatient.wait_for_primary()
    token = impatient.token_of(Scope.APPEND)
    for name in NAMES:
        if name != primary:
            impatient.kill(name)

    with httpx.Client(headers=bearer(token), timeout=10) as http:
        answers = [
            http.post(
                f"{impatient.url(primary)}/v1/ledger/records",
                json={"event_type": "test.write", "payload": {"x": 1}},
                headers={"Idempotency-Key": "alone-1"},
            )
            for _ in range(2)
        ]

    first, retried = (
        assert_problem(answer, 503, "sync-replication-timeout") for answer in answers
    )
    assert retried["seq"] == first["seq"]
