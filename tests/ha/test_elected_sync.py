"""replication: sync with etcd: a write is acknowledged only once the sync set
stores it, so killing the primary loses no acknowledged write."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elected_cluster import ElectedCluster, Writers

from etcdd import EtcdServer
from harness import assert_problem, bearer, wait_for
from penin.keys import Scope


@pytest.fixture
def sync_trio(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[ElectedCluster]:
    cluster = ElectedCluster(
        tmp_path,
        [etcd_server.url],
        replication="sync",
        sync_replicas=1,
        sync_timeout_s=2,
    )
    try:
        yield cluster
    finally:
        cluster.stop_all()


def _status(cluster: ElectedCluster, name: str, token: str) -> dict[str, object]:
    """GET /v1/cluster on ``name``; {} while the key has not reached it."""
    answer = httpx.get(f"{cluster.url(name)}/v1/cluster", headers=bearer(token))
    if answer.status_code == 401:
        return {}
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def test_the_primary_publishes_one_caught_up_replica_as_its_sync_set(
    sync_trio: ElectedCluster,
) -> None:
    sync_trio.start_all()
    token = sync_trio.token_of(Scope.READ)

    body = wait_for(
        lambda: (b := _status(sync_trio, "n2", token)).get("sync_set") and b,
        10,
        "a sync set",
    )

    assert body["sync_set"] in (["n2"], ["n3"])
    assert body["replication"] == "sync"
    assert set(body["members"]) == {"n1", "n2", "n3"}  # type: ignore[arg-type]


def test_killing_the_sync_primary_loses_no_acknowledged_write(
    sync_trio: ElectedCluster,
) -> None:
    sync_trio.start_all()
    writers = Writers(sync_trio, sync_trio.token_of(Scope.APPEND)).start()
    writers.wait_more(30)

    sync_trio.kill("n1")
    new = sync_trio.wait_for_primary(other_than="n1")
    writers.wait_more(30)
    writers.stop()

    held = set(sync_trio.leaf_hashes(new))
    lost = [ack for ack in writers.acks if ack.leaf_hash not in held]
    assert lost == []


def _without_replicas(cluster: ElectedCluster, scope: Scope) -> str:
    """Start the trio, kill both replicas; a key of ``scope`` made before."""
    cluster.start_all()
    token = cluster.token_of(scope)
    cluster.kill("n2")
    cluster.kill("n3")

    return token


def test_with_no_replica_left_a_strict_primary_refuses_to_acknowledge(
    sync_trio: ElectedCluster,
) -> None:
    token = _without_replicas(sync_trio, Scope.APPEND)

    with httpx.Client(headers=bearer(token), timeout=30) as http:
        answer = http.post(
            f"{sync_trio.url('n1')}/v1/ledger/records",
            json={"event_type": "test.write", "payload": {"x": 1}},
            headers={"Idempotency-Key": "strict-1"},
        )
        problem = assert_problem(answer, 503, "sync-replication-timeout")
        assert "retry with the same Idempotency-Key" in problem["detail"]
        sync_trio.start("n2")
        retried = wait_for(
            lambda: (
                (
                    r := http.post(
                        f"{sync_trio.url('n1')}/v1/ledger/records",
                        json={"event_type": "test.write", "payload": {"x": 1}},
                        headers={"Idempotency-Key": "strict-1"},
                    )
                ).status_code
                == 200
                and r
            ),
            20,
            "the retried write to be acknowledged",
        )

    assert retried.json()["seq"] == problem["seq"]
    assert retried.headers["idempotent-replayed"] == "true"


def test_the_primary_signs_no_checkpoint_over_records_its_replicas_lack(
    sync_trio: ElectedCluster,
) -> None:
    token = _without_replicas(sync_trio, Scope.ADMIN)

    with httpx.Client(headers=bearer(token), timeout=30) as http:
        unreplicated = http.post(
            f"{sync_trio.url('n1')}/v1/ledger/records",
            json={"event_type": "test.write", "payload": {"x": 2}},
        )
        note = http.post(f"{sync_trio.url('n1')}/v1/ledger/checkpoint")

    seq = assert_problem(unreplicated, 503, "sync-replication-timeout")["seq"]
    assert note.status_code == 200, note.text
    assert int(note.text.split("\n")[1]) <= seq  # the record at seq is left out
