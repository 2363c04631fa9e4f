"""WORMLedger's API: appends, reads, idempotency, checkpoints and keys."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from helpers import ORIGIN, append_n, assert_intact, raw_connect
from penin.ledger import merkle
from penin.ledger.errors import (
    CheckpointRefusedError,
    InvalidRecordError,
    KeyFileError,
    RecordNotFoundError,
    TreeSizeError,
)
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import Checkpoint, Signer, open_checkpoint
from penin.ledger.record import ZERO_HASH

# -- appends ------------------------------------------------------------------


def test_records_are_numbered_from_zero_and_chained(ledger: WORMLedger) -> None:
    records = [ledger.append_record("test.event", {"n": i}) for i in range(5)]

    assert [r.seq for r in records] == [0, 1, 2, 3, 4]
    assert records[0].prev_hash == ZERO_HASH.hex()
    for previous, record in itertools.pairwise(records):
        assert record.prev_hash == previous.leaf_hash
    assert [r.ts for r in records] == sorted(r.ts for r in records)
    assert {r.term for r in records} == {0}


def test_an_appended_record_reads_back_identically(ledger: WORMLedger) -> None:
    payload = {"model": "gpt", "cost": 0.25, "tags": ["a", "ü"], "nested": {"ok": True}}

    appended = ledger.append_record("router.request", payload, idempotency_key="r-1")

    assert ledger.get(appended.seq) == appended
    assert appended.payload == payload
    assert appended.event_type == "router.request"
    assert appended.idempotency_key == "r-1"


def test_appends_survive_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as led:
        first = append_n(led, 3)

    with WORMLedger(path).initialize() as led:
        more = led.append_record("test.event", {"after": "reopen"})

        assert led.count_records() == 4
        assert led.get(2) == first[2]
    assert more.seq == 3
    assert more.prev_hash == first[2].leaf_hash
    assert_intact(path, 4)


def test_append_many_gives_contiguous_seqs_in_order(ledger: WORMLedger) -> None:
    ledger.append_record("test.event", {"before": True})

    records = ledger.append_many([("test.event", {"n": i}) for i in range(50)])

    assert [r.seq for r in records] == list(range(1, 51))
    assert [r.payload["n"] for r in records] == list(range(50))


def test_append_many_of_nothing_appends_nothing(ledger: WORMLedger) -> None:
    assert ledger.append_many([]) == []
    assert ledger.count_records() == 0


def test_append_many_with_one_bad_record_appends_none(ledger: WORMLedger) -> None:
    batch = [("test.event", {"n": 1}), ("test.event", {"n": float("inf")})]

    with pytest.raises(InvalidRecordError):
        ledger.append_many(batch)

    assert ledger.count_records() == 0


# -- idempotency ----------------------------------------------------------------


def test_a_reused_idempotency_key_returns_the_original_record(
    ledger: WORMLedger,
) -> None:
    original = ledger.append_record("test.event", {"try": 1}, idempotency_key="once")

    again = ledger.append_record("test.event", {"try": 2}, idempotency_key="once")

    assert again == original
    assert ledger.count_records() == 1


def test_a_reused_key_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as led:
        original = led.append_record("test.event", {}, idempotency_key="k")

    with WORMLedger(path).initialize() as led:
        assert led.append_record("test.event", {}, idempotency_key="k") == original
        assert led.count_records() == 1


def test_a_key_repeated_within_one_append_many_appends_once(
    ledger: WORMLedger,
) -> None:
    records = ledger.append_many(
        [
            ("test.event", {"n": 1}, "dup"),
            ("test.event", {"n": 2}, None),
            ("test.event", {"n": 3}, "dup"),
        ]
    )

    assert records[2] == records[0]
    assert [r.seq for r in records] == [0, 1, 0]
    assert ledger.count_records() == 2


def test_records_without_a_key_are_never_merged(ledger: WORMLedger) -> None:
    a = ledger.append_record("test.event", {"same": 1})
    b = ledger.append_record("test.event", {"same": 1})

    assert a.seq != b.seq
    assert ledger.count_records() == 2


# -- reads ----------------------------------------------------------------------


def test_get_of_an_unknown_seq_names_it_and_the_range(ledger: WORMLedger) -> None:
    append_n(ledger, 3)

    with pytest.raises(RecordNotFoundError, match=r"no record with seq 7.* 0 to 2"):
        ledger.get(7)


@pytest.mark.parametrize("seq", [-1, 2**63, 10**40])
def test_a_seq_beyond_sqlite_integers_is_simply_not_found(
    ledger: WORMLedger, seq: int
) -> None:
    append_n(ledger, 1)

    with pytest.raises(RecordNotFoundError, match=f"no record with seq {seq}"):
        ledger.get(seq)
    assert ledger.query(after_seq=seq) == ([] if seq > 0 else [ledger.get(0)])


def test_query_filters_by_event_type_and_seq(ledger: WORMLedger) -> None:
    for i in range(6):
        ledger.append_record("test.even" if i % 2 == 0 else "test.odd", {"i": i})

    odd = ledger.query(event_type="test.odd")
    later = ledger.query(after_seq=3)
    two = ledger.query(limit=2)

    assert [r.seq for r in odd] == [1, 3, 5]
    assert [r.seq for r in later] == [4, 5]
    assert [r.seq for r in two] == [0, 1]


def test_query_by_time_includes_since_and_excludes_until(ledger: WORMLedger) -> None:
    records = append_n(ledger, 3)
    ts = records[0].ts

    assert len(ledger.query(since=ts)) == 3
    assert ledger.query(until=ts) == []
    assert (
        ledger.query(since="2000-01-01T00:00:00Z", until="2000-01-02T00:00:00Z") == []
    )


@pytest.mark.parametrize("limit", [0, -1, 1001])
def test_query_limit_outside_its_range_is_refused(
    ledger: WORMLedger, limit: int
) -> None:
    with pytest.raises(TreeSizeError, match="limit must be between 1 and 1000"):
        ledger.query(limit=limit)


def test_root_of_an_empty_ledger_is_the_empty_tree_hash(ledger: WORMLedger) -> None:
    assert ledger.root() == merkle.EMPTY_ROOT
    assert ledger.count_records() == 0


# -- checkpoints ----------------------------------------------------------------


def test_checkpoint_signs_the_current_tree_head(ledger: WORMLedger) -> None:
    append_n(ledger, 7)

    note = ledger.checkpoint()

    assert open_checkpoint(note, ledger.verifier) == Checkpoint(
        ORIGIN, 7, ledger.root()
    )
    assert ledger.latest_checkpoint() == note


def test_checkpoint_at_an_unchanged_size_returns_the_same_note(
    ledger: WORMLedger,
) -> None:
    append_n(ledger, 2)

    assert ledger.checkpoint() == ledger.checkpoint()


def test_successive_checkpoints_are_consistent(ledger: WORMLedger) -> None:
    append_n(ledger, 3)
    first = open_checkpoint(ledger.checkpoint(), ledger.verifier)
    append_n(ledger, 10)
    second = open_checkpoint(ledger.checkpoint(), ledger.verifier)

    proof = ledger.consistency_proof(first.tree_size, second.tree_size)

    assert merkle.verify_consistency(3, 13, first.root, second.root, proof.hashes)


def test_checkpoint_without_the_key_file_names_the_missing_file(
    ledger: WORMLedger,
) -> None:
    append_n(ledger, 1)
    ledger.key_path.unlink()

    with pytest.raises(KeyFileError, match=f"{ledger.key_path} is missing"):
        ledger.checkpoint()

    assert ledger.latest_checkpoint() is None


def test_checkpoint_with_another_ledgers_key_is_refused(
    ledger: WORMLedger, tmp_path: Path
) -> None:
    append_n(ledger, 1)
    with WORMLedger(tmp_path / "other.db").initialize(ORIGIN) as other:
        ledger.key_path.write_text(other.key_path.read_text())

    with pytest.raises(KeyFileError, match="use the ledger's own key"):
        ledger.checkpoint()

    assert ledger.latest_checkpoint() is None


def test_checkpoint_with_a_garbled_key_file_says_so(ledger: WORMLedger) -> None:
    ledger.key_path.write_text("not a key\n")

    with pytest.raises(KeyFileError, match="is not a signing key"):
        ledger.checkpoint()


def test_signing_is_refused_after_a_forged_checkpoint(ledger: WORMLedger) -> None:
    append_n(ledger, 2)
    forged = Signer.generate(ORIGIN).sign_note(
        Checkpoint(ORIGIN, 2, ledger.root(2)).body()
    )
    conn = raw_connect(ledger.path)
    conn.execute(
        "INSERT INTO checkpoints (tree_size, root, note, ts) VALUES (2, ?, ?, '')",
        (ledger.root(2), forged),
    )
    conn.close()
    append_n(ledger, 1)

    with pytest.raises(CheckpointRefusedError, match="does not verify"):
        ledger.checkpoint()

    assert ledger.latest_checkpoint() == forged


def test_closed_ledger_is_readable_with_plain_sqlite(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    led = WORMLedger(path).initialize(ORIGIN)
    append_n(led, 2)
    led.close()

    conn = sqlite3.connect(path)
    count = conn.execute("SELECT count(*) FROM records").fetchone()[0]
    conn.close()

    assert count == 2
    assert_intact(path, 2)
