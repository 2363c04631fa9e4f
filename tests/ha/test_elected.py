"""coordinator: etcd, end to end: real nodes elect a primary, replicate, fail
over when it is killed, and refuse writes where they must."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from elected_cluster import ElectedCluster, Writers

from etcdd import EtcdServer
from harness import assert_problem, bearer
from penin.keys import Scope
from penin.ledger.ledger import WORMLedger


@pytest.fixture
def trio(tmp_path: Path, etcd_server: EtcdServer) -> Iterator[ElectedCluster]:
    cluster = ElectedCluster(tmp_path, [etcd_server.url])
    try:
        yield cluster
    finally:
        cluster.stop_all()


def test_the_first_member_leads_and_the_others_follow_it(trio: ElectedCluster) -> None:
    trio.start_all()
    token = trio.token_of(Scope.APPEND)

    assert trio.primaries() == ["n1"]
    with httpx.Client(headers=bearer(token)) as http:
        for i in range(5):
            answer = http.post(
                f"{trio.url('n1')}/v1/ledger/records",
                json={"event_type": "test.write", "payload": {"i": i}},
            )
            assert answer.status_code == 201, answer.text
        refused = http.post(
            f"{trio.url('n2')}/v1/ledger/records",
            json={"event_type": "test.write", "payload": {}},
        )
    problem = assert_problem(refused, 503, "not-primary")
    assert problem["primary"] == "n1"
    assert refused.headers["location"] == f"{trio.url('n1')}/v1/ledger/records"
    trio.wait_until_identical("n1", "n2", "n3")


def test_a_ledger_with_terms_beyond_etcds_revisions_still_leads_at_once_above_them(
    trio: ElectedCluster,
) -> None:
    # As after etcd was replaced: its revisions count again from low.
    old_term = 50_000
    with WORMLedger(trio.data_dir("n1") / "ledger.db").initialize() as ledger:
        ledger.begin_term(old_term, ("test.old_term", {}))

    trio.start_all()
    token = trio.token_of(Scope.APPEND)
    with httpx.Client(headers=bearer(token)) as http:
        written = http.post(
            f"{trio.url('n1')}/v1/ledger/records",
            json={"event_type": "test.write", "payload": {}},
        )
    trio.wait_until_identical("n1", "n2", "n3")

    assert trio.primaries() == ["n1"]
    assert written.status_code == 201, written.text
    assert written.json()["term"] > old_term


def test_killing_the_primary_elects_the_most_up_to_date_replica(
    trio: ElectedCluster,
) -> None:
    trio.start_all()
    writers = Writers(trio, trio.token_of(Scope.APPEND)).start()
    writers.wait_more(20)

    first_term = writers.snapshot()[-1].term
    trio.kill("n1")
    new = trio.wait_for_primary(other_than="n1")
    writers.wait_more(20)
    writers.stop()

    assert new in {"n2", "n3"}
    other = ({"n2", "n3"} - {new}).pop()
    trio.wait_until_identical(new, other)
    rows = trio.rows(new)
    terms = [row[4] for row in rows]
    assert terms == sorted(terms)  # terms only rise
    assert len(set(terms)) >= 2
    # Async mode may lose what the old primary acknowledged last; nothing the
    # new one acknowledged.
    held = set(trio.leaf_hashes(new))
    after = [ack.leaf_hash for ack in writers.acks if ack.term > first_term]
    assert after
    assert all(leaf in held for leaf in after)
