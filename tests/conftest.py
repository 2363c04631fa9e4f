"""Fixtures for the whole suite: ledgers, data directories, tmpfs, Redis, etcd."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import etcdd
import redisd
from helpers import ORIGIN, append_n, quiet_logs, run_command
from penin.ledger.ledger import WORMLedger


@pytest.fixture(autouse=True)
def _logs_to_captured_stdout() -> Iterator[None]:
    quiet_logs()
    yield
    quiet_logs()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[WORMLedger]:
    led = WORMLedger(tmp_path / "ledger.db").initialize(ORIGIN)
    yield led
    led.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A data directory as the CLI expects it, holding a ledger of 3 records."""
    directory = tmp_path / "data"
    directory.mkdir()
    with WORMLedger(directory / "ledger.db").initialize(ORIGIN) as led:
        append_n(led, 3)

    return directory


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems under tmp_path; unmount them afterwards."""
    mounts: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"tmpfs{len(mounts)}"
        point.mkdir()
        result = run_command(
            "mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(point)
        )
        if result.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
        mounts.append(point)
        return point

    yield mount

    for point in reversed(mounts):
        # Lazy, so that a handle a failed test left open cannot keep it mounted.
        run_command("umount", "-l", str(point))


# -- Redis ------------------------------------------------------------------


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[redisd.RedisServer]:
    """A redis-server of this test's own on a free loopback port."""
    server = redisd.RedisServer(tmp_path / "redis").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def redis_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[redisd.RedisCluster3]:
    """A Redis Cluster of three primaries, shared by the tests of one module."""
    cluster = redisd.RedisCluster3(tmp_path_factory.mktemp("redis-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


# -- etcd -------------------------------------------------------------------


@pytest.fixture
def etcd_server(tmp_path: Path) -> Iterator[etcdd.EtcdServer]:
    """A one-member etcd of this test's own on free loopback ports."""
    server = etcdd.EtcdServer(tmp_path / "etcd").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def etcd_cluster(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[etcdd.EtcdCluster3]:
    """A three-member etcd, shared by the tests of one module.

    A test that stops members calls ``heal()`` when it is done, so that the
    next test finds all three running.
    """
    cluster = etcdd.EtcdCluster3(tmp_path_factory.mktemp("etcd-cluster"))
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
