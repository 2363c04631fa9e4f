"""Helpers for the whole suite: ledgers, the CLI as a user runs it, tmpfs mounts."""

from __future__ import annotations

import logging
import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import structlog
from click.testing import CliRunner, Result

from penin.cli.main import cli
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import Record
from penin.ledger.verify import verify_file

ORIGIN = "test.local/ledger"
PENIN = Path(sys.executable).with_name("penin")
SUBPROCESS_TIMEOUT = 60


def quiet_logs() -> None:
    # The CLI binds structlog to the stream it sees; CliRunner's stream is
    # closed after each call, so rebind to whatever sys.stdout is at log time.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=False,
    )


# -- ledgers ----------------------------------------------------------------


def append_n(
    ledger: WORMLedger, n: int, event_type: str = "test.event"
) -> list[Record]:
    return ledger.append_many([(event_type, {"n": i}) for i in range(n)])


def raw_connect(path: Path) -> sqlite3.Connection:
    """A plain connection, as an attacker with the file would open it."""
    return sqlite3.connect(path, isolation_level=None)


def fold_wal(path: Path) -> None:
    """Move every committed page into the main file, so the file alone holds it."""
    conn = raw_connect(path)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def assert_intact(path: Path, records: int) -> None:
    """The file still verifies and holds exactly ``records`` records."""
    report = verify_file(path)

    assert report.ok, report.reason
    assert report.records_checked == records


# -- the CLI ----------------------------------------------------------------


def penin(*args: object, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``penin ledger …`` as a user would, in its own process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PENIN_")}

    return subprocess.run(
        [str(PENIN), "ledger", *map(str, args)],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        env=env,
        check=False,
    )


def invoke(*args: object, stdin: str | None = None) -> Result:
    """Run ``penin ledger …`` in this process (faster; same code path)."""
    result = CliRunner().invoke(cli, ["ledger", *map(str, args)], input=stdin)
    quiet_logs()

    return result


def _outcome(result: Any) -> tuple[int, str]:
    if isinstance(result, subprocess.CompletedProcess):
        return result.returncode, result.stderr
    if not isinstance(result.exception, SystemExit | None):
        raise AssertionError(f"the CLI raised {result.exception!r}") from (
            result.exception
        )

    return result.exit_code, result.stderr


def assert_refused(result: Any, exit_code: int, *words: str) -> str:
    """Exit code, and one line on stderr that names the problem; no traceback."""
    code, stderr = _outcome(result)
    lines = stderr.strip().splitlines()

    assert code == exit_code, stderr
    assert "Traceback" not in stderr
    assert len(lines) == 1, stderr
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]

    return lines[0]


# -- mounts -----------------------------------------------------------------


def run_command(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, timeout=30, check=False
    )


def remount(point: Path, mode: str) -> None:
    """Switch a tmpfs mount between ``ro`` and ``rw``."""
    result = run_command("mount", "-o", f"remount,{mode}", str(point))
    assert result.returncode == 0, result.stderr
