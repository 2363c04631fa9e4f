"""Real redis-server processes on loopback for tests: one server, or a cluster of 3.

Each server listens on a free port of 127.0.0.1 with persistence off and its
own directory, so a Redis that Debian's package may run on 6379 never matters.
Every wait is bounded; ``stop`` ends the process whatever state it is in.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

from daemon import Daemon

START_TIMEOUT_S = 10.0
CLUSTER_TIMEOUT_S = 20.0
# A cluster node also listens on its port + 10000 (the cluster bus).
_BUS_OFFSET = 10000


class RedisFixtureError(RuntimeError):
    """A test Redis that would not start, join or answer in time."""


def free_port(*, with_bus: bool = False) -> int:
    """A loopback port nobody listens on (and its bus port, when asked)."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if not with_bus:
            return port
        if port + _BUS_OFFSET < 65536 and _port_is_free(port + _BUS_OFFSET):
            return port

    raise RedisFixtureError("found no free loopback port for a cluster node")


def _port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False

    return True


def _require(command: str) -> str:
    path = shutil.which(command)
    if path is None:
        raise RedisFixtureError(
            f"{command} is not installed; run scripts/install-system-deps.sh"
        )

    return path


class RedisServer(Daemon):
    """One redis-server process; ``kill`` and ``restart`` keep its port."""

    log_name = "redis.log"

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *extra: str,
        password: str | None = None,
    ) -> None:
        super().__init__(directory)
        self.port = port if port is not None else free_port()
        self.password = password
        self.extra = (*extra, "--requirepass", password) if password else extra

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def client(self) -> redis.Redis:
        """A plain synchronous client, as an operator (or attacker) would use."""
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_timeout=2,
            socket_connect_timeout=2,
        )

    def start(self) -> RedisServer:
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            _require("redis-server"),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.directory / "redis.log"),
            "--daemonize", "no",
            *self.extra,
        ]  # fmt: skip
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            self._wait_for_ping()
        except BaseException:
            self.stop()
            raise

        return self

    def _wait_for_ping(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        with contextlib.closing(self.client()) as client:
            while time.monotonic() < deadline:
                if not self.running:
                    raise RedisFixtureError(f"redis-server exited: {self._log_tail()}")
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                time.sleep(0.02)

        raise RedisFixtureError(
            f"redis-server on port {self.port} did not answer PING within "
            f"{START_TIMEOUT_S} s: {self._log_tail()}"
        )

    def restart(self) -> RedisServer:
        """Stop if running, then start afresh (no persistence: empty) on its port."""
        self.stop()

        return self.start()


class RedisCluster3:
    """Three cluster-enabled servers holding all 16384 slots, no replicas."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.nodes: list[RedisServer] = []

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> RedisCluster3:
        try:
            for _ in range(3):
                self._start_node()
            self._create()
            self._wait_until_ok()
        except BaseException:
            self.stop()
            raise

        return self

    def _start_node(self) -> None:
        port = free_port(with_bus=True)
        node = RedisServer(
            self.directory / f"node-{port}",
            port,
            "--cluster-enabled", "yes",
            "--cluster-config-file", f"nodes-{port}.conf",
            "--cluster-node-timeout", "2000",
        )  # fmt: skip
        self.nodes.append(node.start())

    def _create(self) -> None:
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = [_require("redis-cli"), "--cluster", "create", *addresses]
        result = subprocess.run(
            [*command, "--cluster-replicas", "0", "--cluster-yes"],
            capture_output=True,
            text=True,
            timeout=CLUSTER_TIMEOUT_S,
            check=False,
        )
        if result.returncode != 0:
            raise RedisFixtureError(
                f"redis-cli --cluster create failed: {result.stdout}{result.stderr}"
            )

    def _wait_until_ok(self) -> None:
        deadline = time.monotonic() + CLUSTER_TIMEOUT_S
        waiting = list(self.nodes)
        while waiting and time.monotonic() < deadline:
            waiting = [node for node in waiting if not _cluster_ok(node)]
            if waiting:
                time.sleep(0.05)
        if waiting:
            raise RedisFixtureError(
                f"cluster_state is not ok on port {waiting[0].port} "
                f"after {CLUSTER_TIMEOUT_S} s"
            )

    def stop(self) -> None:
        # An ExitStack stops every node even when stopping one of them fails.
        with contextlib.ExitStack() as stack:
            for node in self.nodes:
                stack.callback(node.stop)


def _cluster_ok(node: RedisServer) -> bool:
    with contextlib.closing(node.client()) as client:
        try:
            # redis-py parses the CLUSTER INFO text into a dict of its fields.
            info = client.execute_command("CLUSTER INFO")
        except redis.RedisError:
            return False

    return isinstance(info, dict) and info.get("cluster_state") == "ok"
