"""The primary's feed: records and checkpoints as a replica is sent them."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from penin.ha.feed import CommitFeed
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import Record

T = TypeVar("T")
TIMEOUT_S = 30.0


def _run(path: Path, test: Callable[[WORMLedger], Awaitable[T]]) -> T:
    """``test(ledger)`` on an event loop, with a new ledger at ``path``."""

    async def main() -> T:
        with WORMLedger(path).initialize(origin="test/feed") as ledger:
            return await asyncio.wait_for(test(ledger), TIMEOUT_S)

    return asyncio.run(main())


async def _append(ledger: WORMLedger, count: int, tag: str = "a") -> list[Record]:
    return await ledger.append_many_async(("test.feed", {tag: n}) for n in range(count))


async def _settled(feed: CommitFeed, size: int) -> None:
    """Until the feed has heard of the commit that made the log ``size`` long
    (the writer's news reaches the loop as a callback)."""
    while feed.head.size < size:
        await asyncio.sleep(0.001)


def _listening(ledger: WORMLedger, recent: int = 8192) -> CommitFeed:
    feed = CommitFeed(ledger, recent)
    ledger.add_listener(feed.committed)
    ledger.add_checkpoint_listener(feed.checkpointed)
    return feed


def test_records_just_committed_are_sent_from_memory_as_written(
    tmp_path: Path,
) -> None:
    async def test(ledger: WORMLedger) -> None:
        before = await _append(ledger, 3, "before")  # before the feed: the file
        feed = _listening(ledger)
        written = await _append(ledger, 5)
        await _settled(feed, 8)
        sent = await feed.records_after(before[-1].seq, 100)
        # The very records the writer returned: no read of the file.
        assert all(a is b for a, b in zip(sent, written, strict=True))
        assert await feed.records_after(4, 2) == written[2:4]
        assert await feed.records_after(7, 100) == []
        from_file = await feed.records_after(-1, 100)
        assert from_file == ledger.query(after_seq=-1, limit=100)
        assert [r.seq for r in from_file] == list(range(8))

    _run(tmp_path / "ledger.db", test)


def test_records_older_than_memory_holds_come_from_the_file(tmp_path: Path) -> None:
    async def test(ledger: WORMLedger) -> None:
        feed = _listening(ledger, recent=4)
        for _ in range(3):  # three commits, so memory drops the oldest
            await _append(ledger, 3)
        await _settled(feed, 9)
        sent = await feed.records_after(1, 100)
        assert sent == ledger.query(after_seq=1, limit=100)
        assert [r.seq for r in sent] == list(range(2, 9))
        assert [r.seq for r in await feed.records_after(5, 100)] == [6, 7, 8]

    _run(tmp_path / "ledger.db", test)


def test_records_another_process_appended_are_read_from_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"

    async def test(ledger: WORMLedger) -> None:
        feed = _listening(ledger)
        await _append(ledger, 2)
        await _settled(feed, 2)
        with WORMLedger(path).initialize() as other:  # as `penin ledger append`
            other.append_many(("test.other", {"n": n}) for n in range(3))
        assert await feed.size() == 5
        await _append(ledger, 2)
        await _settled(feed, 7)
        sent = await feed.records_after(0, 100)
        assert [r.event_type for r in sent] == ["test.feed"] + ["test.other"] * 3 + [
            "test.feed"
        ] * 2
        assert sent == ledger.query(after_seq=0, limit=100)

    _run(path, test)


def test_a_wait_ends_at_the_next_commit_or_at_its_timeout(tmp_path: Path) -> None:
    async def test(ledger: WORMLedger) -> None:
        feed = _listening(ledger)
        await _append(ledger, 1)
        await _settled(feed, 1)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await feed.wait_beyond(0, 0, 0.2)
        assert loop.time() - started >= 0.2
        waiting = asyncio.ensure_future(feed.wait_beyond(0, 0, TIMEOUT_S))
        await asyncio.sleep(0)
        assert not waiting.done()
        await _append(ledger, 1)
        await waiting
        assert feed.head.size == 2

    _run(tmp_path / "ledger.db", test)


def test_the_newest_checkpoint_is_read_again_only_once_a_newer_is_signed(
    tmp_path: Path,
) -> None:
    path = tmp_path / "ledger.db"

    async def test(ledger: WORMLedger) -> None:
        feed = _listening(ledger)
        assert await feed.checkpoint() is None
        await _append(ledger, 3)
        note = await asyncio.to_thread(ledger.checkpoint)
        await _settled(feed, 3)
        while feed.head.checkpoint_size < 3:
            await asyncio.sleep(0.001)
        first = await feed.checkpoint()
        assert first is not None
        assert first[:2] == (note, 3)
        await _append(ledger, 1)
        with WORMLedger(path).initialize() as other:  # another process signs
            other.checkpoint()
        assert await feed.checkpoint() == first  # not known here yet
        await feed.wait_beyond(3, 3, TIMEOUT_S)  # the wait looks at the file
        newer = await feed.checkpoint()
        assert newer is not None
        assert newer[1] == 4

    _run(path, test)
