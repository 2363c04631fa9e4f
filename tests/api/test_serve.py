"""``penin serve`` as an operator runs it: signals, TLS, configuration, start-up."""

from __future__ import annotations

import contextlib
import itertools
import re
import shlex
import signal
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from harness import (
    CLI_TIMEOUT_S,
    PENIN,
    START_TIMEOUT_S,
    STOP_TIMEOUT_S,
    LiveServer,
    assert_problem,
    bearer,
    node_env,
    penin,
    wait_for,
)
from penin.keys import KeyRing, Scope
from penin.ledger.ledger import open_ledger
from penin.ledger.note import open_checkpoint

RECORDS = "/v1/ledger/records"
WORKERS = 16
ACKED_BEFORE_SIGNAL = 200
RUN_NODE = Path(__file__).resolve().parents[2] / "scripts" / "run-node.sh"

Serve = Callable[..., LiveServer]


def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports (held open together, so none repeats)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))

        return [sock.getsockname()[1] for sock in socks]


def minted(data_dir: Path, scope: Scope) -> str:
    """A key made before the node starts, without the CLI's second of start-up."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = open_ledger(data_dir).initialize()
    try:
        token, _ = KeyRing(ledger).create(scope)
    finally:
        ledger.close()

    return token


def refuses_connections(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=5)
    except httpx.ConnectError:
        return True

    return False


def assert_start_up_refused(
    result: subprocess.CompletedProcess[str], data_dir: Path, *names: object
) -> None:
    """Exit 2, the last line of stderr the one error naming ``names``; nothing opened.

    Lines before it are click's usage hint, as for any bad flag.
    """
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("Error")]

    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert errors == lines[-1:], result.stderr
    for name in names:
        assert str(name) in errors[0]
    assert not (data_dir / "ledger.db").exists()


# -- graceful shutdown ------------------------------------------------------


@dataclass
class Appends:
    """What the appending clients saw, sorted by what the test expects of it."""

    signalled: threading.Event = field(default_factory=threading.Event)
    given_up: threading.Event = field(default_factory=threading.Event)
    acked: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, response: httpx.Response) -> None:
        with self.lock:
            if response.status_code == 201:
                self.acked.append(response.json())
            else:
                self.unexpected.append(f"{response.status_code}: {response.text}")

    def note_failure(self, exc: httpx.TransportError) -> None:
        # A connection refused or closed is the expected end once the node was
        # told to stop, and a fault before that.
        with self.lock:
            kind = self.refused if self.signalled.is_set() else self.unexpected
            kind.append(repr(exc))


def append_until_refused(
    server: LiveServer, token: str, worker: int, seen: Appends
) -> None:
    with server.client(token) as http:
        for n in itertools.count():
            if seen.given_up.is_set():
                return
            body = {"event_type": "test.drain", "payload": {"worker": worker, "n": n}}
            try:
                response = http.post(RECORDS, json=body)
            except httpx.TransportError as exc:
                seen.note_failure(exc)
                return
            seen.note(response)


def assert_ledger_holds(data_dir: Path, acked: list[dict[str, Any]]) -> None:
    """Every acknowledged record is stored as acknowledged; the file verifies."""
    with open_ledger(data_dir) as ledger:
        stored = {r["seq"]: ledger.get(r["seq"]).to_dict() for r in acked}
        tree_size = ledger.count_records()
        note = ledger.latest_checkpoint()
        verifier = ledger.verifier
        report = ledger.verify_integrity()

    assert len(stored) == len(acked), "two acknowledgements named one seq"
    assert stored == {r["seq"]: r for r in acked}
    assert report.ok, report.to_dict()
    assert note is not None
    assert open_checkpoint(note, verifier).tree_size == tree_size


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
def test_a_signal_drains_appends_in_flight_and_loses_no_acknowledged_record(
    serve: Serve, tmp_path: Path, signum: signal.Signals
) -> None:
    token = minted(tmp_path / "data", Scope.APPEND)
    server = serve(data_dir=tmp_path / "data")
    seen = Appends()

    with ThreadPoolExecutor(WORKERS) as pool:
        clients = [
            pool.submit(append_until_refused, server, token, worker, seen)
            for worker in range(WORKERS)
        ]
        try:
            wait_for(
                lambda: len(seen.acked) >= ACKED_BEFORE_SIGNAL or seen.unexpected,
                START_TIMEOUT_S,
                f"{ACKED_BEFORE_SIGNAL} acknowledged appends",
            )
            seen.signalled.set()
            server.process.send_signal(signum)
            status = server.process.wait(STOP_TIMEOUT_S)
            _, still_appending = wait_all(clients, CLI_TIMEOUT_S)
        finally:
            seen.given_up.set()

    assert status == 0, server.log_text()
    assert seen.unexpected == []
    assert not still_appending
    assert len(seen.refused) == WORKERS, "every client ends on a refused connection"
    assert refuses_connections(int(server.base_url.rsplit(":", 1)[1]))
    assert "Traceback" not in server.log_text()
    assert_ledger_holds(server.data_dir, seen.acked)


# -- TLS --------------------------------------------------------------------


def self_signed(directory: Path, name: str = "node") -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by its own key; both as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    return cert_path, key_path


def test_tls_serves_https_to_clients_that_trust_the_certificate_only(
    serve: Serve, tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    trusted = ssl.create_default_context(cafile=str(cert))
    server = serve("--tls-cert", cert, "--tls-key", key, verify=trusted)
    plain = server.base_url.replace("https://", "http://")

    assert server.base_url.startswith("https://127.0.0.1:")
    assert server.get("/livez").status_code == 200
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{plain}/livez", timeout=5)
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{server.base_url}/livez", timeout=5)
    assert server.stop() == 0


def missing(path: Path) -> Path:
    return path.with_name(f"missing-{path.name}")


def not_pem(path: Path) -> Path:
    path.write_text("this is not a PEM file\n")

    return path


def a_directory(path: Path) -> Path:
    # Unreadable in a way that holds for root too, unlike a mode of 000.
    path.unlink()
    path.mkdir()

    return path


def another_key(path: Path) -> Path:
    return self_signed(path.parent, "other")[1]


@pytest.mark.parametrize(
    ("which", "spoil"),
    [
        ("cert", missing),
        ("key", missing),
        ("cert", a_directory),
        ("cert", not_pem),
        ("key", another_key),
    ],
    ids=["missing-cert", "missing-key", "cert-is-a-directory", "cert-not-pem",
         "key-of-another-cert"],
)  # fmt: skip
def test_a_bad_tls_file_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, which: str, spoil: Callable[[Path], Path]
) -> None:
    cert, key = self_signed(tmp_path)
    files = {"cert": cert, "key": key}
    files[which] = spoil(files[which])
    data_dir = tmp_path / "data"

    result = penin(
        "serve", "--data-dir", data_dir, "--port", free_ports(1)[0],
        "--tls-cert", files["cert"], "--tls-key", files["key"],
    )  # fmt: skip

    assert_start_up_refused(result, data_dir, f"--tls-{which}", files[which])


# -- configuration ----------------------------------------------------------


def config_file(directory: Path, values: dict[str, Any]) -> Path:
    path = directory / "penin.yaml"
    path.write_text(yaml.safe_dump(values))

    return path


def test_variables_override_the_config_file_and_flags_override_both(
    serve: Serve, tmp_path: Path
) -> None:
    file_port, env_port = free_ports(2)
    config = config_file(
        tmp_path,
        {
            "data_dir": str(tmp_path / "file-data"),
            "server": {"port": file_port, "open_health": False, "max_body_bytes": 4096},
        },
    )
    env = node_env(
        PENIN_DATA_DIR=str(tmp_path / "env-data"),
        PENIN_SERVER__PORT=str(env_port),
        PENIN_SERVER__MAX_BODY_BYTES="8192",
    )
    token = minted(tmp_path / "flag-data", Scope.APPEND)
    server = serve(
        "--config", config, data_dir=tmp_path / "flag-data", port=env_port,
        port_flag=False, env=env,
    )  # fmt: skip

    def append(size: int) -> httpx.Response:
        body = {"event_type": "test.size", "payload": {"fill": "x" * size}}
        with server.client(token) as http:
            return http.post(RECORDS, json=body)

    assert refuses_connections(file_port)
    assert (tmp_path / "flag-data" / "ledger.db").exists()
    assert not (tmp_path / "env-data").exists()
    assert not (tmp_path / "file-data").exists()
    assert_problem(server.get("/health"), 401, "unauthorized")
    assert append(6000).status_code == 201
    assert_problem(append(10_000), 413, "payload-too-large")


def test_the_port_flag_overrides_the_variable_and_the_config_file(
    serve: Serve, tmp_path: Path
) -> None:
    file_port, env_port, flag_port = free_ports(3)
    config = config_file(tmp_path, {"server": {"port": file_port}})
    env = node_env(PENIN_SERVER__PORT=str(env_port))

    server = serve("--config", config, port=flag_port, env=env)

    assert server.base_url.endswith(f":{flag_port}")
    assert refuses_connections(env_port)
    assert refuses_connections(file_port)


@pytest.mark.parametrize(
    ("text", "variables", "named"),
    [
        pytest.param("server: {port: [\n", {}, "{file}", id="malformed-yaml"),
        pytest.param(None, {}, "{file}", id="missing-file"),
        pytest.param("nope: 1\n", {}, "nope", id="unknown-key"),
        pytest.param("server:\n  bogus: 1\n", {}, "server.bogus",
                     id="unknown-nested-key"),
        pytest.param("server:\n  open_health: maybe\n", {}, "server.open_health",
                     id="bad-value"),
        pytest.param("log:\n  level: loud\n", {}, "log.level", id="unknown-log-level"),
        pytest.param("", {"PENIN_SERVER__MAX_BODY_BYTES": "lots"},
                     "server.max_body_bytes", id="bad-variable"),
        pytest.param("", {"PENIN_SERVER__BOGUS": "1"}, "server.bogus",
                     id="unknown-variable"),
        pytest.param("", {"PENIN_LOG_LEVEL": "loud"}, "PENIN_LOG_LEVEL",
                     id="bad-log-level-variable"),
    ],
)  # fmt: skip
def test_a_bad_setting_stops_start_up_with_one_line_naming_it(
    tmp_path: Path, text: str | None, variables: dict[str, str], named: str
) -> None:
    config = tmp_path / "penin.yaml"
    if text is not None:
        config.write_text(text)
    data_dir = tmp_path / "data"

    result = penin(
        "serve", "--config", config, "--data-dir", data_dir,
        "--port", free_ports(1)[0], env=node_env(**variables),
    )  # fmt: skip

    assert_start_up_refused(result, data_dir, named.format(file=config))


# -- start-up ---------------------------------------------------------------


def test_the_first_requests_after_start_up_succeed_and_a_restart_keeps_the_log(
    serve: Serve, tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    first = serve(data_dir=data_dir)
    token = minted(data_dir, Scope.ADMIN)
    with first.client(token) as http:
        ready = http.get("/readyz")
        appended = http.post(RECORDS, json={"event_type": "test.up", "payload": {}})
    stopped = first.stop()

    second = serve(data_dir=data_dir)
    with second.client(token) as http:
        again = http.get(appended.headers["location"])
        health = http.get("/health")

    assert ready.status_code == 200
    assert appended.status_code == 201, appended.text
    assert stopped == 0
    assert again.status_code == 200
    assert again.json() == appended.json()
    assert health.status_code == 200, health.text


# -- make run ---------------------------------------------------------------


def test_make_run_says_where_the_node_listens_and_how_to_get_a_key(
    tmp_path: Path,
) -> None:
    port = free_ports(1)[0]
    env = node_env(PENIN_SERVER__PORT=str(port))
    repo = RUN_NODE.parents[1]
    out, log = tmp_path / "run.out", tmp_path / "run.log"
    with out.open("wb") as stdout, log.open("wb") as stderr:
        process = subprocess.Popen(
            ["sh", str(RUN_NODE), str(PENIN), str(tmp_path / "data")],
            stdout=stdout,
            stderr=stderr,
            env=env,
            cwd=repo,
        )
    node = LiveServer(tmp_path / "data", f"http://127.0.0.1:{port}", log, process, env)
    try:
        wait_for(lambda: answers(node), START_TIMEOUT_S, node.base_url)
        told = out.read_text()
        command = next(line for line in told.splitlines() if "keys create" in line)
        created = subprocess.run(
            shlex.split(command), capture_output=True, text=True, cwd=repo,
            env=node_env(), timeout=CLI_TIMEOUT_S, check=False,
        )  # fmt: skip
        token = re.search(r"token:\s+(\S+)", created.stdout)
        assert token is not None, created.stdout + created.stderr
        health = node.get("/health")
        records = node.get(RECORDS, headers=bearer(token[1]))
    finally:
        status = node.stop()

    assert f"PENIN-Ω node: {node.base_url}" in told
    assert f"--data-dir {tmp_path / 'data'} --scope admin" in command
    assert health.status_code == 200, health.text
    assert records.status_code == 200, records.text
    assert status == 0, node.log_text()


def answers(node: LiveServer) -> bool:
    assert node.process.poll() is None, f"exited with {node.process.returncode}"
    with contextlib.suppress(httpx.TransportError):
        return node.get("/livez", timeout=1).status_code == 200

    return False
