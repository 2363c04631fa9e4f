"""The primary's feed: what its replicas are sent, read without a detour.

The ledger's writer tells the feed of every commit, with the records it
added. The feed keeps the newest of them in memory (``RECENT_RECORDS``), so
that a replica that keeps up is answered from memory; one that is further
behind is answered from the file. A request that finds nothing new waits for
the next commit instead of polling.

Why memory: under load the primary's event loop is busy with the writes
that the replicas hold up, and each detour through a worker thread waits its
turn behind them (a few milliseconds each, measured); in sync mode every
write waits for that turn too.

Records and checkpoints written by another process (the ``penin`` command on
the same data directory) reach the file but not the feed: the feed looks at
the file whenever it is asked for records it does not hold, and at least
every ``FILE_RECHECK_S`` while a request waits.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from penin.ha.stream import note_tree_size
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import Record

# Records kept in memory: several seconds of writes at the rates measured.
RECENT_RECORDS = 8192
FILE_RECHECK_S = 1.0

# A checkpoint as a batch carries it: the note, its tree size, when signed.
Checkpoint = tuple[str, int, str]


@dataclass(frozen=True)
class Head:
    """What replicas wait on: the tree size, and the newest checkpoint's."""

    size: int
    checkpoint_size: int


def read_head(ledger: WORMLedger) -> Head:
    """The ledger's tree size and its newest checkpoint's, as stored now."""
    latest = ledger.latest_checkpoint()
    checkpoint_size = 0 if latest is None else note_tree_size(latest)

    return Head(ledger.count_records(), checkpoint_size)


class CommitFeed:
    """The primary's ``Head`` and newest records as the event loop sees them.

    ``committed`` and ``checkpointed`` are the ledger's listeners: they run on
    the thread that wrote and hand the news to the loop. Everything else
    runs on the loop.
    """

    def __init__(self, ledger: WORMLedger, recent: int = RECENT_RECORDS) -> None:
        self.ledger = ledger
        self.head = read_head(ledger)
        self._recent: deque[Record] = deque(maxlen=recent)
        self._checkpoint: Checkpoint | None = None
        self._checkpoint_read_at: int | None = None  # head.checkpoint_size then
        self._loop = asyncio.get_running_loop()
        self._moved: asyncio.Future[None] = self._loop.create_future()
        self.closed = False

    def close(self) -> None:
        """This node stopped leading: end every wait now."""
        self.closed = True
        if not self._moved.done():
            self._moved.set_result(None)

    # -- news from the writer ------------------------------------------------

    def committed(self, size: int, added: Sequence[Record]) -> None:
        self._loop.call_soon_threadsafe(self._grown, size, added)

    def checkpointed(self, tree_size: int) -> None:
        self._loop.call_soon_threadsafe(self._signed, tree_size)

    def _grown(self, size: int, added: Sequence[Record]) -> None:
        recent = self._recent
        if added and recent and added[0].seq != recent[-1].seq + 1:
            recent.clear()  # another process wrote in between: start again
        recent.extend(added)
        self.observe(Head(size, self.head.checkpoint_size))

    def _signed(self, tree_size: int) -> None:
        self.observe(Head(self.head.size, tree_size))

    def observe(self, head: Head) -> None:
        """Take ``head`` as the primary's; wake the waiters if it moved."""
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

    # -- what a replica is sent ----------------------------------------------

    async def size(self) -> int:
        """The tree size, from the file: it may hold records another process
        appended."""
        size = await asyncio.to_thread(self.ledger.count_records)
        self.observe(Head(size, 0))

        return self.head.size

    async def records_after(self, seq: int, limit: int) -> list[Record]:
        """Up to ``limit`` records after ``seq``, from memory when it holds them."""
        recent = self._recent
        start = seq + 1
        if recent and recent[0].seq <= start and recent[-1].seq + 1 >= self.head.size:
            offset = start - recent[0].seq
            return list(itertools.islice(recent, offset, offset + limit))
        if not recent and start >= self.head.size:
            return []

        return await asyncio.to_thread(self.ledger.query, after_seq=seq, limit=limit)

    async def checkpoint(self) -> Checkpoint | None:
        """The newest checkpoint; read from the file only when one newer than
        the last read was signed."""
        size = self.head.checkpoint_size
        if self._checkpoint_read_at is None or size > self._checkpoint_read_at:
            entry = await asyncio.to_thread(self.ledger.latest_checkpoint_entry)
            if entry is not None:
                note, signed = entry
                self._checkpoint = (note, note_tree_size(note), signed)
            self._checkpoint_read_at = size

        return self._checkpoint

    def has_news(self, seq: int, checkpoint_size: int) -> bool:
        """Whether the log is known to hold a record after ``seq`` or a
        checkpoint newer than ``checkpoint_size`` (or the feed is closed)."""
        head = self.head

        return (
            self.closed or head.size - 1 > seq or head.checkpoint_size > checkpoint_size
        )

    async def wait_beyond(self, seq: int, checkpoint_size: int, timeout: float) -> None:
        """Return once the log holds a record after ``seq`` or a checkpoint
        newer than ``checkpoint_size``, or when ``timeout`` is up."""
        deadline = self._loop.time() + timeout
        while not self.has_news(seq, checkpoint_size):
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(
                    asyncio.shield(self._moved), min(remaining, FILE_RECHECK_S)
                )
            except TimeoutError:
                self.observe(await asyncio.to_thread(read_head, self.ledger))
