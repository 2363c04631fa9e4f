"""The router benchmark runs end to end, fails no request, and audits each one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "router_bench.py"
CONCURRENCY = (1, 16, 64)
MEASURED = tuple(
    f"{target}_c{n}_{name}"
    for n in CONCURRENCY
    for target in ("direct", "penin")
    for name in ("rps", "p50_ms", "p99_ms", "cpu_us")
)
MEASURED_RUNS = tuple(f"penin_c{n}" for n in CONCURRENCY)


def test_a_quick_run_answers_every_request_and_audits_each_in_the_ledger(
    tmp_path: Path,
) -> None:
    out = tmp_path / "router.json"

    done = subprocess.run(
        [sys.executable, SCRIPT, "--quick", "--no-litellm", "--out", out],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )

    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
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
    # Warm-up requests are routed too, so more were answered than measured.
    assert figures["audit_answered_200"] >= measured + result["plan"]["streams"]
    assert figures["audit_ledger_records"] >= figures["audit_answered_200"]
    assert figures["audit_missing"] == 0
    assert figures["audit_duplicated"] == 0
    assert figures["audit_answered_not_ok"] == 0
    assert figures["audit_cache_hits"] == 0
    assert "## Router" in out.with_suffix(".md").read_text()
