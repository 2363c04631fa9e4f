"""Real etcd processes on loopback for tests: one member, or a cluster of 3.

Every member listens on free ports of 127.0.0.1 with its own data directory, so
an etcd that Debian's package may run on 2379/2380 never matters, and ETCD_*
variables of the environment are not passed on. Heartbeat and election timeouts
are short (50/250 ms) so that elections take a fraction of a second. Every wait
is bounded; ``stop`` ends the process whatever state it is in.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from daemon import STOP_TIMEOUT_S, Daemon
from redisd import free_port

START_TIMEOUT_S = 15.0
PROBE_TIMEOUT_S = 1.0
HEARTBEAT_MS = 50
ELECTION_MS = 250


class EtcdFixtureError(RuntimeError):
    """A test etcd that would not start, elect a leader or answer in time."""


def _require(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise EtcdFixtureError(
            f"{command} is not installed; run scripts/install-system-deps.sh"
        )

    return path


@functools.cache
def _speed_flags() -> tuple[str, ...]:
    """``--unsafe-no-fsync`` where this etcd has it (3.5 and later; 3.4 has not)."""
    result = subprocess.run(
        [_require("etcd"), "--help"],
        capture_output=True,
        text=True,
        timeout=STOP_TIMEOUT_S,
        check=False,
    )
    help_text = result.stdout + result.stderr

    return ("--unsafe-no-fsync",) if "--unsafe-no-fsync" in help_text else ()


def _post(url: str, body: dict[str, object]) -> dict[str, object]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
        answer: dict[str, object] = json.load(response)

    return answer


class EtcdServer(Daemon):
    """One etcd member; ``kill`` and ``start`` keep its ports and its data."""

    log_name = "etcd.log"

    def __init__(
        self,
        directory: Path,
        name: str = "m0",
        *,
        client_port: int | None = None,
        peer_port: int | None = None,
    ) -> None:
        super().__init__(directory)
        self.name = name
        self.client_port = client_port if client_port is not None else free_port()
        self.peer_port = peer_port if peer_port is not None else free_port()
        # A single member forms its own cluster; EtcdCluster3 replaces these.
        self.initial_cluster = f"{name}={self.peer_url}"
        self.cluster_token = f"penin-test-{uuid.uuid4().hex[:12]}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def start(self) -> EtcdServer:
        """Start and wait until it answers as a member with a leader."""
        self.launch()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise

        return self

    def launch(self) -> None:
        """Start the process without waiting (a cluster's members start together)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            _require("etcd"),
            "--name", self.name,
            "--data-dir", str(self.directory / "data"),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", self.initial_cluster,
            "--initial-cluster-token", self.cluster_token,
            "--initial-cluster-state", "new",
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-outputs", "stderr",
            *_speed_flags(),
        ]  # fmt: skip
        env = {k: v for k, v in os.environ.items() if not k.startswith("ETCD")}
        with (self.directory / "etcd.log").open("ab") as log:
            self._process = subprocess.Popen(
                command, stdout=log, stderr=log, env=env, start_new_session=True
            )

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running:
                raise EtcdFixtureError(f"etcd {self.name} exited: {self._log_tail()}")
            if self.healthy():
                return
            time.sleep(0.02)

        raise EtcdFixtureError(
            f"etcd {self.name} on {self.url} was not healthy within {timeout} s: "
            f"{self._log_tail()}"
        )

    def healthy(self) -> bool:
        """Whether it answers /health with true: it is up and its cluster has quorum."""
        try:
            request = urllib.request.Request(f"{self.url}/health")
            with urllib.request.urlopen(request, timeout=PROBE_TIMEOUT_S) as response:
                return bool(json.load(response).get("health") == "true")
        except (OSError, ValueError):
            return False

    def is_leader(self) -> bool:
        """Whether this member leads its cluster, by its own maintenance status."""
        try:
            status = _post(f"{self.url}/v3/maintenance/status", {})
        except (OSError, ValueError):
            return False
        header = status.get("header")

        return isinstance(header, dict) and status.get("leader") == header.get(
            "member_id"
        )

    def restart(self) -> EtcdServer:
        """Stop if running, then start again on its ports with the data it had."""
        self.stop()

        return self.start()


class EtcdCluster3:
    """Three members on loopback forming one cluster; any can stop and start."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.members = [EtcdServer(directory / f"m{i}", f"m{i}") for i in range(3)]
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        token = self.members[0].cluster_token
        for member in self.members:
            member.initial_cluster = initial
            member.cluster_token = token

    @property
    def endpoints(self) -> list[str]:
        return [member.url for member in self.members]

    def start(self) -> EtcdCluster3:
        try:
            for member in self.members:
                member.launch()
            for member in self.members:
                member.wait_ready()
        except BaseException:
            self.stop()
            raise

        return self

    def leader_index(self) -> int:
        """Which member leads the cluster now, as the running members report it."""
        for index, member in enumerate(self.members):
            if member.running and member.is_leader():
                return index

        raise EtcdFixtureError("no running member reports itself as the leader")

    def stop_member(self, index: int) -> None:
        self.members[index].stop()

    def start_member(self, index: int) -> None:
        """Restart a stopped member on its ports and data; wait until it is healthy."""
        member = self.members[index]
        member.launch()
        member.wait_ready()

    def heal(self) -> None:
        """Start every stopped member and wait until all three are healthy."""
        for member in self.members:
            if not member.running:
                member.launch()
        for member in self.members:
            member.wait_ready()

    def stop(self) -> None:
        # An ExitStack stops every member even when stopping one of them fails.
        with contextlib.ExitStack() as stack:
            for member in self.members:
                stack.callback(member.stop)
