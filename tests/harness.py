"""Helpers for the node tests: real `penin serve` processes, polls, problem checks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from penin.keys import Scope

PENIN = Path(sys.executable).with_name("penin")
PROBLEM_TYPE = "https://penin.dev/problems/"
PROBLEM_MEDIA_TYPE = "application/problem+json"
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 15.0
CLI_TIMEOUT_S = 60.0
POLL_S = 0.05

T = TypeVar("T")


# -- helpers ----------------------------------------------------------------


def wait_for(probe: Callable[[], T], timeout: float, what: str) -> T:
    """Call ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        time.sleep(POLL_S)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]

    return port


def node_env(**extra: str) -> dict[str, str]:
    """This process's environment without PENIN_* settings, logging JSON lines."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENIN_")}

    return {**env, "PENIN_LOG_JSON": "1", **extra}


def penin(
    *args: object, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``penin`` console script as a user would."""
    return subprocess.run(
        [str(PENIN), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        env=env or node_env(),
        check=False,
    )


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict[str, Any]:
    """An RFC 9457 problem document of ``kind`` with ``status``; no stack trace."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body: dict[str, Any] = response.json()

    assert {"type", "title", "status", "detail"} <= body.keys(), body
    assert body["type"] == PROBLEM_TYPE + kind, body
    assert body["status"] == status
    assert body["title"]
    assert body["detail"]
    assert "Traceback" not in response.text

    return body


# -- real servers -----------------------------------------------------------


@dataclass
class LiveServer:
    """A ``penin serve`` process; its stderr (the node's log) goes to a file."""

    data_dir: Path
    base_url: str
    log_path: Path
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    verify: ssl.SSLContext | bool = True
    tokens: list[str] = field(default_factory=list)

    def client(
        self, token: str | None = None, headers: dict[str, str] | None = None
    ) -> httpx.Client:
        """A client of this server, sending ``token`` as a bearer if given."""
        return httpx.Client(
            base_url=self.base_url,
            headers={**(bearer(token) if token else {}), **(headers or {})},
            verify=self.verify,
            timeout=30,
        )

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """One GET on a connection of its own."""
        with self.client() as http:
            return http.get(url, **kwargs)

    def create_key(self, scope: Scope, name: str = "") -> dict[str, Any]:
        """``penin keys create --json`` against this server's data directory."""
        result = penin(
            "keys", "create", "--data-dir", self.data_dir, "--scope", scope.value,
            "--name", name, "--json", env=self.env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        created: dict[str, Any] = json.loads(result.stdout)
        self.tokens.append(created["token"])

        return created

    def token(self, scope: Scope) -> str:
        return str(self.create_key(scope)["token"])

    def revoke_key(self, key_id: str) -> None:
        result = penin(
            "keys", "revoke", "--data-dir", self.data_dir, key_id, env=self.env
        )
        assert result.returncode == 0, result.stderr

    def stop(self) -> int:
        """SIGTERM, then SIGKILL if it has not exited in time; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(STOP_TIMEOUT_S)

        return self.process.returncode

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.log_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                events.append(json.loads(line))

        return events

    def access_lines(self, **fields: object) -> list[dict[str, Any]]:
        return [
            e
            for e in self.log_events()
            if e.get("event") == "http.request"
            and all(e.get(k) == v for k, v in fields.items())
        ]


def start_server(
    data_dir: Path,
    log_path: Path,
    *args: object,
    port: int | None = None,
    port_flag: bool = True,
    env: dict[str, str] | None = None,
    verify: ssl.SSLContext | bool = True,
) -> LiveServer:
    """Start ``penin serve`` and return once /livez answers (at most 15 s).

    The port is passed as ``--port`` unless ``port_flag`` is false, when the
    caller's config file or variables must make the node listen on ``port``.
    """
    env = env or node_env()
    port = port or free_port()
    flags = ["--port", port] if port_flag else []
    scheme = "https" if "--tls-cert" in args else "http"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [str(PENIN), "serve", "--data-dir", str(data_dir), *map(str, flags),
             *map(str, args)],
            stdout=log,
            stderr=log,
            env=env,
        )  # fmt: skip
    server = LiveServer(
        data_dir, f"{scheme}://127.0.0.1:{port}", log_path, process, env, verify
    )
    try:
        wait_for(lambda: _answers(server), START_TIMEOUT_S, f"{server.base_url}/livez")
    except BaseException:
        server.stop()
        raise

    return server


def _answers(server: LiveServer) -> bool:
    if server.process.poll() is not None:
        raise AssertionError(
            f"penin serve exited with {server.process.returncode}:\n"
            + server.log_text()
        )
    try:
        response = httpx.get(
            f"{server.base_url}/livez", verify=server.verify, timeout=1.0
        )
    except httpx.TransportError:
        return False

    return response.status_code == 200


@contextlib.contextmanager
def running_server(
    directory: Path, *args: object, **kwargs: Any
) -> Iterator[LiveServer]:
    """A server on ``directory/data`` that is stopped however the block ends."""
    server = start_server(directory / "data", directory / "node.log", *args, **kwargs)
    try:
        yield server
    finally:
        server.stop()
