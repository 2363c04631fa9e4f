"""Fixtures of the replication tests: clusters of real nodes on loopback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from static_cluster import StaticCluster


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[StaticCluster]:
    """A primary n1 and a replica n2, not started: each test starts them."""
    cluster = StaticCluster(tmp_path)
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[StaticCluster]:
    """A primary n1 and replicas n2 and n3, not started."""
    cluster = StaticCluster(tmp_path, ("n1", "n2", "n3"))
    try:
        yield cluster
    finally:
        cluster.stop_all()


@pytest.fixture(scope="module")
def running_pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StaticCluster]:
    """A primary n1 and a replica n2, both running, shared by a module's tests."""
    cluster = StaticCluster(tmp_path_factory.mktemp("pair"))
    try:
        yield cluster.start_all()
    finally:
        cluster.stop_all()
