"""The policy benchmark runs end to end and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "policy_bench.py"


def test_quick_run_reports_every_figure_as_a_positive_number(tmp_path: Path) -> None:
    out = tmp_path / "policy.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["figures"]
    for policy in ("router", "budget", "guard", "admin"):
        for what in ("decisions_per_s", "p50_ms", "p99_ms"):
            assert figures[f"{policy}_{what}"] > 0, (policy, what)
    for figure in ("router_repeated", "gate_route", "gate_budget"):
        assert 0 < figures[f"{figure}_p50_ms"] <= figures[f"{figure}_p99_ms"], figure
