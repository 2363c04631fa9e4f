"""A cluster of real ``penin serve`` processes on loopback, coordinated by etcd.

Each member has its own data directory, port, config file and log. ``n1``'s
ledger is created first (as an operator does with ``penin ledger init``) and
the cluster's signing key is copied beside every other member's data. The
members share the etcd the test gives, under a cluster name of their own.
``Writers`` append without pause to whichever member is the primary and
keep what was acknowledged, by whom, in which term and when. Every member
started is stopped by ``stop_all``.
"""

from __future__ import annotations

import contextlib
import itertools
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
from members import Members

from harness import bearer, wait_for
from penin.keys import Scope
from penin.ledger.ledger import WORMLedger

ORIGIN = "test.local/elected"
ELECTION_S = 15.0
# A writer gives a member this long to answer before it asks the next one.
CLIENT_TIMEOUT_S = 2.0
RECOVERY_BOUND_S = 30.0


class ElectedCluster(Members):
    def __init__(
        self,
        root: Path,
        etcd_endpoints: list[str],
        names: tuple[str, ...] = ("n1", "n2", "n3"),
        **cluster: Any,
    ) -> None:
        super().__init__(root, names)
        self.etcd_endpoints = etcd_endpoints
        self.cluster_section = {
            "coordinator": "etcd",
            "name": f"t{secrets.token_hex(4)}",
            "etcd_endpoints": etcd_endpoints,
            "replication": "async",
            "lease_ttl_s": 3,
            **cluster,
        }
        first = self.data_dir(names[0])
        first.mkdir(parents=True)
        WORMLedger(first / "ledger.db").initialize(ORIGIN).close()
        for name in names[1:]:
            self.data_dir(name).mkdir(parents=True)
            shutil.copy(first / "ledger.key", self.data_dir(name) / "ledger.key")

    def settings(self, name: str) -> dict[str, Any]:
        return {**super().settings(name), "cluster": self.cluster_section}

    def start_all(self) -> ElectedCluster:
        """The first member, until it leads; then the others, until they follow."""
        self.start(self.names[0])
        self.wait_for_primary()
        for name in self.names[1:]:
            self.start(name)
        self.wait_following(*self.names[1:])

        return self

    def pause(self, name: str) -> None:
        self.servers[name].process.send_signal(signal.SIGSTOP)

    def resume(self, name: str) -> None:
        self.servers[name].process.send_signal(signal.SIGCONT)

    def alive(self) -> list[str]:
        return [n for n, s in self.servers.items() if s.process.poll() is None]

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


@dataclass(frozen=True)
class Ack:
    """One acknowledged append: the record and who answered it, when."""

    seq: int
    leaf_hash: str
    term: int
    node: str
    sent: float
    received: float
    # A retried key answered with the record stored before (200, not 201):
    # its term is the record's, not the answering member's.
    replayed: bool


@dataclass
class Writers:
    """``count`` clients appending without pause to whichever member is the
    primary, each keeping every acknowledgement it got.

    A client sends each record under a fresh Idempotency-Key and retries it
    until it is acknowledged: a 503 naming the primary is followed, anything
    else (refusal, timeout, dead connection) sends it to the next member.
    """

    cluster: ElectedCluster
    token: str
    count: int = 2
    acks: list[Ack] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Writers:
        for index in range(self.count):
            thread = threading.Thread(target=self._run, args=(index,), daemon=True)
            thread.start()
            self._threads.append(thread)

        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(3 * CLIENT_TIMEOUT_S)
        assert not any(thread.is_alive() for thread in self._threads)

    def snapshot(self) -> list[Ack]:
        with self._lock:
            return list(self.acks)

    def wait_more(self, count: int, timeout: float = RECOVERY_BOUND_S) -> None:
        """Until ``count`` more appends than now are acknowledged."""
        target = len(self.snapshot()) + count
        wait_for(
            lambda: len(self.snapshot()) >= target, timeout, f"{target} acknowledged"
        )

    def _run(self, index: int) -> None:
        names = self.cluster.names
        by_url = {self.cluster.url(name): name for name in names}
        turn = itertools.count(index)
        target = self.cluster.url(names[index % len(names)])
        with httpx.Client(timeout=CLIENT_TIMEOUT_S, headers=bearer(self.token)) as http:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                while not self._stop.is_set():
                    sent = time.monotonic()
                    try:
                        answer: httpx.Response | None = http.post(
                            f"{target}/v1/ledger/records",
                            json={"event_type": "test.write", "payload": {"k": key}},
                            headers={"Idempotency-Key": key},
                        )
                    except httpx.TransportError:
                        answer = None
                    if answer is not None and answer.status_code in (200, 201):
                        self._keep(answer, by_url[target], sent)
                        break
                    location = (
                        None if answer is None else answer.headers.get("location")
                    )
                    if location:
                        target = location.split("/v1/")[0]
                    else:
                        target = self.cluster.url(names[next(turn) % len(names)])
                        time.sleep(0.05)

    def _keep(self, answer: httpx.Response, node: str, sent: float) -> None:
        body = answer.json()
        ack = Ack(
            seq=body["seq"],
            leaf_hash=body["leaf_hash"],
            term=body["term"],
            node=node,
            sent=sent,
            received=time.monotonic(),
            replayed=answer.status_code == 200,
        )
        with self._lock:
            self.acks.append(ack)
