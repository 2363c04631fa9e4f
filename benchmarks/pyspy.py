"""A py-spy profile of a server under load, summed by thread and by function."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from servers import Server

SAMPLE_RATE = 100


def profile(py_spy: str, server: Server, load: Any, seconds: int) -> dict[str, Any]:
    """Sample the node with py-spy while ``load`` drives it; shares by function."""
    raw = Path(tempfile.mkdtemp(prefix="node-bench-")) / "profile.txt"
    sampled = seconds - 2  # inside the load, clear of its start and end
    command = [
        py_spy, "record", "-p", str(server.process.pid), "-d", str(sampled),
        "-r", str(SAMPLE_RATE), "--threads", "--format", "raw", "-o", str(raw),
    ]  # fmt: skip
    sampler = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        load()
        _, err = sampler.communicate(timeout=seconds + 30)
    finally:
        if sampler.poll() is None:
            sampler.kill()
            sampler.wait(timeout=10)
    try:
        stacks = raw.read_text().splitlines()
    except FileNotFoundError:
        raise RuntimeError(f"py-spy wrote no profile: {err.decode()[-500:]}") from None
    finally:
        shutil.rmtree(raw.parent, ignore_errors=True)

    return summarize_stacks(stacks, SAMPLE_RATE * sampled)


def summarize_stacks(lines: Sequence[str], ticks: int, top: int = 15) -> dict[str, Any]:
    """Shares of ``ticks`` (sampling instants): threads busy, functions on CPU.

    py-spy records only threads that are running, so a thread's share is the
    fraction of the time it was busy. "self" counts the innermost frame,
    "inclusive" every function on the stack, except those on nearly every
    stack of their thread (the event loop, click), which say nothing.
    """
    threads: Counter[str] = Counter()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    home: dict[str, str] = {}
    for line in lines:
        stack, _, count = line.rpartition(" ")
        thread, *frames = stack.split(";")
        thread = thread.split(": ", 1)[-1]
        n = int(count)
        threads[thread] += n
        # "Writer._commit (penin/ledger/writer.py:145)" -> "Writer._commit (…)".
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames] or ["(no Python frame)"]
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
            home.setdefault(frame, thread)
    informative = Counter(
        {f: n for f, n in inclusive.items() if n < 0.9 * threads[home[f]]}
    )

    def shares(counter: Counter[str]) -> list[list[Any]]:
        return [[k, round(n / ticks, 4)] for k, n in counter.most_common(top)]

    return {
        "ticks": ticks,
        "samples": sum(threads.values()),
        "threads": shares(threads),
        "self": shares(own),
        "inclusive": shares(informative),
    }
