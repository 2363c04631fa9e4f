"""High availability: the coordinator through which nodes agree on one primary.

Replication, failover and switchover build on this package; they are not
written yet. ``coordinator_for`` picks the backend the configuration names.
"""

from penin.ha.config import ClusterConfig, HAConfig, NodeConfig
from penin.ha.coordinator import (
    Coordinator,
    CoordinatorError,
    Leader,
    Leadership,
    MemberState,
    SyncSet,
)
from penin.ha.etcd import EtcdCoordinator
from penin.ha.static import StaticCoordinator

__all__ = [
    "ClusterConfig",
    "Coordinator",
    "CoordinatorError",
    "EtcdCoordinator",
    "HAConfig",
    "Leader",
    "Leadership",
    "MemberState",
    "NodeConfig",
    "StaticCoordinator",
    "SyncSet",
    "coordinator_for",
]


def coordinator_for(config: HAConfig) -> Coordinator:
    """The coordinator backend that ``cluster.coordinator`` names."""
    if config.cluster.coordinator == "etcd":
        return EtcdCoordinator(config.node, config.cluster)

    return StaticCoordinator(config.node, config.cluster)
