"""The etcd backend of the coordinator: a leader key under a lease, the term
from that key's create revision plus a base kept in etcd.

Keys, under ``/penin/<cluster name>/``:

- ``leader``: ``{"name", "url", "base"}`` of the primary, attached to its
  lease; it vanishes when that lease lapses or is revoked.
- ``term_base``: the highest base a leader has taken (absent means 0).
- ``members/<name>``: each member's ``MemberState``, under the member's own
  lease, renewed each time the member publishes.
- ``sync``: ``{"leader", "term", "members"}``, the synchronous replicas. No
  lease: after the primary dies it is exactly what says who may replace it.
- ``handoff``: ``{"from", "to", "term"}``, written by a primary that hands
  its lead to ``to`` in a switchover, under a lease of its own: the other
  members leave the vacant leader key to ``to`` while it lives.

The term is the leader key's create revision plus the base written in it.
etcd gives every write a revision one higher than the last, and a key created
after being deleted gets a new create revision; renewing the lease rewrites
nothing. So the term stays put while one leader holds the key and rises on
every change of leader, as long as bases never fall: a candidate takes the
stored ``term_base`` or a higher one, in the same transaction that creates
the leader key and only if ``term_base`` is unchanged since it read it.

The base stays 0 until etcd's counter falls behind the terms a ledger holds:
a new etcd cluster, or one restored from an older snapshot. A candidate asked
for a term above its ledger's newest (``acquire(above=...)``) then raises the
base so that its term is above, and every later term is above that one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass

import pydantic
import structlog

from penin.ha._etcd_gateway import (
    NOT_FOUND,
    EtcdGateway,
    Json,
    KeyValue,
    b64,
    key_values,
)
from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.coordinator import (
    Coordinator,
    CoordinatorError,
    Leader,
    Leadership,
    MemberState,
    Role,
    SyncSet,
)

log = structlog.get_logger("penin.ha")


class EtcdCoordinator(Coordinator):
    """A member's handle on etcd; the calls of one instance must not overlap.

    ``timeout_s`` bounds every call, all endpoints included; by default a
    third of the lease TTL, so that a renewal that fails leaves time for
    another before the lease can lapse.
    """

    def __init__(
        self,
        node: NodeConfig,
        cluster: ClusterConfig,
        *,
        timeout_s: float | None = None,
    ) -> None:
        super().__init__(node, cluster)
        timeout = timeout_s if timeout_s is not None else cluster.lease_ttl_s / 3
        self.gateway = EtcdGateway(cluster.etcd_endpoints, timeout)
        prefix = f"/penin/{cluster.name}/"
        self.leader_key = f"{prefix}leader".encode()
        self.members_prefix = f"{prefix}members/".encode()
        self.member_key = self.members_prefix + node.name.encode()
        self.sync_key = f"{prefix}sync".encode()
        self.handoff_key = f"{prefix}handoff".encode()
        self.base_key = f"{prefix}term_base".encode()
        # While this node holds the leader key: the key's lease, its create
        # revision (what fencing compares) and the term.
        self._held: _Hold | None = None
        self._member_lease: int | None = None

    # -- leadership -------------------------------------------------------------

    async def acquire(self, above: int = 0) -> Leadership | None:
        if self._held is not None:
            return await self._renew(self._held)

        return await self._take(above)

    async def _take(self, above: int) -> Leadership | None:
        operation = "take the leader key"
        vacancy = await self._vacancy(operation)
        if vacancy is None:
            return None
        revision, base = vacancy
        # The key will be created at a revision above ``revision``, so this
        # base puts the term above ``above`` without ever lowering the base.
        new_base = max(base.value, above - revision)

        sent = time.monotonic()
        lease, ttl = await self.gateway.grant(operation, self.cluster.lease_ttl_s)
        try:
            hold = await self._create_leader_key(operation, lease, base, new_base)
        except CoordinatorError:
            # Whether the key was written is unknown; unrenewed, it lapses.
            await self._revoke_quietly(lease)
            raise
        if hold is None:
            await self._revoke_quietly(lease)
            return None

        self._held = hold
        if new_base != base.value:
            log.warning(
                "coordinator.term_base_raised", base=new_base, previous=base.value,
                revision=revision, above=above,
            )  # fmt: skip
        log.info("coordinator.leadership_acquired", term=hold.term, lease_ttl_s=ttl)

        return Leadership(term=hold.term, valid_until=sent + ttl)

    async def _vacancy(self, operation: str) -> tuple[int, _Base] | None:
        """etcd's revision and the stored base, read together, when no member
        holds the leader key; None when one does."""
        answer = await self.gateway.txn(
            operation,
            {
                "success": [
                    {"request_range": {"key": b64(self.leader_key)}},
                    {"request_range": {"key": b64(self.base_key)}},
                ]
            },
        )
        with self.gateway.reading(operation):
            revision = int(answer["header"]["revision"])
            leader, base = (
                key_values(response.get("response_range", {}))
                for response in answer["responses"]
            )
        if leader:
            return None
        if not base:
            return revision, _Base(0, 0)
        try:
            return revision, _Base(int(base[0].value), base[0].mod_revision)
        except ValueError:
            raise CoordinatorError(
                operation,
                self.gateway.endpoints,
                f"{self.base_key.decode()} holds {base[0].value[:100]!r}, "
                "not a whole number",
            ) from None

    async def _create_leader_key(
        self, operation: str, lease: int, base: _Base, new_base: int
    ) -> _Hold | None:
        """The hold if the key was free and is now ours, with ``new_base`` and
        the base still as read; None if another holds it or the base moved."""
        value = json.dumps(
            {"name": self.node.name, "url": self.node.advertise_url, "base": new_base}
        )
        key = b64(self.leader_key)
        success = [
            {"request_put": {"key": key, "value": b64(value.encode()),
                             "lease": str(lease)}}
        ]  # fmt: skip
        if new_base != base.value:
            success.append(
                {"request_put": {"key": b64(self.base_key),
                                 "value": b64(str(new_base).encode())}}
            )  # fmt: skip
        answer = await self.gateway.txn(
            operation,
            {
                "compare": [
                    {"key": key, "target": "CREATE", "result": "EQUAL",
                     "create_revision": "0"},
                    {"key": b64(self.base_key), "target": "MOD", "result": "EQUAL",
                     "mod_revision": str(base.mod_revision)},
                ],
                "success": success,
                "failure": [{"request_range": {"key": key}}],
            },
        )  # fmt: skip
        with self.gateway.reading(operation):
            if answer.get("succeeded"):
                # The key was created by this transaction, at its revision.
                revision = int(answer["header"]["revision"])
                return _Hold(lease, revision, revision + new_base)
            holder = _range_answer(answer)
        # A retry on another endpoint of a transaction that did commit finds
        # the key already under this node's lease: it is ours all the same.
        if holder is not None and holder.lease == lease:
            created = holder.create_revision
            return _Hold(lease, created, created + new_base)

        return None

    async def _renew(self, hold: _Hold) -> Leadership | None:
        operation = "renew the leader lease"
        sent = time.monotonic()
        ttl = await self.gateway.keepalive(operation, hold.lease)
        if ttl <= 0:
            self._lost(hold.term, "the lease lapsed before it was renewed")
            return None
        holder = await self.gateway.get(operation, self.leader_key)
        if holder is None or holder.create_revision != hold.revision:
            await self._revoke_quietly(hold.lease)
            self._lost(hold.term, "the leader key was deleted or replaced")
            return None

        log.debug("coordinator.leadership_renewed", term=hold.term)

        return Leadership(term=hold.term, valid_until=sent + ttl)

    def _lost(self, term: int, reason: str) -> None:
        self._held = None
        log.warning("coordinator.leadership_lost", term=term, reason=reason)

    async def release(self) -> None:
        if self._held is None:
            return
        hold = self._held
        # Whatever etcd answers, this node stops counting itself the leader.
        self._held = None
        await self.gateway.revoke("release the leader key", hold.lease)
        log.info("coordinator.leadership_released", term=hold.term)

    async def leader(self) -> Leader | None:
        operation = "read the leader key"
        found = await self.gateway.get(operation, self.leader_key)
        if found is None:
            return None
        try:
            value = json.loads(found.value)
            return Leader(
                name=str(value["name"]),
                url=str(value["url"]),
                term=found.create_revision + int(value.get("base", 0)),
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            raise CoordinatorError(
                operation,
                self.gateway.endpoints,
                f"the leader key holds {found.value[:100]!r}, not a name and a URL",
            ) from None

    # -- member states ----------------------------------------------------------

    async def publish_state(
        self, *, role: Role, applied_seq: int, healthy: bool
    ) -> MemberState:
        operation = "publish this member's state"
        state = self.state(role, applied_seq, healthy)
        lease = await self._live_member_lease(operation)
        value = state.model_dump_json().encode()
        try:
            await self.gateway.put(operation, self.member_key, value, lease)
        except CoordinatorError as exc:
            if exc.code != NOT_FOUND:
                raise
            # The lease lapsed between its renewal and the put.
            self._member_lease = None
            lease = await self._live_member_lease(operation)
            await self.gateway.put(operation, self.member_key, value, lease)

        return state

    async def _live_member_lease(self, operation: str) -> int:
        """The member lease, renewed; a new one if it lapsed or never existed."""
        lease = self._member_lease
        if lease is not None and await self.gateway.keepalive(operation, lease) > 0:
            return lease
        lease, _ = await self.gateway.grant(operation, self.cluster.lease_ttl_s)
        self._member_lease = lease

        return lease

    async def members(self) -> dict[str, MemberState]:
        found = await self.gateway.get_prefix(
            "read the members' states", self.members_prefix
        )
        states: dict[str, MemberState] = {}
        for kv in found:
            try:
                state = MemberState.model_validate_json(kv.value)
            except pydantic.ValidationError as exc:
                # One bad entry must not hide every other member.
                log.warning(
                    "coordinator.member_unreadable",
                    key=kv.key.decode(errors="replace"),
                    error=str(exc.errors()[0]["msg"]),
                )
                continue
            states[state.name] = state

        return dict(sorted(states.items()))

    # -- the synchronous replicas -----------------------------------------------

    async def publish_sync_set(
        self, leadership: Leadership, members: Iterable[str]
    ) -> bool:
        names = sorted(set(members))
        revision = self._revision_of(leadership)
        if revision is None:
            return False
        value = json.dumps(
            {"leader": self.node.name, "term": leadership.term, "members": names}
        )
        # Written only while the leader key is still the one of this term.
        answer = await self.gateway.txn(
            "publish the sync set",
            {
                "compare": [
                    {"key": b64(self.leader_key), "target": "CREATE",
                     "result": "EQUAL", "create_revision": str(revision)}
                ],
                "success": [
                    {"request_put": {"key": b64(self.sync_key),
                                     "value": b64(value.encode())}}
                ],
            },
        )  # fmt: skip
        published = bool(answer.get("succeeded"))
        if published:
            log.info(
                "coordinator.sync_set_published", term=leadership.term, members=names
            )

        return published

    async def sync_set(self) -> SyncSet | None:
        operation = "read the sync set"
        found = await self.gateway.get(operation, self.sync_key)
        if found is None:
            return None
        try:
            value = json.loads(found.value)
            return SyncSet(
                leader=str(value["leader"]),
                term=int(value["term"]),
                members=frozenset(str(name) for name in value["members"]),
            )
        except (ValueError, KeyError, TypeError):
            raise CoordinatorError(
                operation,
                self.gateway.endpoints,
                f"the sync key holds {found.value[:100]!r}, not a sync set",
            ) from None

    # -- switchover -------------------------------------------------------------

    async def hand_off(self, leadership: Leadership, to: str) -> bool:
        """Name ``to`` as the next leader, as leader of ``leadership.term``, for
        one lease TTL; False, and nothing written, when this node no longer
        leads in that term."""
        operation = "hand the lead off"
        revision = self._revision_of(leadership)
        if revision is None:
            return False
        lease, _ = await self.gateway.grant(operation, self.cluster.lease_ttl_s)
        value = json.dumps({"from": self.node.name, "to": to, "term": leadership.term})
        answer = await self.gateway.txn(
            operation,
            {
                "compare": [
                    {"key": b64(self.leader_key), "target": "CREATE",
                     "result": "EQUAL", "create_revision": str(revision)}
                ],
                "success": [
                    {"request_put": {"key": b64(self.handoff_key),
                                     "value": b64(value.encode()),
                                     "lease": str(lease)}}
                ],
            },
        )  # fmt: skip
        handed = bool(answer.get("succeeded"))
        if not handed:
            await self._revoke_quietly(lease)

        return handed

    async def handoff(self) -> str | None:
        """The member a switchover names as the next leader, while it does."""
        found = await self.gateway.get("read the handoff", self.handoff_key)
        if found is None:
            return None
        try:
            return str(json.loads(found.value)["to"])
        except (ValueError, KeyError, TypeError):
            log.warning("coordinator.handoff_unreadable", value=found.value[:100])
            return None

    def _revision_of(self, leadership: Leadership) -> int | None:
        """The leader key's create revision in ``leadership``'s term, if this
        node still holds the key in that term."""
        hold = self._held
        if hold is None or hold.term != leadership.term:
            return None

        return hold.revision

    # -- the end ----------------------------------------------------------------

    async def close(self) -> None:
        try:
            if self._member_lease is not None:
                await self._revoke_quietly(self._member_lease)
                self._member_lease = None
        finally:
            await self.gateway.close()

    async def _revoke_quietly(self, lease: int) -> None:
        """Best effort: a lease that cannot be revoked lapses at its TTL anyway."""
        try:
            await self.gateway.revoke("revoke a lease", lease)
        except CoordinatorError as exc:
            log.warning("coordinator.revoke_failed", lease=lease, error=str(exc))


@dataclass(frozen=True)
class _Hold:
    lease: int
    revision: int
    term: int


@dataclass(frozen=True)
class _Base:
    """The stored ``term_base``: its value, and its mod revision (0 when absent,
    which is what a transaction compares an absent key's revision to)."""

    value: int
    mod_revision: int


def _range_answer(answer: Json) -> KeyValue | None:
    """The key of the first range in a transaction's answer, if it exists."""
    for response in answer.get("responses", []):
        found = key_values(response.get("response_range", {}))
        if found:
            return found[0]

    return None
