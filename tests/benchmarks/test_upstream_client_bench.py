"""The upstream client benchmark runs end to end and reports every figure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "upstream_client_bench.py"
CONCURRENCY = (1, 16, 64, 256)
FIGURES = (
    *(
        f"{client}_c{n}_{name}"
        for n in CONCURRENCY
        for client in ("httpx", "aiohttp")
        for name in ("rps", "p50_ms", "p99_ms", "cpu_us", "upstream_busy")
    ),
    *(f"ratio_c{n}" for n in CONCURRENCY),
)


def test_quick_run_reports_every_figure_of_both_clients_as_a_positive_number(
    tmp_path: Path,
) -> None:
    out = tmp_path / "upstream_client.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--out", out],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    figures = json.loads(out.read_text())["figures"]
    assert set(FIGURES) == figures.keys()
    for name, value in figures.items():
        assert isinstance(value, int | float), name
        assert value > 0, name
    table = out.with_suffix(".md").read_text()
    assert "## Upstream HTTP client" in table
    assert all(f"| {n} | aiohttp |" in table for n in CONCURRENCY)
