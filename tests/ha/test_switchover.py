"""Switchover, the cluster's state and an operator's rejoin, with etcd: through
``penin ha`` and ``/v1/cluster`` on real nodes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elected_cluster import ElectedCluster, Writers

from etcdd import EtcdServer
from harness import assert_problem, bearer, penin, wait_for
from penin.keys import Scope


@pytest.fixture
def sync_trio(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[ElectedCluster]:
    cluster = ElectedCluster(
        tmp_path, [etcd_server.url], replication="sync", sync_replicas=1
    )
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()


def _ha(cluster: ElectedCluster, token: str, *args: object) -> tuple[int, str, str]:
    result = penin("ha", *args, env={**cluster.env, "PENIN_API_KEY": token})
    return result.returncode, result.stdout, result.stderr


def test_a_switchover_under_load_moves_the_lead_and_loses_nothing(
    sync_trio: ElectedCluster,
) -> None:
    admin = sync_trio.token_of(Scope.ADMIN)
    writers = Writers(sync_trio, sync_trio.token_of(Scope.APPEND)).start()
    writers.wait_more(20)
    sync_trio.wait_following("n2", "n3")

    # Sent to a replica, it follows the answer to the primary.
    code, out, err = _ha(sync_trio, admin, "switchover", "--to", "n3",
                         "--url", sync_trio.url("n2"))  # fmt: skip
    assert code == 0, err
    assert "n1 -> n3" in out
    writers.wait_more(20)
    writers.stop()

    assert sync_trio.primaries() == ["n3"]
    paused = float(out.split("writes paused ")[1].split(" s")[0])
    assert paused < 2.0
    sync_trio.wait_until_identical("n3", "n1", "n2")
    held = set(sync_trio.leaf_hashes("n3"))
    assert [ack for ack in writers.acks if ack.leaf_hash not in held] == []
    terms = [row[4] for row in sync_trio.rows("n3")]
    assert terms == sorted(terms)


def test_a_switchover_to_a_stranger_or_by_a_read_key_is_refused(
    sync_trio: ElectedCluster,
) -> None:
    admin = sync_trio.token_of(Scope.ADMIN)
    reader = sync_trio.token_of(Scope.READ)
    url = f"{sync_trio.url('n1')}/v1/cluster/switchover"

    stranger = httpx.post(url, json={"to": "n9"}, headers=bearer(admin), timeout=30)
    forbidden = httpx.post(url, json={"to": "n2"}, headers=bearer(reader), timeout=30)
    malformed = httpx.post(url, json={"to": "N 2"}, headers=bearer(admin), timeout=30)

    assert (
        "n9 is not a healthy replica"
        in assert_problem(stranger, 409, "switchover-failed")["detail"]
    )
    assert_problem(forbidden, 403, "forbidden")
    assert_problem(malformed, 422, "validation")
    assert sync_trio.primaries() == ["n1"]


def test_ha_status_shows_every_member_with_its_role_and_lag(
    sync_trio: ElectedCluster,
) -> None:
    reader = sync_trio.token_of(Scope.READ)

    code, out, err = _ha(sync_trio, reader, "status", "--url", sync_trio.url("n1"))
    _, as_json, _ = _ha(
        sync_trio, reader, "status", "--json", "--url", sync_trio.url("n1")
    )

    assert code == 0, err
    assert "primary n1" in out
    for name in ("n1", "n2", "n3"):
        assert name in out
    body = json.loads(as_json)
    assert body["role"] == "primary"
    assert body["members"]["n2"]["role"] == "replica"
    assert body["members"]["n2"]["lag_records"] >= 0
    assert "lag_seconds" in body["members"]["n2"]


def test_rejoin_quarantines_a_stopped_members_ledger_and_it_rebuilds(
    sync_trio: ElectedCluster,
) -> None:
    sync_trio.token_of(Scope.READ)  # a record to copy
    sync_trio.wait_until_identical("n1", "n2")
    before = sync_trio.leaf_hashes("n2")
    sync_trio.servers["n2"].stop()

    refused = penin("ha", "rejoin", "--data-dir", sync_trio.data_dir("n1"))
    result = penin("ha", "rejoin", "--data-dir", sync_trio.data_dir("n2"))

    assert refused.returncode == 2
    assert "stop the member first" in refused.stderr
    assert result.returncode == 0, result.stderr
    [moved] = (sync_trio.data_dir("n2") / "quarantine").iterdir()
    manifest = json.loads((moved / "quarantine.json").read_text())
    assert manifest["tree_size"] == len(before)
    assert manifest["reason"] == {"reason": "operator rejoin"}
    assert not (sync_trio.data_dir("n2") / "ledger.db").exists()
    sync_trio.start("n2")
    wait_for(
        lambda: sync_trio.leaf_hashes("n2")[: len(before)] == before,
        15,
        "n2 to rebuild from the primary",
    )
    # Once it follows, the primary records what it moved aside.
    wait_for((moved / "reported").exists, 15, "the quarantine reported")
    [recorded] = [
        json.loads(row[3]) for row in sync_trio.rows("n1") if row[2] == "ha.quarantined"
    ]
    assert recorded == {
        "node": "n2",
        "moved_at": manifest["moved_at"],
        "tree_size": len(before),
        "root": manifest["root"],
        "last_term": manifest["last_term"],
        "reason": "operator rejoin",
    }
    forged = httpx.post(
        f"{sync_trio.url('n1')}/v1/replication/quarantined", json=recorded
    )
    assert forged.status_code == 401
