"""Ledger benchmark: append, verification, proof and backup throughput in one run.

Every figure is measured on the disk that holds the project, in a scratch
directory this script creates and removes, beside two plain-SQLite references
measured in the same run with the ledger's own pragmas and schema:

    .venv/bin/python benchmarks/ledger_bench.py [--records-1m N] [--quick]

It prints a table (figure, result, target, met?) and writes the figures, the
runs behind each median and the machine to benchmarks/results/ledger.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import uvloop

import tables
from penin.ledger import merkle, store
from penin.ledger.backup import backup, restore
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import canonical_payload, now_ts
from penin.ledger.verify import verify_file
from penin.observability.logging import configure
from tables import Figure
from workload import EVENT_TYPE, router_request

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "benchmarks" / "results" / "ledger.json"
WRITERS = 64
FLOOR_BATCH = 64
BIG_BATCH = 1000
MB = 1_000_000
INSERT = (
    "INSERT INTO records (seq, ts, event_type, payload, term, prev_hash,"
    " idempotency_key, leaf_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)


@dataclass(frozen=True)
class Sizes:
    repetitions: int
    single: int
    grouped_per_writer: int
    raw_acked_per_writer: int
    raw_floor: int
    big: int
    proofs: int


FULL = Sizes(3, 2000, 400, 40, FLOOR_BATCH * 3000, 1_000_000, 2000)
QUICK = Sizes(1, 100, 20, 2, FLOOR_BATCH * 100, 50_000, 200)


FIGURES = (
    Figure("single_appends_per_s", "durable appends/s, 1 writer", "/s",
           "≥ 600/s", lambda v: v >= 600),
    Figure("grouped_appends_per_s",
           f"durable appends/s, {WRITERS} writer threads", "/s",
           "≥ 15,000/s", lambda v: v >= 15_000),
    Figure("async_appends_per_s",
           f"durable appends/s, {WRITERS} asyncio writers", "/s",
           "≥ 15,000/s", lambda v: v >= 15_000),
    Figure("raw_acked_inserts_per_s",
           f"raw SQLite, INSERT+COMMIT each, {WRITERS} threads", "/s"),
    Figure("raw_floor_inserts_per_s",
           f"raw SQLite floor, {FLOOR_BATCH} rows a commit", "/s"),
    Figure("grouped_vs_raw_acked",
           f"{WRITERS} writer threads ÷ raw INSERT+COMMIT", "%",
           "≥ 70 %", lambda v: v >= 0.70),
    Figure("grouped_vs_raw_floor", f"{WRITERS} writer threads ÷ raw floor", "%",
           "≥ 70 %", lambda v: v >= 0.70),
    Figure("async_vs_raw_floor", f"{WRITERS} asyncio writers ÷ raw floor", "%",
           "≥ 70 %", lambda v: v >= 0.70),
    Figure("build_records_per_s", f"append_many, {BIG_BATCH} a call", "/s"),
    Figure("verify_records_per_s", "full verification", "/s",
           "≥ 150,000/s", lambda v: v >= 150_000),
    Figure("proof_generation_p50_ms", "inclusion proof generation p50", "ms"),
    Figure("proof_generation_p99_ms", "inclusion proof generation p99", "ms",
           "< 1 ms", lambda v: v < 1.0),
    Figure("proof_verification_p50_ms", "inclusion proof verification p50", "ms"),
    Figure("proof_verification_p99_ms", "inclusion proof verification p99", "ms",
           "< 0.2 ms", lambda v: v < 0.2),
    Figure("backup_mb_per_s", "online backup", "MB/s"),
    Figure("restore_mb_per_s", "verified restore", "MB/s"),
)  # fmt: skip


def payload(i: int) -> dict[str, Any]:
    return router_request(f"req-{i:012d}")


def raw_rows(count: int, *, with_seq: bool) -> list[tuple[object, ...]]:
    """Rows the size of ledger records, with random bytes where hashes would be."""
    ts = now_ts()
    rows: list[tuple[object, ...]] = []
    for i in range(count):
        seq = i if with_seq else None
        rows.append(
            (seq, ts, EVENT_TYPE, canonical_payload(payload(i)), 0,
             os.urandom(32), None, os.urandom(32))
        )  # fmt: skip

    return rows


# -- helpers ------------------------------------------------------------------


@contextmanager
def scratch_dir() -> Iterator[Path]:
    """A directory on the project's disk (never a RAM-backed /tmp), removed after.

    It sits in the ignored results directory, so a killed run leaves no litter
    in ``git status``.
    """
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix="scratch-", dir=RESULTS.parent))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def filesystem(path: Path) -> str:
    """Device and type of the filesystem holding ``path``, from /proc/self/mounts."""
    best = ("", "unknown", "unknown")
    try:
        lines = Path("/proc/self/mounts").read_text().splitlines()
    except OSError:
        return "unknown"
    for line in lines:
        device, mount, kind, *_ = line.split()
        inside = str(path) == mount or str(path).startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best[0]):
            best = (mount, device, kind)

    return f"{best[1]} ({best[2]}, mounted at {best[0]})"


def machine(path: Path) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass

    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "filesystem": filesystem(path),
    }


def revision() -> str:
    """The commit measured, marked dirty when the working tree differs from it."""
    try:
        done = subprocess.run(
            ["git", "-C", str(PROJECT), "describe", "--always", "--dirty"],
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"

    return done.stdout.strip()


def in_threads(works: Sequence[Callable[[], None]]) -> float:
    """Run each work in its own thread, all released at once; seconds to finish."""
    gate = threading.Barrier(len(works) + 1)
    errors: list[BaseException] = []

    def run(work: Callable[[], None]) -> None:
        gate.wait()
        try:
            work()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(w,)) for w in works]
    for thread in threads:
        thread.start()
    gate.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    if errors:
        raise errors[0]

    return elapsed


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value at or above ``fraction``."""
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


# -- appends ------------------------------------------------------------------


def single_appends(path: Path, count: int) -> float:
    with WORMLedger(path).initialize() as ledger:
        start = time.perf_counter()
        for i in range(count):
            ledger.append_record(EVENT_TYPE, payload(i))
        elapsed = time.perf_counter() - start

    return count / elapsed


def grouped_appends(path: Path, per_writer: int) -> float:
    with WORMLedger(path).initialize() as ledger:

        def writer(offset: int) -> Callable[[], None]:
            def work() -> None:
                for i in range(offset, offset + per_writer):
                    ledger.append_record(EVENT_TYPE, payload(i))

            return work

        elapsed = in_threads([writer(w * per_writer) for w in range(WRITERS)])

    return WRITERS * per_writer / elapsed


def async_appends(path: Path, per_writer: int) -> float:
    """WRITERS tasks on one event loop (uvloop, as the node runs), each
    awaiting its own appends in turn: how the node's routes append."""
    with WORMLedger(path).initialize() as ledger:

        async def writer(offset: int) -> None:
            for i in range(offset, offset + per_writer):
                await ledger.append_record_async(EVENT_TYPE, payload(i))

        async def all_writers() -> float:
            start = time.perf_counter()
            await asyncio.gather(*(writer(w * per_writer) for w in range(WRITERS)))
            return time.perf_counter() - start

        elapsed = uvloop.run(all_writers())

    return WRITERS * per_writer / elapsed


def raw_acked_inserts(path: Path, per_writer: int) -> float:
    """What plain sqlite3 gives when every insert must be durable as it returns.

    Each thread has its own connection; seq is left to SQLite, as an
    application without a sequencer would.
    """
    rows = raw_rows(WRITERS * per_writer, with_seq=False)
    setup = store.connect(path)
    setup.executescript(store.SCHEMA)
    conns = [store.connect(path) for _ in range(WRITERS)]

    def writer(
        conn: sqlite3.Connection, mine: list[tuple[object, ...]]
    ) -> Callable[[], None]:
        def work() -> None:
            for row in mine:
                conn.execute("BEGIN IMMEDIATE")
                conn.execute(INSERT, row)
                conn.execute("COMMIT")

        return work

    try:
        chunks = [rows[w::WRITERS] for w in range(WRITERS)]
        elapsed = in_threads([writer(c, m) for c, m in zip(conns, chunks, strict=True)])
        assert setup.execute("SELECT count(*) FROM records").fetchone()[0] == len(rows)
    finally:
        for conn in (setup, *conns):
            conn.close()

    return len(rows) / elapsed


def raw_floor_inserts(path: Path, count: int) -> float:
    """One connection, executemany in transactions of FLOOR_BATCH, no hashing."""
    conn = store.connect(path)
    conn.executescript(store.SCHEMA)
    rows = raw_rows(count, with_seq=True)
    try:
        start = time.perf_counter()
        for first in range(0, count, FLOOR_BATCH):
            conn.execute("BEGIN")
            conn.executemany(INSERT, rows[first : first + FLOOR_BATCH])
            conn.execute("COMMIT")
        elapsed = time.perf_counter() - start
    finally:
        conn.close()

    return count / elapsed


# -- the large ledger ---------------------------------------------------------


def build(ledger: WORMLedger, count: int) -> float:
    start = time.perf_counter()
    for first in range(0, count, BIG_BATCH):
        last = min(first + BIG_BATCH, count)
        ledger.append_many([(EVENT_TYPE, payload(i)) for i in range(first, last)])
    elapsed = time.perf_counter() - start
    ledger.checkpoint()  # so that verification also checks a signed root

    return count / elapsed


def verification(ledger: WORMLedger) -> float:
    start = time.perf_counter()
    report = verify_file(ledger.path, ledger.verifier)
    elapsed = time.perf_counter() - start
    assert report.ok, report.reason

    return report.records_checked / elapsed


def proofs(ledger: WORMLedger, count: int) -> dict[str, float]:
    size = ledger.count_records()
    root = ledger.root()
    seqs = random.Random(9162).sample(range(size), min(count, size))
    leaves = {seq: bytes.fromhex(ledger.get(seq).leaf_hash) for seq in seqs}
    made, checked = [], []
    for seq in seqs:
        start = time.perf_counter_ns()
        proof = ledger.inclusion_proof(seq)
        made.append(time.perf_counter_ns() - start)
        start = time.perf_counter_ns()
        ok = merkle.verify_inclusion(leaves[seq], seq, size, proof.hashes, root)
        checked.append(time.perf_counter_ns() - start)
        assert ok, f"inclusion proof of seq {seq} does not verify"

    return {
        "proof_generation_p50_ms": percentile(made, 0.50) / 1e6,
        "proof_generation_p99_ms": percentile(made, 0.99) / 1e6,
        "proof_verification_p50_ms": percentile(checked, 0.50) / 1e6,
        "proof_verification_p99_ms": percentile(checked, 0.99) / 1e6,
    }


def backup_and_restore(ledger: WORMLedger, work: Path) -> dict[str, float]:
    start = time.perf_counter()
    manifest = backup(ledger, work / "backups")
    backup_s = time.perf_counter() - start
    copy = work / "backups" / manifest.file
    size = copy.stat().st_size
    target = WORMLedger(work / "restored.db", key_path=ledger.key_path).initialize()
    start = time.perf_counter()
    restored = restore(target, copy, force=True)
    restore_s = time.perf_counter() - start
    assert restored.tree_size == ledger.count_records()

    return {
        "backup_mb": size / MB,
        "backup_mb_per_s": size / MB / backup_s,
        "restore_mb_per_s": size / MB / restore_s,
    }


# -- the run ------------------------------------------------------------------


def run(sizes: Sizes, work: Path) -> tuple[dict[str, float], dict[str, list[float]]]:
    figures: dict[str, float] = {}
    runs: dict[str, list[float]] = {}

    appends: dict[str, Callable[[Path], float]] = {
        "single_appends_per_s": lambda p: single_appends(p, sizes.single),
        "grouped_appends_per_s": lambda p: grouped_appends(p, sizes.grouped_per_writer),
        "async_appends_per_s": lambda p: async_appends(p, sizes.grouped_per_writer),
        "raw_acked_inserts_per_s": lambda p: raw_acked_inserts(
            p, sizes.raw_acked_per_writer
        ),
        "raw_floor_inserts_per_s": lambda p: raw_floor_inserts(p, sizes.raw_floor),
    }
    # Rounds interleave the measurements, so that a ratio compares figures
    # taken minutes apart at most; each ratio is the median of its rounds'.
    for key in appends:
        runs[key] = []
    for i in range(sizes.repetitions):
        for key, measure in appends.items():
            runs[key].append(measure(work / f"{key}-{i}.db"))
            print(f"  round {i + 1} {key}: {runs[key][-1]:,.0f}/s", file=sys.stderr)
    for key in appends:
        figures[key] = statistics.median(runs[key])
    for name, of, against in (
        ("grouped_vs_raw_acked", "grouped_appends_per_s", "raw_acked_inserts_per_s"),
        ("grouped_vs_raw_floor", "grouped_appends_per_s", "raw_floor_inserts_per_s"),
        ("async_vs_raw_floor", "async_appends_per_s", "raw_floor_inserts_per_s"),
    ):
        runs[name] = [a / b for a, b in zip(runs[of], runs[against], strict=True)]
        figures[name] = statistics.median(runs[name])

    print(f"  building a ledger of {sizes.big:,} records", file=sys.stderr)
    with WORMLedger(work / "big.db").initialize() as ledger:
        figures["build_records_per_s"] = build(ledger, sizes.big)
        figures["tree_size"] = ledger.count_records()
        figures["verify_records_per_s"] = verification(ledger)
        figures.update(proofs(ledger, sizes.proofs))
        figures.update(backup_and_restore(ledger, work))

    return figures, runs


def print_table(rows: list[dict[str, str]], about: dict[str, Any]) -> None:
    tables.print_rows(
        rows,
        f"nproc {about['nproc']} · {about['cpu']} · Python {about['python']}"
        f" · SQLite {about['sqlite']} · {about['filesystem']}",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, 1 run")
    parser.add_argument(
        "--records-1m", type=int, metavar="N", help="size of the large ledger"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.records_1m is not None:
        sizes = replace(sizes, big=args.records_1m)
    configure("error")  # restore --force warns by design; keep it quiet

    with scratch_dir() as work:
        about = machine(work)
        if "tmpfs" in about["filesystem"]:
            print("warning: scratch is in RAM; fsync costs nothing", file=sys.stderr)
        figures, runs = run(sizes, work)
    rows = tables.rows(figures, FIGURES)
    print_table(rows, about)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "quick": args.quick,
        "revision": revision(),
        "sizes": asdict(sizes),
        "machine": about,
        "figures": figures,
        "runs": runs,
        "table": rows,
    }
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
