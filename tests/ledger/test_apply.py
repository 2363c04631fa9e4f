"""The apply path: a replica stores the primary's records and checkpoints as
written, or refuses a whole batch naming the first thing that differs; terms
are fenced by the writer and by the file itself."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from helpers import ORIGIN, append_n, assert_intact, assert_refused, penin, raw_connect
from penin.ledger.errors import (
    DivergedError,
    FencedError,
    NotPrimaryError,
    ReplicationError,
    TreeSizeError,
)
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import Checkpoint, Signer
from penin.ledger.record import Record, record_leaf_hash

PRIMARY_URL = "http://n1.test:8080"


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[WORMLedger]:
    led = WORMLedger(tmp_path / "primary" / "ledger.db")
    led.path.parent.mkdir()
    led.initialize(ORIGIN)
    yield led
    led.close()


@pytest.fixture
def replica(tmp_path: Path, primary: WORMLedger) -> Iterator[WORMLedger]:
    """A ledger of the same origin, holding a copy of the primary's key."""
    directory = tmp_path / "replica"
    directory.mkdir()
    shutil.copy(primary.key_path, directory / "ledger.key")
    led = WORMLedger(directory / "ledger.db").initialize(ORIGIN)
    yield led
    led.close()


def forge(
    previous: Record,
    *,
    term: int | None = None,
    ts: str | None = None,
    payload_json: str = '{"forged":true}',
    event_type: str = "test.event",
) -> Record:
    """The record after ``previous`` with these fields and its true leaf hash."""
    fields = (
        previous.seq + 1, ts or previous.ts, event_type, payload_json,
        previous.term if term is None else term, bytes.fromhex(previous.leaf_hash),
        None,
    )  # fmt: skip
    leaf = record_leaf_hash(*fields)

    return Record(
        seq=fields[0], ts=fields[1], event_type=event_type, payload_json=payload_json,
        term=fields[4], prev_hash=previous.leaf_hash, idempotency_key=None,
        leaf_hash=leaf.hex(),
    )  # fmt: skip


# -- storing what the primary wrote ---------------------------------------------


def test_a_replica_stores_the_primarys_records_exactly_as_written(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    written = primary.append_many(
        [("test.event", {"n": i, "text": "ü"}, f"key-{i}") for i in range(6)]
    )
    primary.begin_term(2)
    written += append_n(primary, 4, "test.later")

    replica.apply(written[:5])
    replica.apply(written[5:])

    assert replica.query(limit=100) == written
    assert [r.term for r in replica.query(limit=100)] == [0] * 6 + [2] * 4
    assert replica.root() == primary.root()
    assert replica.find_idempotent("key-3") == written[3]
    assert_intact(replica.path, 10)


def test_a_replica_grows_the_same_tree_as_the_primary_at_every_size(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    written = append_n(primary, 13)

    for record in written:
        replica.apply([record])

        size = record.seq + 1
        assert replica.root() == primary.root(size)
        assert replica.consistency_proof(1, size) == primary.consistency_proof(1, size)


def tampered_leaf(records: list[Record]) -> list[Record]:
    records[1] = dataclasses.replace(records[1], leaf_hash="00" * 32)
    return records


def tampered_payload(records: list[Record]) -> list[Record]:
    records[1] = dataclasses.replace(records[1], payload_json='{"n":99}')
    return records


def wrong_prev_hash(records: list[Record]) -> list[Record]:
    records[1] = dataclasses.replace(records[1], prev_hash="ab" * 32)
    return records


def gap(records: list[Record]) -> list[Record]:
    return records[1:]


def older_term(records: list[Record]) -> list[Record]:
    return [records[0], forge(records[0], term=0)]


def time_going_back(records: list[Record]) -> list[Record]:
    return [records[0], forge(records[0], ts="2000-01-01T00:00:00.000000Z")]


def non_canonical_payload(records: list[Record]) -> list[Record]:
    return [records[0], forge(records[0], payload_json='{"b":1, "a":2}')]


def bad_event_type(records: list[Record]) -> list[Record]:
    return [records[0], forge(records[0], event_type='Bad"type')]


@pytest.mark.parametrize(
    ("spoil", "error", "field", "seq"),
    [
        (gap, DivergedError, "seq", 4),
        (wrong_prev_hash, DivergedError, "prev_hash", 4),
        (tampered_leaf, DivergedError, "leaf_hash", 4),
        (tampered_payload, DivergedError, "leaf_hash", 4),
        (older_term, FencedError, "term", 4),
        (time_going_back, DivergedError, "ts", 4),
        (non_canonical_payload, DivergedError, "form", 4),
        (bad_event_type, DivergedError, "form", 4),
    ],
)
def test_a_batch_that_does_not_extend_the_log_is_refused_whole(
    primary: WORMLedger,
    replica: WORMLedger,
    spoil: Callable[[list[Record]], list[Record]],
    error: type[ReplicationError],
    field: str,
    seq: int,
) -> None:
    primary.begin_term(1)
    good = append_n(primary, 6)
    replica.apply(good[:3])
    root = replica.root()

    with pytest.raises(error) as refused:
        replica.apply(spoil(list(good[3:])))

    assert (refused.value.seq, refused.value.field) == (seq, field)
    assert f"record {seq}" in str(refused.value)
    assert replica.count_records() == 3
    assert replica.root() == root
    assert_intact(replica.path, 3)
    replica.apply(good[3:])
    assert replica.root() == primary.root()


def test_a_refusal_names_the_expected_and_the_received_leaf_hash(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    good = append_n(primary, 2)

    with pytest.raises(DivergedError) as refused:
        replica.apply(tampered_payload(list(good)))

    assert refused.value.received == good[1].leaf_hash
    assert refused.value.expected != good[1].leaf_hash
    assert str(refused.value.expected) in str(refused.value)
    assert good[1].leaf_hash in str(refused.value)


# -- terms --------------------------------------------------------------------------


def test_the_file_refuses_a_record_of_an_older_term_whoever_inserts_it(
    replica: WORMLedger, primary: WORMLedger
) -> None:
    primary.begin_term(3)
    tip = primary.append_record("test.event", {"n": 1})
    replica.apply([tip])
    stale = forge(tip, term=2)
    replica.close()
    conn = raw_connect(replica.path)

    with pytest.raises(sqlite3.IntegrityError, match="fenced"):
        conn.execute(
            "INSERT INTO records VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (stale.seq, stale.ts, stale.event_type, stale.payload_json, stale.term,
             bytes.fromhex(stale.prev_hash), None, bytes.fromhex(stale.leaf_hash)),
        )  # fmt: skip
    conn.close()
    assert_intact(replica.path, 1)


def test_opening_a_ledger_made_before_fencing_adds_the_trigger(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path, term=2).initialize(ORIGIN) as led:
        led.append_record("test.event", {"n": 0})
    conn = raw_connect(path)
    conn.execute("DROP TRIGGER records_term_fence")
    conn.execute("DROP TABLE replica")
    conn.close()

    with WORMLedger(path).initialize() as led:
        led.append_record("test.event", {"n": 1})

    conn = raw_connect(path)
    names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    with pytest.raises(sqlite3.IntegrityError, match="fenced"):
        conn.execute(
            "INSERT INTO records SELECT seq + 1, ts, event_type, payload, 1,"
            " leaf_hash, NULL, leaf_hash FROM records WHERE seq = 1"
        )
    conn.close()
    assert {"records_term_fence", "replica"} <= names


def test_a_writer_is_refused_a_term_older_than_the_ledgers_last(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path, term=5).initialize(ORIGIN) as led:
        led.append_record("test.event", {"n": 0})

    with pytest.raises(FencedError, match="cannot write in term 4"):
        WORMLedger(path, term=4).initialize()
    with WORMLedger(path).initialize() as led:
        with pytest.raises(FencedError, match="the last record is of term 5"):
            led.begin_term(3)
        record = led.append_record("test.event", {"n": 1})

    assert record.term == 5
    assert_intact(path, 2)


def test_a_new_term_begins_with_its_marker_record_once(ledger: WORMLedger) -> None:
    marker = ("ha.term_started", {"term": 2}, "ha.term_started:2")
    append_n(ledger, 2)

    first = ledger.begin_term(2, marker)
    again = ledger.begin_term(2, marker)
    after = ledger.append_record("test.event", {"n": 2})

    assert first is not None
    assert (first.seq, first.term, first.event_type) == (2, 2, "ha.term_started")
    assert again is None
    assert (after.seq, after.term) == (3, 2)
    assert ledger.last_term == 2


def test_another_process_appends_in_the_term_the_primary_began(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as node:
        node.begin_term(1, ("ha.term_started", {"term": 1}))
        with WORMLedger(path) as command:
            record = command.append_record("test.event", {"from": "cli"})

    assert record.term == 1


# -- a replica's file takes no appends --------------------------------------------


def test_appends_to_a_replicas_ledger_are_refused_naming_the_primary(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    replica.follow("n1", PRIMARY_URL)
    written = append_n(primary, 2)

    with pytest.raises(NotPrimaryError) as refused:
        replica.append_record("test.event", {"n": 0})
    with WORMLedger(replica.path) as other, pytest.raises(NotPrimaryError):
        other.append_record("test.event", {"n": 0})
    replica.apply(written)
    replica.probe()

    assert (refused.value.primary, refused.value.primary_url) == ("n1", PRIMARY_URL)
    assert PRIMARY_URL in str(refused.value)
    assert replica.replica_of() == ("n1", PRIMARY_URL)
    assert replica.query(limit=10) == written


def test_the_penin_command_cannot_append_to_a_replicas_ledger(
    replica: WORMLedger,
) -> None:
    replica.follow("n1", PRIMARY_URL)

    result = penin(
        "append", "--data-dir", replica.path.parent, "--type", "test.event",
        "--payload", "{}",
    )  # fmt: skip

    assert_refused(result, 2, "replica of n1", PRIMARY_URL)
    assert replica.count_records() == 0


def test_a_replica_that_leads_takes_appends_again(replica: WORMLedger) -> None:
    replica.follow("n1", PRIMARY_URL)

    replica.lead()
    record = replica.append_record("test.event", {"n": 0})

    assert replica.replica_of() is None
    assert record.seq == 0


# -- checkpoints ----------------------------------------------------------------------


def test_a_replica_stores_the_primarys_checkpoint_and_verifies_by_itself(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    written = append_n(primary, 5)
    first = primary.checkpoint()
    written += append_n(primary, 3)
    second = primary.checkpoint()
    replica.apply(written)

    replica.adopt_checkpoint(first, "2026-01-01T00:00:00.000000Z")
    adopted = replica.adopt_checkpoint(second)

    assert adopted.tree_size == 8
    assert replica.latest_checkpoint() == second
    report = replica.verify_integrity()
    assert report.ok, report.reason
    assert report.checkpoints_checked == 2


def test_a_checkpoint_of_another_root_is_refused_naming_both_roots(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    replica.apply(append_n(primary, 5))
    forged = primary.signer().sign_note(Checkpoint(ORIGIN, 5, b"\x07" * 32).body())

    with pytest.raises(DivergedError) as refused:
        replica.adopt_checkpoint(forged)

    assert refused.value.field == "checkpoint_root"
    assert refused.value.tree_size == 5
    assert refused.value.received == (b"\x07" * 32).hex()
    assert refused.value.expected == replica.root(5).hex()
    assert replica.latest_checkpoint() is None


def test_a_checkpoint_signed_by_another_key_is_refused(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    replica.apply(append_n(primary, 5))
    stranger = Signer.generate(primary.signer().name)
    forged = stranger.sign_note(Checkpoint(ORIGIN, 5, replica.root(5)).body())

    with pytest.raises(DivergedError, match="does not verify") as refused:
        replica.adopt_checkpoint(forged)

    assert refused.value.field == "checkpoint_signature"
    assert replica.latest_checkpoint() is None


def test_a_checkpoint_beyond_the_replicas_records_waits(
    primary: WORMLedger, replica: WORMLedger
) -> None:
    written = append_n(primary, 5)
    note = primary.checkpoint()
    replica.apply(written[:3])

    with pytest.raises(TreeSizeError):
        replica.adopt_checkpoint(note)

    assert replica.latest_checkpoint() is None
