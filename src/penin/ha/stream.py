"""The replication stream: what a primary sends its replicas, and when.

A replica asks ``GET /v1/replication/records?after_seq=N`` and gets a
``Batch``: the records after N as the primary stored them (the payload as its
stored canonical text, so that no re-encoding can change a byte), the
primary's tree size and term, and its newest signed checkpoint. Before its
first batch it asks ``GET /v1/replication/ledger`` for the ``Identity`` of the
log: origin and verifier key. Both shapes are parsed strictly: a field of the
wrong type is a ``StreamError``, not a guess.

``CommitFeed`` lets a request that found nothing new wait for the next commit
instead of polling: the ledger's writer calls it after each commit.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from penin.ha.errors import StreamError
from penin.ledger.record import Record

# How often a wait for new records also looks at the file itself, for records
# or checkpoints that another process (the `penin` command) wrote.
FILE_RECHECK_S = 1.0

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


@dataclass(frozen=True)
class Head:
    """What replicas wait on: the tree size, and the newest checkpoint's."""

    size: int
    checkpoint_size: int


class CommitFeed:
    """The primary's ``Head`` as the event loop sees it, and a way to wait for
    it to move.

    ``committed`` and ``checkpointed`` are the ledger's listeners: they run on
    the thread that wrote and hand the news to the loop. ``wait_beyond``
    returns once the log holds a record after a seq or a checkpoint newer
    than one, or when its time is up, whichever is first.
    """

    def __init__(self, head: Head, read_head: Callable[[], Head]) -> None:
        self.head = head
        self._read_head = read_head
        self._loop = asyncio.get_running_loop()
        self._moved: asyncio.Future[None] = self._loop.create_future()
        self.closed = False

    def close(self) -> None:
        """This node stopped leading: end every wait now."""
        self.closed = True
        if not self._moved.done():
            self._moved.set_result(None)

    def committed(self, size: int) -> None:
        self._loop.call_soon_threadsafe(self._grown, size)

    def checkpointed(self, tree_size: int) -> None:
        self._loop.call_soon_threadsafe(self._signed, tree_size)

    def _grown(self, size: int) -> None:
        self.observe(Head(size, self.head.checkpoint_size))

    def _signed(self, tree_size: int) -> None:
        self.observe(Head(self.head.size, tree_size))

    def observe(self, head: Head) -> None:
        """Take ``head`` as the primary's (on the loop's thread); wake the waiters
        if it moved."""
        old = self.head
        new = Head(
            max(old.size, head.size), max(old.checkpoint_size, head.checkpoint_size)
        )
        if new == old:
            return
        self.head = new
        if not self._moved.done():
            self._moved.set_result(None)
        self._moved = self._loop.create_future()

    async def wait_beyond(self, seq: int, checkpoint_size: int, timeout: float) -> None:
        deadline = self._loop.time() + timeout
        while (
            not self.closed
            and self.head.size - 1 <= seq
            and self.head.checkpoint_size <= checkpoint_size
        ):
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._moved), min(remaining, FILE_RECHECK_S)
                )
            except TimeoutError:
                self.observe(await asyncio.to_thread(self._read_head))
