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


class _MismatchError(Exception):
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
            _walk(conn, meta["origin"], verifier, report, progress)
        except _MismatchError as bad:
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


class _Walk:
    """One pass over records, nodes and checkpoints, all in seq order."""

    def __init__(
        self, conn: sqlite3.Connection, origin: str, verifier: Verifier
    ) -> None:
        self.nodes = _rows(conn, "SELECT id, hash FROM nodes ORDER BY id")
        self.checkpoints = _rows(
            conn, "SELECT tree_size, root, note FROM checkpoints ORDER BY tree_size"
        )
        self.pending = next(self.checkpoints, None)
        self.origin = origin
        self.verifier = verifier
        self.frontier = Frontier()
        self.prev = ZERO_HASH
        self.checkpoints_checked = 0

    def record(self, row: tuple[Any, ...]) -> None:
        seq, ts, event_type, payload, term, prev_hash, key, leaf = row
        if seq != self.frontier.size:
            raise _MismatchError(
                self.frontier.size, f"record {self.frontier.size} is missing"
            )
        if prev_hash != self.prev:
            raise _MismatchError(seq, "prev_hash does not match the previous leaf hash")
        computed = record_leaf_hash(seq, ts, event_type, payload, term, prev_hash, key)
        if computed != leaf:
            raise _MismatchError(seq, "leaf hash does not match the record's contents")
        for level, h in self.frontier.append(leaf):
            self.node(seq, level, h)
        self.prev = leaf

    def node(self, seq: int, level: int, expected: bytes) -> None:
        row = next(self.nodes, None)
        if row is None or row[0] != store.node_id(seq, level):
            raise _MismatchError(seq, f"stored subtree at level {level} is missing")
        if row[1] != expected:
            raise _MismatchError(
                seq, f"stored subtree at level {level} has the wrong hash"
            )

    def checkpoints_at_current_size(self) -> None:
        while self.pending is not None and self.pending[0] == self.frontier.size:
            _check_checkpoint(self.pending, self.frontier, self.origin, self.verifier)
            self.checkpoints_checked += 1
            self.pending = next(self.checkpoints, None)

    def finish(self) -> None:
        if next(self.nodes, None) is not None:
            raise _MismatchError(
                None, "the nodes table holds subtrees no record completes"
            )
        if self.pending is not None:
            raise _MismatchError(
                None, f"checkpoint at size {self.pending[0]} is beyond the log"
            )


def _walk(
    conn: sqlite3.Connection,
    origin: str,
    verifier: Verifier,
    report: VerifyReport,
    progress: Progress | None,
) -> None:
    walk = _Walk(conn, origin, verifier)
    records = _rows(conn, f"SELECT {store.RECORD_COLUMNS} FROM records ORDER BY seq")
    try:
        walk.checkpoints_at_current_size()
        for row in records:
            walk.record(row)
            walk.checkpoints_at_current_size()
            if progress is not None and walk.frontier.size % _BATCH == 0:
                progress(walk.frontier.size, report.tree_size)
        walk.finish()
    finally:
        report.records_checked = walk.frontier.size
        report.checkpoints_checked = walk.checkpoints_checked
    if progress is not None:
        progress(walk.frontier.size, report.tree_size)


def _check_checkpoint(
    row: tuple[Any, ...], frontier: Frontier, origin: str, verifier: Verifier
) -> None:
    tree_size, root, note = row
    where = max(tree_size - 1, 0)
    try:
        checkpoint = open_checkpoint(note, verifier)
    except NoteError as exc:
        raise _MismatchError(where, f"checkpoint at size {tree_size}: {exc}") from None
    if checkpoint.origin != origin or checkpoint.tree_size != tree_size:
        raise _MismatchError(where, f"checkpoint at size {tree_size} names another log")
    actual = frontier.root()
    if checkpoint.root != actual or root != actual:
        raise _MismatchError(
            where, f"root at size {tree_size} differs from its checkpoint"
        )


def require_ledger(path: Path) -> None:
    if not path.exists():
        raise NotALedgerError(f"no ledger at {path}; run 'penin ledger init' first")
