"""WORMLedger: the append-only, Merkle-tree ledger in one SQLite file.

This is the API every other part writes through. Appends go through the
group-commit writer; reads use one connection per thread; proofs and roots
come from the stored complete subtrees in O(log n) reads. A replica's copy
takes the primary's records and checkpoints through ``apply`` and
``adopt_checkpoint`` instead, and refuses appends while it is marked as one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import structlog

from penin.ledger import apply, keyfile, merkle, proofs, store
from penin.ledger import backup as backups
from penin.ledger.backup import Manifest
from penin.ledger.errors import (
    CheckpointRefusedError,
    KeyFileError,
    LedgerError,
    NotALedgerError,
    RecordNotFoundError,
    TreeSizeError,
)
from penin.ledger.note import Checkpoint, NoteError, Signer, Verifier, open_checkpoint
from penin.ledger.proofs import ConsistencyProof, Proof
from penin.ledger.record import (
    Record,
    canonical_payload,
    check_event_type,
    check_idempotency_key,
    format_ts,
    now_ts,
    parse_ts,
)
from penin.ledger.verify import Progress, VerifyReport, verify_file
from penin.ledger.writer import Acknowledger, Entry, Fence, Listener, Writer
from penin.observability.metrics import LEDGER_METRICS

log = structlog.get_logger("penin.ledger")

MAX_QUERY_LIMIT = 1000
MAX_SQLITE_INT = 2**63 - 1


NewRecord = tuple[str, Mapping[str, Any]] | tuple[str, Mapping[str, Any], str | None]


class WORMLedger:
    """An append-only ledger at ``path``; its signing key sits beside it (.key).

    Appends are written in ``term`` (a primary's leader term); by default in
    the term of the last record. Opening it with an older term than that
    raises FencedError.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        key_path: str | os.PathLike[str] | None = None,
        term: int | None = None,
    ) -> None:
        self.path = Path(path)
        self.key_path = Path(key_path) if key_path else self.path.with_suffix(".key")
        self._term = term
        self._lock = threading.Lock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._writer: Writer | None = None
        self._meta: dict[str, str] | None = None
        self._listeners: list[Listener] = []
        self._checkpoint_listeners: list[Callable[[int], None]] = []
        self._fence: Fence | None = None
        self.acknowledger: Acknowledger | None = None

    # -- lifecycle ---------------------------------------------------------

    def initialize(self, origin: str | None = None) -> WORMLedger:
        """Create the ledger and its signing key if missing; open it either way."""
        with self._lock:
            if not self.path.exists():
                self._create(origin)
        self._open()

        return self

    def _create(self, origin: str | None) -> None:
        origin = origin or f"penin.local/ledger/{secrets.token_hex(4)}"
        signer = keyfile.load_or_create(self.key_path, origin)
        tmp = self.path.with_name(self.path.name + ".creating")
        tmp.unlink(missing_ok=True)
        conn = store.connect(tmp)
        try:
            store.create(
                conn,
                {"origin": origin, "vkey": signer.verifier.vkey, "created": now_ts()},
            )
        except sqlite3.DatabaseError as exc:
            raise store.translate(exc, tmp) from None
        finally:
            conn.close()
        tmp.replace(self.path)
        log.info("ledger.created", path=str(self.path), origin=origin)

    def read_key(self) -> Signer:
        return keyfile.read(self.key_path)

    def _open(self) -> None:
        with self._lock:
            if self._writer is not None:
                return
            if not self.path.exists():
                raise NotALedgerError(
                    f"no ledger at {self.path}; run 'penin ledger init' first"
                )
            store.check_ledger(self.path)
            conn = store.connect(self.path)
            try:
                self._meta = store.read_meta(conn, self.path)
                self._migrate(conn)
                self._writer = Writer(self.path, conn, self._term, self._listeners)
                self._writer.fence = self._fence
            except BaseException:
                conn.close()
                raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        try:
            added = store.migrate(conn)
        except sqlite3.DatabaseError as exc:
            raise store.translate(exc, self.path) from None
        if added:
            log.info("ledger.migrated", path=str(self.path), added=added)

    @property
    def accepts_writes(self) -> bool:
        """Open, with its writer thread running."""
        writer = self._writer
        return writer is not None and writer.alive

    def find_idempotent(self, key: str) -> Record | None:
        """The record an idempotency key already names, if any."""
        sql = f"SELECT {store.RECORD_COLUMNS} FROM records WHERE idempotency_key = ?"
        row = self._reader().execute(sql, (key,)).fetchone()

        return None if row is None else store.record_from_row(row)

    def close(self) -> None:
        """Flush queued appends, then release every connection."""
        with self._lock:
            writer, self._writer = self._writer, None
            readers, self._readers = self._readers, []
            self._local = threading.local()
        for conn in readers:
            conn.close()
        # The writer's connection closes last: the last connection to close
        # folds the write-ahead log into the file, and a read-only one cannot.
        if writer is not None:
            writer.close()
            writer.connection.close()

    def __enter__(self) -> WORMLedger:
        self._open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _reader(self) -> sqlite3.Connection:
        self._open()
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = store.connect(self.path, readonly=True)
            self._local.conn = conn
            with self._lock:
                self._readers.append(conn)

        return conn

    # -- identity ----------------------------------------------------------

    @property
    def meta(self) -> dict[str, str]:
        self._open()
        assert self._meta is not None
        return dict(self._meta)

    @property
    def origin(self) -> str:
        return self.meta["origin"]

    @property
    def verifier(self) -> Verifier:
        """The verifier key recorded at init (trust it only as far as the file)."""
        return Verifier.from_vkey(self.meta["vkey"])

    def signer(self) -> Signer:
        """The signing key, checked to be the one this ledger was created with."""
        signer = self.read_key()
        if signer.verifier.vkey != self.meta["vkey"]:
            raise KeyFileError(
                f"{self.key_path} holds key {signer.verifier.vkey}, but this ledger "
                f"was created with {self.meta['vkey']}; use the ledger's own key"
            )

        return signer

    # -- appends -----------------------------------------------------------

    def append_record(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> Record:
        return self.append_many([(event_type, payload, idempotency_key)])[0]

    async def append_record_async(
        self,
        event_type: str,
        payload: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
    ) -> Record:
        records = await self.append_many_async([(event_type, payload, idempotency_key)])

        return records[0]

    def append_many(self, records: Iterable[NewRecord]) -> list[Record]:
        """Append all or none, in one transaction, with contiguous seqs."""
        entries = [_entry(r) for r in records]
        if not entries:
            return []
        written = self._submit(entries).result()
        if self.acknowledger is not None:
            self.acknowledger.acknowledge_blocking(written)

        return written

    async def append_many_async(self, records: Iterable[NewRecord]) -> list[Record]:
        """Like ``append_many``, for a caller on a running event loop."""
        entries = [_entry(r) for r in records]
        if not entries:
            return []
        self._open()
        assert self._writer is not None
        written = await self._writer.submit_async(entries)
        if self.acknowledger is not None:
            await self.acknowledger.acknowledge(written)

        return written

    def _submit(self, entries: list[Entry]) -> Future[list[Record]]:
        return self._running_writer().submit(entries)

    def _running_writer(self) -> Writer:
        self._open()
        assert self._writer is not None
        return self._writer

    # -- terms and replication ------------------------------------------------

    @property
    def term(self) -> int:
        """The term appends are written in."""
        return self._running_writer().term

    def begin_term(self, term: int, marker: NewRecord | None = None) -> Record | None:
        """Write later appends in ``term``; FencedError if the log holds a newer one.

        ``marker`` is appended in the same transaction when the log holds no
        record of ``term`` yet, and returned: the first record of the term, so
        that every process appending later (the ``penin`` command too, which
        writes in the last record's term) writes in it.
        """
        entries = [] if marker is None else [_entry(marker)]
        written = self._running_writer().submit_term(term, entries).result()

        return written[0] if written else None

    def set_fence(self, fence: Fence | None) -> None:
        """Ask ``fence`` before every commit of appends (``penin.ledger.writer``)."""
        self._fence = fence
        if self._writer is not None:
            self._writer.fence = fence

    @property
    def last_term(self) -> int:
        """The term of the newest record; 0 for an empty log."""
        return store.last_term(self._reader())

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(tree_size, added)`` from the writer's thread after each
        commit that adds records, with the records added in order; it must be
        quick and must not raise."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        with contextlib.suppress(ValueError):
            self._listeners.remove(listener)

    def add_checkpoint_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(tree_size)`` after this process signs a checkpoint."""
        self._checkpoint_listeners.append(listener)

    def remove_checkpoint_listener(self, listener: Callable[[int], None]) -> None:
        with contextlib.suppress(ValueError):
            self._checkpoint_listeners.remove(listener)

    def apply(self, records: Sequence[Record]) -> list[Record]:
        """Store the primary's records as written, all or none, once each is shown
        to extend this log; DivergedError or FencedError names the first that
        does not (``penin.ledger.apply``)."""
        if not records:
            return []

        return self._running_writer().submit_apply(records).result()

    async def apply_async(self, records: Sequence[Record]) -> list[Record]:
        """Like ``apply``, for a caller on a running event loop."""
        if not records:
            return []

        return await self._running_writer().submit_apply_async(records)

    def follow(self, primary: str, primary_url: str) -> None:
        """Mark the file as a replica's copy of ``primary``'s ledger: from now on
        every process that appends to it is refused with NotPrimaryError."""
        self._write_outside_log(
            "INSERT INTO replica (id, primary_name, primary_url, since)"
            " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET"
            " primary_name = excluded.primary_name, primary_url = excluded.primary_url",
            (primary, primary_url, now_ts()),
        )

    def lead(self) -> None:
        """Clear the replica mark: appends are accepted again."""
        if self.replica_of() is not None:
            self._write_outside_log("DELETE FROM replica", ())

    def replica_of(self) -> tuple[str, str] | None:
        """The primary's name and URL while this is a replica's copy, else None."""
        return store.replica_of(self._reader())

    def _write_outside_log(self, sql: str, params: tuple[str, ...]) -> None:
        self._open()
        conn = store.connect(self.path)
        try:
            conn.execute(sql, params)
        except sqlite3.DatabaseError as exc:
            raise store.translate(exc, self.path) from None
        finally:
            conn.close()

    def probe(self, timeout: float = 5.0) -> float:
        """Write a nonce through the writer and read it back; seconds taken.

        Raises LedgerError when the file cannot be written or read, or the
        value read back is not the one written.
        """
        nonce = secrets.token_hex(8)
        started = time.perf_counter()
        self._open()
        assert self._writer is not None
        self._writer.submit([], probe_nonce=nonce).result(timeout)
        row = self._reader().execute("SELECT nonce FROM probe").fetchone()
        if row is None or row[0] != nonce:
            raise LedgerError(f"{self.path}: the health probe read back another value")

        return time.perf_counter() - started

    async def probe_async(self) -> float:
        return await asyncio.get_running_loop().run_in_executor(None, self.probe)

    # -- reads -------------------------------------------------------------

    def count_records(self) -> int:
        return store.tree_size(self._reader())

    def get(self, seq: int) -> Record:
        # SQLite integers stop at 2**63 - 1; a larger seq cannot be in the log.
        row = (
            self._reader()
            .execute(
                f"SELECT {store.RECORD_COLUMNS} FROM records WHERE seq = ?", (seq,)
            )
            .fetchone()
            if 0 <= seq <= MAX_SQLITE_INT
            else None
        )
        if row is None:
            raise RecordNotFoundError(
                f"no record with seq {seq}; the ledger holds seq 0 to "
                f"{self.count_records() - 1}"
            )

        return store.record_from_row(row)

    def query(
        self,
        event_type: str | None = None,
        since: str | None = None,
        until: str | None = None,
        after_seq: int | None = None,
        limit: int = 100,
    ) -> list[Record]:
        """Records in seq order; ``since`` inclusive, ``until`` exclusive (RFC 3339)."""
        if not 1 <= limit <= MAX_QUERY_LIMIT:
            raise TreeSizeError(
                f"limit must be between 1 and {MAX_QUERY_LIMIT}, not {limit}"
            )
        clauses: list[str] = ["1"]
        params: list[str | int] = []
        if event_type is not None:
            clauses.append("event_type = ?")
            params.append(event_type)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(format_ts(parse_ts(since)))
        if until is not None:
            clauses.append("ts < ?")
            params.append(format_ts(parse_ts(until)))
        if after_seq is not None:
            clauses.append("seq > ?")
            params.append(max(-1, min(after_seq, MAX_SQLITE_INT)))
        where = " AND ".join(clauses)
        sql = f"SELECT {store.RECORD_COLUMNS} FROM records WHERE {where}"
        rows = self._reader().execute(f"{sql} ORDER BY seq LIMIT ?", (*params, limit))

        return [store.record_from_row(r) for r in rows]

    # -- tree (penin.ledger.proofs) -----------------------------------------

    def root(self, tree_size: int | None = None) -> bytes:
        return proofs.root(self._reader(), self.path, tree_size)

    def inclusion_proof(self, seq: int, tree_size: int | None = None) -> Proof:
        return proofs.inclusion(self._reader(), self.path, seq, tree_size)

    def consistency_proof(self, old_size: int, new_size: int) -> ConsistencyProof:
        return proofs.consistency(self._reader(), self.path, old_size, new_size)

    # -- checkpoints -------------------------------------------------------

    def latest_checkpoint(self) -> str | None:
        entry = self.latest_checkpoint_entry()
        return None if entry is None else entry[0]

    def latest_checkpoint_entry(self) -> tuple[str, str] | None:
        """The newest signed note and the time it was signed (RFC 3339)."""
        sql = "SELECT note, ts FROM checkpoints ORDER BY tree_size DESC LIMIT 1"
        row = self._reader().execute(sql).fetchone()

        return None if row is None else (str(row[0]), str(row[1]))

    def checkpoint(self, tree_size: int | None = None) -> str:
        """Sign the tree head at ``tree_size`` (the whole log when None), after
        proving it extends the last checkpoint; TreeSizeError beyond the log
        or below the last checkpoint."""
        signer = self.signer()
        conn = self._reader()
        size = store.tree_size(conn) if tree_size is None else tree_size
        existing = conn.execute(
            "SELECT note FROM checkpoints WHERE tree_size = ?", (size,)
        ).fetchone()
        if existing is not None:
            return str(existing[0])
        note = self._sign_checkpoint(signer, conn, size)
        self._insert_checkpoint(size, note, now_ts())
        log.info("ledger.checkpoint_signed", tree_size=size)
        for listener in self._checkpoint_listeners:
            listener(size)

        return note

    def adopt_checkpoint(self, note: str, signed: str | None = None) -> Checkpoint:
        """Store the primary's checkpoint ``note`` (signed at ``signed``, RFC 3339)
        once it is shown to sign this ledger's own root at its tree size, with
        the ledger's key, and to extend the newest checkpoint stored here.

        DivergedError says what differs; TreeSizeError if this ledger does not
        yet hold the records the checkpoint covers.
        """
        checkpoint = apply.open_checkpoint_of(note, self.verifier, self.origin)
        size = checkpoint.tree_size
        apply.check_root(checkpoint, self.root(size))  # TreeSizeError if beyond
        latest = self.latest_checkpoint()
        if latest is not None:
            previous = open_checkpoint(latest, self.verifier)
            older, newer = sorted((previous, checkpoint), key=lambda c: c.tree_size)
            proof = self.consistency_proof(older.tree_size, newer.tree_size)
            apply.check_extends(older, newer, proof.hashes)
        self._insert_checkpoint(size, note, signed or now_ts())

        return checkpoint

    def _sign_checkpoint(
        self, signer: Signer, conn: sqlite3.Connection, size: int
    ) -> str:
        root = self.root(size)
        latest = self.latest_checkpoint()
        if latest is not None:
            try:
                previous = open_checkpoint(latest, signer.verifier)
            except NoteError as exc:
                raise CheckpointRefusedError(
                    f"the newest stored checkpoint does not verify ({exc}); "
                    "run 'penin ledger verify' before signing again"
                ) from None
            proof = self.consistency_proof(previous.tree_size, size)
            if not merkle.verify_consistency(
                previous.tree_size, size, previous.root, root, proof.hashes
            ):
                raise CheckpointRefusedError(
                    f"the tree at size {size} is not consistent with the checkpoint "
                    f"at size {previous.tree_size}; refusing to sign"
                )

        return signer.sign_note(Checkpoint(self.origin, size, root).body())

    def _insert_checkpoint(self, size: int, note: str, signed: str) -> None:
        conn = store.connect(self.path)
        try:
            # Another process may have signed this size already; its note stands.
            conn.execute(
                "INSERT INTO checkpoints (tree_size, root, note, ts)"
                " SELECT ?, ?, ?, ? WHERE NOT EXISTS"
                " (SELECT 1 FROM checkpoints WHERE tree_size = ?)",
                (size, self.root(size), note, signed, size),
            )
        except sqlite3.DatabaseError as exc:
            raise store.translate(exc, self.path) from None
        finally:
            conn.close()
        LEDGER_METRICS.checkpoint_time.set(parse_ts(signed).timestamp())
        LEDGER_METRICS.checkpoint_tree_size.set(size)

    # -- verification and backups -------------------------------------------

    def verify_integrity(
        self, verifier: Verifier | None = None, progress: Progress | None = None
    ) -> VerifyReport:
        """Verify the whole file; by default against the key file beside it."""
        if verifier is None and self.key_path.exists():
            verifier = self.read_key().verifier
        self._open()

        return verify_file(self.path, verifier, progress)

    def backup(self, dest_dir: str | os.PathLike[str]) -> Manifest:
        return backups.backup(self, Path(dest_dir))

    def restore(self, src: str | os.PathLike[str], *, force: bool = False) -> Manifest:
        return backups.restore(self, Path(src), force=force)


def _entry(record: NewRecord) -> Entry:
    event_type, payload, *rest = record
    key = rest[0] if rest else None

    return Entry(
        check_event_type(event_type),
        canonical_payload(payload),
        check_idempotency_key(key),
    )


def open_ledger(data_dir: Path) -> WORMLedger:
    return WORMLedger(data_dir / "ledger.db")
