"""The node benchmark runs end to end, checks durability, and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "node_bench.py"
FIGURES = (
    "floor_rps",
    "health_rps",
    "append_rps",
    "append_logged_rps",
    "append_p99_ms",
    "append_vs_floor",
    "node_startup_s",
    "floor_startup_s",
    "append_records_per_fsync",
    "acknowledged_appends",
)


def test_a_smoke_run_reports_every_figure_and_loses_no_acknowledged_append(
    tmp_path: Path,
) -> None:
    out = tmp_path / "node.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--no-wrk", "--out", out],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    figures = result["figures"]
    for name in FIGURES:
        assert figures[name] > 0, name
    assert figures["acknowledged_missing"] == 0
    assert figures["ledgers_verified"] is True
    assert result["load_generator"] == "httpx (smoke run)"
    assert "## HTTP node" in out.with_suffix(".md").read_text()
