"""The router benchmark's load: wrk posting chat requests, an aiohttp client
holding many streams open at once, and the CPU and memory of a process tree
read from proc(5)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHAT_PATH = "/v1/chat/completions"
WRK_TIMEOUT_S = 10
STREAM_TIMEOUT_S = 180.0
PROMPT = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Say hello in one short sentence."},
]


def chat_body(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": PROMPT, "max_tokens": 64, **extra}


@dataclass(frozen=True)
class Run:
    """What wrk saw in one run against one target."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non_200: int  # answers with another status
    socket_errors: int  # connect, read, write errors and timeouts
    cpu_s: float  # CPU time of the server's process tree during the run
    upstream_cpu_s: float
    acked: tuple[str, ...] = field(default=(), repr=False)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    @property
    def failed(self) -> int:
        return self.non_200 + self.socket_errors

    def summary(self) -> dict[str, float]:
        return {
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "non_200": self.non_200,
            "socket_errors": self.socket_errors,
            "cpu_s": round(self.cpu_s, 3),
            "upstream_cpu_s": round(self.upstream_cpu_s, 3),
        }


# Each request carries a unique X-Request-ID, "<run>-<thread>-<counter>"; the
# ids a 200 echoed back are written out so that the audit check can find
# every one of them in the node's ledger.
WRK_LUA = r"""
threads = {}
local body = [[%BODY%]]

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  run, counter, acked, non_200 = args[2], 0, {}, 0
  headers = {["Authorization"] = "Bearer " .. args[1],
             ["Content-Type"] = "application/json"}
end

function request()
  counter = counter + 1
  headers["X-Request-ID"] = string.format("%s-%d-%d", run, thread_index, counter)
  return wrk.format("POST", nil, headers, body)
end

function response(status, answer_headers, _)
  if status == 200 then
    local id = answer_headers["x-request-id"] or answer_headers["X-Request-ID"]
    if id then acked[#acked + 1] = id end
  else
    non_200 = non_200 + 1
  end
end

function done(summary, latency, requests)
  local non_200 = 0
  local out = assert(io.open(os.getenv("ROUTER_BENCH_ACKED"), "w"))
  for _, thread in ipairs(threads) do
    for _, id in ipairs(thread:get("acked")) do out:write(id, "\n") end
    non_200 = non_200 + thread:get("non_200")
  end
  out:close()
  local e = summary.errors
  io.write(string.format(
    [[router_bench {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,]]
    .. [["non_200":%d,"socket_errors":%d}]] .. "\n",
    summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), non_200, e.connect + e.read + e.write + e.timeout))
end
"""


def write_lua(work: Path, model: str) -> Path:
    body = json.dumps(chat_body(model), separators=(",", ":"))
    script = work / "chat.lua"
    script.write_text(WRK_LUA.replace("%BODY%", body))

    return script


def run_wrk(
    url: str, script: Path, connections: int, seconds: float, token: str, run: str,
    pids: tuple[int, int],
) -> Run:  # fmt: skip
    """wrk against ``url``; ``pids`` are the server's and the upstream's."""
    acked_file = script.parent / "acked.txt"
    threads = min(2, connections)
    command = [
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s",
        "--timeout", f"{WRK_TIMEOUT_S}s", "-s", str(script), url, "--", token, run,
    ]  # fmt: skip
    env = {**os.environ, "ROUTER_BENCH_ACKED": str(acked_file)}
    cpu, upstream_cpu = cpu_seconds(pids[0]), cpu_seconds(pids[1])
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=seconds + 60, check=True,
        env=env,
    )  # fmt: skip
    cpu, upstream_cpu = cpu_seconds(pids[0]) - cpu, cpu_seconds(pids[1]) - upstream_cpu
    line = next(x for x in done.stdout.splitlines() if x.startswith("router_bench "))
    report = json.loads(line.removeprefix("router_bench "))
    acked = tuple(acked_file.read_text().split())
    acked_file.unlink()

    return Run(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        non_200=report["non_200"],
        socket_errors=report["socket_errors"],
        cpu_s=cpu,
        upstream_cpu_s=upstream_cpu,
        acked=acked,
    )


# -- a thousand open streams -------------------------------------------------


@dataclass(frozen=True)
class Streams:
    """What holding ``count`` streams open did to the server's memory."""

    count: int
    open_at_once: int  # streams that had their first chunk when RSS was read
    rss_before_mb: float
    rss_open_mb: float
    failed: int  # non-200 answers, broken or unfinished streams
    ids: tuple[str, ...] = field(repr=False)

    @property
    def growth_mb(self) -> float:
        return self.rss_open_mb - self.rss_before_mb


async def hold_streams(
    url: str, token: str, model: str, count: int, upstream_url: str, server_pid: int
) -> Streams:
    """Open ``count`` streams, read the server's RSS once every one has sent its
    first chunk (the upstream holds the rest), then release and read them out."""
    opened = settled = 0
    all_settled = asyncio.Event()
    ids = [f"stream-{i}" for i in range(count)]
    body = chat_body(model, stream=True)

    def settle() -> None:  # once per stream: its first chunk came, or it failed
        nonlocal settled
        settled += 1
        if settled == count:
            all_settled.set()

    async def one(session: aiohttp.ClientSession, request_id: str) -> bool:
        nonlocal opened
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
        started = False
        try:
            async with session.post(url, json=body, headers=headers) as response:
                started = response.status == 200 and await _first_event(response)
                if not started:
                    return False
                opened += 1
                settle()
                rest = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            return False
        finally:
            if not started:
                settle()

        return rest.rstrip().endswith(b"data: [DONE]")

    rss_before = rss_mb(server_pid)
    connector = aiohttp.TCPConnector(limit=0)
    # No total: a stream lasts as long as the hold; a silent socket still fails.
    timeout = aiohttp.ClientTimeout(total=None, sock_read=STREAM_TIMEOUT_S)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async with session.post(upstream_url + "/hold") as response:
            response.raise_for_status()
        tasks = [asyncio.ensure_future(one(session, i)) for i in ids]
        with contextlib.suppress(TimeoutError):  # then fewer were open at once
            await asyncio.wait_for(all_settled.wait(), STREAM_TIMEOUT_S)
        open_at_once, rss_open = opened, rss_mb(server_pid)
        async with session.post(upstream_url + "/release") as response:
            response.raise_for_status()
        finished = await asyncio.gather(*tasks)

    return Streams(
        count=count,
        open_at_once=open_at_once,
        rss_before_mb=rss_before,
        rss_open_mb=rss_open,
        failed=sum(1 for ok in finished if not ok),
        ids=tuple(ids),
    )


async def _first_event(response: aiohttp.ClientResponse) -> bool:
    async for line in response.content:
        if line.startswith(b"data: "):
            return True

    return False


# -- proc(5) -----------------------------------------------------------------


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server may fork workers)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            try:
                todo.extend(int(child) for child in task.read_text().split())
            except FileNotFoundError:
                continue

    return found


def cpu_seconds(pid: int) -> float:
    """User plus system CPU of a process tree, fields 14 and 15 of its stat."""
    ticks = 0
    for member in process_tree(pid):
        try:
            stat = Path(f"/proc/{member}/stat").read_text()
        except FileNotFoundError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])

    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    """Resident memory of a process tree, in MiB."""
    kib = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                kib += int(line.split()[1])

    return kib / 1024
