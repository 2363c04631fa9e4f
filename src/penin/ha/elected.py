"""``coordinator: etcd``: the member whose role is the holder of the leader key.

One task, the *HA loop*, runs every ``lease_ttl_s / 10`` seconds:

- **On the primary** it renews the leader lease, publishes this member's
  state and, in sync mode, keeps the sync set (``penin.ha.sync``). A renewal
  that fails, or finds the key gone or replaced, makes it step down at once.
- **On a replica** it publishes this member's state and reads the leader
  key: it follows whoever holds it, and when nobody does, it takes part in
  the election.

**Fencing.** The primary's ledger asks ``_fence`` before each commit of
appends, and ``acknowledge`` asks it again before an append is answered:
both refuse once the lease is within ``lease_ttl_s / 3`` of the earliest
moment it can lapse in etcd (``Leadership.valid_until``). The deadline is
read on the monotonic clock, so a primary that was paused (SIGSTOP) or cut
off from etcd stops acknowledging before another member can take the key,
whether or not its HA loop ran in between; the term on every record makes
anything it wrote after that harmless (replicas refuse older terms).

**Election.** When the leader key is vacant, each healthy replica with a
ledger reads the members' states, and the one with the highest applied seq
(the smallest name among equals) takes the key. The states are final by
then: a primary stops committing at least ``lease_ttl_s / 3`` before its
key can lapse, and every member publishes its state each tick. In sync mode only members
of the last published sync set are candidates, since only they hold every
acknowledged record; an empty published set (``sync_fallback: async`` with
no replica) makes every replica a candidate. The new primary stops its
follower (what it received is applied before anything else), takes the
key in a term above every term in its ledger (even after etcd was replaced
and counts its revisions again from low: ``penin.ha.etcd`` raises its term
base then), writes ``ha.term_started`` in the new term and accepts writes.

**Switchover.** ``switch_over(to)`` pauses writes (the fence refuses them;
clients get 503 and retry), waits until ``to`` confirmed the last record,
names it in the ``handoff`` key and releases the leader key: ``to`` takes it
at its next tick without waiting, and the others leave it to ``to``.

**Rejoin.** A replica whose follower finds records here that the primary
never had (a former primary's unacknowledged writes) moves its ledger aside
as a quarantined copy and rebuilds from the primary (``penin.ha.quarantine``);
once it follows, it has the primary record each quarantine as
``ha.quarantined``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.coordinator import CoordinatorError, Leadership, MemberState
from penin.ha.errors import ClusterSetupError, HAError, StreamError
from penin.ha.etcd import EtcdCoordinator
from penin.ha.member import BOOTSTRAP_S, ClusterMember
from penin.ha.peer import PrimaryClient
from penin.ha.quarantine import mark_reported, quarantine, report_of, unreported
from penin.ha.sync import SyncReplicas
from penin.ha.token import ClusterToken
from penin.ledger.errors import LedgerError, NotPrimaryError
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import Record
from penin.observability.metrics import REPLICATION_METRICS

log = structlog.get_logger("penin.ha")

# The HA loop runs this many times per lease TTL: the primary renews its
# lease each time, and a replica sees a vacant leader key within one tick.
TICKS_PER_TTL = 10
# How long a switchover waits for its target to hold every record.
SWITCHOVER_CATCH_UP_S = 5.0
# A short sync set is published (sync_fallback: async) no sooner than this
# many TTLs after taking the lead, so that the replicas have time to ask.
_DEGRADE_GRACE_TTLS = 1.0
# What a follower finds when this log is not a prefix of the primary's: it
# holds records the primary never had, and is quarantined.
_FORKED = frozenset(
    {"tree_size", "prev_hash", "term", "checkpoint_root", "checkpoint_consistency"}
)


class SwitchoverError(HAError):
    """A switchover that did not happen; the primary is unchanged."""


class ElectedMember(ClusterMember):
    """A member of an etcd-coordinated cluster, for the life of the process."""

    def __init__(
        self,
        node: NodeConfig,
        cluster: ClusterConfig,
        ledger: WORMLedger,
        token: ClusterToken,
    ) -> None:
        super().__init__(node, cluster, ledger, token)
        self.coordinator = EtcdCoordinator(node, cluster)
        self.tick_s = cluster.lease_ttl_s / TICKS_PER_TTL
        self.margin_s = cluster.lease_ttl_s / 3
        self.leadership: Leadership | None = None
        self.sync: SyncReplicas | None = None
        self.problem: dict[str, Any] | None = None
        self.quarantined: list[dict[str, Any]] = []
        self._led_since = 0.0
        # Whether the leader key was seen vacant (logged once per vacancy), and
        # quarantines here the primary may not have recorded yet.
        self._vacant = False
        self._unreported: list[Path] = []
        self._writes_paused = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._publishing: asyncio.Task[None] | None = None
        self._sync_lock = asyncio.Lock()

    # -- lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        """Start as a replica that knows no primary; the HA loop does the rest."""
        self._loop = asyncio.get_running_loop()
        self.ledger.set_fence(self._fence)
        self.ledger.acknowledger = self
        if self.ledger.path.exists():
            await asyncio.to_thread(self.ledger.initialize)
            await asyncio.to_thread(self.ledger.follow, "", "")
        # Left by `penin ha rejoin`, or by a process that stopped before it
        # reported them; later ones are added as they happen.
        self._unreported = await asyncio.to_thread(unreported, self.ledger.path.parent)
        self._role_changed()
        self._task = self._loop.create_task(self._run())

    async def prepare(self) -> None:
        """On a member with no ledger yet, copy the log's identity from the
        primary etcd names (``bootstrap_from``); ClusterSetupError if none is
        named within BOOTSTRAP_S. ``penin serve`` calls it before the server
        starts, outside the server's event loop."""
        if self.ledger.path.exists():
            return
        self.check_key_present()
        deadline = time.monotonic() + BOOTSTRAP_S
        url: str | None = None
        async with EtcdCoordinator(self.node, self.cluster) as coordinator:
            while True:
                with contextlib.suppress(CoordinatorError):
                    leader = await coordinator.leader()
                    if leader is not None and leader.name != self.node.name:
                        url = leader.url
                        break
                if time.monotonic() > deadline:
                    raise ClusterSetupError(
                        f"{self.node.name} has no ledger yet, and etcd names no "
                        f"primary to copy it from within {BOOTSTRAP_S:g} s: start "
                        "the member whose ledger was created first ('penin ledger "
                        "init'), then this one"
                    )
                await asyncio.sleep(self.tick_s)
        assert url is not None  # etcd's leader key always holds one
        await self.bootstrap_from(url)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.is_primary:
            await self._step_down("the node is stopping")
        await super().stop()
        await self.coordinator.close()

    # -- fencing and acknowledgement ----------------------------------------------

    def _fence(self) -> NotPrimaryError | None:
        """None while this node may acknowledge writes; else the refusal."""
        lead = self.leadership
        if lead is not None and not self._writes_paused and lead.held(self.margin_s):
            return None

        return NotPrimaryError(self.ledger.path, None, None)

    async def acknowledge(self, records: Sequence[Record]) -> None:
        if (refusal := self._fence()) is not None:
            raise refusal
        if self.sync is not None and records:
            # Not the last: a replayed record may come after newer ones.
            await self.sync.wait(max(record.seq for record in records))
            if (refusal := self._fence()) is not None:
                raise refusal

    def acknowledge_blocking(self, records: Sequence[Record]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            raise RuntimeError("acknowledge_blocking called on the event loop")
        asyncio.run_coroutine_threadsafe(self.acknowledge(records), loop).result()

    # -- the HA loop -------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            try:
                if self.is_primary:
                    await self._tick_primary()
                else:
                    await self._tick_replica()
            except CoordinatorError as exc:
                log.warning("cluster.coordinator_failed", error=str(exc))
            except (LedgerError, HAError) as exc:
                log.error("cluster.tick_failed", error=str(exc))
            lapsing = self._fence() is not None and not self._writes_paused
            if self.is_primary and lapsing:
                await self._step_down("the leader lease could not be renewed in time")
            await asyncio.sleep(max(0.0, self.tick_s - (loop.time() - started)))

    async def _tick_primary(self) -> None:
        sent = time.monotonic()
        lead = await self.coordinator.acquire()
        REPLICATION_METRICS.lease_renew.observe(time.monotonic() - sent)
        if lead is None:
            await self._step_down("the leader key was lost")
            return
        self.leadership = lead
        await self.coordinator.publish_state(
            role="primary", applied_seq=self.applied_seq(), healthy=True
        )
        if self.sync is not None and self.sync.count > 0:
            await self._keep_sync_set(lead)

    async def _tick_replica(self) -> None:
        await self.coordinator.publish_state(
            role="replica", applied_seq=self.applied_seq(), healthy=self._sound()
        )
        leader = await self.coordinator.leader()
        if leader is None or leader.url is None or leader.name == self.node.name:
            # Vacant, or held by this node's previous process until it lapses.
            self.primary = self.primary_url = None
            await self._elect()
            return
        self._vacant = False
        if not self.ledger.path.exists():
            try:
                await self.bootstrap_from(leader.url)
            except ClusterSetupError as exc:
                self.problem = {"reason": str(exc)}
                log.error("cluster.bootstrap_failed", error=str(exc))
                return
        follower = self.follower
        if follower is not None and follower.state.status == "diverged":
            problem = follower.state.problem or {}
            if problem.get("field") in _FORKED:
                await self._quarantine(leader.url, problem)
                return
        following = (self.primary, self.primary_url) == (leader.name, leader.url)
        if not following or self._follow_task is None:
            self.problem = None
            await self._follow(leader.name, leader.url, leader.term)
        elif self._unreported and follower and follower.state.status == "following":
            await self._report_quarantines(leader.url)

    def _sound(self) -> bool:
        """A ledger here, and nothing found wrong with it or its primary."""
        if not self.ledger.path.exists() or self.problem is not None:
            return False
        follower = self.follower
        return follower is None or follower.state.status not in {"diverged", "refused"}

    # -- election ----------------------------------------------------------------

    async def _elect(self) -> None:
        if not self._vacant:
            self._vacant = True
            log.info("cluster.leader_vacant", node=self.node.name)
        handoff = await self.coordinator.handoff()
        if handoff is not None:
            if handoff == self.node.name:
                await self._take_over("switchover")
            return  # the switchover names another member
        if not self._sound():
            return
        members = await self.coordinator.members()
        eligible = await self._eligible(members)
        if eligible and eligible[0].name == self.node.name:
            await self._take_over("failover")

    async def _eligible(self, members: dict[str, MemberState]) -> list[MemberState]:
        """The candidates, best first: healthy replicas, in sync mode members of
        the last published sync set (all, if it is empty or was never published)."""
        allowed: frozenset[str] | None = None
        if self.cluster.replication == "sync" and self.cluster.sync_replicas > 0:
            published = await self.coordinator.sync_set()
            if published is not None and published.members:
                allowed = published.members
        candidates = [
            state
            for state in members.values()
            if state.role == "replica"
            and state.healthy
            and (allowed is None or state.name in allowed)
        ]

        return sorted(candidates, key=lambda s: (-s.applied_seq, s.name))

    async def _take_over(self, reason: str) -> None:
        previous = self.primary
        await self._stop_following()
        last_term = await asyncio.to_thread(lambda: self.ledger.last_term)
        lead = await self.coordinator.acquire(above=last_term)
        if lead is None:
            return  # another member was faster
        if lead.term <= last_term:
            # Only a leader key written by hand in etcd gets here.
            self.problem = {
                "reason": f"etcd gave term {lead.term}, but this ledger already "
                f"holds term {last_term}: the leader key was not written by a member",
            }
            log.error("cluster.term_behind", term=lead.term, ledger_term=last_term)
            await self.coordinator.release()
            return
        self.leadership = lead
        self._led_since = time.monotonic()
        if self.cluster.replication == "sync":
            self.sync = SyncReplicas(
                self.cluster.sync_replicas,
                fallback_async=self.cluster.sync_fallback == "async",
                timeout_s=self.cluster.sync_timeout_s,
            )
        try:
            await self._lead(
                lead.term, coordinator="etcd", reason=reason, previous=previous
            )
        except LedgerError as exc:
            log.error("cluster.lead_failed", term=lead.term, error=str(exc))
            await self._step_down(f"the ledger refused term {lead.term}: {exc}")
            return
        self._vacant = False
        self.problem = None
        REPLICATION_METRICS.failovers.labels(reason).inc()
        log.warning("cluster.took_lead", term=lead.term, reason=reason)

    async def _step_down(self, reason: str) -> None:
        """Stop acknowledging at once, then stop the primary's work."""
        self.leadership = None
        self._writes_paused = False
        refusal = NotPrimaryError(self.ledger.path, None, None)
        if self.sync is not None:
            self.sync.release_all(refusal)
            self.sync = None
        self._stop_leading()
        self.role = "replica"
        self.primary = self.primary_url = None
        await asyncio.to_thread(self.ledger.follow, "", "")
        self._role_changed()
        log.warning("cluster.stepped_down", term=self.term, reason=reason)
        with contextlib.suppress(CoordinatorError):
            await self.coordinator.release()

    # -- the sync set --------------------------------------------------------------

    async def _keep_sync_set(self, lead: Leadership) -> None:
        async with self._sync_lock:  # the HA loop, or a replica's confirmation
            await self._change_sync_set(lead)

    async def _change_sync_set(self, lead: Leadership) -> None:
        sync = self.sync
        if sync is None:
            return
        members = await self.coordinator.members()
        ttl = self.cluster.lease_ttl_s
        chosen = sync.next_set(
            members,
            ttl_s=ttl,
            head_seq=self.applied_seq(),
            may_degrade=time.monotonic() - self._led_since >= _DEGRADE_GRACE_TTLS * ttl,
        )
        if chosen is not None and await self.coordinator.publish_sync_set(lead, chosen):
            sync.published_as(chosen)

    # -- switchover ----------------------------------------------------------------

    async def switch_over(self, to: str) -> dict[str, Any]:
        """Hand the lead to the replica ``to`` without losing a write; the
        figures of what happened. SwitchoverError if it cannot be done now."""
        lead = self.leadership
        if not self.is_primary or lead is None:
            raise SwitchoverError(f"{self.node.name} is not the primary")
        if to == self.node.name:
            raise SwitchoverError(f"{to} is already the primary")
        members = await self.coordinator.members()
        target = members.get(to)
        if target is None or target.role != "replica" or not target.healthy:
            raise SwitchoverError(
                f"{to} is not a healthy replica of this cluster now (members: "
                f"{', '.join(sorted(members)) or 'none'})"
            )
        paused = time.monotonic()
        self._writes_paused = True
        try:
            head = await asyncio.to_thread(self.applied_seq)
            await self._wait_confirmed(to, head)
            if not await self.coordinator.hand_off(lead, to):
                raise SwitchoverError(f"{self.node.name} lost the lead meanwhile")
        except BaseException:
            self._writes_paused = False
            raise
        await self._step_down(f"switchover to {to}")
        leader = await self._wait_for_leader(to)
        return {
            "from": self.node.name,
            "to": to,
            "previous_term": lead.term,
            "term": None if leader is None else leader.term,
            "last_seq": head,
            "writes_paused_s": round(time.monotonic() - paused, 3),
        }

    async def _wait_confirmed(self, replica: str, seq: int) -> None:
        deadline = time.monotonic() + SWITCHOVER_CATCH_UP_S
        while self._confirmed(replica) < seq:
            if time.monotonic() > deadline:
                raise SwitchoverError(
                    f"{replica} did not confirm record {seq} within "
                    f"{SWITCHOVER_CATCH_UP_S:g} s (it confirmed "
                    f"{self._confirmed(replica)}); writes resume here"
                )
            await asyncio.sleep(0.01)

    def _confirmed(self, replica: str) -> int:
        confirmed = {} if self.positions is None else self.positions.confirmed()
        return confirmed.get(replica, -1)

    async def _wait_for_leader(self, name: str) -> Any:
        deadline = time.monotonic() + 2 * self.cluster.lease_ttl_s
        while time.monotonic() < deadline:
            with contextlib.suppress(CoordinatorError):
                leader = await self.coordinator.leader()
                if leader is not None and leader.name == name:
                    return leader
            await asyncio.sleep(self.tick_s / 5)

        return None

    # -- rejoin --------------------------------------------------------------------

    async def _quarantine(self, primary_url: str, problem: dict[str, Any]) -> None:
        await self._stop_following()
        moved = await asyncio.to_thread(quarantine, self.ledger, problem)
        self.quarantined.append(moved)
        self._unreported.append(Path(moved["directory"]))
        self.follower = None
        self.primary = self.primary_url = None
        await self.bootstrap_from(primary_url)

    async def _report_quarantines(self, primary_url: str) -> None:
        """Have the primary record each quarantine here it has not recorded yet
        (``ha.quarantined``); what fails is tried again at the next tick."""
        client = PrimaryClient(primary_url, self.token, self.node.name)
        try:
            while self._unreported:
                directory = self._unreported[0]
                await client.report_quarantine(report_of(directory, self.node.name))
                await asyncio.to_thread(mark_reported, directory)
                self._unreported.pop(0)
                log.info("replication.quarantine_reported", directory=str(directory))
        except StreamError as exc:
            log.warning("replication.quarantine_not_reported", error=str(exc))
        finally:
            await client.close()

    # -- what the node reports --------------------------------------------------

    def confirm(self, replica: str, after_seq: int) -> None:
        super().confirm(replica, after_seq)
        sync = self.sync
        if sync is None or self.leadership is None:
            return
        sync.confirm(replica, after_seq)
        # A replica that asks is alive: while the set is short, it joins at
        # once rather than at the next tick, and is published once it holds
        # what it must (a new primary's first writes wait for exactly this).
        short = len(sync.published) + len(sync.joining) < sync.count
        if short and replica not in sync.required:
            sync.start_joining(replica, self.applied_seq())
        if sync.ready_to_publish() and self._publishing is None:
            self._publishing = asyncio.get_running_loop().create_task(
                self._publish_ready(self.leadership)
            )

    async def _publish_ready(self, lead: Leadership) -> None:
        try:
            await self._keep_sync_set(lead)
        except CoordinatorError as exc:
            log.warning("replication.sync_set_not_published", error=str(exc))
        finally:
            self._publishing = None

    def signable_size(self, tree_size: int) -> int | None:
        """A signed checkpoint is a promise to every auditor that holds it, so
        a primary signs only records the next primary will hold too: in sync
        mode those every member of the sync set confirmed, else those the most
        advanced replica confirmed (the election prefers it); the whole log
        while no replica has asked. None once it may not acknowledge."""
        if not self.is_primary or self._fence() is not None:
            return None
        sync = self.sync
        if sync is not None and sync.count > 0 and not sync.degraded:
            if len(sync.published) < sync.count:
                return None
            held = min(sync.confirmed(name) for name in sync.published) + 1
            return min(tree_size, held)
        confirmed = {} if self.positions is None else self.positions.confirmed()
        if not confirmed:
            return tree_size

        return min(tree_size, max(confirmed.values()) + 1)

    async def status(self) -> dict[str, Any]:
        """Every live member's published state, with its lag behind the primary
        in records (and in seconds, asked on the primary); CoordinatorError if
        etcd does not answer."""
        states = await self.coordinator.members()
        published = await self.coordinator.sync_set()
        leader = await self.coordinator.leader()
        lead_seq = None
        if leader is not None and leader.name in states:
            lead_seq = states[leader.name].applied_seq
        measured = {} if self.positions is None else self.positions.report()
        members: dict[str, dict[str, Any]] = {}
        for name, state in states.items():
            entry: dict[str, Any] = {
                "url": state.url,
                "role": state.role,
                "applied_seq": state.applied_seq,
                "healthy": state.healthy,
                "updated_at": state.updated_at,
                "lag_records": None
                if lead_seq is None
                else max(0, lead_seq - state.applied_seq),
            }
            if name in measured:
                entry["lag_records"] = measured[name]["lag_records"]
                entry["lag_seconds"] = measured[name]["lag_seconds"]
            members[name] = entry
        body = self._status_body(
            members,
            sync_set=None if published is None else sorted(published.members),
        )
        body["leader_term"] = None if leader is None else leader.term
        if self.problem is not None:
            body["problem"] = self.problem
        if self.quarantined:
            body["quarantined"] = self.quarantined

        return body

    def health(self) -> tuple[bool, dict[str, Any]]:
        healthy, detail = super().health()
        if self.is_primary:
            healthy = self._fence() is None or self._writes_paused
        detail["coordinator"] = self.cluster.coordinator
        if self.sync is not None:
            detail["sync_set"] = sorted(self.sync.published)
            detail["sync_degraded"] = self.sync.degraded
        if self.problem is not None:
            detail["problem"] = self.problem

        return healthy and self.problem is None, detail
