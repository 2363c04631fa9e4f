"""A cluster of real ``penin serve`` processes on loopback, coordinated by etcd.

Each member has its own data directory, port, config file and log. ``n1``'s
ledger is created first (as an operator does with ``penin ledger init``) and
the cluster's signing key is copied beside every other member's data. The
members share the etcd the test gives, under a cluster name of their own.
``Writer`` appends without pause to whichever member is the primary and
keeps what was acknowledged. Every member started is stopped by ``stop_all``.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import signal
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from harness import LiveServer, bearer, free_port, node_env, start_server, wait_for
from penin.keys import Scope
from penin.ledger.ledger import WORMLedger

ORIGIN = "test.local/elected"
ELECTION_S = 15.0

Row = tuple[Any, ...]


class ElectedCluster:
    def __init__(
        self,
        root: Path,
        etcd_endpoints: list[str],
        names: tuple[str, ...] = ("n1", "n2", "n3"),
        **cluster: Any,
    ) -> None:
        self.root = root
        self.names = names
        self.etcd_endpoints = etcd_endpoints
        self.cluster_section = {
            "coordinator": "etcd",
            "name": f"t{secrets.token_hex(4)}",
            "etcd_endpoints": etcd_endpoints,
            "replication": "async",
            "lease_ttl_s": 3,
            **cluster,
        }
        self.token = secrets.token_hex(24)
        self.ports = {name: free_port() for name in names}
        self.servers: dict[str, LiveServer] = {}
        self.env = node_env(PENIN_CLUSTER_TOKEN=self.token)
        first = self.data_dir(names[0])
        first.mkdir(parents=True)
        WORMLedger(first / "ledger.db").initialize(ORIGIN).close()
        for name in names[1:]:
            self.data_dir(name).mkdir(parents=True)
            shutil.copy(first / "ledger.key", self.data_dir(name) / "ledger.key")

    # -- members -------------------------------------------------------------------

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def data_dir(self, name: str) -> Path:
        return self.root / name / "data"

    def config(self, name: str) -> Path:
        path = self.root / f"{name}.yaml"
        body = {"node": {"name": name, "advertise_url": self.url(name)},
                "cluster": self.cluster_section}  # fmt: skip
        path.write_text(yaml.safe_dump(body))

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

    def start_all(self) -> ElectedCluster:
        """The first member, until it leads; then the others, until they follow."""
        self.start(self.names[0])
        self.wait_for_primary()
        for name in self.names[1:]:
            self.start(name)
        self.wait_following(*self.names[1:])

        return self

    def kill(self, name: str) -> None:
        process = self.servers[name].process
        process.send_signal(signal.SIGKILL)
        process.wait(10)

    def pause(self, name: str) -> None:
        self.servers[name].process.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.servers[name].process.send_signal(signal.SIGCONT)

    def alive(self) -> list[str]:
        return [n for n, s in self.servers.items() if s.process.poll() is None]

    def stop_all(self) -> None:
        for server in self.servers.values():
            with contextlib.suppress(ProcessLookupError):
                server.process.send_signal(signal.SIGCONT)
        for server in reversed(self.servers.values()):
            server.stop()

    # -- roles ---------------------------------------------------------------------

    def primaries(self) -> list[str]:
        """The members whose /primary answers 200 now."""
        found = []
        for name in self.alive():
            with contextlib.suppress(httpx.TransportError):
                if (
                    httpx.get(f"{self.url(name)}/primary", timeout=1.0).status_code
                    == 200
                ):
                    found.append(name)
        return found

    def wait_for_primary(
        self, *, other_than: str | None = None, timeout: float = ELECTION_S
    ) -> str:
        def one() -> str | None:
            found = [n for n in self.primaries() if n != other_than]
            return found[0] if len(found) == 1 else None

        return wait_for(one, timeout, "one member to answer /primary with 200")

    def wait_following(self, *names: str, timeout: float = ELECTION_S) -> None:
        def following() -> bool:
            for name in names:
                with contextlib.suppress(httpx.TransportError):
                    answer = httpx.get(f"{self.url(name)}/replica", timeout=1.0)
                    if answer.status_code != 200:
                        return False
                    continue
                return False
            return True

        wait_for(following, timeout, f"{', '.join(names)} to follow the primary")

    def token_of(self, scope: Scope) -> str:
        """A key created on the primary's data, as an operator does."""
        primary = self.wait_for_primary()
        return self.servers[primary].token(scope)

    # -- what the members hold ---------------------------------------------------------

    def rows(self, name: str) -> list[Row]:
        path = self.data_dir(name) / "ledger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return conn.execute("SELECT * FROM records ORDER BY seq").fetchall()
        finally:
            conn.close()

    def leaf_hashes(self, name: str) -> list[str]:
        path = self.data_dir(name) / "ledger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT leaf_hash FROM records ORDER BY seq")
            return [bytes(row[0]).hex() for row in rows]
        finally:
            conn.close()

    def wait_until_identical(self, *names: str, timeout: float = ELECTION_S) -> None:
        def identical() -> bool:
            first = self.leaf_hashes(names[0])
            return all(self.leaf_hashes(name) == first for name in names[1:])

        wait_for(identical, timeout, f"{', '.join(names)} to hold the same records")


@dataclass
class Writer:
    """Appends to the cluster's primary until stopped; keeps what was acknowledged.

    On a refusal or a dead connection it asks the next member; a 503 naming
    the primary (``Location``) is followed. Every append has an idempotency
    key, so a retry of one that was stored but not answered is harmless.
    """

    cluster: ElectedCluster
    token: str
    acknowledged: list[tuple[int, str]] = field(default_factory=list)
    # The term of each acknowledged record, in the same order.
    terms: list[int] = field(default_factory=list)
    # (time.monotonic(), seq) of each acknowledgement, to time a fault.
    times: list[tuple[float, int]] = field(default_factory=list)
    refused: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Writer:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join(30)

    def wait_acknowledged(self, count: int, timeout: float = ELECTION_S) -> None:
        wait_for(
            lambda: len(self.acknowledged) >= count, timeout, f"{count} acknowledged"
        )

    def _run(self) -> None:
        names = list(self.cluster.names)
        target = self.cluster.url(names[0])
        turn = 0
        with httpx.Client(timeout=2.0, headers=bearer(self.token)) as http:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                while not self._stop.is_set():
                    try:
                        answer = http.post(
                            f"{target}/v1/ledger/records",
                            json={"event_type": "test.write", "payload": {"k": key}},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code in (200, 201):
                        body = answer.json()
                        self.acknowledged.append((body["seq"], body["leaf_hash"]))
                        self.terms.append(body["term"])
                        self.times.append((time.monotonic(), body["seq"]))
                        break
                    self.refused += 1
                    location = (
                        None if answer is None else answer.headers.get("location")
                    )
                    if location:
                        target = location.split("/v1/")[0]
                    else:
                        turn += 1
                        target = self.cluster.url(names[turn % len(names)])
                        time.sleep(0.05)
