"""HA benchmark: failover time and lost writes over kill -9 trials, appends/s in
sync mode, async mode and on a single node, and replication lag under load.

    .venv/bin/python benchmarks/failover_bench.py [--trials N] [--duration S]
        [--rounds R] [--out DIR]

Everything runs on loopback, started here: a one-member etcd (the test
suite's fixture, tests/etcdd.py) and ``penin serve`` processes with
``coordinator: etcd`` and the default lease TTL (3 s).

- **Throughput.** wrk with 64 connections appends to a single node, to the
  primary of an async trio, of a sync trio and of a sync pair (primary and
  one replica; ``sync_replicas: 1`` in both), the four interleaved round by
  round; medians. Every process shares this machine's cores: a trio's two
  replicas and etcd take CPU and fsyncs that a real deployment's own
  machines would give them, which is why the pair is measured too. During
  each cluster's run, the primary's ``GET /v1/cluster`` is read every 50 ms
  and each replica's ``lag_seconds`` kept: the lag p99 is over those samples.
- **Failover.** A sync trio with four writer threads appending through
  whichever member answers. Each trial kills the primary with SIGKILL and
  times from the kill to the first write acknowledged in a newer term; then
  it checks that every write acknowledged before and after the kill is in
  the new primary's ledger, restarts the killed member (it rejoins as a
  replica) and waits until it follows before the next trial.

It prints a table (figure, result, target, met?) and writes
benchmarks/results/failover.json and failover.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

import tables
from loadgen import APPEND_PATH, percentile, run_wrk, write_lua
from servers import (
    BIN,
    Server,
    clean_env,
    free_port,
    penin,
    spawn,
    start_node,
    stop,
    wait_ready,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from etcdd import EtcdServer  # the suite's etcd fixture

RESULTS = Path(__file__).parent / "results"
TTL_S = 3
ELECTION_TIMEOUT_S = 30.0
WRITERS = 4
LAG_SAMPLE_S = 0.05

FIGURES = (
    tables.Figure(
        "failover_median_s",
        "failover time, median (kill -9 to first acknowledged write)",
        "s",
        "< 5 s",
        lambda v: v < 5,
    ),
    tables.Figure(
        "failover_max_s", "failover time, max", "s", "< 10 s", lambda v: v < 10
    ),
    tables.Figure(
        "lost_sync",
        "acknowledged writes lost (sync mode, all trials)",
        "n",
        "0",
        lambda v: v == 0,
    ),
    tables.Figure("single_rps", "appends/s, single node", "/s"),
    tables.Figure("async_rps", "appends/s, async trio primary", "/s"),
    tables.Figure("sync_rps", "appends/s, sync trio primary", "/s"),
    tables.Figure("sync_pair_rps", "appends/s, sync pair primary", "/s"),
    tables.Figure(
        "sync_ratio",
        "sync trio appends / single-node appends",
        "%",
        "≥ 50 %",
        lambda v: v >= 0.5,
    ),
    tables.Figure(
        "sync_pair_ratio",
        "sync pair appends / single-node appends",
        "%",
        "≥ 50 %",
        lambda v: v >= 0.5,
    ),
    tables.Figure("async_ratio", "async trio appends / single-node appends", "%"),
    tables.Figure("single_cpu_us", "CPU per append, single node", "us"),
    tables.Figure("sync_cpu_us", "CPU per append, sync trio primary", "us"),
    tables.Figure(
        "lag_p99_ms_sync",
        "replication lag p99 under load, sync trio and pair",
        "ms",
        "< 100 ms",
        lambda v: v < 100,
    ),
    tables.Figure(
        "lag_p99_ms_async",
        "replication lag p99 under load, async trio",
        "ms",
        "< 100 ms",
        lambda v: v < 100,
    ),
)


class Cluster:
    """Members with ``coordinator: etcd``; ``n1``'s ledger comes first."""

    def __init__(
        self, work: Path, etcd_url: str, replication: str, members: int = 3
    ) -> None:
        self.work = work
        self.names = tuple(f"n{i}" for i in range(1, members + 1))
        self.ports = {name: free_port() for name in self.names}
        self.servers: dict[str, Server] = {}
        self.env = clean_env(
            PENIN_CLUSTER_TOKEN=secrets.token_hex(24), PENIN_LOG_LEVEL="warning"
        )
        self.section = {
            "coordinator": "etcd",
            "name": f"b{secrets.token_hex(3)}",
            "etcd_endpoints": [etcd_url],
            "replication": replication,
            "sync_replicas": 1,
            "lease_ttl_s": TTL_S,
        }
        first = self.data_dir("n1")
        penin("ledger", "init", "--data-dir", str(first), "--origin", "bench/ha")
        self.append_token = _key(first, "append")
        self.read_token = _key(first, "read")
        for name in self.names[1:]:
            self.data_dir(name).mkdir(parents=True)
            shutil.copy(first / "ledger.key", self.data_dir(name) / "ledger.key")

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.ports[name]}"

    def data_dir(self, name: str) -> Path:
        return self.work / name

    def start(self, name: str) -> None:
        config = self.work / f"{name}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "node": {"name": name, "advertise_url": self.url(name)},
                    "cluster": self.section,
                }
            )
        )
        command = [
            str(BIN / "penin"),
            "serve",
            "--data-dir",
            str(self.data_dir(name)),
            "--config",
            str(config),
        ]
        server = spawn(name, command, self.env, self.work, port=self.ports[name])
        self.servers[name] = server
        wait_ready(server, "/livez")

    def start_all(self) -> Cluster:
        self.start("n1")
        self.wait_primary()
        for name in self.names[1:]:
            self.start(name)
        self.wait_following(*self.names[1:])
        return self

    def primary(self) -> str | None:
        for name, server in self.servers.items():
            if server.process.poll() is not None:
                continue
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url(name) + "/primary", timeout=1).status_code == 200:
                    return name
        return None

    def wait_primary(self) -> str:
        deadline = time.monotonic() + ELECTION_TIMEOUT_S
        while time.monotonic() < deadline:
            if (name := self.primary()) is not None:
                return name
            time.sleep(0.05)
        raise RuntimeError("no primary elected in time")

    def wait_following(self, *names: str) -> None:
        deadline = time.monotonic() + ELECTION_TIMEOUT_S
        for name in names:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (
                        httpx.get(self.url(name) + "/replica", timeout=1).status_code
                        == 200
                    ):
                        break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{name} does not follow in time")
                time.sleep(0.05)

    def leaf_hashes(self, name: str) -> set[str]:
        path = self.data_dir(name) / "ledger.db"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {
                bytes(r[0]).hex() for r in conn.execute("SELECT leaf_hash FROM records")
            }
        finally:
            conn.close()

    def stop_all(self) -> None:
        for server in self.servers.values():
            stop(server)


def _key(data_dir: Path, scope: str) -> str:
    created = penin(
        "keys", "create", "--data-dir", str(data_dir), "--scope", scope, "--json"
    )
    return str(json.loads(created)["token"])


# -- throughput and lag ---------------------------------------------------------


@dataclass
class LagSampler:
    """Reads each replica's lag from the primary's /v1/cluster while it runs."""

    url: str
    token: str
    samples: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> LagSampler:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        auth = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(timeout=2, headers=auth) as http:
            while not self._stop.wait(LAG_SAMPLE_S):
                with contextlib.suppress(httpx.HTTPError, ValueError):
                    members = http.get(self.url + "/v1/cluster").json()["members"]
                    self.samples.extend(
                        float(m["lag_seconds"])
                        for m in members.values()
                        if m.get("lag_seconds") is not None
                    )


def throughput(
    work: Path, etcd: EtcdServer, args: argparse.Namespace
) -> dict[str, Any]:
    scripts = write_lua(work)
    single, single_token = start_node("single", "warning", work)
    wait_ready(single, "/livez")
    trios = {
        "async": Cluster(work / "async", etcd.url, "async").start_all(),
        "sync": Cluster(work / "sync", etcd.url, "sync").start_all(),
        "sync_pair": Cluster(work / "pair", etcd.url, "sync", members=2).start_all(),
    }
    rates: dict[str, list[float]] = {name: [] for name in ("single", *trios)}
    # CPU seconds of the process that takes the appends, per append.
    cpu: dict[str, list[float]] = {name: [] for name in ("single", *trios)}
    lag: dict[str, list[float]] = {"sync": [], "async": []}
    try:
        for round_ in range(args.rounds):
            for target in ("single", *trios):
                acked = work / f"acked-{target}-{round_}"
                if target == "single":
                    before = _cpu_s(single.process.pid)
                    run = run_wrk(
                        single.url + APPEND_PATH,
                        scripts["POST"],
                        args.duration,
                        single_token,
                        f"s{round_}",
                        acked_file=acked,
                    )
                    used = _cpu_s(single.process.pid) - before
                else:
                    trio = trios[target]
                    name = trio.wait_primary()
                    primary, pid = trio.url(name), trio.servers[name].process.pid
                    before = _cpu_s(pid)
                    with LagSampler(primary, trio.read_token) as sampler:
                        run = run_wrk(
                            primary + APPEND_PATH,
                            scripts["POST"],
                            args.duration,
                            trio.append_token,
                            f"{target}{round_}",
                            acked_file=acked,
                        )
                    used = _cpu_s(pid) - before
                    lag["async" if target == "async" else "sync"] += sampler.samples
                rates[target].append(run.requests / run.seconds)
                cpu[target].append(used / run.requests)
                print(
                    f"  round {round_ + 1} {target}: {rates[target][-1]:,.0f}/s "
                    f"({run.failed} failed)"
                )
    finally:
        stop(single)
        for trio in trios.values():
            trio.stop_all()
    medians = {k: statistics.median(v) for k, v in rates.items()}

    return {
        "single_rps": medians["single"],
        "async_rps": medians["async"],
        "sync_rps": medians["sync"],
        "sync_pair_rps": medians["sync_pair"],
        "sync_ratio": medians["sync"] / medians["single"],
        "sync_pair_ratio": medians["sync_pair"] / medians["single"],
        "async_ratio": medians["async"] / medians["single"],
        "single_cpu_us": statistics.median(cpu["single"]) * 1e6,
        "sync_cpu_us": statistics.median(cpu["sync"]) * 1e6,
        "lag_p99_ms_sync": percentile(lag["sync"], 0.99) * 1000,
        "lag_p99_ms_async": percentile(lag["async"], 0.99) * 1000,
        "lag_samples": {mode: len(samples) for mode, samples in lag.items()},
        "rates": rates,
    }


def _cpu_s(pid: int) -> float:
    """CPU seconds (user and system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()

    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- failover trials ------------------------------------------------------------


@dataclass
class Writers:
    """Threads appending to whichever member takes writes; what was acknowledged."""

    trio: Cluster
    acked: list[tuple[float, int, str]] = field(
        default_factory=list
    )  # time, term, leaf
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Writers:
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True)
            for i in range(WRITERS)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def count(self) -> int:
        with self._lock:
            return len(self.acked)

    def last_term(self) -> int:
        with self._lock:
            return max(term for _, term, _ in self.acked)

    def first_after(self, term: int) -> float | None:
        """When the first write of a term above ``term`` was acknowledged."""
        with self._lock:
            later = [at for at, newer, _ in self.acked if newer > term]
        return min(later) if later else None

    def _run(self, index: int) -> None:
        names = list(self.trio.names)
        target = self.trio.url(names[index % len(names)])
        auth = {"Authorization": f"Bearer {self.trio.append_token}"}
        turn = index
        with httpx.Client(timeout=2, headers=auth) as http:
            while not self._stop.is_set():
                key = uuid.uuid4().hex
                body = {"event_type": "bench.write", "payload": {"k": key}}
                try:
                    answer = http.post(
                        target + APPEND_PATH,
                        json=body,
                        headers={"Idempotency-Key": key},
                    )
                except httpx.HTTPError:
                    answer = None
                if answer is not None and answer.status_code in (200, 201):
                    record = answer.json()
                    with self._lock:
                        self.acked.append(
                            (time.monotonic(), record["term"], record["leaf_hash"])
                        )
                    continue
                location = answer.headers.get("location") if answer else None
                if location:
                    target = location.split("/v1/")[0]
                else:
                    turn += 1
                    target = self.trio.url(names[turn % len(names)])
                    time.sleep(0.02)


def failovers(work: Path, etcd: EtcdServer, trials: int) -> dict[str, Any]:
    trio = Cluster(work / "trials", etcd.url, "sync").start_all()
    times: list[float] = []
    lost = 0
    checked = 0
    try:
        for trial in range(trials):
            primary = trio.wait_primary()
            with Writers(trio) as writers:
                _wait(lambda: writers.count() >= 200, "200 acknowledged writes")
                old_term = writers.last_term()
                killed_at = time.monotonic()
                trio.servers[primary].process.kill()
                trio.servers[primary].process.wait(10)
                _wait(
                    lambda term=old_term: writers.first_after(term) is not None,
                    "a write in the new term",
                )
                _wait(lambda: writers.count() >= 400, "writes to go on")
            took_over = writers.first_after(old_term)
            assert took_over is not None
            times.append(took_over - killed_at)
            new = trio.wait_primary()
            held = trio.leaf_hashes(new)
            missing = [leaf for _, _, leaf in writers.acked if leaf not in held]
            lost += len(missing)
            checked += len(writers.acked)
            print(
                f"  trial {trial + 1}: {primary} killed, {new} took over in "
                f"{times[-1]:.2f} s; {len(missing)} of {len(writers.acked)} "
                "acknowledged writes missing"
            )
            trio.start(primary)
            trio.wait_following(primary)
    finally:
        trio.stop_all()

    return {
        "failover_median_s": statistics.median(times),
        "failover_max_s": max(times),
        "failover_times_s": [round(t, 3) for t in times],
        "lost_sync": lost,
        "acknowledged_checked": checked,
    }


def _wait(probe: Any, what: str, timeout: float = ELECTION_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


# -- the report -----------------------------------------------------------------


def markdown(result: dict[str, Any]) -> str:
    lines = ["| figure | result | target | met |", "|---|---|---|---|"]
    for row in tables.rows(result, FIGURES):
        lines.append(
            f"| {row['figure']} | {row['result']} | {row['target']} | {row['met']} |"
        )
    lines.append("")
    lines.append(f"Failover times (s): {result['failover_times_s']}")
    lines.append(f"Rates by round: {json.dumps(result['rates'])}")

    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--duration", type=int, default=10, help="seconds of wrk")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--out", type=Path, default=RESULTS, help="where failover.json and .md go"
    )
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(
        prefix="penin-failover-", ignore_cleanup_errors=True
    ) as scratch:
        work = Path(scratch)
        etcd = EtcdServer(work / "etcd").start()
        try:
            print("throughput (wrk, 64 connections):")
            result = throughput(work, etcd, args)
            print(f"failover ({args.trials} kill -9 trials, sync mode, TTL {TTL_S} s):")
            result |= failovers(work, etcd, args.trials)
        finally:
            etcd.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "failover.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "failover.md").write_text(markdown(result))
    tables.print_rows(tables.rows(result, FIGURES), "HA benchmark")

    return 0


if __name__ == "__main__":
    raise SystemExit(main())
