"""/health and the role endpoints: what they report, and that a full disk shows."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from harness import LiveServer, assert_problem, node_env, wait_for
from penin.keys import Scope

CHECKS = {"core", "worm", "router", "observability"}


def _db(app: FastAPI) -> Path:
    path: Path = app.state.node.ledger.path
    return path


def _read(path: Path, sql: str) -> Any:
    """One value, read by a plain SQLite connection as an operator would."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchone()
    finally:
        conn.close()


# -- in this process -----------------------------------------------------------


def test_health_reports_the_four_checks_and_their_details(client: TestClient) -> None:
    response = client.get("/health")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"status", "checks", "details"}
    assert body["status"] == "healthy"
    assert set(body["checks"]) == CHECKS
    assert all(ok is True for ok in body["checks"].values())
    assert set(body["details"]) == CHECKS
    assert body["details"]["worm"]["write_read_ms"] >= 0
    assert body["details"]["core"] == {"stopping": False, "writer_running": True}


def test_the_worm_check_writes_the_probe_but_appends_no_record(
    app: FastAPI, client: TestClient
) -> None:
    db = _db(app)
    client.get("/health")
    first = _read(db, "SELECT nonce, ts FROM probe")
    size = _read(db, "SELECT count(*) FROM records")

    def probed_again() -> bool:
        assert client.get("/health").status_code == 200
        return bool(_read(db, "SELECT nonce, ts FROM probe") != first)

    # One probe serves every caller for a second, so a new write takes a while.
    wait_for(probed_again, 10, "the health check to write a new probe nonce")
    for _ in range(20):
        client.get("/health")

    assert first is not None
    assert _read(db, "SELECT count(*) FROM records") == size
    assert _read(db, "SELECT count(*) FROM probe") == (1,)


@pytest.mark.parametrize(
    ("url", "status", "body"),
    [
        ("/livez", 200, {"status": "alive"}),
        (
            "/readyz",
            200,
            {"ready": True, "warmed": True, "stopping": False, "writer_running": True},
        ),
        ("/primary", 200, {"role": "primary", "accepts_writes": True}),
        ("/replica", 503, {"role": "primary", "accepts_writes": True}),
    ],
)
def test_a_single_node_is_live_ready_and_primary_not_replica(
    client: TestClient, url: str, status: int, body: dict[str, Any]
) -> None:
    response = client.get(url)

    assert response.status_code == status
    assert response.json() == body


# -- real servers --------------------------------------------------------------


def _fill(directory: Path) -> Path:
    """Take every free byte of the file system with one file."""
    filler = directory / "filler"
    filler.write_bytes(b"\0" * shutil.disk_usage(directory).free)

    assert shutil.disk_usage(directory).free == 0
    return filler


def _health(server: LiveServer, status: int) -> dict[str, Any] | None:
    response = server.get("/health")
    body: dict[str, Any] = response.json()

    return body if response.status_code == status else None


def test_a_full_disk_fails_the_worm_check_until_space_returns(
    tmpfs: Callable[[str], Path], serve: Callable[..., LiveServer]
) -> None:
    mount = tmpfs("1m")
    server = serve(data_dir=mount / "data")
    assert _health(server, 200)

    filler = _fill(mount)
    sick = wait_for(lambda: _health(server, 503), 10, "/health to answer 503")

    assert sick["status"] == "unhealthy"
    assert sick["checks"]["worm"] is False
    assert "full" in sick["details"]["worm"]["error"]

    filler.unlink()
    healed = wait_for(lambda: _health(server, 200), 10, "/health to recover")

    assert healed["checks"]["worm"] is True
    assert server.stop() == 0


def test_closed_health_and_metrics_need_a_read_key(
    serve: Callable[..., LiveServer],
) -> None:
    env = node_env(
        PENIN_SERVER__OPEN_HEALTH="false", PENIN_SERVER__OPEN_METRICS="false"
    )
    server = serve(env=env)
    read, append = server.token(Scope.READ), server.token(Scope.APPEND)
    gated = ["/health", "/readyz", "/primary", "/replica", "/metrics"]

    with server.client() as anonymous, server.client(read) as reader:
        for url in gated:
            response = anonymous.get(url)
            assert_problem(response, 401, "unauthorized")
            assert "www-authenticate" in response.headers
            assert reader.get(url).status_code == (503 if url == "/replica" else 200)
        assert anonymous.get("/livez").status_code == 200
    with server.client(append) as appender:
        assert_problem(appender.get("/health"), 403, "forbidden")


def test_open_health_and_metrics_need_no_key(live: LiveServer) -> None:
    with live.client() as anonymous:
        assert anonymous.get("/health").status_code == 200
        assert anonymous.get("/metrics").status_code == 200
