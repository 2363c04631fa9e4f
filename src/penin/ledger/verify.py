"""Full verification of a ledger file, streamed in seq order in constant memory.

For every record it rebuilds the canonical bytes from the stored columns and
recomputes the leaf hash, checks ``prev_hash`` against the previous leaf, grows
the tree edge, and compares every subtree the leaf completes with the stored
``nodes`` row; at each checkpoint's size it compares the root and checks the
signature. The first difference ends the run and names its seq.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from penin.ledger import store
from penin.ledger.errors import NotALedgerError
from penin.ledger.merkle import Frontier
from penin.ledger.note import NoteError, Verifier, open_checkpoint
from penin.ledger.record import ZERO_HASH, record_leaf_hash

Progress = Callable[[int, int], None]
_BATCH = 4096


@dataclass
class VerifyReport:
    ok: bool
    records_checked: int
    tree_size: int
    checkpoints_checked: int = 0
    first_bad_seq: int | None = None
    reason: str | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Mismatch(Exception):
    def __init__(self, seq: int | None, reason: str) -> None:
        super().__init__(reason)
        self.seq = seq
        self.reason = reason


def verify_file(
    path: Path,
    verifier: Verifier | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """Verify the ledger at ``path`` against ``verifier`` (default: its own vkey)."""
    conn = store.connect(path, readonly=True)
    try:
        return _verify(conn, path, verifier, progress)
    except sqlite3.DatabaseError as exc:
        error = store.translate(exc, path)
        return VerifyReport(False, 0, 0, reason=str(error))
    finally:
        conn.close()


def _verify(
    conn: sqlite3.Connection,
    path: Path,
    verifier: Verifier | None,
    progress: Progress | None,
) -> VerifyReport:
    meta = store.read_meta(conn, path)
    warnings = []
    stored = Verifier.from_vkey(meta["vkey"])
    if verifier is None:
        verifier = stored
        warnings.append(
            "checked against the verifier key stored in the file itself; "
            "give a trusted key (--vkey or the key file) to detect a re-signed file"
        )
    elif verifier.vkey != stored.vkey:
        return VerifyReport(
            False, 0, 0,
            reason=f"the file names key {stored.vkey}, not the trusted {verifier.vkey}",
        )  # fmt: skip
    conn.execute("BEGIN")  # one snapshot for every cursor below
    try:
        size = store.tree_size(conn)
        report = VerifyReport(True, 0, size, warnings=warnings)
        try:
            _walk(conn, size, meta["origin"], verifier, report, progress)
        except _Mismatch as bad:
            report.ok = False
            report.first_bad_seq = bad.seq
            report.reason = bad.reason
    finally:
        conn.execute("COMMIT")

    return report


def _rows(conn: sqlite3.Connection, sql: str) -> Iterator[tuple[Any, ...]]:
    cursor = conn.execute(sql)
    while batch := cursor.fetchmany(_BATCH):
        yield from batch


def _walk(
    conn: sqlite3.Connection,
    size: int,
    origin: str,
    verifier: Verifier,
    report: VerifyReport,
    progress: Progress | None,
) -> None:
    records = _rows(conn, f"SELECT {store.RECORD_COLUMNS} FROM records ORDER BY seq")
    nodes = _rows(conn, "SELECT id, hash FROM nodes ORDER BY id")
    checkpoints = _rows(
        conn, "SELECT tree_size, root, note FROM checkpoints ORDER BY tree_size"
    )
    next_checkpoint = next(checkpoints, None)
    frontier = Frontier()
    prev = ZERO_HASH
    expected_seq = 0
    while next_checkpoint is not None and next_checkpoint[0] == 0:
        _check_checkpoint(next_checkpoint, frontier, origin, verifier)
        report.checkpoints_checked += 1
        next_checkpoint = next(checkpoints, None)
    for seq, ts, event_type, payload, term, prev_hash, key, leaf in records:
        if seq != expected_seq:
            raise _Mismatch(expected_seq, f"record {expected_seq} is missing")
        if prev_hash != prev:
            raise _Mismatch(seq, "prev_hash does not match the previous leaf hash")
        computed = record_leaf_hash(seq, ts, event_type, payload, term, prev_hash, key)
        if computed != leaf:
            raise _Mismatch(seq, "leaf hash does not match the record's contents")
        for level, h in frontier.append(leaf):
            row = next(nodes, None)
            if row is None or row[0] != store.node_id(seq, level):
                raise _Mismatch(seq, f"stored subtree at level {level} is missing")
            if row[1] != h:
                raise _Mismatch(seq, f"stored subtree at level {level} has the wrong hash")
        prev = leaf
        expected_seq += 1
        while next_checkpoint is not None and next_checkpoint[0] == expected_seq:
            _check_checkpoint(next_checkpoint, frontier, origin, verifier)
            report.checkpoints_checked += 1
            next_checkpoint = next(checkpoints, None)
        if progress is not None and expected_seq % _BATCH == 0:
            progress(expected_seq, size)
    report.records_checked = expected_seq
    if progress is not None:
        progress(expected_seq, size)
    if next(nodes, None) is not None:
        raise _Mismatch(None, "the nodes table holds subtrees no record completes")
    if next_checkpoint is not None:
        raise _Mismatch(
            None, f"checkpoint at size {next_checkpoint[0]} is beyond the log"
        )


def _check_checkpoint(
    row: tuple[Any, ...], frontier: Frontier, origin: str, verifier: Verifier
) -> None:
    tree_size, root, note = row
    where = max(tree_size - 1, 0)
    try:
        checkpoint = open_checkpoint(note, verifier)
    except NoteError as exc:
        raise _Mismatch(where, f"checkpoint at size {tree_size}: {exc}") from None
    if checkpoint.origin != origin or checkpoint.tree_size != tree_size:
        raise _Mismatch(where, f"checkpoint at size {tree_size} names another log")
    actual = frontier.root()
    if checkpoint.root != actual or root != actual:
        raise _Mismatch(where, f"root at size {tree_size} differs from its checkpoint")


def require_ledger(path: Path) -> None:
    if not path.exists():
        raise NotALedgerError(f"no ledger at {path}; run 'penin ledger init' first")
