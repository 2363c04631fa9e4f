"""The router benchmark's open-loop load: chat requests offered at a fixed rate,
whatever the server's pace, each latency counted from its scheduled send time.

A closed-loop generator such as wrk sends the next request only when an answer
comes back, so a slow server is asked less and the requests it would have
delayed are never timed (coordinated omission). Here request ``i`` is due at
``start + i / rate``; it is sent then over a pool of keep-alive connections,
or waits for a free one, and its latency runs from the due time to the end of
its answer, so any queueing the server causes is counted.

The generator runs in its own process, started by :func:`offer_load`, so that
it shares no interpreter with the benchmark; that process prints one
``router_openloop {json}`` line and writes the ids answered 200 to a file.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

import tables
from loadgen import percentile
from router_load import chat_body, cpu_seconds

REQUEST_TIMEOUT_S = 10.0  # as wrk's --timeout: a slower answer is an error
# Below the servers' 5 s keep-alive, so that no request is sent on a
# connection the server is closing.
KEEPALIVE_S = 4.0
LEAD_S = 0.01  # from the schedule being drawn to the first request's due time
MARK = "router_openloop "
# The offered rates, as shares of PENIN-Ω's closed-loop requests/s at 64
# connections in the same run: the node half and four-fifths busy.
LOADS = (0.5, 0.8)
JUDGED_LOAD = 0.5  # the latency targets at 16 and 64 clients
TARGETS = ("direct", "penin")  # LiteLLM cannot take these rates


@dataclass(frozen=True)
class OpenRun:
    """What the open-loop generator saw in one run against one target."""

    rate: float  # offered, requests per second
    scheduled: int  # requests due in the measured window
    ok: int  # of those, answered 200
    non_200: int
    errors: int  # connection errors and timeouts
    warm_failed: int  # of the requests that opened the pool, not answered 200
    seconds: float  # from the first due time to the last answer
    p50_ms: float  # from the due time, over the scheduled requests
    p99_ms: float
    send_lag_p50_ms: float  # due time to the generator starting the request
    send_lag_p99_ms: float
    max_outstanding: int  # sent or waiting for a connection, not yet answered
    mean_outstanding: float
    loadgen_cpu_s: float  # the generator's own CPU over the window
    cpu_s: float  # the server's process tree over the window
    upstream_cpu_s: float
    acked: tuple[str, ...] = field(default=(), repr=False)

    @property
    def achieved_rps(self) -> float:
        """Requests answered 200 in the window ÷ its duration: below ``rate``
        when the server or the generator fell behind."""
        return self.ok / self.seconds

    @property
    def failed(self) -> int:
        return self.non_200 + self.errors + self.warm_failed

    def summary(self) -> dict[str, float]:
        return {
            k: round(v, 3) if isinstance(v, float) else v
            for k, v in vars(self).items()
            if k != "acked"
        } | {"achieved_rps": round(self.achieved_rps, 1)}


def offer_load(
    url: str, token: str, model: str, rate: float, seconds: float, run: str,
    pids: tuple[int, int], work: Path, connections: int = 64,
) -> OpenRun:  # fmt: skip
    """Offer ``rate`` requests/s to ``url`` for ``seconds`` from a generator
    process; ``pids`` are the server's and the upstream's."""
    acked_file = work / "openloop-acked.txt"
    command = [
        sys.executable, __file__, url, "--token", token, "--model", model,
        "--rate", f"{rate:.3f}", "--seconds", str(seconds), "--run", run,
        "--connections", str(connections), "--acked", str(acked_file),
        "--pids", f"{pids[0]},{pids[1]}",
    ]  # fmt: skip
    done = subprocess.run(
        command, capture_output=True, text=True, check=False,
        timeout=seconds + REQUEST_TIMEOUT_S * 2 + 60,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"open-loop generator failed:\n{done.stderr[-2000:]}")
    line = next(x for x in done.stdout.splitlines() if x.startswith(MARK))
    report = json.loads(line.removeprefix(MARK))
    acked = tuple(acked_file.read_text().split())
    acked_file.unlink()

    return OpenRun(**report, acked=acked)


def key_of(name: str, load: float) -> str:
    return f"{name}_open{round(load * 100)}"


def percent(load: float) -> str:
    return f"{load * 100:.0f} %"


# The figures taken as a median over the rounds.
_PER_RUN: dict[str, Callable[[OpenRun], float]] = {
    "rate": lambda r: r.rate,
    "achieved_rps": lambda r: r.achieved_rps,
    "achieved_share": lambda r: r.achieved_rps / r.rate,
    "p50_ms": lambda r: r.p50_ms,
    "p99_ms": lambda r: r.p99_ms,
    "send_lag_p99_ms": lambda r: r.send_lag_p99_ms,
    "mean_outstanding": lambda r: r.mean_outstanding,
    "cpu_us": lambda r: r.cpu_s / r.scheduled * 1e6,
    "loadgen_cpu_us": lambda r: r.loadgen_cpu_s / r.scheduled * 1e6,
    "loadgen_core": lambda r: r.loadgen_cpu_s / r.seconds,
}


def open_figures(runs: dict[str, list[OpenRun]]) -> dict[str, float]:
    """Each figure the median of the rounds; added latency per round, so drift
    cancels."""
    figures: dict[str, float] = {}
    for key, measured in runs.items():
        for name, value in _PER_RUN.items():
            figures[f"{key}_{name}"] = statistics.median(value(r) for r in measured)
        figures[f"{key}_max_outstanding"] = max(r.max_outstanding for r in measured)
    for load in LOADS:
        pairs = list(zip(runs[key_of("penin", load)], runs[key_of("direct", load)],
                         strict=True))  # fmt: skip
        for p in ("p50", "p99"):
            figures[f"{key_of('penin', load)}_added_{p}_ms"] = statistics.median(
                getattr(t, f"{p}_ms") - getattr(d, f"{p}_ms") for t, d in pairs
            )

    return figures


def markdown_rows(figures: dict[str, float]) -> list[str]:
    lines = [
        "| load | target | offered | achieved | p50 | p99 | added p50 | added p99"
        " | requests outstanding, mean / max | generator send lag p99"
        " | server CPU per request | generator CPU per request |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for load, name in ((load, name) for load in LOADS for name in TARGETS):
        key = key_of(name, load)
        added = [
            tables.show(figures[f"{key}_added_{p}_ms"], "ms") if name != "direct"
            else "reference" for p in ("p50", "p99")
        ]  # fmt: skip
        cells = [
            percent(load), name, tables.show(figures[f"{key}_rate"], "/s"),
            tables.show(figures[f"{key}_achieved_rps"], "/s"),
            tables.show(figures[f"{key}_p50_ms"], "ms"),
            tables.show(figures[f"{key}_p99_ms"], "ms"), *added,
            f"{figures[f'{key}_mean_outstanding']:.1f} / "
            f"{figures[f'{key}_max_outstanding']:.0f}",
            tables.show(figures[f"{key}_send_lag_p99_ms"], "ms"),
            f"{figures[f'{key}_cpu_us']:,.0f} µs",
            f"{figures[f'{key}_loadgen_cpu_us']:,.0f} µs",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")

    return lines


# -- the generator process ---------------------------------------------------


class _Client:
    """Sends requests over one pool of connections and counts the outcomes."""

    def __init__(
        self, session: aiohttp.ClientSession, url: str, token: str, body: bytes
    ) -> None:
        self.session, self.url, self.body = session, url, body
        self.headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
        }
        self.outstanding = self.max_outstanding = 0
        self.outcomes: Counter[str] = Counter()
        self.acked: list[str] = []

    async def send(self, request_id: str, due: float) -> tuple[float, float]:
        """Latency and send lag, both from ``due``, in seconds."""
        lag = time.perf_counter() - due
        self.outstanding += 1
        self.max_outstanding = max(self.max_outstanding, self.outstanding)
        headers = {**self.headers, "X-Request-ID": request_id}
        status = 0
        try:
            async with self.session.post(
                self.url, data=self.body, headers=headers
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            self.outstanding -= 1
        latency = time.perf_counter() - due
        if status == 200:
            self.acked.append(request_id)
        self.outcomes[_outcome(status)] += 1

        return latency, lag


def _outcome(status: int) -> str:
    if status == 200:
        return "ok"

    return "non_200" if status else "errors"


async def _offer(
    client: _Client, start: float, rate: float, count: int, run: str
) -> list[tuple[float, float]]:
    """Start request ``i`` at its due time, whether or not earlier ones are
    answered; a late wake-up starts every request already due at once."""
    tasks = []
    for i in range(count):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.send(f"{run}-{i}", due)))

    return await asyncio.gather(*tasks)


async def generate(args: argparse.Namespace) -> dict[str, Any]:
    body = json.dumps(chat_body(args.model), separators=(",", ":")).encode()
    count = max(1, round(args.rate * args.seconds))
    server_pid, upstream_pid = (int(p) for p in args.pids.split(","))
    connector = aiohttp.TCPConnector(
        limit=args.connections, keepalive_timeout=KEEPALIVE_S
    )
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        client = _Client(session, args.url, args.token, body)
        # One request per connection at once, so that the pool starts full.
        now = time.perf_counter()
        await asyncio.gather(
            *(client.send(f"{args.run}-warm-{i}", now) for i in range(args.connections))
        )
        warm_failed = args.connections - len(client.acked)
        client.max_outstanding, client.outcomes = 0, Counter()
        cpu, server, upstream = (
            time.process_time(), cpu_seconds(server_pid), cpu_seconds(upstream_pid)
        )  # fmt: skip
        started = time.perf_counter() + LEAD_S
        timed = await _offer(client, started, args.rate, count, args.run)
        elapsed = time.perf_counter() - started
        cpu, server, upstream = (
            time.process_time() - cpu, cpu_seconds(server_pid) - server,
            cpu_seconds(upstream_pid) - upstream,
        )  # fmt: skip
    latencies = [latency for latency, _ in timed]
    lags = [lag for _, lag in timed]
    Path(args.acked).write_text("".join(f"{i}\n" for i in client.acked))

    return {
        "rate": args.rate,
        "scheduled": count,
        "ok": client.outcomes["ok"],
        "non_200": client.outcomes["non_200"],
        "errors": client.outcomes["errors"],
        "warm_failed": warm_failed,
        "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "send_lag_p50_ms": percentile(lags, 0.50) * 1000,
        "send_lag_p99_ms": percentile(lags, 0.99) * 1000,
        "max_outstanding": client.max_outstanding,
        # Little's law: the time-average number waiting or in flight.
        "mean_outstanding": sum(latencies) / elapsed,
        "loadgen_cpu_s": cpu,
        "cpu_s": server,
        "upstream_cpu_s": upstream,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--token", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--rate", type=float, required=True, help="requests/s")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--run", required=True, help="prefix of the request ids")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--acked", type=Path, required=True, help="ids answered 200")
    parser.add_argument("--pids", required=True, help="server,upstream")
    args = parser.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0 or args.connections <= 0:
        parser.error("--rate, --seconds and --connections must be positive")

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        report = runner.run(generate(args))
    print(MARK + json.dumps(report), flush=True)

    return 0


if __name__ == "__main__":
    sys.exit(main())
