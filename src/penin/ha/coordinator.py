"""The coordinator: the third party through which members agree on one primary.

A coordinator holds the leader key under a lease, says which term a leader
holds, and carries what the members publish about themselves and the set of
synchronous replicas. One module per backend implements ``Coordinator``:
``penin.ha.etcd`` (elections through etcd) and ``penin.ha.static`` (a fixed
primary, never an election).

A lease decides who *tries* to be the primary; it is the term that makes a
stale primary harmless, because every record carries the term it was written
in and replicas refuse an older one. So a term must rise on every change of
leader, and a backend that cannot reach its store raises rather than answer
from memory: it never says this node leads when it cannot know.
"""

from __future__ import annotations

import abc
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field

from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.errors import HAError

Role = Literal["primary", "replica"]


class CoordinatorError(HAError):
    """The coordinator could not do something.

    ``operation`` is what was attempted, ``endpoints`` where, ``reason`` what
    went wrong; ``code`` is the backend's own error code when it sent one.
    """

    def __init__(
        self,
        operation: str,
        endpoints: Sequence[str],
        reason: str,
        *,
        code: int | None = None,
    ) -> None:
        self.operation = operation
        self.endpoints = tuple(endpoints)
        self.reason = reason
        self.code = code
        where = ", ".join(self.endpoints) or "(no endpoint)"
        super().__init__(f"{operation} failed at {where}: {reason}")


@dataclass(frozen=True)
class Leader:
    """Who holds the leader key now, and in which term.

    ``url`` is None when the backend does not know it (a static replica
    configured without ``cluster.primary_url``).
    """

    name: str
    url: str | None
    term: int


@dataclass(frozen=True)
class Leadership:
    """This node leads in ``term`` until ``valid_until`` (``time.monotonic``).

    ``valid_until`` is when the lease was last renewed as seen from here (the
    moment the request left) plus its TTL: the lease cannot lapse before it,
    since the coordinator started counting no earlier. A primary stops
    acknowledging writes some margin before it.
    """

    term: int
    valid_until: float

    def held(self, margin_s: float = 0.0) -> bool:
        """Whether it still holds ``margin_s`` before its deadline."""
        return time.monotonic() < self.valid_until - margin_s


FOREVER = math.inf


class MemberState(BaseModel):
    """What a member publishes about itself; it vanishes when its lease lapses.

    Unknown fields are ignored when read, so that a member running a newer
    version may publish more during a rolling upgrade.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    name: str
    url: str
    role: Role
    # -1 while its ledger is empty or not there yet.
    applied_seq: int = Field(ge=-1)
    healthy: bool
    # Unix time at which the member published this, by its own clock.
    updated_at: float


@dataclass(frozen=True)
class SyncSet:
    """The replicas that store every record before it is acknowledged.

    Published by the leader of ``term``; only a member of it may be promoted,
    since only they are sure to hold every acknowledged record.
    """

    leader: str
    term: int
    members: frozenset[str]


class Coordinator(abc.ABC):
    """One member's handle on the coordinator; ``close`` it when done."""

    def __init__(self, node: NodeConfig, cluster: ClusterConfig) -> None:
        self.node = node
        self.cluster = cluster

    @abc.abstractmethod
    async def acquire(self, above: int = 0) -> Leadership | None:
        """Take the leader key if it is free, in a term above ``above``, or
        renew it if this node holds it.

        None when another member holds it, or when this node's hold has just
        been lost (its lease lapsed or the key changed); the next call may try
        to take it again, in a new term.
        """

    @abc.abstractmethod
    async def release(self) -> None:
        """Give the leader key up, if this node holds it, so that others may take it."""

    @abc.abstractmethod
    async def leader(self) -> Leader | None:
        """The current holder of the leader key; None when nobody holds it."""

    @abc.abstractmethod
    async def publish_state(
        self, *, role: Role, applied_seq: int, healthy: bool
    ) -> MemberState:
        """Publish this member's state under its own lease, and renew that lease."""

    @abc.abstractmethod
    async def members(self) -> dict[str, MemberState]:
        """The states of the members whose lease is alive, by name."""

    @abc.abstractmethod
    async def publish_sync_set(
        self, leadership: Leadership, members: Iterable[str]
    ) -> bool:
        """Publish the set of synchronous replicas, as leader of its term.

        False, and nothing published, when this node no longer leads in
        ``leadership.term``.
        """

    @abc.abstractmethod
    async def sync_set(self) -> SyncSet | None:
        """The last published set of synchronous replicas; None if never published."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Withdraw this member's state and free the connections."""

    def state(self, role: Role, applied_seq: int, healthy: bool) -> MemberState:
        """This member's state now, as ``publish_state`` publishes it."""
        return MemberState(
            name=self.node.name,
            url=self.node.advertise_url,
            role=role,
            applied_seq=applied_seq,
            healthy=healthy,
            updated_at=time.time(),
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
