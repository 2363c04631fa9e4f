"""RFC 9162 proofs and roots of a ledger file, from its stored subtrees.

Every complete subtree the log has grown is stored (``nodes``), so a root,
an inclusion proof or a consistency proof is a handful of lookups: the shape
of the proof comes from ``penin.ledger.merkle``, the hashes from the file.
Each function reads through one connection, so a proof is of one state of
the log.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from penin.ledger import merkle, store
from penin.ledger.errors import LedgerError, TreeSizeError


@dataclass(frozen=True)
class Proof:
    leaf_index: int
    tree_size: int
    hashes: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "hashes": [h.hex() for h in self.hashes],
        }


@dataclass(frozen=True)
class ConsistencyProof:
    old_size: int
    new_size: int
    hashes: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_size": self.old_size,
            "new_size": self.new_size,
            "hashes": [h.hex() for h in self.hashes],
        }


def root(conn: sqlite3.Connection, path: Path, tree_size: int | None = None) -> bytes:
    """The tree head at ``tree_size`` (the whole log when None)."""
    current = store.tree_size(conn)
    size = current if tree_size is None else tree_size
    _check_size(size, current)
    if size == 0:
        return merkle.EMPTY_ROOT

    return _hashes(conn, path, [(0, size)])[0]


def inclusion(
    conn: sqlite3.Connection, path: Path, seq: int, tree_size: int | None = None
) -> Proof:
    """The proof that record ``seq`` is in the tree of ``tree_size``."""
    current = store.tree_size(conn)
    size = current if tree_size is None else tree_size
    _check_size(size, current)
    if not 0 <= seq < size:
        raise TreeSizeError(
            f"seq {seq} is not in a tree of size {size}; ask for a larger --tree-size"
        )

    return Proof(seq, size, _hashes(conn, path, merkle.inclusion_ranges(seq, size)))


def consistency(
    conn: sqlite3.Connection, path: Path, old_size: int, new_size: int
) -> ConsistencyProof:
    """The proof that the tree of ``old_size`` is a prefix of ``new_size``'s."""
    current = store.tree_size(conn)
    _check_size(new_size, current)
    if not 0 <= old_size <= new_size:
        raise TreeSizeError(
            f"cannot prove size {old_size} against the smaller size {new_size}"
        )
    hashes = _hashes(conn, path, merkle.consistency_ranges(old_size, new_size))

    return ConsistencyProof(old_size, new_size, hashes)


def _check_size(size: int, current: int) -> None:
    if not 0 <= size <= current:
        raise TreeSizeError(
            f"tree size {size} is beyond the log, which has {current} records"
        )


def _hashes(
    conn: sqlite3.Connection, path: Path, ranges: list[merkle.Range]
) -> list[bytes]:
    tiles = [t for r in ranges for t in merkle.complete_subtrees(*r)]
    found = store.subtree_hashes(conn, tiles)
    missing = set(tiles) - found.keys()
    if missing:
        raise LedgerError(
            f"{path}: stored subtrees {sorted(missing)[:3]} are missing; "
            "run 'penin ledger verify'"
        )

    return merkle.proof_from_subtrees(ranges, found.__getitem__)
