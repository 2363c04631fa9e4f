"""The ledger benchmark runs end to end and reports every figure it promises."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "ledger_bench.py"
FIGURES = (
    "single_appends_per_s",
    "grouped_appends_per_s",
    "async_appends_per_s",
    "raw_acked_inserts_per_s",
    "raw_floor_inserts_per_s",
    "grouped_vs_raw_acked",
    "grouped_vs_raw_floor",
    "async_vs_raw_floor",
    "verify_records_per_s",
    "proof_generation_p50_ms",
    "proof_generation_p99_ms",
    "proof_verification_p50_ms",
    "proof_verification_p99_ms",
    "backup_mb_per_s",
    "restore_mb_per_s",
)


def test_quick_run_reports_every_figure_as_a_positive_number(tmp_path: Path) -> None:
    out = tmp_path / "ledger.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--records-1m", "2000", "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    figures = result["figures"]
    assert result["sizes"]["big"] == 2000
    assert figures["tree_size"] == 2000
    assert set(FIGURES) <= figures.keys()
    for name, value in figures.items():
        assert isinstance(value, int | float), name
        assert value > 0, name
