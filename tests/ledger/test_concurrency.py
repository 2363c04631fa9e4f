"""Appends from many threads, coroutines, ledgers and processes form one chain."""

from __future__ import annotations

import asyncio
import itertools
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from helpers import append_n, assert_intact, raw_connect
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import ZERO_HASH, Record
from penin.observability.metrics import REGISTRY

T = TypeVar("T")

TIMEOUT = 60
THREADS = 32
APPENDS_PER_THREAD = 50
COROUTINES = 400

OTHER_PROCESS = """
import sys

import structlog

from penin.ledger.ledger import WORMLedger

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
with WORMLedger(sys.argv[1]).initialize() as ledger:
    for n in range(int(sys.argv[2])):
        record = ledger.append_record("test.other_process", {"n": n})
        print(record.seq, record.leaf_hash)
"""


def _in_threads(count: int, work: Callable[[int], T]) -> list[T]:
    """``work(i)`` in ``count`` threads released together; results in order of i."""
    start = threading.Barrier(count)

    def run(i: int) -> T:
        start.wait(timeout=TIMEOUT)
        return work(i)

    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(run, i) for i in range(count)]
        return [f.result(timeout=TIMEOUT) for f in futures]


def _append_serially(led: WORMLedger, caller: str, count: int) -> list[Record]:
    return [led.append_record("test.thread", {caller: n}) for n in range(count)]


async def _append_at_once(led: WORMLedger, count: int, **key: str) -> list[Record]:
    appends = (
        led.append_record_async("test.coroutine", {"task": n}, **key)
        for n in range(count)
    )

    return await asyncio.wait_for(asyncio.gather(*appends), TIMEOUT)


def _append_until(
    led: WORMLedger, caller: str, stop: threading.Event, limit: int = 2000
) -> list[Record]:
    records: list[Record] = []
    while not stop.is_set() and len(records) < limit:
        records.append(led.append_record("test.thread", {caller: len(records)}))

    return records


def _assert_own_records(records: list[Record], caller: str) -> None:
    """A caller got back its own records, in the order it appended them."""
    assert [r.payload for r in records] == [{caller: n} for n in range(len(records))]
    assert [r.seq for r in records] == sorted(r.seq for r in records)


def _assert_one_chain(led: WORMLedger, records: list[Record]) -> None:
    """The records are the whole log: one a seq, chained, each as stored."""
    by_seq = sorted(records, key=lambda r: r.seq)

    assert [r.seq for r in by_seq] == list(range(led.count_records()))
    assert by_seq[0].prev_hash == ZERO_HASH.hex()
    for previous, record in itertools.pairwise(by_seq):
        assert record.prev_hash == previous.leaf_hash
    for record in by_seq:
        assert led.get(record.seq) == record
    assert_intact(led.path, len(by_seq))


def _batches() -> tuple[float, float]:
    """Transactions the writers committed so far, and the records they held."""
    name = "penin_ledger_fsync_batch_records"
    count = REGISTRY.get_sample_value(f"{name}_count")
    total = REGISTRY.get_sample_value(f"{name}_sum")

    return count or 0.0, total or 0.0


# -- one ledger ---------------------------------------------------------------


def test_threads_appending_at_once_get_one_gapless_chain(ledger: WORMLedger) -> None:
    per_thread = _in_threads(
        THREADS, lambda i: _append_serially(ledger, f"t{i}", APPENDS_PER_THREAD)
    )

    for i, records in enumerate(per_thread):
        _assert_own_records(records, f"t{i}")
    _assert_one_chain(ledger, [r for records in per_thread for r in records])
    assert ledger.count_records() == THREADS * APPENDS_PER_THREAD


def test_coroutines_appending_at_once_get_one_gapless_chain(
    ledger: WORMLedger,
) -> None:
    records = asyncio.run(_append_at_once(ledger, COROUTINES))

    assert [r.payload for r in records] == [{"task": n} for n in range(COROUTINES)]
    _assert_one_chain(ledger, records)


def test_threads_and_coroutines_together_get_one_gapless_chain(
    ledger: WORMLedger,
) -> None:
    with ThreadPoolExecutor(16) as pool:
        threaded = [
            pool.submit(_append_serially, ledger, f"t{i}", 25) for i in range(16)
        ]
        awaited = asyncio.run(_append_at_once(ledger, COROUTINES))
        per_thread = [f.result(timeout=TIMEOUT) for f in threaded]

    for i, records in enumerate(per_thread):
        _assert_own_records(records, f"t{i}")
    assert [r.payload for r in awaited] == [{"task": n} for n in range(COROUTINES)]
    _assert_one_chain(ledger, [*awaited, *(r for rs in per_thread for r in rs)])


def test_threads_sending_one_idempotency_key_append_one_record(
    ledger: WORMLedger,
) -> None:
    append_n(ledger, 3)

    records = _in_threads(
        THREADS,
        lambda i: ledger.append_record(
            "test.retry", {"thread": i}, idempotency_key="one-request"
        ),
    )

    assert all(r == records[0] for r in records)
    assert records[0].seq == 3
    assert records[0].payload["thread"] in range(THREADS)
    assert ledger.get(3) == records[0]
    assert ledger.count_records() == 4
    assert_intact(ledger.path, 4)


def test_coroutines_sending_one_idempotency_key_append_one_record(
    ledger: WORMLedger,
) -> None:
    append_n(ledger, 3)

    records = asyncio.run(
        _append_at_once(ledger, COROUTINES, idempotency_key="one-request")
    )

    assert all(r == records[0] for r in records)
    assert records[0].seq == 3
    assert ledger.count_records() == 4
    assert_intact(ledger.path, 4)


async def _append_behind_a_lock(led: WORMLedger, count: int) -> list[Record]:
    # Another connection holds the write lock, as a second process would, so
    # the writer is stuck on its first batch while every append is queued.
    holder = raw_connect(led.path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        appends = [
            asyncio.ensure_future(led.append_record_async("test.queued", {"n": n}))
            for n in range(count)
        ]
        await asyncio.sleep(0)  # each task runs up to its hand-over to the writer
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    return await asyncio.wait_for(asyncio.gather(*appends), TIMEOUT)


def test_appends_queued_behind_a_lock_are_group_committed(ledger: WORMLedger) -> None:
    batches_before, records_before = _batches()

    records = asyncio.run(_append_behind_a_lock(ledger, COROUTINES))

    batches_after, records_after = _batches()
    assert records_after - records_before == COROUTINES
    # The batch the writer held when it blocked, then everything queued behind.
    assert batches_after - batches_before <= 2
    _assert_one_chain(ledger, records)


# -- one file, two writers ----------------------------------------------------


def test_two_ledgers_on_one_file_taking_turns_extend_one_chain(
    ledger: WORMLedger,
) -> None:
    with WORMLedger(ledger.path).initialize() as other:
        # Every append finds a tip the other writer moved.
        records = [
            (ledger, other)[n % 2].append_record("test.turns", {"n": n})
            for n in range(40)
        ]

        assert [r.seq for r in records] == list(range(40))
        assert all(other.get(r.seq) == r for r in records)
    _assert_one_chain(ledger, records)


def test_two_ledgers_on_one_file_appending_at_once_keep_one_chain(
    ledger: WORMLedger,
) -> None:
    with WORMLedger(ledger.path).initialize() as other:
        per_thread = _in_threads(
            16, lambda i: _append_serially((ledger, other)[i % 2], f"t{i}", 40)
        )
        records = [r for rs in per_thread for r in rs]

        assert all(other.get(r.seq) == r for r in records)
    for i, own in enumerate(per_thread):
        _assert_own_records(own, f"t{i}")
    _assert_one_chain(ledger, records)


def test_two_ledgers_sending_one_idempotency_key_append_one_record(
    ledger: WORMLedger,
) -> None:
    with WORMLedger(ledger.path).initialize() as other:
        records = _in_threads(
            16,
            lambda i: (ledger, other)[i % 2].append_record(
                "test.retry", {"thread": i}, idempotency_key="one-request"
            ),
        )

    assert all(r == records[0] for r in records)
    assert ledger.count_records() == 1
    assert_intact(ledger.path, 1)


def test_another_process_appending_at_once_keeps_one_chain(ledger: WORMLedger) -> None:
    stop = threading.Event()
    proc = subprocess.Popen(
        [sys.executable, "-c", OTHER_PROCESS, str(ledger.path), "300"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Ours append for as long as the other process lives, so they overlap.
        with ThreadPoolExecutor(4) as pool:
            ours = [pool.submit(_append_until, ledger, f"t{i}", stop) for i in range(4)]
            out, err = proc.communicate(timeout=TIMEOUT)
            stop.set()
            per_thread = [f.result(timeout=TIMEOUT) for f in ours]
    finally:
        stop.set()
        proc.kill()
        proc.wait(timeout=TIMEOUT)

    assert proc.returncode == 0, err
    theirs = dict(line.split() for line in out.splitlines())
    assert len(theirs) == 300
    assert {seq: ledger.get(int(seq)).leaf_hash for seq in theirs} == theirs
    mine = [r for rs in per_thread for r in rs]
    everything = [*mine, *(ledger.get(int(seq)) for seq in theirs)]
    _assert_one_chain(ledger, everything)
    assert ledger.count_records() == len(mine) + 300
