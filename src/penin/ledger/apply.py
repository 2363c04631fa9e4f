"""The apply path's checks: records and checkpoints a replica takes from a primary.

A replica stores the primary's records exactly as written (same seq, ts,
term, prev_hash, idempotency key and leaf hash), so it must prove each one
extends its own log before storing it: the seq is the next, ``prev_hash`` is
the leaf hash of the tip, the fields are well formed and hash to the leaf hash
sent, the term is not older than the tip's, and the time does not go back.
A checkpoint is taken only if it is signed by the ledger's key, names this
log, signs the root this ledger computes at its size, and extends the newest
checkpoint already stored. The first difference refuses the whole batch with
a ``DivergedError`` (or ``FencedError`` for a term) saying what differs.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from penin.ledger import merkle, store
from penin.ledger.errors import DivergedError, FencedError, InvalidRecordError
from penin.ledger.merkle import Frontier
from penin.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from penin.ledger.record import (
    Record,
    canonical_payload,
    check_event_type,
    check_idempotency_key,
    parse_payload_json,
    record_leaf_hash,
)

_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}Z")
_HASH = re.compile(r"[0-9a-f]{64}")


@dataclass
class Tip:
    """The end of a log: its tree edge, and the last record's leaf, time and term."""

    frontier: Frontier
    leaf: bytes
    ts: str
    term: int


Row = tuple[object, ...]


def extend(
    tip: Tip, records: Sequence[Record]
) -> tuple[list[Row], list[tuple[int, bytes]]]:
    """Check ``records`` against ``tip`` and extend it by them.

    Returns the ``records`` rows and ``nodes`` rows to insert. On the first
    record that does not extend the log, raises; ``tip`` is then partly
    advanced, so the caller restores its own copy.
    """
    rows: list[Row] = []
    nodes: list[tuple[int, bytes]] = []
    for record in records:
        leaf = _check(tip, record)
        rows.append(
            (
                record.seq, record.ts, record.event_type, record.payload_json,
                record.term, tip.leaf, record.idempotency_key, leaf,
            )
        )  # fmt: skip
        for level, h in tip.frontier.append(leaf):
            nodes.append((store.node_id(record.seq, level), h))
        tip.leaf, tip.ts, tip.term = leaf, record.ts, record.term

    return rows, nodes


def _check(tip: Tip, record: Record) -> bytes:
    """The record's leaf hash, once it is shown to extend ``tip``."""
    seq = record.seq
    expected_seq = tip.frontier.size
    if seq != expected_seq:
        raise DivergedError(
            f"record {seq} is not the next record: this ledger ends before seq "
            f"{expected_seq}",
            seq=seq, field="seq", expected=expected_seq, received=seq,
        )  # fmt: skip
    if record.prev_hash != tip.leaf.hex():
        raise DivergedError(
            f"record {seq}: prev_hash {record.prev_hash} is not the leaf hash "
            f"{tip.leaf.hex()} of the record before it here",
            seq=seq, field="prev_hash", expected=tip.leaf.hex(),
            received=record.prev_hash,
        )  # fmt: skip
    if record.term < tip.term:
        raise FencedError(
            f"record {seq} is of term {record.term}, older than term {tip.term} "
            "of the record before it: a deposed primary wrote it",
            seq=seq, field="term", expected=tip.term, received=record.term,
        )  # fmt: skip
    _check_form(record)
    if record.ts < tip.ts:
        raise DivergedError(
            f"record {seq}: ts {record.ts} is before ts {tip.ts} of the record "
            "before it",
            seq=seq, field="ts", expected=f">= {tip.ts}", received=record.ts,
        )  # fmt: skip
    leaf = record_leaf_hash(
        seq, record.ts, record.event_type, record.payload_json,
        record.term, tip.leaf, record.idempotency_key,
    )  # fmt: skip
    if leaf.hex() != record.leaf_hash:
        raise DivergedError(
            f"record {seq}: its fields hash to leaf {leaf.hex()}, but it carries "
            f"leaf_hash {record.leaf_hash}",
            seq=seq, field="leaf_hash", expected=leaf.hex(),
            received=record.leaf_hash,
        )  # fmt: skip

    return leaf


def _check_form(record: Record) -> None:
    """The fields are what an append would have written: a record's bytes are
    rebuilt from them, so one that no append could produce is refused."""
    seq = record.seq
    problem: str | None = None
    try:
        check_event_type(record.event_type)
        check_idempotency_key(record.idempotency_key)
        canonical = canonical_payload(parse_payload_json(record.payload_json))
    except InvalidRecordError as exc:
        problem = str(exc)
    else:
        if canonical != record.payload_json:
            problem = "payload is not in its canonical (RFC 8785) form"
    if problem is None and not _TS.fullmatch(record.ts):
        problem = f"ts {record.ts!r} is not a UTC time with microseconds"
    if problem is None and not _HASH.fullmatch(record.leaf_hash):
        problem = "leaf_hash is not 64 lowercase hex digits"
    if problem is not None:
        raise DivergedError(
            f"record {seq} is malformed: {problem}",
            seq=seq, field="form", expected="a well-formed record", received=problem,
        )  # fmt: skip


def open_checkpoint_of(note: str, verifier: Verifier, origin: str) -> Checkpoint:
    """The checkpoint in ``note``, once it is shown signed by ``verifier`` for
    ``origin``."""
    try:
        checkpoint = open_checkpoint(note, verifier)
    except NoteError as exc:
        raise DivergedError(
            f"the primary's checkpoint does not verify with key {verifier.vkey}: "
            f"{exc}",
            field="checkpoint_signature", expected=verifier.vkey, received=str(exc),
        ) from None  # fmt: skip
    if checkpoint.origin != origin:
        raise DivergedError(
            f"checkpoint at tree size {checkpoint.tree_size} names log "
            f"{checkpoint.origin!r}, not this ledger's {origin!r}",
            tree_size=checkpoint.tree_size, field="checkpoint_origin",
            expected=origin, received=checkpoint.origin,
        )  # fmt: skip

    return checkpoint


def check_root(checkpoint: Checkpoint, own_root: bytes) -> None:
    """The checkpoint signs the root this ledger computes at its tree size."""
    if checkpoint.root != own_root:
        size = checkpoint.tree_size
        raise DivergedError(
            f"checkpoint at tree size {size}: the primary signed root "
            f"{checkpoint.root.hex()}, this ledger's root there is {own_root.hex()}",
            tree_size=size, field="checkpoint_root", expected=own_root.hex(),
            received=checkpoint.root.hex(),
        )  # fmt: skip


def check_extends(
    previous: Checkpoint, checkpoint: Checkpoint, proof: Sequence[bytes]
) -> None:
    """The newer checkpoint's tree extends the older one's (RFC 9162 §2.1.4.2)."""
    if not merkle.verify_consistency(
        previous.tree_size, checkpoint.tree_size, previous.root, checkpoint.root, proof
    ):
        raise DivergedError(
            f"checkpoint at tree size {checkpoint.tree_size} is not consistent with "
            f"the checkpoint at tree size {previous.tree_size} stored here",
            tree_size=checkpoint.tree_size,
            field="checkpoint_consistency",
            expected=f"{previous.tree_size}:{previous.root.hex()}",
            received=f"{checkpoint.tree_size}:{checkpoint.root.hex()}",
        )
