"""This node as a member of a cluster: its role, and the work of that role.

With ``coordinator: static`` the configured primary is the primary, in term
1: it writes in that term, serves the replication stream and tracks where its
replicas stand. Every other member is a replica: it marks its ledger as a
replica's (so that nothing appends to it locally, the ``penin`` command
included), and follows the primary at ``cluster.primary_url``. A replica
whose data directory holds no ledger yet creates one with the primary's
origin, after checking that the signing key beside it is the primary's, and
then streams every record from seq 0.

What is not built yet is refused when the node starts, naming what to set
instead: the etcd coordinator (elections, automatic failover) and synchronous
replication.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

import structlog

from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.coordinator import Role
from penin.ha.errors import ClusterSetupError, StreamError
from penin.ha.follower import Follower
from penin.ha.lag import ReplicaPositions
from penin.ha.peer import PrimaryClient
from penin.ha.static import STATIC_TERM
from penin.ha.stream import CommitFeed, Head, Identity, note_tree_size
from penin.ha.token import ClusterToken
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import NoteError, Verifier
from penin.observability.metrics import REPLICATION_METRICS

log = structlog.get_logger("penin.ha")

# The record a primary appends when it starts writing in a term its ledger has
# no record of yet (as a Raft leader appends an entry of its new term): from
# it on, every record is of that term, whichever process appends it.
TERM_STARTED = "ha.term_started"
# How long a new replica tries to reach its primary for the log's identity
# before its start fails.
BOOTSTRAP_S = 10.0
_BOOTSTRAP_PAUSE_S = 0.5


def join_cluster(
    node: NodeConfig | None, cluster: ClusterConfig | None, ledger: WORMLedger
) -> ClusterMember | None:
    """The member this node is, or None on a single node (no cluster sections).

    ClusterSetupError when the sections ask for what is not built, the
    cluster token is missing, or a new replica has no signing key to check.
    """
    if node is None or cluster is None:
        return None
    if cluster.coordinator != "static":
        raise ClusterSetupError(
            "coordinator: etcd is not built into the node yet (elections and "
            "automatic failover come later); use coordinator: static with "
            "cluster.primary and cluster.primary_url"
        )
    if cluster.replication != "async":
        raise ClusterSetupError(
            "replication: sync is not built yet (a write would have to wait for "
            "replicas to store it); set cluster.replication: async"
        )
    member = ClusterMember(node, cluster, ledger, ClusterToken.load(cluster))
    if member.role == "replica" and not ledger.path.exists():
        member.check_key_present()

    return member


def prepare_to_join(member: ClusterMember | None) -> None:
    """``member.prepare()`` outside any event loop, before the server's starts."""
    if member is not None:
        asyncio.run(member.prepare())


class ClusterMember:
    """One node's place in its cluster, for the life of the process."""

    def __init__(
        self,
        node: NodeConfig,
        cluster: ClusterConfig,
        ledger: WORMLedger,
        token: ClusterToken,
    ) -> None:
        self.node = node
        self.cluster = cluster
        self.ledger = ledger
        self.token = token
        assert cluster.primary is not None  # a static cluster always names it
        self.primary = cluster.primary
        self.primary_url = cluster.primary_url or node.advertise_url
        self.feed: CommitFeed | None = None
        self.positions: ReplicaPositions | None = None
        self.follower: Follower | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def role(self) -> Role:
        return "primary" if self.node.name == self.primary else "replica"

    @property
    def is_primary(self) -> bool:
        return self.role == "primary"

    @property
    def term(self) -> int:
        return STATIC_TERM

    def check_key_present(self) -> None:
        if not self.ledger.key_path.exists():
            raise ClusterSetupError(
                f"{self.node.name} is a new replica of {self.primary}: copy the "
                f"cluster's signing key (the primary's ledger.key) to "
                f"{self.ledger.key_path}, mode 0600, before it starts"
            )

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the ledger in this member's role, and start the role's work."""
        if self.is_primary:
            await self._start_primary()
        else:
            await self._start_replica()
        REPLICATION_METRICS.set_role(self.role)
        log.info(
            "cluster.joined",
            node=self.node.name,
            role=self.role,
            primary=self.primary,
            term=self.term,
        )

    async def _start_primary(self) -> None:
        ledger = self.ledger
        await asyncio.to_thread(ledger.initialize)
        await asyncio.to_thread(ledger.lead)
        marker = (
            TERM_STARTED,
            {"term": self.term, "primary": self.node.name, "coordinator": "static"},
            f"{TERM_STARTED}:{self.term}",
        )
        started = await asyncio.to_thread(ledger.begin_term, self.term, marker)
        if started is not None:
            log.info("cluster.term_started", term=self.term, seq=started.seq)
        self.feed = CommitFeed(_head(ledger), functools.partial(_head, ledger))
        ledger.add_listener(self.feed.committed)
        ledger.add_checkpoint_listener(self.feed.checkpointed)
        self.positions = ReplicaPositions(ledger)

    async def _start_replica(self) -> None:
        await self.prepare()
        await asyncio.to_thread(self.ledger.initialize)
        await asyncio.to_thread(self.ledger.follow, self.primary, self.primary_url)
        client = PrimaryClient(self.primary_url, self.token, self.node.name)
        self.follower = Follower(self.ledger, client)
        self._task = asyncio.get_running_loop().create_task(self.follower.run())
        self._task.add_done_callback(self._follower_ended)

    async def prepare(self) -> None:
        """On a replica with no ledger yet, create it with the primary's origin,
        once the key file here is shown to be the primary's; else nothing.

        ``penin serve`` calls it before the server starts, so that a refusal
        is one line, not a failed start.
        """
        if self.is_primary or self.ledger.path.exists():
            return
        client = PrimaryClient(self.primary_url, self.token, self.node.name)
        try:
            await self._bootstrap(client)
        finally:
            await client.close()

    async def _bootstrap(self, client: PrimaryClient) -> None:
        identity = await self._identity(client)
        own = self.ledger.read_key().verifier
        try:
            theirs = Verifier.from_vkey(identity.vkey)
        except NoteError as exc:
            raise ClusterSetupError(
                f"the primary {identity.primary} sent a verifier key that is not "
                f"one: {exc}"
            ) from None
        if own.vkey != theirs.vkey:
            raise ClusterSetupError(
                f"{self.ledger.key_path} holds key {own.name}+{own.key_id.hex()}, but "
                f"the primary {identity.primary} signs with {theirs.name}+"
                f"{theirs.key_id.hex()}; copy the primary's ledger.key here"
            )
        await asyncio.to_thread(self.ledger.initialize, identity.origin)
        log.info(
            "replication.bootstrapping",
            primary=identity.primary,
            origin=identity.origin,
            primary_tree_size=identity.tree_size,
        )

    async def _identity(self, client: PrimaryClient) -> Identity:
        deadline = time.monotonic() + BOOTSTRAP_S
        while True:
            try:
                return await client.identity()
            except StreamError as exc:
                if time.monotonic() > deadline:
                    raise ClusterSetupError(
                        f"{self.node.name} has no ledger yet and cannot fetch the "
                        f"primary's: {exc}"
                    ) from None
                log.warning("replication.bootstrap_waiting", error=str(exc))
                await asyncio.sleep(_BOOTSTRAP_PAUSE_S)

    def _follower_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        assert self.follower is not None
        self.follower.state.status = "refused"
        self.follower.state.problem = {
            "reason": f"the follower failed: {task.exception()!r}"
        }
        log.error("replication.follower_failed", error=repr(task.exception()))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.feed is not None:
            self.ledger.remove_listener(self.feed.committed)
            self.ledger.remove_checkpoint_listener(self.feed.checkpointed)
        if self.positions is not None:
            self.positions.close()

    # -- what the node reports --------------------------------------------------

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether this member does its role's work now, and the figures."""
        detail: dict[str, Any] = {
            "node": self.node.name,
            "role": self.role,
            "primary": self.primary,
            "primary_url": self.primary_url,
            "term": self.term,
        }
        if self.positions is not None:
            return True, {**detail, "replicas": self.positions.report()}
        if self.follower is None:
            return False, {**detail, "status": "starting"}

        return self.follower.healthy(), {**detail, **self.follower.state.to_dict()}


def _head(ledger: WORMLedger) -> Head:
    """The ledger's tree size and its newest checkpoint's, as stored now."""
    latest = ledger.latest_checkpoint()
    checkpoint_size = 0 if latest is None else note_tree_size(latest)

    return Head(ledger.count_records(), checkpoint_size)
