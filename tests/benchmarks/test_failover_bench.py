"""The HA benchmark runs end to end on a small scale and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "failover_bench.py"
FIGURES = (
    "failover_median_s",
    "failover_max_s",
    "lost_sync",
    "single_rps",
    "async_rps",
    "sync_rps",
    "sync_pair_rps",
    "sync_ratio",
    "sync_pair_ratio",
    "single_cpu_us",
    "sync_cpu_us",
    "lag_p99_ms_sync",
    "lag_p99_ms_async",
)


def test_a_smoke_run_fails_over_loses_nothing_and_reports_every_figure(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, SCRIPT, "--trials", "1", "--duration", "2", "--rounds", "1",
         "--out", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((tmp_path / "failover.json").read_text())
    assert all(isinstance(result[name], int | float) for name in FIGURES)
    assert result["lost_sync"] == 0
    assert result["single_cpu_us"] > 0
    assert result["sync_cpu_us"] > 0
    assert result["acknowledged_checked"] > 0
    assert len(result["failover_times_s"]) == 1
    assert (tmp_path / "failover.md").read_text().startswith("| figure |")
