"""Upstream client benchmark: httpx against aiohttp posting chat completions to a
zero-latency upstream in another process, run as
``.venv/bin/python benchmarks/upstream_client_bench.py [--quick] [--out FILE]``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import uvloop

import tables
from loadgen import percentile
from servers import BIN, UVICORN_FLAGS, clean_env, spawn, stop, wait_ready
from tables import Figure

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "benchmarks" / "results" / "upstream_client.json"
PATH = "/v1/chat/completions"
CONCURRENCY = (1, 16, 64, 256)
CLIENTS = ("httpx", "aiohttp")
REQUEST_TIMEOUT_S = 30.0

Json = dict[str, Any]
Post = Callable[[Json], Awaitable[tuple[int, Json]]]


@dataclass(frozen=True)
class Plan:
    rounds: int
    duration_s: float
    warmup_s: float


FULL = Plan(rounds=3, duration_s=5.0, warmup_s=1.0)
QUICK = Plan(rounds=1, duration_s=0.5, warmup_s=0.2)

REQUEST = {
    "model": "bench-upstream-1",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Say hello in one short sentence."},
    ],
    "max_tokens": 64,
}
COMPLETION = (  # 436 bytes, the shape of an OpenAI chat.completion
    b'{"id":"chatcmpl-bench-0000000000000001","object":"chat.completion",'
    b'"created":1767225600,"model":"bench-upstream-1","system_fingerprint":'
    b'"fp_bench_upstream","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello! This is the fixed reply of the benchmark upstream, about '
    b'as long as a short answer from a model."},"logprobs":null,"finish_reason":'
    b'"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":23,'
    b'"total_tokens":47}}'
)


ANSWERS = {("POST", PATH): (200, COMPLETION), ("GET", "/health"): (200, b"{}")}


async def upstream(
    scope: Json, receive: Callable[[], Awaitable[Json]], send: Callable[[Json], Any]
) -> None:
    """The upstream, a raw ASGI app answering ANSWERS and 404 to anything else."""
    while (await receive()).get("more_body"):
        pass
    status, body = ANSWERS.get((scope["method"], scope["path"]), (404, b"{}"))
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(body)),
    ]

    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process, from fields 14 and 15 of proc(5) stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the clients -------------------------------------------------------------


@contextlib.asynccontextmanager
async def httpx_client(url: str, concurrency: int) -> AsyncIterator[Post]:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=None)
    async with httpx.AsyncClient(limits=limits, timeout=REQUEST_TIMEOUT_S) as client:

        async def post(body: Json) -> tuple[int, Json]:
            response = await client.post(url, json=body)
            return response.status_code, response.json()

        yield post


@contextlib.asynccontextmanager
async def aiohttp_client(url: str, concurrency: int) -> AsyncIterator[Post]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(body: Json) -> tuple[int, Json]:
            async with session.post(url, json=body) as response:
                return response.status, await response.json()

        yield post


OPEN = {"httpx": httpx_client, "aiohttp": aiohttp_client}


@dataclass(frozen=True)
class Run:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    rps: float
    cpu_us: float  # the client process's CPU time per request
    upstream_busy: float  # the upstream process's CPU time per second


async def drive(post: Post, concurrency: int, seconds: float) -> list[float]:
    """``concurrency`` tasks posting in a loop until ``seconds`` have passed."""
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            status, answer = await post(REQUEST)
            latencies.append(time.perf_counter() - started)
            if status != 200 or answer.get("object") != "chat.completion":
                raise RuntimeError(f"upstream answered {status}: {answer}")

    workers = asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.wait_for(workers, seconds + REQUEST_TIMEOUT_S)

    return latencies


async def measure(client: str, url: str, concurrency: int, plan: Plan, pid: int) -> Run:
    async with OPEN[client](url, concurrency) as post:
        await drive(post, concurrency, plan.warmup_s)  # opens the pool's connections
        gc.collect()
        cpu, upstream_cpu = time.process_time(), cpu_seconds(pid)
        started = time.perf_counter()
        latencies = await drive(post, concurrency, plan.duration_s)
        seconds = time.perf_counter() - started
        cpu, upstream_cpu = time.process_time() - cpu, cpu_seconds(pid) - upstream_cpu

    return Run(
        requests=len(latencies),
        seconds=seconds,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        rps=len(latencies) / seconds,
        cpu_us=cpu / len(latencies) * 1e6,
        upstream_busy=upstream_cpu / seconds,
    )


def rounds(plan: Plan, url: str, pid: int, loop: str) -> dict[str, list[Run]]:
    """Every client at every concurrency once a round; who goes first alternates."""
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    runs: dict[str, list[Run]] = {f"{c}_c{n}": [] for n in CONCURRENCY for c in CLIENTS}
    for i in range(plan.rounds):
        for n in CONCURRENCY:
            for client in CLIENTS if i % 2 == 0 else CLIENTS[::-1]:
                with asyncio.Runner(loop_factory=factory) as runner:
                    run = runner.run(measure(client, url, n, plan, pid))
                runs[f"{client}_c{n}"].append(run)
                print(f"  round {i + 1} {client} c={n}: {run}", file=sys.stderr)

    return runs


# -- figures and reporting ---------------------------------------------------


def _cell_figures(client: str, n: int) -> tuple[Figure, ...]:
    key, label = f"{client}_c{n}", f"{client}, {n} concurrent"
    return (
        Figure(f"{key}_rps", f"{label}, requests/s", "/s"),
        Figure(f"{key}_p50_ms", f"{label}, p50", "ms"),
        Figure(f"{key}_p99_ms", f"{label}, p99", "ms"),
        Figure(f"{key}_cpu_us", f"{label}, client CPU µs per request", "n"),
        Figure(f"{key}_upstream_busy", f"{label}, upstream CPU busy", "%"),
    )


FIGURES = tuple(
    figure
    for n in CONCURRENCY
    for figure in (
        *_cell_figures("httpx", n),
        *_cell_figures("aiohttp", n),
        Figure(f"ratio_c{n}", f"aiohttp ÷ httpx, requests/s, {n} concurrent", "%"),
    )
)


def figures_of(runs: dict[str, list[Run]]) -> dict[str, float]:
    figures: dict[str, float] = {}
    for key, measured in runs.items():
        for name in ("rps", "p50_ms", "p99_ms", "cpu_us", "upstream_busy"):
            figures[f"{key}_{name}"] = statistics.median(
                getattr(r, name) for r in measured
            )
    for n in CONCURRENCY:
        # The ratio of each round's pair, so that drift between rounds cancels.
        pairs = zip(runs[f"aiohttp_c{n}"], runs[f"httpx_c{n}"], strict=True)
        figures[f"ratio_c{n}"] = statistics.median(a.rps / h.rps for a, h in pairs)

    return figures


def machine(loop: str) -> dict[str, Any]:
    cpu = re.findall(r"model name\s*: (.*)", Path("/proc/cpuinfo").read_text())
    names = ("httpx", "httpcore", "h11", "aiohttp", "uvicorn", "uvloop", "httptools")
    # httpcore retries a failed import of sniffio on every lock it sets up.
    sniffio = importlib.util.find_spec("sniffio") is not None

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu[0] if cpu else "unknown",
        "python": platform.python_version(),
        **{name: importlib.metadata.version(name) for name in names},
        "sniffio": importlib.metadata.version("sniffio") if sniffio else "absent",
        "client_loop": loop,
        "loadavg_at_start": os.getloadavg()[0],
    }


def markdown(result: dict[str, Any]) -> str:
    about, figures, plan = result["machine"], result["figures"], result["plan"]
    lines = [
        "| concurrent | client | requests/s | p50 | p99 | client CPU per request"
        " | upstream CPU | aiohttp ÷ httpx |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n, client in ((n, c) for n in CONCURRENCY for c in CLIENTS):
        key, ratio = f"{client}_c{n}", figures[f"ratio_c{n}"]
        cells = [
            str(n), client, tables.show(figures[f"{key}_rps"], "/s"),
            tables.show(figures[f"{key}_p50_ms"], "ms"),
            tables.show(figures[f"{key}_p99_ms"], "ms"),
            f"{figures[f'{key}_cpu_us']:,.0f} µs",
            tables.show(figures[f"{key}_upstream_busy"], "%"),
            tables.show(ratio, "%") if client == "aiohttp" else "",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")

    return "\n".join([
        "## Upstream HTTP client",
        "",
        f"One {about['client_loop']} client process, N tasks each posting a chat "
        "request in a loop to a raw ASGI upstream in another process; each figure "
        f"the median of {plan['rounds']} run(s) of {plan['duration_s']} s, the "
        "clients interleaved.",
        "",
        *lines,
        "",
        f"Reproduce: `{result['command']}`",
        "",
        f"Machine: nproc {about['nproc']} ({about['cpu']}), Python {about['python']}, "
        f"httpx {about['httpx']} (httpcore {about['httpcore']}, h11 {about['h11']}, "
        f"sniffio {about['sniffio']}), aiohttp {about['aiohttp']}, uvicorn "
        f"{about['uvicorn']}, uvloop {about['uvloop']}; load average "
        f"{about['loadavg_at_start']:.2f} at the start.",
    ]) + "\n"  # fmt: skip


def run(plan: Plan, loop: str, work: Path) -> dict[str, Any]:
    about = machine(loop)
    command = [
        str(BIN / "uvicorn"), "upstream_client_bench:upstream",
        "--app-dir", str(Path(__file__).parent), "--host", "127.0.0.1",
        "--lifespan", "off", *UVICORN_FLAGS,
    ]  # fmt: skip
    server = spawn("upstream", command, clean_env(), work)
    try:
        wait_ready(server, "/health")
        pid, url = server.process.pid, server.url + PATH
        runs = rounds(plan, url, pid, loop)
        figures = figures_of(runs)
    finally:
        stop(server)
    about["loadavg_at_end"] = os.getloadavg()[0]

    return {
        "machine": about,
        "figures": figures,
        "runs": {key: [asdict(r) for r in rs] for key, rs in runs.items()},
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    parser.add_argument(
        "--loop", choices=("uvloop", "asyncio"), default="uvloop",
        help="the client's event loop (the node runs on uvloop)",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL

    with tempfile.TemporaryDirectory(prefix="upstream-bench-") as work:
        result = run(plan, args.loop, Path(work))
    about, figures = result["machine"], result["figures"]
    shown = [a for a in (argv if argv is not None else sys.argv[1:]) if a]
    result.update(
        plan=asdict(plan),
        command=shlex.join(
            [".venv/bin/python", "benchmarks/upstream_client_bench.py", *shown]
        ),
        table=tables.rows(figures, FIGURES),
    )
    tables.print_rows(
        result["table"],
        f"nproc {about['nproc']} · {about['cpu']} · Python {about['python']} · httpx"
        f" {about['httpx']} · aiohttp {about['aiohttp']} · {args.loop}"
        f" · load {about['loadavg_at_start']:.2f}",
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(f"wrote {args.out} and {args.out.with_suffix('.md').name}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
