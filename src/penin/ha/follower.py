"""The follower: a replica's task that takes the primary's records and checks them.

One loop, from start to stop: make sure the primary writes the same log
(origin and verifier key), then ask for the records after the last one stored
here, waiting on the primary for new ones; apply each batch through the
ledger's apply path (one transaction, one fsync), then take the primary's
signed checkpoint once it covers only records stored here. A replica that was
down resumes from its last seq by the same loop; an empty one starts at 0.

Anything that does not verify stops the loop for good: the replica keeps what
it stored before, logs ``replication.diverged`` with exactly what differs,
and reports unhealthy until an operator acts. It never retries such a batch:
what the primary sent will not verify the second time either. Errors of the
network or of the primary's availability are retried, with growing, jittered
pauses.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

import structlog

from penin.ha.errors import StreamError
from penin.ha.peer import PrimaryClient
from penin.ha.stream import Batch
from penin.ledger.errors import (
    DivergedError,
    LedgerError,
    ReplicationError,
    TreeSizeError,
)
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import NoteError, Verifier, open_checkpoint
from penin.observability.metrics import REPLICATION_METRICS

log = structlog.get_logger("penin.ha")

# A replica is healthy while it was caught up with the primary at most this
# long ago: a long poll returns at least every WAIT_S, so a healthy replica
# is never near it, and one whose primary is gone passes it soon.
MAX_LAG_S = 15.0
WAIT_S = 2.0
BATCH_RECORDS = 1000
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0

Status = Literal["starting", "following", "diverged", "refused"]


@dataclass
class FollowerState:
    """What the follower last knew; times are Unix times."""

    status: Status = "starting"
    applied_seq: int = -1
    primary_tree_size: int | None = None
    primary_term: int | None = None
    checkpoint_tree_size: int | None = None
    last_contact: float | None = None
    caught_up_at: float | None = None
    # Why it stopped (diverged, refused), or the last error it is retrying
    # and how many times in a row it failed.
    problem: dict[str, Any] | None = None
    last_error: str | None = None
    failures: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Follower:
    """Follows the primary at ``client.url`` into ``ledger``."""

    def __init__(
        self,
        ledger: WORMLedger,
        client: PrimaryClient,
        *,
        wait_s: float = WAIT_S,
        batch_records: int = BATCH_RECORDS,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.wait_s = wait_s
        self.batch_records = batch_records
        self.state = FollowerState(applied_seq=ledger.count_records() - 1)
        latest = ledger.latest_checkpoint()
        if latest is not None:
            signed = open_checkpoint(latest, ledger.verifier)
            self.state.checkpoint_tree_size = signed.tree_size

    def healthy(self, now: float | None = None) -> bool:
        """Following, and caught up with the primary within MAX_LAG_S."""
        caught_up = self.state.caught_up_at
        now = time.time() if now is None else now

        return (
            self.state.status == "following"
            and caught_up is not None
            and now - caught_up <= MAX_LAG_S
        )

    async def run(self) -> None:
        """Follow until cancelled, or until something does not verify."""
        REPLICATION_METRICS.diverged.set(0)
        try:
            if await self._check_identity():
                await self._follow()
        finally:
            await self.client.close()

    # -- the steps -------------------------------------------------------------

    async def _check_identity(self) -> bool:
        """Whether the primary writes this log; retried until it answers."""
        while True:
            try:
                identity = await self.client.identity()
                break
            except StreamError as exc:
                await self._pause(exc.reason, exc.status)
        self.state.failures = 0
        own = self.ledger.verifier
        try:
            theirs = Verifier.from_vkey(identity.vkey)
        except NoteError as exc:
            self._refuse("the primary's verifier key is not one", error=str(exc))
            return False
        if theirs.vkey != own.vkey:
            self._refuse(
                "the primary signs with another key",
                own_key=f"{own.name}+{own.key_id.hex()}",
                primary_key=f"{theirs.name}+{theirs.key_id.hex()}",
            )
            return False
        if identity.origin != self.ledger.origin:
            self._refuse(
                "the primary writes another log",
                own_origin=self.ledger.origin,
                primary_origin=identity.origin,
            )
            return False
        self.state.status = "following"
        log.info(
            "replication.following",
            primary=identity.primary,
            url=self.client.url,
            applied_seq=self.state.applied_seq,
            primary_tree_size=identity.tree_size,
        )

        return True

    async def _follow(self) -> None:
        while True:
            # The first answer comes at once, so that a replica that is caught
            # up from the start knows it without waiting out a long poll.
            wait_s = 0.0 if self.state.last_contact is None else self.wait_s
            try:
                batch = await self.client.batch(
                    self.state.applied_seq,
                    self.state.checkpoint_tree_size or 0,
                    self.batch_records,
                    wait_s,
                )
            except StreamError as exc:
                if exc.status == 409:  # this replica holds records the primary lacks
                    self._diverge(
                        DivergedError(
                            exc.reason, field="tree_size", received=exc.reason
                        )
                    )
                    return
                await self._pause(exc.reason, exc.status)
                continue
            try:
                await self._take(batch)
            except ReplicationError as exc:
                self._diverge(exc)
                return
            except LedgerError as exc:  # this replica's disk, not the primary
                await self._pause(str(exc))
                continue
            self.state.failures = 0

    async def _take(self, batch: Batch) -> None:
        records = [r.record() for r in batch.records]
        await self.ledger.apply_async(records)
        state = self.state
        if records:
            state.applied_seq = records[-1].seq
            log.debug(
                "replication.applied", records=len(records), seq=state.applied_seq
            )
        await self._take_checkpoint(batch)
        now = time.time()
        behind = state.caught_up_at is None or now - state.caught_up_at > MAX_LAG_S
        state.last_contact = now
        state.primary_tree_size = batch.tree_size
        state.primary_term = batch.term
        state.last_error = None
        if state.applied_seq + 1 >= batch.tree_size:
            if behind:
                log.info("replication.caught_up", seq=state.applied_seq)
            state.caught_up_at = now

    async def _take_checkpoint(self, batch: Batch) -> None:
        checkpoint = batch.checkpoint
        if checkpoint is None or checkpoint.tree_size > self.state.applied_seq + 1:
            return  # not yet: it covers records still to come
        known = self.state.checkpoint_tree_size
        if known is not None and checkpoint.tree_size <= known:
            return
        try:
            taken = await asyncio.to_thread(
                self.ledger.adopt_checkpoint, checkpoint.note, checkpoint.signed
            )
        except TreeSizeError:
            return  # the note's size is beyond what the batch said; next time
        self.state.checkpoint_tree_size = taken.tree_size
        log.info("replication.checkpoint_stored", tree_size=taken.tree_size)

    # -- outcomes --------------------------------------------------------------

    async def _pause(self, error: str, status: int | None = None) -> None:
        """Wait before retrying: doubling from BACKOFF_FIRST_S up to BACKOFF_MAX_S,
        each pause drawn from its upper half so that replicas do not retry in step."""
        self.state.failures += 1
        self.state.last_error = error
        ceiling = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** (self.state.failures - 1))
        pause = random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, no secret
        log.warning(
            "replication.fetch_failed",
            url=self.client.url,
            status=status,
            error=error,
            attempt=self.state.failures,
            retry_in_s=round(pause, 3),
        )
        await asyncio.sleep(pause)

    def _diverge(self, exc: ReplicationError) -> None:
        problem = {
            "reason": str(exc),
            "field": exc.field,
            "seq": exc.seq,
            "tree_size": exc.tree_size,
            "expected": None if exc.expected is None else str(exc.expected),
            "received": None if exc.received is None else str(exc.received),
        }
        self.state.status = "diverged"
        self.state.problem = problem
        REPLICATION_METRICS.diverged.set(1)
        log.error("replication.diverged", url=self.client.url, **problem)

    def _refuse(self, reason: str, **detail: str) -> None:
        self.state.status = "refused"
        self.state.problem = {"reason": reason, **detail}
        log.error("replication.refused", url=self.client.url, reason=reason, **detail)
