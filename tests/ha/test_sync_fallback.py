"""sync_fallback: async: a sync-mode primary left without replicas goes on
acknowledging, and says so (penin_sync_degraded, the sync set it publishes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elected_cluster import ElectedCluster

from etcdd import EtcdServer
from harness import bearer, wait_for
from penin.keys import Scope


@pytest.fixture
def degradable(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[ElectedCluster]:
    cluster = ElectedCluster(
        tmp_path,
        [etcd_server.url],
        names=("n1", "n2"),
        replication="sync",
        sync_replicas=1,
        sync_fallback="async",
        sync_timeout_s=2,
    )
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()


def _degraded(cluster: ElectedCluster) -> float | None:
    text = httpx.get(f"{cluster.url('n1')}/metrics", timeout=5).text
    for line in text.splitlines():
        if line.startswith("penin_sync_degraded "):
            return float(line.split()[1])
    return None


def test_without_replicas_the_primary_degrades_to_async_and_recovers(
    degradable: ElectedCluster,
) -> None:
    token = degradable.token_of(Scope.APPEND)
    reader = degradable.token_of(Scope.READ)
    url = f"{degradable.url('n1')}/v1/ledger/records"
    body = {"event_type": "test.write", "payload": {}}
    with httpx.Client(headers=bearer(token), timeout=30) as http:
        wait_for(lambda: _degraded(degradable) == 0.0, 10, "a full sync set")
        assert http.post(url, json=body).status_code == 201

        degradable.kill("n2")
        wait_for(lambda: _degraded(degradable) == 1.0, 15, "the primary to degrade")
        acknowledged = http.post(url, json=body)
        status = httpx.get(
            f"{degradable.url('n1')}/v1/cluster", headers=bearer(reader)
        ).json()

        degradable.start("n2")
        wait_for(lambda: _degraded(degradable) == 0.0, 15, "n2 back in the sync set")
        again = http.post(url, json=body)

    assert acknowledged.status_code == 201, acknowledged.text
    assert status["sync_set"] == []
    assert again.status_code == 201
    events = [e["event"] for e in degradable.servers["n1"].log_events()]
    assert "replication.sync_degraded" in events
