"""High availability: the coordinator, the cluster's members and replication.

``coordinator_for`` picks the coordinator backend the configuration names;
``join_cluster`` makes this node a member (``penin.ha.member``), a primary
serving the replication stream (``penin.ha.stream``, ``penin.ha.lag``) or a
replica following it (``penin.ha.follower``). Automatic failover, synchronous
replication and switchover are not written yet.
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
from penin.ha.errors import ClusterSetupError, HAError, StreamError
from penin.ha.etcd import EtcdCoordinator
from penin.ha.member import ClusterMember, join_cluster, prepare_to_join
from penin.ha.static import StaticCoordinator
from penin.ha.token import ClusterToken

__all__ = [
    "ClusterConfig",
    "ClusterMember",
    "ClusterSetupError",
    "ClusterToken",
    "Coordinator",
    "CoordinatorError",
    "EtcdCoordinator",
    "HAConfig",
    "HAError",
    "Leader",
    "Leadership",
    "MemberState",
    "NodeConfig",
    "StaticCoordinator",
    "StreamError",
    "SyncSet",
    "coordinator_for",
    "join_cluster",
    "prepare_to_join",
]


def coordinator_for(config: HAConfig) -> Coordinator:
    """The coordinator backend that ``cluster.coordinator`` names."""
    if config.cluster.coordinator == "etcd":
        return EtcdCoordinator(config.node, config.cluster)

    return StaticCoordinator(config.node, config.cluster)
