"""The replication stream: what a primary sends its replicas.

A replica asks ``GET /v1/replication/records?after_seq=N`` and gets a
``Batch``: the records after N as the primary stored them (the payload as its
stored canonical text, so that no re-encoding can change a byte), the
primary's tree size and term, and its newest signed checkpoint. Before its
first batch it asks ``GET /v1/replication/ledger`` for the ``Identity`` of the
log: origin and verifier key. Both shapes are parsed strictly: a field of the
wrong type is a ``StreamError``, not a guess. What a batch holds, and when
it is sent, the primary's ``penin.ha.feed`` decides.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from penin.ha.errors import StreamError
from penin.ledger.record import Record

Hash = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class _Wire(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


W = TypeVar("W", bound=_Wire)


class WireRecord(_Wire):
    seq: int = Field(ge=0)
    ts: str
    event_type: str
    payload_json: str
    term: int = Field(ge=0)
    prev_hash: Hash
    idempotency_key: str | None
    leaf_hash: Hash

    def record(self) -> Record:
        return Record(
            seq=self.seq,
            ts=self.ts,
            event_type=self.event_type,
            payload_json=self.payload_json,
            term=self.term,
            prev_hash=self.prev_hash,
            idempotency_key=self.idempotency_key,
            leaf_hash=self.leaf_hash,
        )


class WireCheckpoint(_Wire):
    note: str
    tree_size: int = Field(ge=0)
    signed: str


class Batch(_Wire):
    """One answer of the stream."""

    primary: str
    term: int = Field(ge=0)
    tree_size: int = Field(ge=0)
    records: list[WireRecord]
    checkpoint: WireCheckpoint | None


class Identity(_Wire):
    """The log a primary writes: what a replica must share with it to follow."""

    primary: str
    origin: str
    vkey: str
    tree_size: int = Field(ge=0)
    term: int = Field(ge=0)


def parse(model: type[W], body: bytes, url: str) -> W:
    """``body`` as ``model``; StreamError naming the first field at fault."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise StreamError(
            url, f"the primary's answer is not a {model.__name__}: {where}: "
            f"{first['msg']}"
        ) from None  # fmt: skip


def encode_batch(
    primary: str,
    term: int,
    tree_size: int,
    records: Sequence[Record],
    checkpoint: tuple[str, int, str] | None,
) -> bytes:
    """A ``Batch`` as JSON bytes; ``checkpoint`` is (note, tree size, signed)."""
    body = {
        "primary": primary,
        "term": term,
        "tree_size": tree_size,
        "records": [
            {
                "seq": r.seq,
                "ts": r.ts,
                "event_type": r.event_type,
                "payload_json": r.payload_json,
                "term": r.term,
                "prev_hash": r.prev_hash,
                "idempotency_key": r.idempotency_key,
                "leaf_hash": r.leaf_hash,
            }
            for r in records
        ],
        "checkpoint": None
        if checkpoint is None
        else dict(zip(("note", "tree_size", "signed"), checkpoint, strict=True)),
    }

    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def note_tree_size(note: str) -> int:
    """The tree size line of a checkpoint note, its second (C2SP tlog-checkpoint)."""
    return int(note.split("\n", 2)[1])
