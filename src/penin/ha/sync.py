"""Synchronous replication on the primary: who must hold a record before it
is acknowledged, and the wait for them.

The *sync set* is published in the coordinator; only its members may be
promoted when the primary fails, so every record acknowledged to a client
must be stored by every member of it. It has ``sync_replicas`` members when
enough replicas are there. A set changes only in an order that keeps that
true:

- a replica joins it only once it has confirmed every record the primary
  held when it was first waited for (it is *required* before it is
  published, so nothing is acknowledged without it in between);
- a member leaves it only when it is replaced by one that joined, or, with
  ``sync_fallback: async``, when it stopped asking for records; it is
  unpublished first and stops being waited for after.

With ``sync_fallback: block`` (the default) only a full set is published,
and a write waits while the set is short, up to ``sync_timeout_s``; it is
then answered 503: it is stored on the primary, and a retry with the same
``Idempotency-Key`` returns it once the replicas have it. With
``sync_fallback: async`` a short set is published too (an empty one says
that any replica may be promoted), ``penin_sync_degraded`` is raised, and
writes wait only for the members the set still has.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from collections.abc import Iterable, Mapping

import structlog

from penin.ha.coordinator import MemberState
from penin.ledger.errors import SyncReplicationError
from penin.ledger.ledger import MAX_SQLITE_INT
from penin.observability.metrics import REPLICATION_METRICS

log = structlog.get_logger("penin.ha")


class SyncReplicas:
    """The required replicas and the writes waiting for them, on one event loop."""

    def __init__(self, count: int, *, fallback_async: bool, timeout_s: float) -> None:
        self.count = count
        self.fallback_async = fallback_async
        self.timeout_s = timeout_s
        # What the coordinator says now, and what is waited for: the published
        # members and those about to join.
        self.published: frozenset[str] = frozenset()
        self.joining: dict[str, int] = {}
        self.degraded = False
        self._confirmed: dict[str, tuple[int, float]] = {}
        # Waiting writes, a heap by seq. One that timed out or was cancelled
        # is *abandoned*: skipped when the front reaches it, and swept out
        # once they are half the heap (replicas gone for long, writes retried).
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._abandoned = 0

    @property
    def required(self) -> frozenset[str]:
        return self.published | frozenset(self.joining)

    # -- what replicas confirm -------------------------------------------------

    def confirm(self, replica: str, after_seq: int) -> None:
        """``replica`` stored every record up to ``after_seq``."""
        self._confirmed[replica] = (after_seq, time.monotonic())
        self._release()

    def confirmed(self, replica: str) -> int:
        return self._confirmed.get(replica, (-1, 0.0))[0]

    def silent_for(self, replica: str) -> float:
        """Seconds since ``replica`` last asked for records; inf if never."""
        found = self._confirmed.get(replica)
        return float("inf") if found is None else time.monotonic() - found[1]

    # -- the set ---------------------------------------------------------------

    def start_joining(self, replica: str, head_seq: int) -> None:
        """Wait for ``replica`` from now on; it may be published once it holds
        ``head_seq``, the last record written before it was waited for."""
        self.joining[replica] = head_seq
        log.info("replication.sync_joining", replica=replica, needs_seq=head_seq)

    def ready_to_publish(self) -> list[str]:
        return [
            name for name, seq in self.joining.items() if self.confirmed(name) >= seq
        ]

    def published_as(self, members: Iterable[str]) -> None:
        """The coordinator now holds ``members`` as the set: wait for exactly them."""
        self.published = frozenset(members)
        for name in self.published:
            self.joining.pop(name, None)
        self.degraded = self.fallback_async and len(self.published) < self.count
        REPLICATION_METRICS.sync_replicas.set(len(self.published))
        REPLICATION_METRICS.sync_degraded.set(1 if self.degraded else 0)
        self._release()

    def next_set(
        self,
        members: Mapping[str, MemberState],
        *,
        ttl_s: float,
        head_seq: int,
        may_degrade: bool,
    ) -> frozenset[str] | None:
        """The set to publish now, from the members' states; None to keep the
        published one. Live replicas join while the set is short (they are
        waited for at once, from ``head_seq``); a member that stopped asking
        for ``ttl_s`` or vanished leaves it when a joined one replaces it, or,
        with the async fallback and ``may_degrade``, at once."""

        def live(name: str) -> bool:
            state = members.get(name)
            return (
                state is not None
                and state.role == "replica"
                and state.healthy
                and self.silent_for(name) <= ttl_s
            )

        for name in list(self.joining):
            if not live(name):
                self.drop_joining(name)
        keep = {name for name in self.published if live(name)}
        wanted = self.count - len(keep) - len(self.joining)
        if wanted > 0:
            spare = sorted(
                (
                    n
                    for n in members
                    if live(n) and n not in keep and n not in self.joining
                ),
                key=lambda name: (-self.confirmed(name), name),
            )
            for name in spare[:wanted]:
                self.start_joining(name, head_seq)
        ready = self.ready_to_publish()
        chosen = frozenset(keep | set(ready[: max(0, self.count - len(keep))]))
        if chosen == self.published:
            return None
        if len(chosen) < self.count:
            if not (self.fallback_async and may_degrade):
                return None  # block: wait for the missing members or a replacement
            log.warning("replication.sync_degraded", members=sorted(chosen))

        return chosen

    def drop_joining(self, replica: str) -> None:
        if self.joining.pop(replica, None) is not None:
            self._release()

    # -- waiting -----------------------------------------------------------------

    async def wait(self, seq: int) -> None:
        """Return once every required replica holds ``seq``; SyncReplicationError
        after ``timeout_s``."""
        if seq <= self._held_by_all():
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (seq, next(self._order), future))
        try:
            async with asyncio.timeout(self.timeout_s):
                await future
        except TimeoutError:
            raise SyncReplicationError(
                seq, self.count, sorted(self.required), self.timeout_s
            ) from None
        finally:
            if future.cancelled():
                self._abandon()

    def _abandon(self) -> None:
        self._abandoned += 1
        if self._abandoned > len(self._waiters) // 2:
            self._waiters = [w for w in self._waiters if not w[2].done()]
            heapq.heapify(self._waiters)
            self._abandoned = 0

    def _held_by_all(self) -> int:
        """The highest seq a write may be acknowledged up to: what every
        required replica holds, given a full set (or a short one, when
        degraded); -1 when none may be."""
        if len(self.published) < self.count and not self.degraded:
            return -1
        positions = [self.confirmed(name) for name in self.required]
        if not positions:
            return MAX_SQLITE_INT  # degraded to no replica: every seq is held

        return min(positions)

    def _release(self) -> None:
        held = self._held_by_all()
        waiters = self._waiters
        while waiters and waiters[0][0] <= held:
            future = heapq.heappop(waiters)[2]
            if future.done():
                self._abandoned = max(0, self._abandoned - 1)
            else:
                future.set_result(None)

    def release_all(self, error: BaseException) -> None:
        """Fail every waiting write (this node stopped leading)."""
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(error)
        self._waiters = []
        self._abandoned = 0
