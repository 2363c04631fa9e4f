"""The policies a node serves: one engine at a time, replaced whole on reload.

``reload`` loads the policy set again (shipped bundle and user directory),
compiles it, and only then swaps it in, by one assignment: a decision in
flight finishes on the set it started with, and every decision names the
digest of the set that made it. A set that fails to load is refused, counted
and logged, and the old one keeps serving. ``reload_on_sighup`` makes SIGHUP
call it; ``watch`` calls it when a file of the user directory changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from penin.observability.metrics import POLICY_METRICS, PolicyMetrics
from penin.policy.config import PolicySettings
from penin.policy.decisions import decision_record
from penin.policy.engine import Decision, EmbeddedEngine, PolicyEngine
from penin.policy.errors import PolicyLoadError
from penin.policy.policyset import (
    SHIPPED_DIR,
    PackageInfo,
    bundle_files,
    load_policy_set,
)
from penin.policy.remote import RemoteEngine

log = structlog.get_logger("penin.policy")

Snapshot = tuple[tuple[str, str], ...]


class Policies:
    """The serving engine, its settings, and how it is reloaded."""

    def __init__(
        self,
        settings: PolicySettings,
        engine: PolicyEngine,
        *,
        shipped_dir: Path = SHIPPED_DIR,
        metrics: PolicyMetrics = POLICY_METRICS,
    ) -> None:
        self.settings = settings
        self._engine = engine
        self._shipped_dir = shipped_dir
        self._metrics = metrics
        self._reloading = threading.Lock()
        self._watcher: asyncio.Task[None] | None = None
        self._signal_loop: asyncio.AbstractEventLoop | None = None
        # What the user directory held when the serving set was read, or when a
        # reload last tried it: the watcher reloads when it differs.
        self._seen: Snapshot | None = ()

    @classmethod
    def load(
        cls,
        settings: PolicySettings,
        *,
        shipped_dir: Path = SHIPPED_DIR,
        metrics: PolicyMetrics = POLICY_METRICS,
    ) -> Policies:
        """The policies as configured; PolicyLoadError if the set is refused."""
        engine: PolicyEngine
        seen = snapshot(settings.dir) if settings.dir is not None else ()
        if settings.mode == "remote":
            assert settings.opa_url is not None  # PolicySettings requires it
            engine = RemoteEngine(
                settings.opa_url, timeout_s=settings.timeout_s, metrics=metrics
            )
        else:
            policy_set = load_policy_set(settings.dir, shipped_dir=shipped_dir)
            engine = EmbeddedEngine(policy_set, metrics=metrics)
        log.info("policy.loaded", mode=settings.mode, digest=engine.digest)

        policies = cls(settings, engine, shipped_dir=shipped_dir, metrics=metrics)
        policies._seen = seen

        return policies

    @property
    def engine(self) -> PolicyEngine:
        return self._engine

    @property
    def digest(self) -> str:
        return self._engine.digest

    def packages(self) -> list[PackageInfo]:
        return self._engine.packages()

    async def decide(
        self, path: str, input: Mapping[str, Any], text: str | None = None
    ) -> Decision:
        """The serving engine's decision; a failure is a deny, never an error.

        ``text``, if given, must be ``input``'s RFC 8785 text: see
        ``PolicyEngine.decide``.
        """
        return await self._engine.decide(path, input, text)

    def record(self, decision: Decision, input: Any) -> tuple[str, dict[str, Any]]:
        """The ledger record of ``decision``, input logged and masked as configured."""
        return decision_record(
            decision,
            input,
            log_input=self.settings.log_input,
            mask_fields=self.settings.mask_fields,
        )

    def reload(self) -> bool:
        """Load and swap in the policy set again; False if refused (old one serves).

        Runs in the calling thread, which compiles the new set for itself: the
        node calls it on its event loop, where decisions are made.
        """
        if self.settings.mode == "remote":
            log.info("policy.reload_skipped", reason="remote mode: OPA owns its set")
            return False
        with self._reloading:
            previous = self._engine.digest
            if self.settings.dir is not None:
                self._seen = snapshot(self.settings.dir)
            try:
                policy_set = load_policy_set(
                    self.settings.dir, shipped_dir=self._shipped_dir
                )
                engine = EmbeddedEngine(policy_set, metrics=self._metrics)
            except PolicyLoadError as exc:
                return self._refuse(str(exc), exc.file, exc.line)
            except OSError as exc:  # the directory itself went unreadable
                problem = f"cannot read the policy directory: {exc.strerror}"
                return self._refuse(problem, str(exc.filename), None)
            self._engine = engine
        self._metrics.reloads.labels("loaded").inc()
        log.info(
            "policy.reloaded",
            digest=engine.digest,
            previous=previous,
            changed=engine.digest != previous,
        )

        return True

    def _refuse(self, error: str, file: str, line: int | None) -> bool:
        self._metrics.reloads.labels("refused").inc()
        log.error(
            "policy.reload_refused",
            error=error,
            file=file,
            line=line,
            serving=self._engine.digest,
        )

        return False

    def start_watching(self) -> asyncio.Task[None] | None:
        """Watch the user directory from the running loop, if configured to."""
        if (
            self._watcher is not None
            or self.settings.mode == "remote"
            or self.settings.dir is None
            or self.settings.watch_interval_s == 0
        ):
            return self._watcher
        self._watcher = asyncio.get_running_loop().create_task(
            self.watch(), name="policy-watcher"
        )

        return self._watcher

    async def watch(self) -> None:
        """Reload each time the user directory's files change; runs until cancelled."""
        directory = self.settings.dir
        if directory is None:
            return
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            if snapshot(directory) != self._seen:
                log.info("policy.change_seen", dir=str(directory))
                self.reload()

    def reload_on_sighup(self) -> None:
        """Reload when the process gets SIGHUP, on the running loop (Unix)."""
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        self._signal_loop = loop

    def _on_sighup(self) -> None:
        log.info("policy.sighup")
        self.reload()

    async def close(self) -> None:
        if self._signal_loop is not None:
            self._signal_loop.remove_signal_handler(signal.SIGHUP)
            self._signal_loop = None
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await self._engine.close()


def snapshot(directory: Path) -> Snapshot | None:
    """Each module and data file with the SHA-256 of its bytes; None if unreadable.

    Contents, not modification times: two edits within the file system's
    timestamp granularity that keep the size would look like none.
    """
    seen = []
    try:
        for file in bundle_files(directory):
            seen.append((str(file), hashlib.sha256(file.read_bytes()).hexdigest()))
    except OSError:
        return None

    return tuple(seen)
