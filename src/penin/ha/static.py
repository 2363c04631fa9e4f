"""The static backend of the coordinator: the configured primary, always.

With no third party there is no election. Two nodes alone cannot tell a dead
peer from a cut link: a replica that promoted itself whenever it lost sight of
the primary would, on a partition, leave two primaries accepting writes, and
the ledgers would fork. So this backend never makes anyone else the leader;
changing the primary is an operator's switchover, by changing the
configuration.

The term is fixed at 1: a term counts changes of leader, and within one
configuration there are none to count. A switchover therefore cannot take its
term from here; it must carry its own (above every term in the ledger) so that
replicas can still refuse records of the old primary.

Members' states and the sync set live in this process only: nothing shares
them, so each node sees what it published itself.
"""

from __future__ import annotations

from collections.abc import Iterable

from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.coordinator import (
    FOREVER,
    Coordinator,
    Leader,
    Leadership,
    MemberState,
    Role,
    SyncSet,
)

STATIC_TERM = 1


class StaticCoordinator(Coordinator):
    """Leadership by configuration: ``cluster.primary`` leads, in term 1, for ever."""

    def __init__(self, node: NodeConfig, cluster: ClusterConfig) -> None:
        super().__init__(node, cluster)
        if cluster.primary is None:
            raise ValueError("coordinator: static needs cluster.primary")
        self.primary = cluster.primary
        self._states: dict[str, MemberState] = {}
        self._sync_set: SyncSet | None = None

    @property
    def is_primary(self) -> bool:
        return self.node.name == self.primary

    async def acquire(self, above: int = 0) -> Leadership | None:
        # ``above`` cannot be honoured: the term is fixed (see the module
        # docstring).
        if not self.is_primary:
            return None

        return Leadership(term=STATIC_TERM, valid_until=FOREVER)

    async def release(self) -> None:
        """Nothing to give up: only a change of configuration moves the primary."""

    async def leader(self) -> Leader | None:
        url = self.node.advertise_url if self.is_primary else self.cluster.primary_url

        return Leader(name=self.primary, url=url, term=STATIC_TERM)

    async def publish_state(
        self, *, role: Role, applied_seq: int, healthy: bool
    ) -> MemberState:
        state = self.state(role, applied_seq, healthy)
        self._states[state.name] = state

        return state

    async def members(self) -> dict[str, MemberState]:
        return dict(sorted(self._states.items()))

    async def publish_sync_set(
        self, leadership: Leadership, members: Iterable[str]
    ) -> bool:
        if not self.is_primary or leadership.term != STATIC_TERM:
            return False
        self._sync_set = SyncSet(
            leader=self.primary, term=STATIC_TERM, members=frozenset(members)
        )

        return True

    async def sync_set(self) -> SyncSet | None:
        return self._sync_set

    async def close(self) -> None:
        self._states.pop(self.node.name, None)
