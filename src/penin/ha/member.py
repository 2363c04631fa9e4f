"""This node as a member of a cluster: its role, and the work of that role.

A **primary** writes in its term, serves the replication stream and tracks
where its replicas stand. A **replica** marks its ledger as a replica's (so
that nothing appends to it locally, the ``penin`` command included) and
follows the primary. A replica whose data directory holds no ledger yet
creates one with the primary's origin, after checking that the signing key
beside it is the primary's: from the primary's snapshot (an online copy,
verified in full before it is used) when it has records, and then streams
every record after it.

``ClusterMember`` does the work of both roles and the moves between them.
Who holds which role is decided by its subclass: ``StaticMember`` here (the
configured primary, always, in term 1) or ``ElectedMember`` in
``penin.ha.elected`` (the holder of the leader key in etcd).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Sequence
from typing import Any

import structlog

from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.coordinator import Role
from penin.ha.errors import ClusterSetupError, StreamError
from penin.ha.feed import CommitFeed
from penin.ha.follower import Follower
from penin.ha.lag import ReplicaPositions
from penin.ha.peer import PrimaryClient
from penin.ha.static import STATIC_TERM
from penin.ha.stream import Identity
from penin.ha.token import ClusterToken
from penin.ledger.errors import LedgerError
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import NoteError, Verifier
from penin.ledger.record import Record
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

    ClusterSetupError when the cluster token is missing, a static cluster asks
    for sync replication, or a new static replica has no signing key to check.
    """
    if node is None or cluster is None:
        return None
    token = ClusterToken.load(cluster)
    if cluster.coordinator == "static" and cluster.replication == "sync":
        raise ClusterSetupError(
            "replication: sync needs coordinator: etcd, where the set of "
            "synchronous replicas is published (sync is the default); with "
            "coordinator: static set cluster.replication: async"
        )
    if cluster.coordinator == "etcd":
        from penin.ha.elected import ElectedMember  # noqa: PLC0415 - loads aiohttp

        return ElectedMember(node, cluster, ledger, token)
    member = StaticMember(node, cluster, ledger, token)
    if member.role == "replica" and not ledger.path.exists():
        member.check_key_present()

    return member


def prepare_to_join(member: ClusterMember | None) -> None:
    """``member.prepare()`` outside any event loop, before the server's starts."""
    if member is not None:
        asyncio.run(member.prepare())


class ClusterMember:
    """One node's place in its cluster, for the life of the process.

    ``primary`` and ``primary_url`` say where writes go; both are None while
    a replica knows of no primary (an election is under way).
    """

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
        # The configured primary (coordinator: static); with etcd none is
        # known until one is elected, and every member starts as a replica.
        self.primary: str | None = cluster.primary
        self.primary_url: str | None = cluster.primary_url
        if node.name == cluster.primary:
            self.primary_url = node.advertise_url
        self.role: Role = "primary" if node.name == cluster.primary else "replica"
        self.term = 0
        self.feed: CommitFeed | None = None
        self.positions: ReplicaPositions | None = None
        self.follower: Follower | None = None
        self._follow_task: asyncio.Task[None] | None = None

    @property
    def is_primary(self) -> bool:
        return self.role == "primary"

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Open the ledger in this member's first role, and start its work."""
        raise NotImplementedError

    async def stop(self) -> None:
        await self._stop_following()
        self._stop_leading()

    async def prepare(self) -> None:
        """Before the server starts: whatever must be in place for ``start``."""

    # -- the primary's work ------------------------------------------------------

    async def _lead(self, term: int, **marker: Any) -> None:
        """Write in ``term`` from now on, serve the stream and track replicas.

        The ledger is unmarked first, then the term's first record is written
        (``TERM_STARTED``, with ``marker`` in its payload) if the log has none
        of ``term`` yet; FencedError if it holds a newer term.
        """
        await self._stop_following()
        ledger = self.ledger
        await asyncio.to_thread(ledger.initialize)
        await asyncio.to_thread(ledger.lead)
        payload = {"term": term, "primary": self.node.name, **marker}
        started = await asyncio.to_thread(
            ledger.begin_term,
            term,
            (TERM_STARTED, payload, f"{TERM_STARTED}:{term}"),
        )
        if started is not None:
            log.info("cluster.term_started", term=term, seq=started.seq)
        self.term = term
        self.role = "primary"
        self.primary, self.primary_url = self.node.name, self.node.advertise_url
        self.feed = CommitFeed(ledger)
        ledger.add_listener(self.feed.committed)
        ledger.add_checkpoint_listener(self.feed.checkpointed)
        self.positions = ReplicaPositions(ledger)
        self._role_changed()

    def _stop_leading(self) -> None:
        if self.feed is not None:
            self.ledger.remove_listener(self.feed.committed)
            self.ledger.remove_checkpoint_listener(self.feed.checkpointed)
            self.feed.close()
            self.feed = None
        if self.positions is not None:
            self.positions.close()
            self.positions = None

    def confirm(self, replica: str, after_seq: int) -> None:
        """``replica`` asked for the records after ``after_seq``: it holds those."""
        if self.positions is not None:
            self.positions.confirm(replica, after_seq)

    # -- the replica's work ------------------------------------------------------

    async def _follow(self, primary: str, primary_url: str, term: int) -> None:
        """Stop leading if this node did, mark the ledger a replica's copy of
        ``primary`` and follow it at ``primary_url``."""
        self._stop_leading()
        await self._stop_following()
        self.role = "replica"
        self.primary, self.primary_url, self.term = primary, primary_url, term
        await asyncio.to_thread(self.ledger.initialize)
        await asyncio.to_thread(self.ledger.follow, primary, primary_url)
        client = PrimaryClient(primary_url, self.token, self.node.name)
        self.follower = Follower(self.ledger, client)
        self._follow_task = asyncio.get_running_loop().create_task(self.follower.run())
        self._follow_task.add_done_callback(self._follower_ended)
        self._role_changed()

    async def _stop_following(self) -> None:
        """Stop the follower; a batch it handed to the writer is applied all the
        same, before anything queued after it."""
        task, self._follow_task = self._follow_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _follower_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or task.exception() is None:
            return
        assert self.follower is not None
        self.follower.state.status = "refused"
        self.follower.state.problem = {
            "reason": f"the follower failed: {task.exception()!r}"
        }
        log.error("replication.follower_failed", error=repr(task.exception()))

    def check_key_present(self) -> None:
        if not self.ledger.key_path.exists():
            raise ClusterSetupError(
                f"{self.node.name} is a new replica: copy the cluster's signing key "
                f"(the primary's ledger.key) to {self.ledger.key_path}, mode 0600, "
                "before it starts"
            )

    async def bootstrap_from(self, primary_url: str) -> None:
        """Create this replica's empty ledger with the origin of the log the
        primary at ``primary_url`` writes, once the key file here is shown to be
        the primary's; ClusterSetupError if it is not, or the primary does not
        answer within BOOTSTRAP_S."""
        self.check_key_present()
        client = PrimaryClient(primary_url, self.token, self.node.name)
        try:
            identity = await self._identity(client)
        finally:
            await client.close()
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
        if identity.tree_size > 0 and await self._restore_snapshot(primary_url):
            return
        await asyncio.to_thread(self.ledger.initialize, identity.origin)
        log.info(
            "replication.bootstrapping",
            primary=identity.primary,
            origin=identity.origin,
            primary_tree_size=identity.tree_size,
        )

    async def _restore_snapshot(self, primary_url: str) -> bool:
        """Install the primary's snapshot as this ledger once it verifies in
        full (``penin.ledger.backup.check_backup``); False, and nothing
        installed, when the primary serves none (it streams from seq 0 then).
        ClusterSetupError when what it sent does not verify."""
        snapshot = self.ledger.path.with_name("bootstrap-snapshot.db")
        manifest_path = snapshot.with_suffix(".manifest.json")
        client = PrimaryClient(primary_url, self.token, self.node.name)
        try:
            manifest = await client.snapshot(snapshot)
            manifest_path.write_text(json.dumps(manifest))
            restored = await asyncio.to_thread(self.ledger.restore, snapshot)
        except StreamError as exc:
            log.warning("replication.snapshot_unavailable", error=str(exc))
            return False
        except LedgerError as exc:
            raise ClusterSetupError(
                f"the primary's snapshot does not verify, so it is not used: {exc}"
            ) from None
        finally:
            await client.close()
            snapshot.unlink(missing_ok=True)
            manifest_path.unlink(missing_ok=True)
        log.info(
            "replication.bootstrapped_from_snapshot",
            tree_size=restored.tree_size,
            root=restored.root,
        )

        return True

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

    # -- what the node reports --------------------------------------------------

    def _role_changed(self) -> None:
        REPLICATION_METRICS.set_role(self.role)
        REPLICATION_METRICS.term.set(self.term)
        log.info(
            "cluster.role",
            node=self.node.name,
            role=self.role,
            primary=self.primary,
            term=self.term,
        )

    def applied_seq(self) -> int:
        """The last seq stored here; -1 for an empty or missing ledger."""
        if not self.ledger.path.exists():
            return -1

        return self.ledger.count_records() - 1

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

    async def status(self) -> dict[str, Any]:
        """The cluster as this member knows it, for ``GET /v1/cluster``."""
        members: dict[str, dict[str, Any]] = {
            self.node.name: {
                "url": self.node.advertise_url,
                "role": self.role,
                "applied_seq": await asyncio.to_thread(self.applied_seq),
                "healthy": self.health()[0],
            }
        }
        if self.positions is not None:
            for name, position in self.positions.report().items():
                members[name] = {"url": None, "role": "replica", **position}

        return self._status_body(members, sync_set=None)

    def _status_body(
        self, members: dict[str, dict[str, Any]], sync_set: list[str] | None
    ) -> dict[str, Any]:
        primary = (
            None
            if self.primary is None
            else {"name": self.primary, "url": self.primary_url}
        )
        return {
            "cluster": self.cluster.name,
            "coordinator": self.cluster.coordinator,
            "replication": self.cluster.replication,
            "node": self.node.name,
            "role": self.role,
            "term": self.term,
            "primary": primary,
            "sync_set": sync_set,
            "members": dict(sorted(members.items())),
        }

    def signable_size(self, tree_size: int) -> int | None:
        """Up to which size this member may sign a checkpoint of a log of
        ``tree_size`` records; None when it must sign none (not the primary).

        A static primary leads for good: the whole log."""
        return tree_size if self.is_primary else None

    # -- acknowledging writes (penin.ledger.ledger.Acknowledger) ------------------

    async def acknowledge(self, records: Sequence[Record]) -> None:
        """Nothing to wait for: a static primary leads for good, asynchronously."""

    def acknowledge_blocking(self, records: Sequence[Record]) -> None:
        """As ``acknowledge``."""


class StaticMember(ClusterMember):
    """``coordinator: static``: the configured primary leads in term 1, for
    good; every other member follows it at ``cluster.primary_url``."""

    async def start(self) -> None:
        assert self.primary is not None
        assert self.primary_url is not None
        if self.is_primary:
            await self._lead(STATIC_TERM, coordinator="static")
        else:
            await self.prepare()
            await self._follow(self.primary, self.primary_url, STATIC_TERM)

    async def prepare(self) -> None:
        """On a replica with no ledger yet, create it with the primary's origin;
        else nothing. ``penin serve`` calls it before the server starts, so that
        a refusal is one line, not a failed start."""
        if self.is_primary or self.ledger.path.exists():
            return
        assert self.primary_url is not None
        await self.bootstrap_from(self.primary_url)
