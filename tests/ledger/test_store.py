"""The SQLite file: append-only triggers, and refusing files that are not ledgers."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
from pathlib import Path

import pytest

from helpers import ORIGIN, append_n, assert_intact, raw_connect
from penin.ledger.errors import NotALedgerError
from penin.ledger.ledger import WORMLedger

# A column of each table, for an UPDATE that would change nothing but the row.
TABLES = {"records": "term", "nodes": "hash", "checkpoints": "note", "meta": "value"}
RECORDS = 4

# A statement per table that rewrites one row in place by REPLACE: SQLite
# deletes the old row without firing DELETE triggers unless recursive
# triggers are on, so the triggers alone must not be what stops it.
REPLACEMENTS = {
    "records": "REPLACE INTO records SELECT seq, ts, event_type, '{\"forged\":1}',"
    " term, prev_hash, idempotency_key, leaf_hash FROM records WHERE seq = 0",
    "nodes": "REPLACE INTO nodes SELECT id, zeroblob(32) FROM nodes LIMIT 1",
    "checkpoints": "REPLACE INTO checkpoints SELECT tree_size, root, 'forged', ts"
    " FROM checkpoints LIMIT 1",
    "meta": "REPLACE INTO meta VALUES ('origin', 'forged.example/log')",
}


@pytest.fixture
def closed_ledger(tmp_path: Path) -> Path:
    """A ledger with a row in every table, closed so another process may open it."""
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as led:
        append_n(led, RECORDS)
        led.checkpoint()

    return path


def _sqlite_shell(path: Path, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["sqlite3", str(path), sql],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def _table_digest(path: Path, table: str) -> str:
    conn = raw_connect(path)
    try:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
    finally:
        conn.close()

    return hashlib.sha256(repr(rows).encode()).hexdigest()


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {0} SET {1} = {1}", "DELETE FROM {0}"])
def test_python_sqlite3_cannot_update_or_delete(
    closed_ledger: Path, table: str, statement: str
) -> None:
    before = _table_digest(closed_ledger, table)
    conn = raw_connect(closed_ledger)

    with pytest.raises(sqlite3.DatabaseError, match=f"append-only: {table} cannot"):
        conn.execute(statement.format(table, TABLES[table]))
    conn.close()

    assert _table_digest(closed_ledger, table) == before
    assert_intact(closed_ledger, RECORDS)


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("statement", ["UPDATE {0} SET {1} = {1}", "DELETE FROM {0}"])
def test_sqlite3_shell_cannot_update_or_delete(
    closed_ledger: Path, table: str, statement: str
) -> None:
    before = _table_digest(closed_ledger, table)

    result = _sqlite_shell(closed_ledger, statement.format(table, TABLES[table]))

    assert result.returncode != 0
    assert f"the ledger is append-only: {table} cannot" in result.stderr
    assert _table_digest(closed_ledger, table) == before
    assert_intact(closed_ledger, RECORDS)


@pytest.mark.parametrize("table", TABLES)
def test_sqlite3_shell_cannot_rewrite_a_row_by_replace(
    closed_ledger: Path, table: str
) -> None:
    before = _table_digest(closed_ledger, table)

    result = _sqlite_shell(closed_ledger, REPLACEMENTS[table])

    assert result.returncode != 0, f"REPLACE rewrote {table} with triggers in place"
    assert _table_digest(closed_ledger, table) == before


# -- files that are not ledgers -----------------------------------------------


def _foreign_database(path: Path) -> str:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.execute("INSERT INTO invoices (total) VALUES (12.5)")
    conn.commit()
    conn.close()

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_foreign_sqlite_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    _foreign_database(path)

    with pytest.raises(NotALedgerError, match=f"{path} is not a PENIN ledger"):
        WORMLedger(path).initialize()


def test_a_foreign_sqlite_file_is_left_exactly_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    digest = _foreign_database(path)

    with pytest.raises(NotALedgerError):
        WORMLedger(path).initialize()

    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert not Path(f"{path}-wal").exists()


@pytest.mark.parametrize(
    "content",
    [b"this is a text file, not a database\n" * 20, bytes(range(256)) * 16],
    ids=["text", "binary"],
)
def test_a_file_that_is_not_sqlite_is_refused_by_name(
    tmp_path: Path, content: bytes
) -> None:
    path = tmp_path / "ledger.db"
    path.write_bytes(content)

    with pytest.raises(NotALedgerError, match="not a PENIN ledger"):
        WORMLedger(path).initialize()

    assert path.read_bytes() == content


def test_a_missing_ledger_is_named_with_what_to_do(tmp_path: Path) -> None:
    led = WORMLedger(tmp_path / "absent.db")

    with pytest.raises(NotALedgerError, match="run 'penin ledger init' first"):
        led.count_records()


def test_initialize_twice_keeps_the_first_origin_and_key(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    with WORMLedger(path).initialize(ORIGIN) as first:
        vkey = first.verifier.vkey

    with WORMLedger(path).initialize("test.local/other") as second:
        assert second.origin == ORIGIN
        assert second.verifier.vkey == vkey
