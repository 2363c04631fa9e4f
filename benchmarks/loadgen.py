"""Load generators for the node benchmark: wrk with Lua scripts, and an httpx
client for smoke runs. Both report a Run and the request ids acknowledged."""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from workload import EVENT_TYPE, router_request

CONNECTIONS = 64
WRK_THREADS = 2
CLIENT_CONCURRENCY = 8
APPEND_PATH = "/v1/ledger/records"
CLIENT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Run:
    """One measurement: what a load generator saw against one target."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    failed: int  # non-2xx responses and socket errors
    acked: tuple[str, ...] = field(default=(), repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "failed": self.failed,
        }


def append_body(request_id: str) -> dict[str, Any]:
    """A router request as the gateway logs it, keyed by a unique request id."""
    return {"event_type": EVENT_TYPE, "payload": router_request(request_id)}


REPORT_LUA = r"""
function done(summary, latency, requests)
  local unparsed = 0
  if threads ~= nil then
    -- Every thread's acknowledged request ids, for the durability check.
    local out = assert(io.open(os.getenv("NODE_BENCH_ACKED"), "w"))
    for _, thread in ipairs(threads) do
      for _, id in ipairs(thread:get("acked")) do out:write(id, "\n") end
      unparsed = unparsed + thread:get("unparsed")
    end
    out:close()
  end
  local e = summary.errors
  io.write(string.format(
    [[node_bench {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,]]
    .. [["failed":%d,"unparsed":%d}]] .. "\n",
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status + e.connect + e.read + e.write + e.timeout,
    unparsed))
end
"""

# The body varies per request by its request id: "<run>-<thread>-<counter>".
APPEND_LUA = r"""
threads = {}
local body = [[%BODY%]]

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  run, counter, acked, unparsed = args[2], 0, {}, 0
  auth = {["Authorization"] = "Bearer " .. args[1],
          ["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  local id = string.format("%s-%d-%d", run, thread_index, counter)
  return wrk.format("POST", "%PATH%", auth, string.format(body, id))
end

function response(status, _, text)
  if status == 201 then
    local id = string.match(text, '"request_id":"([^"]+)"')
    if id then acked[#acked + 1] = id else unparsed = unparsed + 1 end
  end
end
"""


def write_lua(work: Path) -> dict[str, Path]:
    body = json.dumps(append_body("%s"), separators=(",", ":"))
    append = APPEND_LUA.replace("%BODY%", body).replace("%PATH%", APPEND_PATH)
    scripts = {"GET": work / "get.lua", "POST": work / "append.lua"}
    scripts["GET"].write_text(REPORT_LUA)
    scripts["POST"].write_text(append + REPORT_LUA)

    return scripts


def run_wrk(url: str, script: Path, seconds: int, *args: str, acked_file: Path) -> Run:
    command = [
        "wrk", f"-t{WRK_THREADS}", f"-c{CONNECTIONS}", f"-d{seconds}s",
        "--timeout", "10s", "-s", str(script), url, "--", *args,
    ]  # fmt: skip
    env = {**os.environ, "NODE_BENCH_ACKED": str(acked_file)}
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=True,
        env=env,
    )
    line = next(x for x in done.stdout.splitlines() if x.startswith("node_bench "))
    report = json.loads(line.removeprefix("node_bench "))
    if report["unparsed"]:
        raise RuntimeError(f"{report['unparsed']} responses named no request_id")
    acked: tuple[str, ...] = ()
    if acked_file.exists():
        acked = tuple(acked_file.read_text().split())
        acked_file.unlink()

    return Run(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        failed=report["failed"],
        acked=acked,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value at or above ``fraction``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


async def client_run(
    method: str, path: str, url: str, token: str, run: str, n: int
) -> Run:
    """The smoke-run load generator: ``n`` requests, a few at a time, over httpx."""
    latencies: list[float] = []
    acked: list[str] = []
    statuses: Counter[int] = Counter()
    todo = iter(range(n))
    auth = {"Authorization": f"Bearer {token}"}

    async def worker(client: httpx.AsyncClient) -> None:
        for i in todo:
            request_id = f"{run}-0-{i}"
            started = time.perf_counter()
            if method == "POST":
                body = append_body(request_id)
                response = await client.post(path, json=body, headers=auth)
            else:
                response = await client.get(path)
            latencies.append(time.perf_counter() - started)
            statuses[response.status_code] += 1
            if response.status_code == 201:
                acked.append(request_id)

    async with httpx.AsyncClient(base_url=url, timeout=30) as client:
        started = time.perf_counter()
        workers = [worker(client) for _ in range(CLIENT_CONCURRENCY)]
        await asyncio.wait_for(asyncio.gather(*workers), timeout=CLIENT_TIMEOUT_S)
        elapsed = time.perf_counter() - started
    failed = sum(c for status, c in statuses.items() if not 200 <= status < 300)

    return Run(
        requests=len(latencies),
        seconds=elapsed,
        p50_ms=percentile(latencies, 0.50) * 1000,
        p99_ms=percentile(latencies, 0.99) * 1000,
        failed=failed,
        acked=tuple(acked),
    )
