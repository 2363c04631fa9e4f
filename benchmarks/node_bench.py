"""Node HTTP benchmark: /health and authenticated appends beside the framework's floor.

It starts every server itself on free loopback ports — ``penin serve`` with
warnings only, ``penin serve`` with the default info-level JSON access log, and
benchmarks/floor_app.py (one FastAPI route returning a constant) under uvicorn
with the node's settings — then drives each with wrk, 64 connections, the
targets interleaved round by round:

    .venv/bin/python benchmarks/node_bench.py [--duration S] [--quick] [--no-wrk]

It first times startup: launch to the first 200 on /livez, and the first
append's latency against the next ones. Afterwards every acknowledged append
is looked up in its ledger by its
request id and the ledgers are verified. It prints a table (figure, result,
target, met?) and writes benchmarks/results/node.json and node.md. ``--no-wrk``
swaps wrk for a small httpx client (a smoke run, not a measurement);
``--profile`` adds a py-spy profile of the append route under load.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

import tables
from loadgen import (
    APPEND_PATH,
    CLIENT_CONCURRENCY,
    CONNECTIONS,
    WRK_THREADS,
    Run,
    append_body,
    client_run,
    run_wrk,
    write_lua,
)
from penin.ledger import store
from pyspy import profile
from servers import (
    START_TIMEOUT_S,
    Server,
    penin,
    start_floor,
    start_node,
    stop,
    wait_ready,
)
from tables import Figure
from workload import EVENT_TYPE

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "benchmarks" / "results" / "node.json"


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: int
    warmup_s: int
    client_requests: int
    startups: int


FULL = Plan(rounds=3, duration_s=10, warmup_s=2, client_requests=50, startups=5)
QUICK = Plan(rounds=1, duration_s=3, warmup_s=1, client_requests=50, startups=2)


@dataclass(frozen=True)
class Target:
    key: str
    server: str
    method: str
    path: str
    label: str


TARGETS = (
    Target("floor", "floor", "GET", "/", "GET / (floor app)"),
    Target("health", "node", "GET", "/health", "GET /health"),
    Target("append", "node", "POST", APPEND_PATH, f"POST {APPEND_PATH}"),
    Target("health_logged", "node_logged", "GET", "/health",
           "GET /health, access log on"),
    Target("append_logged", "node_logged", "POST", APPEND_PATH,
           f"POST {APPEND_PATH}, access log on"),
)  # fmt: skip


def _rate_figures(key: str, label: str, *, slo: bool) -> tuple[Figure, ...]:
    p99 = Figure(f"{key}_p99_ms", f"{label}, p99", "ms")
    if slo:
        p99 = Figure(p99.key, p99.label, "ms", "< 50 ms", lambda v: v < 50)
    return (
        Figure(f"{key}_rps", f"{label}, requests/s", "/s"),
        Figure(f"{key}_p50_ms", f"{label}, p50", "ms"),
        p99,
    )


FIGURES = (
    *_rate_figures("floor", "GET / (floor app)", slo=False),
    *_rate_figures("health", "GET /health", slo=False),
    Figure("health_vs_floor", "/health ÷ floor, requests/s", "%"),
    *_rate_figures("append", "append", slo=True),
    Figure("append_vs_floor", "append ÷ floor, requests/s", "%",
           "≥ 50 %", lambda v: v >= 0.50),
    *_rate_figures("health_logged", "GET /health, access log on", slo=False),
    *_rate_figures("append_logged", "append, access log on", slo=True),
    Figure("append_logged_vs_floor", "append, access log on ÷ floor", "%",
           "≥ 50 %", lambda v: v >= 0.50),
    Figure("node_startup_s", "penin serve: launch to first 200 on /livez", "s",
           "< 1 s", lambda v: v < 1.0),
    Figure("floor_startup_s", "floor app: launch to first 200", "s"),
    Figure("first_vs_later_append_ms", "first append after start minus the "
           "median of the next 20", "ms"),
    Figure("append_records_per_fsync", "records per commit (group commit)", "n"),
    Figure("acknowledged_appends", "appends acknowledged (201)", "n"),
    Figure("acknowledged_missing", "acknowledged appends missing from the ledger",
           "n", "0", lambda v: v == 0),
    Figure("unacknowledged_appended", "appended, not acknowledged (in flight at stop)",
           "n"),
    Figure("ledgers_verified", "every ledger verifies", "bool", "yes", bool),
)  # fmt: skip


# -- startup -----------------------------------------------------------------


POLL_S = 0.005


def time_to_first_answer(server: Server, path: str) -> float:
    """Seconds from launch to the first 200, polled every 5 ms on a fresh socket."""
    started = time.monotonic()
    deadline = started + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited:\n{server.log_tail()}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(server.url + path, timeout=1).status_code == 200:
                return time.monotonic() - started
        time.sleep(POLL_S)
    raise RuntimeError(f"{server.name} not ready in {START_TIMEOUT_S} s")


def startup(work: Path, runs: int) -> dict[str, float]:
    """Median launch-to-first-answer of the node and of the floor app, and how
    much slower the node's first append is than the ones after it."""
    node_s, floor_s, first_penalty_ms = [], [], []
    for i in range(runs):
        server, token = start_node(f"startup{i}", "warning", work)
        try:
            node_s.append(time_to_first_answer(server, "/livez"))
            first_penalty_ms.append(_first_append_penalty_ms(server, token))
        finally:
            stop(server)
        floor = start_floor(work)
        try:
            floor_s.append(time_to_first_answer(floor, "/"))
        finally:
            stop(floor)

    return {
        "node_startup_s": statistics.median(node_s),
        "floor_startup_s": statistics.median(floor_s),
        "first_vs_later_append_ms": statistics.median(first_penalty_ms),
    }


def _first_append_penalty_ms(server: Server, token: str) -> float:
    auth = {"Authorization": f"Bearer {token}"}
    latencies = []
    with httpx.Client(base_url=server.url, headers=auth, timeout=10) as client:
        for i in range(21):
            started = time.perf_counter()
            response = client.post(APPEND_PATH, json=append_body(f"startup-{i}"))
            latencies.append(time.perf_counter() - started)
            if response.status_code != 201:
                raise RuntimeError(f"append answered {response.status_code}")

    return (latencies[0] - statistics.median(latencies[1:])) * 1000


# -- durability --------------------------------------------------------------


def records_per_fsync(server: Server) -> float:
    text = httpx.get(server.url + "/metrics", timeout=10).text
    sums = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name.startswith("penin_ledger_fsync_batch_records_"):
            sums[name.rsplit("_", 1)[1]] = float(value)

    return sums["sum"] / sums["count"] if sums.get("count") else 0.0


def durability(data_dir: Path, acked: list[str]) -> dict[str, Any]:
    """Which acknowledged appends the ledger holds, and whether it verifies.

    Run after the node has stopped: requests that were in flight when wrk
    stopped may be appended without being acknowledged, never the reverse.
    """
    conn = store.connect(data_dir / "ledger.db", readonly=True)
    try:
        rows = conn.execute(
            "SELECT json_extract(payload, '$.request_id') FROM records"
            " WHERE event_type = ?",
            (EVENT_TYPE,),
        ).fetchall()
    finally:
        conn.close()
    in_ledger = Counter(row[0] for row in rows)
    report = json.loads(
        penin("ledger", "verify", "--data-dir", str(data_dir), "--json")
    )

    return {
        "acknowledged": len(acked),
        "acknowledged_unique": len(set(acked)),
        "in_ledger": len(rows),
        "duplicated_in_ledger": sum(c - 1 for c in in_ledger.values()),
        "missing": len(set(acked) - in_ledger.keys()),
        "unacknowledged": len(in_ledger.keys() - set(acked)),
        "verified": bool(report["ok"]),
        "records_checked": report["records_checked"],
    }


# -- the run -----------------------------------------------------------------


@dataclass
class Bench:
    plan: Plan
    work: Path
    use_wrk: bool
    servers: dict[str, Server] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    acked: dict[str, list[str]] = field(default_factory=dict)
    scripts: dict[str, Path] = field(default_factory=dict)

    def measure(self, target: Target, run: str, seconds: int) -> Run:
        server = self.servers[target.server]
        token = self.tokens.get(target.server, "")
        if self.use_wrk:
            result = run_wrk(
                server.url + target.path,
                self.scripts[target.method],
                seconds,
                token,
                run,
                acked_file=self.work / "acked.txt",
            )
        else:
            count = self.plan.client_requests
            result = asyncio.run(
                client_run(target.method, target.path, server.url, token, run, count)
            )
        self.acked.setdefault(target.server, []).extend(result.acked)

        return result

    def rounds(self) -> dict[str, list[Run]]:
        for target in TARGETS:
            self.measure(target, f"warmup-{target.key}", self.plan.warmup_s)
        runs: dict[str, list[Run]] = {t.key: [] for t in TARGETS}
        for i in range(self.plan.rounds):
            for target in TARGETS:
                result = self.measure(
                    target, f"r{i}-{target.key}", self.plan.duration_s
                )
                runs[target.key].append(result)
                print(
                    f"  round {i + 1} {target.key}: {result.rps:,.0f}/s"
                    f" p50 {result.p50_ms:.1f} ms p99 {result.p99_ms:.1f} ms"
                    f" failed {result.failed}",
                    file=sys.stderr,
                )

        return runs


def figures_of(runs: dict[str, list[Run]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for key, measured in runs.items():
        figures[f"{key}_rps"] = statistics.median(r.rps for r in measured)
        figures[f"{key}_p50_ms"] = statistics.median(r.p50_ms for r in measured)
        figures[f"{key}_p99_ms"] = statistics.median(r.p99_ms for r in measured)
        figures[f"{key}_failed"] = sum(r.failed for r in measured)
    for key in ("health", "append", "append_logged"):
        # The ratio of each round's pair, so that drift between rounds cancels.
        pairs = zip(runs[key], runs["floor"], strict=True)
        figures[f"{key}_vs_floor"] = statistics.median(a.rps / f.rps for a, f in pairs)

    return figures


def machine(work: Path) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    wrk = "absent"
    if shutil.which("wrk"):
        done = subprocess.run(
            ["wrk", "-v"], capture_output=True, text=True, check=False
        )
        wrk = (done.stdout or done.stderr).split("[")[0].strip()
    versions = {
        name: importlib.metadata.version(name)
        for name in ("uvicorn", "fastapi", "starlette", "httptools", "uvloop")
    }

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        **versions,
        "wrk": wrk,
        "platform": platform.platform(),
        "loadavg_at_start": os.getloadavg()[0],
        "data_dir": str(work),
    }


def run(args: argparse.Namespace, plan: Plan, work: Path) -> dict[str, Any]:
    bench = Bench(plan, work, use_wrk=not args.no_wrk, scripts=write_lua(work))
    about = machine(work)
    started = startup(work, plan.startups)
    with contextlib.ExitStack() as stack:
        for name, level in (("node", "warning"), ("node_logged", "info")):
            bench.servers[name], bench.tokens[name] = start_node(name, level, work)
            stack.callback(stop, bench.servers[name])
        bench.servers["floor"] = start_floor(work)
        stack.callback(stop, bench.servers["floor"])
        for server in bench.servers.values():
            wait_ready(server, "/" if server.name == "floor" else "/livez")

        runs = bench.rounds()
        figures = {**figures_of(runs), **started}
        figures["append_records_per_fsync"] = records_per_fsync(bench.servers["node"])
        hot_spots = None
        if args.profile:
            append = TARGETS[2]
            hot_spots = profile(
                args.profile,
                bench.servers["node"],
                lambda: bench.measure(append, "profile", plan.duration_s),
                plan.duration_s,
            )
        about["loadavg_at_end"] = os.getloadavg()[0]
    # Every node has stopped (so every queued append is flushed) from here on.
    durable = {
        name: durability(bench.servers[name].data_dir or work, bench.acked[name])
        for name in ("node", "node_logged")
    }
    figures["acknowledged_appends"] = sum(d["acknowledged"] for d in durable.values())
    figures["acknowledged_missing"] = sum(d["missing"] for d in durable.values())
    figures["unacknowledged_appended"] = sum(
        d["unacknowledged"] for d in durable.values()
    )
    figures["ledgers_verified"] = all(d["verified"] for d in durable.values())
    with bench.servers["node_logged"].log.open("rb") as log:
        figures["access_log_lines"] = sum(1 for _ in log)

    return {
        "machine": about,
        "figures": figures,
        "runs": {
            key: [r.summary() for r in measured] for key, measured in runs.items()
        },
        "durability": durable,
        "profile": hot_spots,
    }


# -- reporting ---------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    about, figures = result["machine"], result["figures"]
    plan, rounds = result["plan"], result["plan"]["rounds"]
    runs = f"{rounds} runs" if rounds > 1 else "one run"
    how = (
        f"`wrk -t{WRK_THREADS} -c{CONNECTIONS}` on loopback"
        if result["load_generator"] == "wrk"
        else f"A smoke run: an httpx client, {CLIENT_CONCURRENCY} requests at a "
        "time, measures itself more than the servers. These figures are no "
        "benchmark; run without --no-wrk for one. The client runs on loopback"
    )
    lines = [
        "## HTTP node: requests/s and latency",
        "",
        f"{how} against three servers "
        "started by the benchmark, each one uvicorn process (uvloop, httptools, "
        "no uvicorn access log): `penin serve` at log level warning, `penin serve` "
        "with the default info-level JSON access log (to a file), and a FastAPI "
        "app with one route returning a constant, the framework's floor. Targets "
        "run interleaved, round by round; each figure is the median of "
        f"{runs} of {plan['duration_s']} s, "
        "each ratio the median of the per-round ratios.",
        "",
        *tables.markdown_rows(result["table"]),
        "",
        f"Reproduce: `{result['command']}`",
        "",
        f"Machine: nproc {about['nproc']} ({about['cpu']}), Python "
        f"{about['python']}, uvicorn {about['uvicorn']}, FastAPI {about['fastapi']}, "
        f"Starlette {about['starlette']}, {about['wrk']}; load average "
        f"{about['loadavg_at_start']:.2f} at the start. The load generator and "
        f"the server share these {about['nproc']} cores, so every figure is "
        "lower than on a machine where they run apart.",
        "",
        f"Durability: {figures['acknowledged_appends']:,} appends acknowledged "
        "with 201, each looked up by its request id after the nodes stopped: "
        f"{figures['acknowledged_missing']:,} missing; "
        f"{figures['unacknowledged_appended']:,} more were appended without an "
        "acknowledgement (in flight when wrk stopped, at most 64 a run); "
        f"`penin ledger verify`: {'ok' if figures['ledgers_verified'] else 'FAILED'}.",
    ]  # fmt: skip
    if result["profile"]:
        lines += profile_markdown(result["profile"])

    return "\n".join(lines) + "\n"


def profile_markdown(hot: dict[str, Any]) -> list[str]:
    def rows(pairs: list[list[Any]]) -> list[str]:
        return [f"| `{name}` | {share * 100:.1f} % |" for name, share in pairs]

    return [
        "",
        "Profile of the append route (node at log level warning) under the same "
        f"load: py-spy, {hot['ticks']:,} sampling instants; a share is the "
        "fraction of them at which the thread, or a function, was on the CPU.",
        "",
        "| thread | busy |",
        "|---|---|",
        *rows(hot["threads"]),
        "",
        "| function (self) | share |",
        "|---|---|",
        *rows(hot["self"]),
        "",
        "| function (inclusive) | share |",
        "|---|---|",
        *rows(hot["inclusive"]),
    ]


def print_table(rows: list[dict[str, str]], about: dict[str, Any]) -> None:
    tables.print_rows(
        rows,
        f"nproc {about['nproc']} · {about['cpu']} · Python {about['python']}"
        f" · uvicorn {about['uvicorn']} · {about['wrk']}"
        f" · load {about['loadavg_at_start']:.2f}",
    )


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="node-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, metavar="S", help="seconds a run")
    parser.add_argument("--quick", action="store_true", help="short runs, 1 round")
    parser.add_argument(
        "--no-wrk", action="store_true", help="smoke run with an httpx client"
    )
    parser.add_argument(
        "--profile", nargs="?", const="py-spy", metavar="PY_SPY",
        help="also profile the append route with py-spy (path to the executable)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    if args.duration is not None:
        plan = Plan(
            plan.rounds, args.duration, plan.warmup_s, plan.client_requests,
            plan.startups,
        )  # fmt: skip
    if not args.no_wrk and shutil.which("wrk") is None:
        print(
            "wrk is not installed: run 'apt-get install wrk' (Debian, Ubuntu),"
            " or pass --no-wrk for a smoke run without it",
            file=sys.stderr,
        )
        return 2
    if args.profile and shutil.which(args.profile) is None:
        print(
            f"{args.profile} not found: run 'pip install --target /tmp/py-spy"
            " py-spy' and pass --profile /tmp/py-spy/bin/py-spy",
            file=sys.stderr,
        )
        return 2

    with scratch_dir() as work:
        result = run(args, plan, work)
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    result.update(
        load_generator="wrk" if not args.no_wrk else "httpx (smoke run)",
        plan=asdict(plan),
        command=shlex.join([".venv/bin/python", "benchmarks/node_bench.py", *shown]),
        table=tables.rows(result["figures"], FIGURES),
    )
    print_table(result["table"], result["machine"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md').name}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
