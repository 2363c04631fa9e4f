"""Group commit: one thread owns the write connection and batches appends.

Appenders (threads or asyncio tasks) hand their entries to the writer and wait
on a future. The writer takes everything queued, writes it in one transaction
and one fsync, and only then resolves the futures, so an append returns only
when its record is durable. A failed transaction rolls back, restores the
in-memory tree edge, and fails every future of that batch: nothing half-written.

The same thread applies a replica's batches of the primary's records (each
batch one transaction of its own, checked by ``penin.ledger.apply``) and
changes the term appends are written in, so that both are ordered with the
appends. While the file is a replica's (``store.replica_of``), appends are
refused; the check runs inside each transaction, so it holds for every process
that opens the file. After each commit that added records, the writer calls
its listeners with the new tree size.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import structlog

from penin.ledger import apply, store
from penin.ledger.errors import FencedError, LedgerError, NotPrimaryError
from penin.ledger.merkle import Frontier, edge_subtrees
from penin.ledger.record import ZERO_HASH, Record, now_ts, record_leaf_hash
from penin.observability.metrics import LEDGER_METRICS

log = structlog.get_logger("penin.ledger")

MAX_BATCH_RECORDS = 4096

# Called from the writer's thread after a commit that added records, with
# the tree size and the records added, in order.
Listener = Callable[[int, Sequence[Record]], None]


class Acknowledger(Protocol):
    """What a cluster's primary checks before an append is acknowledged: that
    it still leads, and in sync mode that enough replicas stored the records.
    Each method raises LedgerError (NotPrimaryError, SyncReplicationError)
    when the append must not be acknowledged; the records stay written."""

    async def acknowledge(self, records: Sequence[Record]) -> None: ...

    def acknowledge_blocking(self, records: Sequence[Record]) -> None: ...


# Asked just before each commit that adds records: None lets it commit, an
# error refuses every append of the batch (nothing of it is written).
Fence = Callable[[], NotPrimaryError | None]


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated record to append; the payload is already canonical JSON."""

    event_type: str
    payload_json: str
    idempotency_key: str | None


@dataclass(slots=True)
class _Request:
    """Entries to write, and where to send the outcome: a thread's future, or
    an asyncio caller's future and the loop it lives on.

    A request with ``foreign`` records applies them instead; one with
    ``term`` changes the term of later appends. Either runs alone.
    """

    entries: Sequence[Entry]
    probe_nonce: str | None = None
    future: Future[list[Record]] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    async_future: asyncio.Future[list[Record]] | None = None
    foreign: Sequence[Record] | None = None
    term: int | None = None

    @property
    def alone(self) -> bool:
        return self.foreign is not None or self.term is not None


Outcome = list[Record] | BaseException


class Writer:
    """The one writer of a ledger file in this process.

    Appends are written in ``term``; None means the term of the last record
    (0 for an empty log). A term older than that is refused at once.
    """

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        term: int | None = None,
        listeners: Sequence[Listener] = (),
    ) -> None:
        self._path = path
        self._conn = conn
        self._listeners = listeners
        self._queue: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._closing = False
        # Set by the member of a cluster that leads: the error to refuse
        # appends with once this node may no longer acknowledge them.
        self.fence: Fence | None = None
        self._frontier, self._last_leaf, self._last_ts, self._last_term = (
            self._load_tip()
        )
        self._term = self._last_term if term is None else term
        self._check_term(self._term)
        self._thread = threading.Thread(
            target=self._run, name="penin-ledger-writer", daemon=True
        )
        self._thread.start()

    @property
    def connection(self) -> sqlite3.Connection:
        return self._conn

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self._closing

    @property
    def size(self) -> int:
        return self._frontier.size

    @property
    def term(self) -> int:
        """The term appends are written in."""
        return self._term

    def _check_term(self, term: int) -> None:
        if term < self._last_term:
            raise FencedError(
                f"{self._path}: cannot write in term {term}: the last record is "
                f"of term {self._last_term}, and terms never go back",
                seq=self._frontier.size - 1, field="term",
                expected=f">= {self._last_term}", received=term,
            )  # fmt: skip

    def submit(
        self, entries: Sequence[Entry], probe_nonce: str | None = None
    ) -> Future[list[Record]]:
        """Queue entries (or a health probe write) for the next transaction."""
        future: Future[list[Record]] = Future()
        self._enqueue(_Request(entries, probe_nonce, future))

        return future

    def submit_async(self, entries: Sequence[Entry]) -> asyncio.Future[list[Record]]:
        """Like ``submit``, for a caller on a running event loop.

        The writer wakes each loop once per batch with every result for it,
        instead of once per record as ``asyncio.wrap_future`` would.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Record]] = loop.create_future()
        self._enqueue(_Request(entries, loop=loop, async_future=future))

        return future

    def submit_apply(self, records: Sequence[Record]) -> Future[list[Record]]:
        """Queue a batch of the primary's records, applied in one transaction."""
        future: Future[list[Record]] = Future()
        self._enqueue(_Request((), future=future, foreign=records))

        return future

    def submit_apply_async(
        self, records: Sequence[Record]
    ) -> asyncio.Future[list[Record]]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Record]] = loop.create_future()
        self._enqueue(_Request((), loop=loop, async_future=future, foreign=records))

        return future

    def submit_term(
        self, term: int, marker: Sequence[Entry] = ()
    ) -> Future[list[Record]]:
        """Queue a change of the term appends are written in, and ``marker``,
        appended with it if the log holds no record of ``term`` yet."""
        future: Future[list[Record]] = Future()
        self._enqueue(_Request(marker, future=future, term=term))

        return future

    def _enqueue(self, request: _Request) -> None:
        with self._wake:
            if self._closing:
                raise LedgerError("the ledger is closed; open it again to append")
            self._queue.append(request)
            self._wake.notify()

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()

    def _load_tip(self) -> tuple[Frontier, bytes, str, int]:
        size = store.tree_size(self._conn)
        tiles = edge_subtrees(size)
        found = store.subtree_hashes(self._conn, tiles)
        if len(found) != len(tiles):
            raise LedgerError(
                f"{self._path}: the stored tree is missing subtrees at size {size}; "
                "run 'penin ledger verify'"
            )
        frontier = Frontier(size, [found[t] for t in tiles])
        if size == 0:
            return frontier, ZERO_HASH, "", 0
        leaf, ts, term = self._conn.execute(
            "SELECT leaf_hash, ts, term FROM records WHERE seq = ?", (size - 1,)
        ).fetchone()

        return frontier, leaf, ts, term

    def _tip(self) -> tuple[Frontier, bytes, str, int]:
        return self._frontier.copy(), self._last_leaf, self._last_ts, self._last_term

    def _begin(self) -> None:
        """Take the write lock, and the tip as it is in the file now."""
        self._conn.execute("BEGIN IMMEDIATE")
        if store.tree_size(self._conn) != self._frontier.size:
            # Another process appended since our last batch (the CLI while
            # the node runs): BEGIN IMMEDIATE holds the write lock, so the
            # tip read now is the one this batch extends.
            self._frontier, self._last_leaf, self._last_ts, self._last_term = (
                self._load_tip()
            )

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing:
                    self._wake.wait()
                if not self._queue:
                    return
                batch = self._take_batch()
            self._commit(batch)

    def _take_batch(self) -> list[_Request]:
        batch = [self._queue.popleft()]
        if batch[0].alone:
            return batch
        count = len(batch[0].entries)
        while (
            self._queue
            and not self._queue[0].alone
            and count + len(self._queue[0].entries) <= MAX_BATCH_RECORDS
        ):
            request = self._queue.popleft()
            batch.append(request)
            count += len(request.entries)

        return batch

    def _commit(self, batch: list[_Request]) -> None:
        if batch[0].foreign is not None:
            self._apply(batch[0], batch[0].foreign)
            return
        if batch[0].term is not None:
            self._change_term(batch[0], batch[0].term)
            return
        saved = self._tip()
        try:
            self._begin()
            refusal = self._refusal()
            writable = [r for r in batch if refusal is None or not r.entries]
            results, appended = self._write(writable)
            fenced = self._fenced() if appended else None
            if fenced is not None:
                self._rollback()
                self._frontier, self._last_leaf, self._last_ts, self._last_term = saved
                _settle(batch, [fenced if r.entries else [] for r in batch])
                return
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._fail(batch, saved, exc, "ledger.append_failed")
            return
        if appended:
            LEDGER_METRICS.observe_batch(appended)
            self._notify(_added(results, self._frontier.size - appended))
        written = iter(results)
        _settle(
            batch,
            [refusal if refusal and r.entries else next(written) for r in batch],
        )

    def _fenced(self) -> NotPrimaryError | None:
        """The fence's refusal, asked just before a commit that adds records."""
        fence = self.fence
        return None if fence is None else fence()

    def _refusal(self) -> NotPrimaryError | None:
        """The error for appends while the file is a replica's, else None."""
        primary = store.replica_of(self._conn)
        if primary is None:
            return None

        return NotPrimaryError(self._path, *primary)

    def _apply(self, request: _Request, records: Sequence[Record]) -> None:
        saved = self._tip()
        try:
            self._begin()
            tip = apply.Tip(*self._tip())
            rows, nodes = apply.extend(tip, records)
            self._insert(rows, nodes)
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._fail([request], saved, exc, "ledger.apply_failed")
            return
        self._frontier, self._last_leaf, self._last_ts, self._last_term = (
            tip.frontier, tip.leaf, tip.ts, tip.term,
        )  # fmt: skip
        if rows:
            LEDGER_METRICS.observe_batch(len(rows))
            self._notify(list(records))
        _settle([request], [list(records)])

    def _change_term(self, request: _Request, term: int) -> None:
        """Write later appends in ``term``; if the log has no record of that
        term yet, append the request's entries (the record that the term
        began) in the same transaction."""
        saved = self._tip()
        previous = self._term
        written: list[Record] = []
        try:
            self._begin()
            self._check_term(term)
            self._term = term
            if request.entries and term > self._last_term:
                refusal = self._refusal()
                if refusal is not None:
                    raise refusal
                [written], _ = self._write([request])
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._term = previous
            self._fail([request], saved, exc, "ledger.term_refused")
            return
        if written:
            LEDGER_METRICS.observe_batch(len(written))
            self._notify(written)
        _settle([request], [written])

    def _fail(
        self,
        batch: list[_Request],
        saved: tuple[Frontier, bytes, str, int],
        exc: BaseException,
        event: str,
    ) -> None:
        """Roll back, restore the tip, and fail every request of the batch."""
        self._rollback()
        self._frontier, self._last_leaf, self._last_ts, self._last_term = saved
        error = exc
        if isinstance(exc, sqlite3.DatabaseError):
            error = store.translate(exc, self._path)
        log.error(event, error=str(error), batch=len(batch))
        _settle(batch, [error] * len(batch))

    def _notify(self, added: Sequence[Record]) -> None:
        size = self._frontier.size
        for listener in self._listeners:
            try:
                listener(size, added)
            except Exception as exc:  # a listener must not fail the writer
                log.error("ledger.listener_failed", error=repr(exc))

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.DatabaseError):
            self._conn.execute("ROLLBACK")

    def _write(self, batch: list[_Request]) -> tuple[list[list[Record]], int]:
        ts = max(now_ts(), self._last_ts)
        seen: dict[str, Record] = {}
        rows: list[tuple[object, ...]] = []
        nodes: list[tuple[int, bytes]] = []
        results: list[list[Record]] = []
        for request in batch:
            if request.probe_nonce is not None:
                self._conn.execute(
                    "INSERT OR REPLACE INTO probe (id, nonce, ts) VALUES (1, ?, ?)",
                    (request.probe_nonce, ts),
                )
            records = []
            for entry in request.entries:
                key = entry.idempotency_key
                existing = seen.get(key) if key else None
                if key and existing is None:
                    existing = self._find_idempotent(key)
                if existing is not None:
                    records.append(existing)
                    continue
                record = self._next_record(entry, ts, rows, nodes)
                if key:
                    seen[key] = record
                records.append(record)
            results.append(records)
        self._insert(rows, nodes)
        if rows:
            # The tip's time is its last record's: a replica checks the
            # primary's records against it, so a probe must not move it.
            self._last_ts = ts
            self._last_term = self._term

        return results, len(rows)

    def _insert(
        self, rows: list[tuple[object, ...]], nodes: list[tuple[int, bytes]]
    ) -> None:
        self._conn.executemany(
            "INSERT INTO records (seq, ts, event_type, payload, term, prev_hash,"
            " idempotency_key, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._conn.executemany("INSERT INTO nodes (id, hash) VALUES (?, ?)", nodes)

    def _next_record(
        self,
        entry: Entry,
        ts: str,
        rows: list[tuple[object, ...]],
        nodes: list[tuple[int, bytes]],
    ) -> Record:
        seq = self._frontier.size
        prev = self._last_leaf
        fields = (
            seq, ts, entry.event_type, entry.payload_json,
            self._term, prev, entry.idempotency_key,
        )  # fmt: skip
        leaf = record_leaf_hash(*fields)
        rows.append((*fields, leaf))
        for level, h in self._frontier.append(leaf):
            nodes.append((store.node_id(seq, level), h))
        self._last_leaf = leaf

        return Record(
            seq=seq,
            ts=ts,
            event_type=entry.event_type,
            payload_json=entry.payload_json,
            term=self._term,
            prev_hash=prev.hex(),
            idempotency_key=entry.idempotency_key,
            leaf_hash=leaf.hex(),
        )

    def _find_idempotent(self, key: str) -> Record | None:
        row = self._conn.execute(
            f"SELECT {store.RECORD_COLUMNS} FROM records WHERE idempotency_key = ?",
            (key,),
        ).fetchone()

        return None if row is None else store.record_from_row(row)


def _added(results: list[list[Record]], first_seq: int) -> list[Record]:
    """The records a commit added, each once and in order: ``results`` also
    holds replays of idempotent appends, which are older or repeated."""
    added: list[Record] = []
    for records in results:
        for record in records:
            if record.seq == first_seq + len(added):
                added.append(record)

    return added


def _settle(batch: list[_Request], outcomes: Sequence[Outcome]) -> None:
    """Resolve every request of a batch; one wake-up for each event loop."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Outcome]]] = {}
    for request, outcome in zip(batch, outcomes, strict=True):
        if request.loop is not None:
            by_loop.setdefault(request.loop, []).append((request, outcome))
            continue
        assert request.future is not None
        if isinstance(outcome, BaseException):
            request.future.set_exception(outcome)
        else:
            request.future.set_result(outcome)
    for loop, settled in by_loop.items():
        # A closed loop has no caller left to tell; the records stay durable.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_settle_on_loop, settled)


def _settle_on_loop(settled: list[tuple[_Request, Outcome]]) -> None:
    for request, outcome in settled:
        future = request.async_future
        if future is None or future.done():  # the caller was cancelled
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
