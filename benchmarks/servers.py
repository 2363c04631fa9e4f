"""The servers the node benchmark starts: penin nodes and the floor app, each a
process on a free loopback port, stopped with SIGTERM and a bounded wait."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 35.0  # the node drains for up to 30 s before it gives up
CLI_TIMEOUT_S = 120.0
UVICORN_FLAGS = (
    "--loop", "uvloop", "--http", "httptools", "--no-access-log",
    "--no-server-header", "--log-level", "warning",
)  # fmt: skip


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path
    data_dir: Path | None = None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]

    return port


def clean_env(**values: str) -> dict[str, str]:
    """The environment without the caller's PENIN_* settings, plus ``values``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENIN_")}
    return {**env, **values}


def penin(*args: str) -> str:
    done = subprocess.run(
        [str(BIN / "penin"), *args],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
        env=clean_env(),
    )
    if done.returncode not in (0, 1):
        raise RuntimeError(f"penin {' '.join(args)} failed: {done.stderr.strip()}")

    return done.stdout


def spawn(
    name: str,
    command: list[str],
    env: dict[str, str],
    work: Path,
    port: int | None = None,
) -> Server:
    port = port or free_port()
    log = work / f"{name}.log"
    with log.open("ab") as sink:
        process = subprocess.Popen(
            [*command, "--port", str(port)],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=work,
        )

    return Server(name, process, f"http://127.0.0.1:{port}", log)


def start_node(name: str, level: str, work: Path) -> tuple[Server, str]:
    """A node with its own ledger and an append key; returns it and the token."""
    data_dir = work / name
    penin("ledger", "init", "--data-dir", str(data_dir))
    key = json.loads(penin("keys", "create", "--data-dir", str(data_dir),
                           "--scope", "append", "--json"))  # fmt: skip
    env = clean_env(PENIN_LOG_LEVEL=level, PENIN_LOG_JSON="1")
    command = [str(BIN / "penin"), "serve", "--data-dir", str(data_dir)]
    server = spawn(name, command, env, work)
    server.data_dir = data_dir

    return server, key["token"]


def start_floor(work: Path) -> Server:
    command = [
        str(BIN / "uvicorn"), "floor_app:app", "--app-dir", str(Path(__file__).parent),
        "--host", "127.0.0.1", *UVICORN_FLAGS,
    ]  # fmt: skip
    return spawn("floor", command, clean_env(), work)


def wait_ready(server: Server, path: str, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{server.name} not ready in {timeout} s")


def stop(server: Server) -> None:
    """SIGTERM, a bounded wait for the drain, then SIGKILL."""
    if server.process.poll() is not None:
        return
    server.process.send_signal(signal.SIGTERM)
    try:
        server.process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        print(f"  {server.name} ignored SIGTERM; killing it", file=sys.stderr)
        server.process.kill()
        server.process.wait(timeout=10)
