"""What every test cluster of real ``penin serve`` processes shares: a port, a
data directory, a config file and a log per member; starting, killing and
stopping them; reading what each member's ledger file holds.

``StaticCluster`` and ``ElectedCluster`` add the configuration of their
coordinator (``config``) and how their members come to share one log.
"""

from __future__ import annotations

import contextlib
import secrets
import signal
import sqlite3
from pathlib import Path
from typing import Any

import yaml

from harness import LiveServer, free_port, node_env, start_server

Row = tuple[Any, ...]


class Members:
    """Members named ``names``, under ``root``, sharing one cluster token."""

    def __init__(self, root: Path, names: tuple[str, ...]) -> None:
        self.root = root
        self.names = names
        self.token = secrets.token_hex(24)
        self.ports = {name: free_port() for name in names}
        self.servers: dict[str, LiveServer] = {}
        self.env = node_env(PENIN_CLUSTER_TOKEN=self.token)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def data_dir(self, name: str) -> Path:
        return self.root / name / "data"

    def settings(self, name: str) -> dict[str, Any]:
        """The ``node`` section of ``name``'s config file; a cluster adds the rest."""
        return {"node": {"name": name, "advertise_url": self.url(name)}}

    def config(self, name: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(self.settings(name)))

        return path

    def start(self, name: str) -> LiveServer:
        server = start_server(
            self.data_dir(name),
            self.root / f"{name}.log",
            "--config", self.config(name),
            port=self.ports[name],
            env=self.env,
        )  # fmt: skip
        self.servers[name] = server

        return server

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown, no last checkpoint, no flush beyond what is durable."""
        process = self.servers[name].process
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def stop_all(self) -> None:
        """Paused members are resumed first; then the last started stops first."""
        for server in self.servers.values():
            with contextlib.suppress(ProcessLookupError):
                server.process.send_signal(signal.SIGCONT)
        for server in reversed(self.servers.values()):
            server.stop()

    def rows(self, name: str) -> list[Row]:
        """Every record row of a member's file, as stored, read without its node."""
        path = self.data_dir(name) / "ledger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT * FROM records ORDER BY seq").fetchall()
        finally:
            conn.close()
