"""Full verification: it passes a clean file and names the first tampered seq."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import ORIGIN, fold_wal, raw_connect
from penin.ledger.errors import NotALedgerError
from penin.ledger.ledger import WORMLedger
from penin.ledger.merkle import Frontier
from penin.ledger.note import Checkpoint, Signer, Verifier
from penin.ledger.record import record_leaf_hash
from penin.ledger.store import node_id
from penin.ledger.verify import VerifyReport, verify_file

RECORDS = 20
MARKER = "tamper-target"
TARGET_SEQ = 13


@pytest.fixture
def closed(tmp_path: Path) -> Iterator[tuple[Path, Verifier]]:
    """A closed ledger of 20 records, checkpointed at 10 and at 20."""
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as led:
        for seq in range(RECORDS):
            payload = {"marker": MARKER} if seq == TARGET_SEQ else {"n": seq}
            led.append_record("test.event", payload)
            if seq + 1 in (10, RECORDS):
                led.checkpoint()
        trusted = led.verifier
    fold_wal(path)

    return path, trusted


def _sql(path: Path, *statements: str, params: tuple[object, ...] = ()) -> None:
    conn = raw_connect(path)
    try:
        for statement in statements[:-1]:
            conn.execute(statement)
        conn.execute(statements[-1], params)
    finally:
        conn.close()


def _failed_at(report: VerifyReport, seq: int | None, reason: str) -> None:
    assert not report.ok
    assert report.first_bad_seq == seq
    assert reason in (report.reason or "")


# -- clean files ------------------------------------------------------------------


def test_a_clean_ledger_verifies_every_record_and_checkpoint(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    report = verify_file(path, trusted)

    assert report.ok
    assert (report.records_checked, report.tree_size) == (RECORDS, RECORDS)
    assert report.checkpoints_checked == 2
    assert report.warnings == []


def test_without_a_trusted_key_verification_warns_it_trusts_the_file(
    closed: tuple[Path, Verifier],
) -> None:
    path, _ = closed

    report = verify_file(path)

    assert report.ok
    assert any("--vkey" in w for w in report.warnings)


def test_an_empty_ledger_verifies(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as led:
        led.checkpoint()

    report = verify_file(path)

    assert report.ok
    assert (report.records_checked, report.checkpoints_checked) == (0, 1)


def test_progress_is_reported_up_to_the_tree_size(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    seen: list[tuple[int, int]] = []

    verify_file(path, trusted, lambda done, total: seen.append((done, total)))

    assert seen[-1] == (RECORDS, RECORDS)


# -- records --------------------------------------------------------------------


def test_one_payload_byte_changed_by_sql_is_named_by_seq(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "DROP TRIGGER records_no_update",
        "UPDATE records SET payload = replace(payload, 'tamper', 'tamber')"
        " WHERE seq = ?",
        params=(TARGET_SEQ,),
    )

    _failed_at(verify_file(path, trusted), TARGET_SEQ, "leaf hash does not match")


def test_one_byte_flipped_in_the_file_on_disk_is_named_by_seq(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    data = bytearray(path.read_bytes())
    at = data.find(MARKER.encode())
    assert at > 0
    assert data.count(MARKER.encode()) == 1

    data[at] ^= 0x01  # "t" becomes "u": the page stays well-formed
    path.write_bytes(bytes(data))

    _failed_at(verify_file(path, trusted), TARGET_SEQ, "leaf hash does not match")


def test_a_flipped_byte_in_the_file_header_fails_with_a_named_reason(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    data = bytearray(path.read_bytes())

    data[0] ^= 0x01  # the magic string "SQLite format 3"
    path.write_bytes(bytes(data))

    with pytest.raises(NotALedgerError, match=f"{path} is not a PENIN ledger"):
        verify_file(path, trusted)


def test_a_record_rewritten_with_its_own_leaf_hash_breaks_the_chain(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    conn = raw_connect(path)
    row = conn.execute(
        "SELECT seq, ts, event_type, payload, term, prev_hash, idempotency_key"
        " FROM records WHERE seq = 4"
    ).fetchone()
    conn.close()
    forged = (*row[:3], json.dumps({"n": 400}), *row[4:])

    _sql(
        path,
        "DROP TRIGGER records_no_update",
        "UPDATE records SET payload = ?, leaf_hash = ? WHERE seq = 4",
        params=(forged[3], record_leaf_hash(*forged)),
    )

    # Seq 4 completes no subtree, so the next record is the first to disagree.
    _failed_at(verify_file(path, trusted), 5, "prev_hash does not match")


def test_the_newest_record_rewritten_with_all_its_hashes_fails_the_checkpoint(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    conn = raw_connect(path)
    rows = conn.execute(
        "SELECT seq, ts, event_type, payload, term, prev_hash, idempotency_key"
        " FROM records ORDER BY seq"
    ).fetchall()
    conn.close()
    *_, last = rows
    forged = (*last[:3], '{"n":"forged"}', *last[4:])
    frontier = Frontier()
    for row in rows[:-1]:
        frontier.append(record_leaf_hash(*row))
    closed_nodes = frontier.append(record_leaf_hash(*forged))
    _sql(path, "DROP TRIGGER records_no_update", "DROP TRIGGER nodes_no_update")

    _sql(
        path,
        "UPDATE records SET payload = ?, leaf_hash = ? WHERE seq = ?",
        params=(forged[3], record_leaf_hash(*forged), last[0]),
    )
    for level, h in closed_nodes:
        _sql(
            path,
            "UPDATE nodes SET hash = ? WHERE id = ?",
            params=(h, node_id(last[0], level)),
        )

    _failed_at(
        verify_file(path, trusted), RECORDS - 1, f"root at size {RECORDS} differs"
    )


def test_a_deleted_record_is_named_as_missing(closed: tuple[Path, Verifier]) -> None:
    path, trusted = closed

    _sql(path, "DROP TRIGGER records_no_delete", "DELETE FROM records WHERE seq = 6")

    _failed_at(verify_file(path, trusted), 6, "record 6 is missing")


def test_a_record_inserted_after_the_tip_without_its_hashes_is_caught(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "INSERT INTO records SELECT seq + 1, ts, event_type, payload, term, prev_hash,"
        " NULL, leaf_hash FROM records WHERE seq = ?",
        params=(RECORDS - 1,),
    )

    _failed_at(verify_file(path, trusted), RECORDS, "does not match")


# -- nodes --------------------------------------------------------------------


def test_a_deleted_subtree_hash_is_named_by_the_seq_that_completes_it(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "DROP TRIGGER nodes_no_delete",
        "DELETE FROM nodes WHERE id = ?",
        params=(node_id(7, 3),),
    )

    _failed_at(verify_file(path, trusted), 7, "subtree at level 3 is missing")


def test_a_changed_subtree_hash_is_named_by_the_seq_that_completes_it(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "DROP TRIGGER nodes_no_update",
        "UPDATE nodes SET hash = zeroblob(32) WHERE id = ?",
        params=(node_id(11, 1),),
    )

    _failed_at(verify_file(path, trusted), 11, "level 1 has the wrong hash")


def test_an_inserted_subtree_hash_is_caught(closed: tuple[Path, Verifier]) -> None:
    path, trusted = closed

    _sql(
        path,
        "INSERT INTO nodes (id, hash) VALUES (?, zeroblob(32))",
        params=(node_id(RECORDS + 5, 1),),
    )

    _failed_at(verify_file(path, trusted), None, "subtrees no record completes")


def test_a_subtree_hash_inserted_mid_tree_is_caught(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "INSERT INTO nodes (id, hash) VALUES (?, zeroblob(32))",
        params=(node_id(4, 1) + 1,),
    )

    report = verify_file(path, trusted)

    assert not report.ok
    assert report.first_bad_seq == 5


# -- checkpoints ------------------------------------------------------------------


def test_an_altered_checkpoint_note_fails_at_its_size(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "DROP TRIGGER checkpoints_no_update",
        "UPDATE checkpoints SET note = replace(note, '\n10\n', '\n11\n')"
        " WHERE tree_size = 10",
    )

    _failed_at(verify_file(path, trusted), 9, "checkpoint at size 10")


def test_a_checkpoint_resigned_with_another_key_fails_against_the_trusted_key(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    conn = raw_connect(path)
    root = conn.execute("SELECT root FROM checkpoints WHERE tree_size = 10").fetchone()
    conn.close()
    forged = Signer.generate(ORIGIN).sign_note(Checkpoint(ORIGIN, 10, root[0]).body())

    _sql(
        path,
        "DROP TRIGGER checkpoints_no_update",
        "UPDATE checkpoints SET note = ? WHERE tree_size = 10",
        params=(forged,),
    )

    _failed_at(verify_file(path, trusted), 9, "not signed by")


def test_a_file_resigned_throughout_passes_only_its_own_key(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed
    impostor = Signer.generate(ORIGIN)
    conn = raw_connect(path)
    heads = conn.execute("SELECT tree_size, root FROM checkpoints").fetchall()
    conn.close()
    _sql(path, "DROP TRIGGER checkpoints_no_update", "DROP TRIGGER meta_no_update")

    for size, root in heads:
        _sql(
            path,
            "UPDATE checkpoints SET note = ? WHERE tree_size = ?",
            params=(impostor.sign_note(Checkpoint(ORIGIN, size, root).body()), size),
        )
    _sql(
        path,
        "UPDATE meta SET value = ? WHERE key = 'vkey'",
        params=(impostor.verifier.vkey,),
    )

    assert verify_file(path).ok
    _failed_at(verify_file(path, trusted), None, f"not the trusted {trusted.vkey}")


def test_a_checkpoint_beyond_the_log_is_caught(closed: tuple[Path, Verifier]) -> None:
    path, trusted = closed

    _sql(
        path,
        "INSERT INTO checkpoints SELECT tree_size + 5, root, note, ts"
        " FROM checkpoints WHERE tree_size = ?",
        params=(RECORDS,),
    )

    _failed_at(verify_file(path, trusted), None, f"size {RECORDS + 5} is beyond")


def test_a_checkpoint_with_a_non_ascii_signature_fails_verification(
    closed: tuple[Path, Verifier],
) -> None:
    path, trusted = closed

    _sql(
        path,
        "DROP TRIGGER checkpoints_no_update",
        f"UPDATE checkpoints SET note = replace(note, '— {ORIGIN} ', '— {ORIGIN} é')"
        " WHERE tree_size = 10",
    )

    _failed_at(verify_file(path, trusted), 9, "checkpoint at size 10")


# -- files that are not ledgers ---------------------------------------------------


def test_a_foreign_sqlite_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = raw_connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()

    with pytest.raises(NotALedgerError, match="no meta table"):
        verify_file(path)
