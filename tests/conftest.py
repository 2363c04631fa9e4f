"""Fixtures for the whole suite: ledgers in tmp_path, data directories, tmpfs mounts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

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
