"""The SQLite file behind a ledger: schema, pragmas, append-only triggers, reads.

Tables: ``records`` (one row a leaf), ``nodes`` (every complete interior
subtree, keyed so that rows sort in the order appends complete them),
``checkpoints`` (signed notes by tree size) and ``meta`` (format, origin and
verifier key, written once at init). Triggers abort every UPDATE and DELETE on
all four, so no code path and no ``sqlite3`` shell can rewrite history without
first dropping them, which verification then catches by the hashes. One more
trigger fences terms: a record whose term is older than the term of the record
before it is refused, whoever inserts it.

Two tables sit outside the ledger. ``probe`` is a single row that the health
check rewrites and reads back, proving the file takes writes without adding
records to the log. ``replica`` holds one row while the file is a replica's
copy of a primary's ledger, naming that primary; appends are refused then.

Objects added after the first release are created when an older file is
opened for writing (``migrate``), so every ledger in use has them.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path

from penin.ledger.errors import FencedError, LedgerUnavailableError, NotALedgerError
from penin.ledger.merkle import Subtree
from penin.ledger.record import Record

FORMAT = "penin-ledger/1"
_LEVEL_BITS = 6

# REPLACE deletes the row it collides with without firing DELETE triggers, so
# an insert that would collide with a row is refused before it happens.
_CLASHES = {
    "records": "EXISTS (SELECT 1 FROM records WHERE seq = NEW.seq"
    " OR idempotency_key = NEW.idempotency_key)",
    "nodes": "EXISTS (SELECT 1 FROM nodes WHERE id = NEW.id)",
    "checkpoints": "EXISTS (SELECT 1 FROM checkpoints WHERE tree_size = NEW.tree_size)",
    "meta": "EXISTS (SELECT 1 FROM meta WHERE key = NEW.key)",
}

# Terms never go down along seq, so the last record's term is the highest;
# reading it is one step down the primary key.
TERM_FENCE = """
CREATE TRIGGER IF NOT EXISTS records_term_fence BEFORE INSERT ON records
WHEN NEW.term < (SELECT term FROM records ORDER BY seq DESC LIMIT 1)
BEGIN
    SELECT RAISE(ABORT, 'the ledger is fenced: an older term after a newer one');
END;
"""
REPLICA_TABLE = """
CREATE TABLE IF NOT EXISTS replica (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    primary_name TEXT NOT NULL,
    primary_url  TEXT NOT NULL,
    since        TEXT NOT NULL
);
"""
# What older files may lack, by its entry in sqlite_master.
_ADDED_LATER = {
    ("trigger", "records_term_fence"): TERM_FENCE,
    ("table", "replica"): REPLICA_TABLE,
}

SCHEMA = (
    """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE records (
    seq             INTEGER PRIMARY KEY,
    ts              TEXT    NOT NULL,
    event_type      TEXT    NOT NULL,
    payload         TEXT    NOT NULL,
    term            INTEGER NOT NULL,
    prev_hash       BLOB    NOT NULL,
    idempotency_key TEXT    UNIQUE,
    leaf_hash       BLOB    NOT NULL
);
CREATE INDEX records_ts ON records (ts);
CREATE INDEX records_event_type ON records (event_type, seq);
CREATE TABLE nodes (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL
);
CREATE TABLE checkpoints (
    tree_size INTEGER PRIMARY KEY,
    root      BLOB NOT NULL,
    note      TEXT NOT NULL,
    ts        TEXT NOT NULL
);
CREATE TABLE probe (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    nonce TEXT NOT NULL,
    ts    TEXT NOT NULL
);
"""
    + "".join(
        f"""
CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} cannot be updated'); END;
CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} cannot be deleted'); END;
CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} WHEN {clash}
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: {table} cannot be replaced'); END;
"""
        for table, clash in _CLASHES.items()
    )
    + "".join(_ADDED_LATER.values())
)

# The seed's tuning: 10,000 pages of cache, temp tables in memory, 256 MB mmap.
_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA cache_size=10000",
    "PRAGMA temp_store=MEMORY",
    "PRAGMA mmap_size=268435456",
    "PRAGMA busy_timeout=10000",
)


def node_id(last_leaf: int, level: int) -> int:
    """Key of a complete subtree: rows then sort in the order appends close them."""
    return (last_leaf << _LEVEL_BITS) | level


def subtree_id(tile: Subtree) -> int:
    first, level = tile
    return node_id(first + (1 << level) - 1, level)


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open the file with the ledger's pragmas; OperationalError is translated."""
    uri = f"file:{path}?mode=ro" if readonly else f"file:{path}"
    try:
        conn = sqlite3.connect(
            uri, uri=True, isolation_level=None, check_same_thread=False
        )
        for pragma in _PRAGMAS[1:] if readonly else _PRAGMAS:
            conn.execute(pragma)
    except sqlite3.DatabaseError as exc:
        raise translate(exc, path) from None

    return conn


def translate(exc: sqlite3.DatabaseError, path: Path) -> Exception:
    """Turn SQLite's error into the ledger's, naming the file and what to do."""
    message = str(exc)
    if "not a database" in message or "malformed" in message:
        return NotALedgerError(f"{path} is not a PENIN ledger ({message})")
    if "disk is full" in message or "disk I/O" in message:
        return LedgerUnavailableError(
            f"{path}: {message}; nothing was written, free space and retry"
        )
    if "is fenced" in message:
        return FencedError(f"{path}: {message}", field="term")
    if "readonly" in message or "unable to open" in message:
        return LedgerUnavailableError(
            f"{path}: {message}; check that the data directory exists and is writable"
        )

    return LedgerUnavailableError(f"{path}: {message}")


def create(conn: sqlite3.Connection, meta: dict[str, str]) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for statement in _statements(SCHEMA):
        conn.execute(statement)
    conn.executemany(
        "INSERT INTO meta (key, value) VALUES (?, ?)",
        [("format", FORMAT), *meta.items()],
    )
    conn.execute("COMMIT")


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Create what an older file lacks; the names of what was added.

    Each statement says IF NOT EXISTS, so two processes opening the same old
    file at once both succeed.
    """
    present = set(conn.execute("SELECT type, name FROM sqlite_master"))
    missing = {key: sql for key, sql in _ADDED_LATER.items() if key not in present}
    if not missing:
        return []
    conn.execute("BEGIN IMMEDIATE")
    try:
        for sql in missing.values():
            for statement in _statements(sql):
                conn.execute(statement)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise

    return [name for _, name in missing]


def last_term(conn: sqlite3.Connection) -> int:
    """The term of the newest record; 0 for an empty log."""
    row = conn.execute("SELECT term FROM records ORDER BY seq DESC LIMIT 1").fetchone()
    return 0 if row is None else int(row[0])


def replica_of(conn: sqlite3.Connection) -> tuple[str, str] | None:
    """The primary's name and URL while the file is a replica's copy."""
    row = conn.execute(
        "SELECT primary_name, primary_url FROM replica WHERE id = 1"
    ).fetchone()

    return None if row is None else (str(row[0]), str(row[1]))


def _statements(script: str) -> Iterator[str]:
    """Split the schema into statements, keeping trigger bodies whole."""
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer.strip()
            buffer = ""


def check_ledger(path: Path) -> None:
    """NotALedgerError unless ``path`` holds a ledger; the file is not changed.

    Runs before ``connect``, whose pragmas (WAL above all) would rewrite the
    header of a foreign SQLite file that was given by mistake.
    """
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.DatabaseError as exc:
        raise translate(exc, path) from None
    try:
        read_meta(conn, path)
    finally:
        conn.close()


def read_meta(conn: sqlite3.Connection, path: Path) -> dict[str, str]:
    try:
        rows = conn.execute("SELECT key, value FROM meta").fetchall()
    except sqlite3.DatabaseError as exc:
        if "no such table" in str(exc):
            raise NotALedgerError(
                f"{path} is not a PENIN ledger (no meta table)"
            ) from None
        raise translate(exc, path) from None
    meta = dict(rows)
    if meta.get("format") != FORMAT:
        raise NotALedgerError(
            f"{path} is not a PENIN ledger (format {meta.get('format')!r})"
        )

    return meta


def tree_size(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT max(seq) FROM records").fetchone()
    return 0 if row[0] is None else int(row[0]) + 1


def subtree_hashes(
    conn: sqlite3.Connection, tiles: Iterable[Subtree]
) -> dict[Subtree, bytes]:
    """Hashes of complete subtrees: leaves from ``records``, the rest from ``nodes``."""
    tiles = set(tiles)
    leaves = [first for first, level in tiles if level == 0]
    interior = {subtree_id(t): t for t in tiles if t[1] > 0}
    found: dict[Subtree, bytes] = {}
    for chunk in _chunks(leaves):
        marks = ",".join("?" * len(chunk))
        for seq, h in conn.execute(
            f"SELECT seq, leaf_hash FROM records WHERE seq IN ({marks})", chunk
        ):
            found[(seq, 0)] = h
    for chunk in _chunks(list(interior)):
        marks = ",".join("?" * len(chunk))
        for key, h in conn.execute(
            f"SELECT id, hash FROM nodes WHERE id IN ({marks})", chunk
        ):
            found[interior[key]] = h

    return found


def _chunks(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


RECORD_COLUMNS = (
    "seq, ts, event_type, payload, term, prev_hash, idempotency_key, leaf_hash"
)


def record_from_row(row: tuple[object, ...]) -> Record:
    seq, ts, event_type, payload, term, prev, key, leaf = row
    if not isinstance(prev, bytes) or not isinstance(leaf, bytes):
        raise NotALedgerError(f"record {seq} stores its hashes in the wrong type")

    return Record(
        seq=int(str(seq)),
        ts=str(ts),
        event_type=str(event_type),
        payload_json=str(payload),
        term=int(str(term)),
        prev_hash=prev.hex(),
        idempotency_key=None if key is None else str(key),
        leaf_hash=leaf.hex(),
    )
