"""Group commit: one thread owns the write connection and batches appends.

Appenders (threads or asyncio tasks) hand their entries to the writer and wait
on a future. The writer takes everything queued, writes it in one transaction
and one fsync, and only then resolves the futures, so an append returns only
when its record is durable. A failed transaction rolls back, restores the
in-memory tree edge, and fails every future of that batch: nothing half-written.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import structlog

from penin.ledger import store
from penin.ledger.errors import LedgerError
from penin.ledger.merkle import Frontier, edge_subtrees
from penin.ledger.record import ZERO_HASH, Record, now_ts, record_leaf_hash
from penin.observability.metrics import LEDGER_METRICS

log = structlog.get_logger("penin.ledger")

MAX_BATCH_RECORDS = 4096


@dataclass(frozen=True, slots=True)
class Entry:
    """A validated record to append; the payload is already canonical JSON."""

    event_type: str
    payload_json: str
    idempotency_key: str | None


@dataclass(slots=True)
class _Request:
    """Entries to write, and where to send the outcome: a thread's future, or
    an asyncio caller's future and the loop it lives on."""

    entries: Sequence[Entry]
    probe_nonce: str | None = None
    future: Future[list[Record]] | None = None
    loop: asyncio.AbstractEventLoop | None = None
    async_future: asyncio.Future[list[Record]] | None = None


Outcome = list[Record] | BaseException


class Writer:
    def __init__(self, path: Path, conn: sqlite3.Connection, term: int = 0) -> None:
        self._path = path
        self._conn = conn
        self._term = term
        self._queue: deque[_Request] = deque()
        self._wake = threading.Condition()
        self._closing = False
        self._frontier, self._last_leaf, self._last_ts = self._load_tip()
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

    def _load_tip(self) -> tuple[Frontier, bytes, str]:
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
            return frontier, ZERO_HASH, ""
        leaf, ts = self._conn.execute(
            "SELECT leaf_hash, ts FROM records WHERE seq = ?", (size - 1,)
        ).fetchone()

        return frontier, leaf, ts

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
        count = len(batch[0].entries)
        while self._queue and count + len(self._queue[0].entries) <= MAX_BATCH_RECORDS:
            request = self._queue.popleft()
            batch.append(request)
            count += len(request.entries)

        return batch

    def _commit(self, batch: list[_Request]) -> None:
        saved = (self._frontier.copy(), self._last_leaf, self._last_ts)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            if store.tree_size(self._conn) != self._frontier.size:
                # Another process appended since our last batch (the CLI while
                # the node runs): BEGIN IMMEDIATE holds the write lock, so the
                # tip read now is the one this batch extends.
                self._frontier, self._last_leaf, self._last_ts = self._load_tip()
            results, appended = self._write(batch)
            self._conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            self._frontier, self._last_leaf, self._last_ts = saved
            error = exc
            if isinstance(exc, sqlite3.DatabaseError):
                error = store.translate(exc, self._path)
            log.error("ledger.append_failed", error=str(error), batch=len(batch))
            _settle(batch, [error] * len(batch))
            return
        if appended:
            LEDGER_METRICS.observe_batch(appended)
        _settle(batch, results)

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
        self._conn.executemany(
            "INSERT INTO records (seq, ts, event_type, payload, term, prev_hash,"
            " idempotency_key, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        self._conn.executemany("INSERT INTO nodes (id, hash) VALUES (?, ?)", nodes)
        self._last_ts = ts

        return results, len(rows)

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
