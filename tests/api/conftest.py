"""Fixtures for the HTTP node: the app in this process, and real servers on loopback."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from harness import LiveServer, running_server, start_server
from penin.api.app import create_app
from penin.config import load_settings
from penin.keys import Scope


@pytest.fixture(autouse=True)
def _no_penin_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from the test alone, never from the shell that runs it."""
    for name in [n for n in os.environ if n.startswith("PENIN_")]:
        monkeypatch.delenv(name)


# -- the app in this process ----------------------------------------------------


@pytest.fixture
def app(tmp_path: Path) -> FastAPI:
    return create_app(load_settings(overrides={"data_dir": tmp_path / "data"}))


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """The app with its lifespan running; a crash is a 500 response, not an error."""
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def mint(app: FastAPI, client: TestClient) -> Callable[[Scope], str]:
    """Create a key of a scope on the running app; returns its token."""

    def create(scope: Scope) -> str:
        token, _ = app.state.node.keyring.create(scope)
        return token

    return create


# -- real servers -----------------------------------------------------------


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., LiveServer]]:
    """Start real servers for one test; every one is stopped after it."""
    servers: list[LiveServer] = []

    def start(*args: object, data_dir: Path | None = None, **kwargs: Any) -> LiveServer:
        name = f"node{len(servers)}"
        server = start_server(
            data_dir or tmp_path / name / "data",
            tmp_path / f"{name}.log",
            *args,
            **kwargs,
        )
        servers.append(server)
        return server

    yield start

    for server in servers:
        server.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One real server shared by a module's tests; they must not count records."""
    with running_server(tmp_path_factory.mktemp("live")) as server:
        yield server
