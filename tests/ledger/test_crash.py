"""A process killed mid-append loses no acknowledged record and leaves a sound file."""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import ORIGIN, assert_intact
from penin.ledger.ledger import MAX_QUERY_LIMIT, WORMLedger
from penin.ledger.record import Record
from penin.ledger.verify import verify_file

LINE_TIMEOUT = 30
BATCH = 3000

# The appender prints a record only after its append returned, so every line on
# its stdout is a promise: that record is durable. It stops by itself after a
# minute, so that a child the test lost cannot run on.
APPENDER = """
import sys
import threading
import time

import structlog

from penin.ledger.ledger import WORMLedger

structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
path, origin, mode, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ledger = WORMLedger(path).initialize(origin)
printing = threading.Lock()
deadline = time.monotonic() + 60


def say(*lines):
    with printing:
        sys.stdout.write("".join(line + "\\n" for line in lines))
        sys.stdout.flush()


def singles(worker):
    n = 0
    while time.monotonic() < deadline:
        record = ledger.append_record("test.crash", {"worker": worker, "n": n})
        say(f"ack {record.seq} {record.leaf_hash}")
        n += 1


def batches(size):
    k = 0
    while time.monotonic() < deadline:
        say(f"batch {k}")
        entries = [("test.crash", {"batch": k, "n": i}) for i in range(size)]
        records = ledger.append_many(entries)
        say(*(f"ack {r.seq} {r.leaf_hash}" for r in records))
        k += 1


threads = [threading.Thread(target=singles, args=(w,)) for w in range(workers)]
for thread in threads:
    thread.daemon = True
    thread.start()
if mode == "batches":
    batches(int(sys.argv[5]))
for thread in threads:
    thread.join()
"""


class _Appender:
    """A child process appending to a ledger, and what it has acknowledged."""

    def __init__(self, proc: subprocess.Popen[str], stderr: Path) -> None:
        self.proc = proc
        self.stderr = stderr
        self.acks: dict[int, str] = {}
        self.batch_started: list[float] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _take(self, line: str) -> None:
        # A line cut short by the kill promises nothing.
        if not line.endswith("\n"):
            return
        word, *rest = line.split()
        if word == "ack":
            self.acks[int(rest[0])] = rest[1]
        elif word == "batch":
            self.batch_started.append(time.monotonic())

    def read_until(self, done: Callable[[_Appender], bool]) -> None:
        while not done(self):
            try:
                line = self._lines.get(timeout=LINE_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"the appender printed nothing for {LINE_TIMEOUT} s")
            if line is None:
                pytest.fail(f"the appender exited early: {self.stderr.read_text()}")
            self._take(line)

    def kill(self) -> None:
        """SIGKILL, then collect what it had printed before it died."""
        self.proc.kill()
        self.proc.wait(timeout=LINE_TIMEOUT)
        while (line := self._lines.get(timeout=LINE_TIMEOUT)) is not None:
            self._take(line)


@contextmanager
def _appender(
    tmp_path: Path, path: Path, mode: str = "records", workers: int = 4
) -> Iterator[_Appender]:
    script = tmp_path / "appender.py"
    script.write_text(APPENDER)
    stderr = tmp_path / f"appender-{time.monotonic_ns()}.err"
    command = [sys.executable, str(script), str(path), ORIGIN, mode, str(workers)]
    with stderr.open("w") as err:
        proc = subprocess.Popen(
            [*command, str(BATCH)], stdout=subprocess.PIPE, stderr=err, text=True
        )
    child = _Appender(proc, stderr)
    try:
        yield child
    finally:
        proc.kill()
        proc.wait(timeout=LINE_TIMEOUT)
        child.reader.join(timeout=LINE_TIMEOUT)
        assert proc.stdout is not None
        proc.stdout.close()


def _all_records(led: WORMLedger) -> list[Record]:
    records: list[Record] = []
    while page := led.query(after_seq=len(records) - 1, limit=MAX_QUERY_LIMIT):
        records.extend(page)

    return records


def _assert_recovered(path: Path, acks: dict[int, str]) -> list[Record]:
    """The file verifies, holds every acknowledged record, and takes the next one."""
    # First as 'penin ledger verify' sees it: before any writer reopened it.
    report = verify_file(path)
    assert report.ok, report.reason

    with WORMLedger(path).initialize() as led:
        report = led.verify_integrity()
        records = _all_records(led)
        after = led.append_record("test.after_crash", {"reopened": True})

    stored = {r.seq: r.leaf_hash for r in records}
    assert report.ok, report.reason
    assert not report.warnings
    assert [r.seq for r in records] == list(range(len(records)))
    assert {seq: stored.get(seq) for seq in acks} == acks
    assert after.seq == len(records)
    assert after.prev_hash == records[-1].leaf_hash
    assert_intact(path, len(records) + 1)

    return records


@pytest.mark.parametrize("acks_before_kill", [1, 60, 600])
def test_a_killed_appender_loses_no_acknowledged_record(
    tmp_path: Path, acks_before_kill: int
) -> None:
    path = tmp_path / "ledger.db"

    with _appender(tmp_path, path) as child:
        child.read_until(lambda c: len(c.acks) >= acks_before_kill)
        child.kill()

    _assert_recovered(path, child.acks)


@pytest.mark.parametrize("moment", [0.0, 0.5, 0.8])
def test_a_batch_cut_by_a_kill_is_all_or_nothing(tmp_path: Path, moment: float) -> None:
    path = tmp_path / "ledger.db"

    with _appender(tmp_path, path, mode="batches", workers=2) as child:
        child.read_until(lambda c: len(c.batch_started) >= 2)
        # Batch 1 is as large as batch 0, so a kill at a fraction of the time
        # batch 0 took lands at that point of batch 1's way: first the caller
        # canonicalises its payloads, then the writer's transaction is open.
        took = child.batch_started[1] - child.batch_started[0]
        time.sleep(took * moment)
        child.kill()

    records = _assert_recovered(path, child.acks)
    sizes = Counter(r.payload["batch"] for r in records if "batch" in r.payload)
    assert sizes[0] == BATCH
    assert set(sizes.values()) == {BATCH}
    for batch in sizes:
        seqs = [r.seq for r in records if r.payload.get("batch") == batch]
        assert seqs == list(range(seqs[0], seqs[0] + BATCH))


def test_repeated_kills_of_one_file_keep_every_acknowledged_record(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"
    acks: dict[int, str] = {}

    for acks_before_kill in (5, 100, 400):
        with _appender(tmp_path, path) as child:
            child.read_until(lambda c, n=acks_before_kill: len(c.acks) >= n)
            child.kill()
        # Each child reopens the file its predecessor died with: no seq twice.
        assert not acks.keys() & child.acks.keys()
        acks |= child.acks

    _assert_recovered(path, acks)
