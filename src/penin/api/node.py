"""The running node: its ledger, keys, policies, verify jobs and checkpoints.

One Node lives in ``app.state.node`` for the life of the process. Making it
loads the policy set (PolicyLoadError if it is refused); starting it opens the
ledger (creating it on first run) and starts watching the policy directory
and SIGHUP for reloads; stopping it stops the checkpointer, signs a last
checkpoint if the log grew, and closes the ledger, which flushes every queued
append.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import structlog

from penin.config import Settings
from penin.ha import ClusterMember, join_cluster
from penin.keys import KeyRing
from penin.ledger.errors import LedgerError
from penin.ledger.ledger import WORMLedger, open_ledger
from penin.ledger.note import Checkpoint, open_checkpoint
from penin.ledger.record import parse_ts
from penin.ledger.verify import VerifyReport
from penin.observability.metrics import LEDGER_METRICS, NODE_METRICS
from penin.policy import Policies
from penin.router.router import Router, build_router
from penin.router.tokens import preload as preload_tokenizer

log = structlog.get_logger("penin.node")

_MAX_JOBS = 100


@dataclass
class Job:
    job_id: str
    kind: str
    owner: str  # the id of the key that started it
    state: str = "running"
    started: float = field(default_factory=time.time)
    finished: float | None = None
    progress: dict[str, int] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "kind": self.kind,
            "state": self.state,
            "started": self.started,
            "finished": self.finished,
            "progress": self.progress,
            "result": self.result,
            "error": self.error,
        }


class Node:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Loaded here, not at start: a set that is refused stops `penin serve`
        # before uvicorn runs, with the file and line at fault.
        self.policies = Policies.load(settings.policy)
        self.ledger: WORMLedger = open_ledger(settings.data_dir)
        self.keyring = KeyRing(self.ledger)
        # None on a single node. Joined here, not at start, for the same reason
        # as the policies: a cluster section that cannot work stops `penin serve`.
        self.cluster: ClusterMember | None = join_cluster(
            settings.node, settings.cluster, self.ledger
        )
        self.jobs: dict[str, Job] = {}
        self.stopping = False
        self.started_at = time.time()
        # None until started, and on a node with no models configured.
        self.router: Router | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._warming: asyncio.Task[None] | None = None
        self._last_checkpoint: Checkpoint | None = None
        self._checkpoint_signed_at: float | None = None
        self._sighup = False

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.cluster is not None:
            # First: a new replica creates its ledger with the primary's
            # origin, and a primary opens it to write in its term.
            await self.cluster.start()
        await asyncio.to_thread(self.ledger.initialize)
        if self.cluster is None:
            # A single node is its own primary, even on a replica's old data.
            await asyncio.to_thread(self.ledger.lead)
        await asyncio.to_thread(self.keyring.refresh)
        self._note_latest_checkpoint()
        if self.settings.models:
            router = build_router(
                self.settings.router_config(), self.ledger, self.policies
            )
            await router.start()
            self.router = router
        self.policies.start_watching()
        self._handle_sighup()
        self._spawn(self._checkpoint_loop())
        log.info(
            "node.started",
            data_dir=str(self.settings.data_dir),
            tree_size=self.ledger.count_records(),
        )

    async def stop(self) -> None:
        self.stopping = True
        if self.cluster is not None:
            await self.cluster.stop()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.router is not None:
            await self.router.close()
        if self._sighup:
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        await self.policies.close()
        with contextlib.suppress(LedgerError):
            await asyncio.to_thread(self._checkpoint_if_grown)
        await asyncio.to_thread(self.ledger.close)
        log.info("node.stopped")

    def _handle_sighup(self) -> None:
        """Reload the policies on SIGHUP, which uvicorn leaves alone.

        Only a loop in the main thread can take signals: a node run in
        another thread (in tests) reloads by its watcher alone.
        """
        if threading.current_thread() is not threading.main_thread():
            log.debug("policy.sighup_not_handled", reason="not the main thread")
            return
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload_policies)
        self._sighup = True

    def _reload_policies(self) -> None:
        log.info("policy.reload_requested", signal="SIGHUP")
        self.policies.reload()

    def warm(self) -> None:
        """Load what the first requests would otherwise wait for; called once
        the routes are built.

        A node with models reads the tokenizer (half a second) in a thread,
        so that it answers /livez at once; /readyz says 503 until then.
        """
        if self.router is None:
            _settle_heap()
        else:
            self._warming = self._spawn(self._load_tokenizer())

    async def _load_tokenizer(self) -> None:
        await asyncio.to_thread(preload_tokenizer)
        _settle_heap()

    @property
    def ready(self) -> bool:
        """Not stopping, and done loading what requests need."""
        task = self._warming
        if task is not None and (
            not task.done() or task.cancelled() or task.exception() is not None
        ):
            return False

        return not self.stopping

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

        return task

    # -- checkpoints -------------------------------------------------------

    async def _checkpoint_loop(self) -> None:
        interval = self.settings.ledger.checkpoint_interval_s
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self._checkpoint_if_grown)
            except LedgerError as exc:
                NODE_METRICS.errors.labels("checkpoint").inc()
                log.error("ledger.checkpoint_failed", error=str(exc))

    def _checkpoint_if_grown(self) -> None:
        size = self.signable_size()
        if size is None:
            return  # only the primary signs; a replica stores its checkpoints
        signed = self._last_checkpoint.tree_size if self._last_checkpoint else 0
        if size > signed:
            self.ledger.checkpoint(size)
            self._note_latest_checkpoint()

    def signable_size(self) -> int | None:
        """The tree size this node may sign now; None if it may sign none (a
        replica, or a primary losing its lease: ``ClusterMember.signable_size``)."""
        size = self.ledger.count_records()
        if self.cluster is None:
            return size

        return self.cluster.signable_size(size)

    def _note_latest_checkpoint(self) -> None:
        latest = self.ledger.latest_checkpoint_entry()
        if latest is None:
            return
        note, signed_ts = latest
        self._last_checkpoint = open_checkpoint(note, self.ledger.verifier)
        self._checkpoint_signed_at = parse_ts(signed_ts).timestamp()
        LEDGER_METRICS.checkpoint_time.set(self._checkpoint_signed_at)
        LEDGER_METRICS.checkpoint_tree_size.set(self._last_checkpoint.tree_size)

    # -- verify jobs -------------------------------------------------------

    def start_verify_job(self, owner: str) -> Job:
        job = Job(uuid.uuid4().hex, "ledger.verify", owner)
        self.jobs[job.job_id] = job
        for old in sorted(self.jobs.values(), key=lambda j: j.started)[:-_MAX_JOBS]:
            self.jobs.pop(old.job_id, None)
        self._spawn(self._run_verify(job))

        return job

    async def _run_verify(self, job: Job) -> None:
        def progress(done: int, total: int) -> None:
            job.progress = {"records_checked": done, "tree_size": total}

        try:
            report: VerifyReport = await asyncio.to_thread(
                self.ledger.verify_integrity, None, progress
            )
        except LedgerError as exc:
            job.state, job.error = "failed", str(exc)
            NODE_METRICS.verification_failed.set(1)
            NODE_METRICS.errors.labels("verify").inc()
        else:
            job.state, job.result = "done", report.to_dict()
            NODE_METRICS.verification_failed.set(0 if report.ok else 1)
            log.info("ledger.verified", ok=report.ok, records=report.records_checked)
        job.finished = time.time()

    # -- figures for /metrics ------------------------------------------------

    def refresh_gauges(self) -> None:
        NODE_METRICS.ledger_records.set(self.ledger.count_records())
        if self.cluster is not None and not self.cluster.is_primary:
            self._note_latest_checkpoint()  # the follower stores the primary's
        if self._checkpoint_signed_at is not None:
            NODE_METRICS.checkpoint_age.set(time.time() - self._checkpoint_signed_at)
        usage = shutil.disk_usage(self.settings.data_dir)
        NODE_METRICS.disk_free.set(usage.free)
        NODE_METRICS.disk_size.set(usage.total)


def _settle_heap() -> None:
    """Move every object alive now out of the garbage collector's sight.

    What start-up made (modules, routes, settings, the price table: about
    90,000 objects) lives as long as the process; scanning it made each full
    collection pause the event loop for about 40 ms on a 2-core machine,
    which showed as the router's p99. After this, a full collection of what
    requests leave behind costs microseconds.
    """
    gc.collect()
    gc.freeze()
    log.info("node.heap_settled", frozen_objects=gc.get_freeze_count())
