"""A server process a test fixture owns: its log's tail, and how it stops.

RedisServer and EtcdServer start their servers their own way; killing,
pausing, resuming and stopping them is the same, and lives here.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

STOP_TIMEOUT_S = 5.0


class Daemon:
    """One child process, logging to ``directory / log_name``."""

    log_name = "server.log"

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _log_tail(self) -> str:
        log = self.directory / self.log_name
        if not log.exists():
            return "(no log)"

        return " | ".join(log.read_text(errors="replace").splitlines()[-5:])

    def kill(self) -> None:
        """SIGKILL: the server dies mid-run, as in a crash or an OOM kill."""
        if self._process is None:
            return
        self._process.kill()
        self._process.wait(timeout=STOP_TIMEOUT_S)
        self._process = None

    def pause(self) -> None:
        """SIGSTOP: connections are still accepted, but nothing is answered."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited in time."""
        if self._process is None:
            return
        # A paused server would ignore SIGTERM until it is continued.
        self._process.send_signal(signal.SIGCONT)
        self._process.terminate()
        try:
            self._process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=STOP_TIMEOUT_S)
        self._process = None
