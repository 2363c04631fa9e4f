"""The router benchmark runs end to end, fails no request, and audits each one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "router_bench.py"
CONCURRENCY = (1, 16, 64)
MEASURED = tuple(
    f"{target}_c{n}_{name}"
    for n in CONCURRENCY
    for target in ("direct", "penin")
    for name in ("rps", "p50_ms", "p99_ms", "cpu_us")
)
MEASURED_RUNS = tuple(f"penin_c{n}" for n in CONCURRENCY)
OPEN_LOADS = (50, 80)  # open loop: percent of PENIN-Ω's requests/s at 64
OPEN_MEASURED = tuple(
    f"{target}_open{load}_{name}"
    for load in OPEN_LOADS
    for target in ("direct", "penin")
    for name in ("rate", "achieved_rps", "p50_ms", "p99_ms", "loadgen_cpu_us")
)
OPEN_RUNS = tuple(f"penin_open{load}" for load in OPEN_LOADS)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    """One --quick run without LiteLLM: its JSON result and its markdown."""
    out = tmp_path_factory.mktemp("router-bench") / "router.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--no-litellm", "--out", out],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 0, done.stderr

    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_a_quick_run_answers_every_request_and_audits_each_in_the_ledger(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    result, report = quick_run
    figures = result["figures"]

    assert result["targets"] == ["direct", "penin"]
    for name in MEASURED:
        assert figures[name] > 0, name
    for n in CONCURRENCY:  # a proxy cannot answer sooner than the upstream
        assert figures[f"penin_c{n}_added_p50_ms"] > 0
        assert isinstance(figures[f"penin_c{n}_added_p99_ms"], float)
    assert figures["failed_requests"] == 0
    assert figures["penin_streams_open"] == result["plan"]["streams"]
    assert isinstance(figures["penin_stream_rss_growth_mb"], float)
    measured = sum(r["requests"] for key in MEASURED_RUNS for r in result["runs"][key])
    measured += sum(r["ok"] for key in OPEN_RUNS for r in result["open_runs"][key])
    # Warm-up requests are routed too, so more were answered than measured.
    assert figures["audit_answered_200"] >= measured + result["plan"]["streams"]
    assert figures["audit_ledger_records"] >= figures["audit_answered_200"]
    assert figures["audit_missing"] == 0
    assert figures["audit_duplicated"] == 0
    assert figures["audit_answered_not_ok"] == 0
    assert figures["audit_cache_hits"] == 0
    assert "## Router" in report


def test_a_quick_run_reports_added_latency_at_fixed_shares_of_the_nodes_throughput(
    quick_run: tuple[dict[str, Any], str],
) -> None:
    result, report = quick_run
    figures = result["figures"]

    for name in OPEN_MEASURED:
        assert figures[name] > 0, name
    for load in OPEN_LOADS:
        offered = figures["penin_c64_rps"] * load / 100
        for target in ("direct", "penin"):  # both are offered the same rate
            assert figures[f"{target}_open{load}_rate"] == pytest.approx(
                offered, abs=0.001
            )
        assert figures[f"penin_open{load}_added_p50_ms"] > 0
        assert isinstance(figures[f"penin_open{load}_added_p99_ms"], float)
        # Against direct the generator keeps up, or it measures itself.
        assert figures[f"direct_open{load}_achieved_share"] >= 0.9
    for key in OPEN_RUNS:
        for run in result["open_runs"][key]:
            assert run["ok"] == run["scheduled"], key
    assert figures["open_loop_failures"] == 0
    assert "PENIN-Ω: added p50, 64 concurrent, open loop at 50 % load" in report
    assert "| 80 % | penin |" in report
