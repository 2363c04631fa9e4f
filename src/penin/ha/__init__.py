"""High availability: the coordinator, the cluster's members and replication.

``coordinator_for`` picks the coordinator backend the configuration names;
``join_cluster`` makes this node a member (``penin.ha.member``), a primary
serving the replication stream (``penin.ha.stream``, ``penin.ha.feed``,
``penin.ha.lag``) or a replica following it (``penin.ha.follower``). With
etcd, the member is elected (``penin.ha.elected``): automatic failover with
fencing, the sync set of synchronous replication (``penin.ha.sync``),
switchover, and quarantine on rejoin (``penin.ha.quarantine``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Imported on first use: the node's settings read penin.ha.config, and must
# not load the etcd client (aiohttp) for a node that is not in a cluster.
_MODULES = {
    "ClusterConfig": "config",
    "ClusterMember": "member",
    "ClusterSetupError": "errors",
    "ClusterToken": "token",
    "Coordinator": "coordinator",
    "CoordinatorError": "coordinator",
    "EtcdCoordinator": "etcd",
    "HAConfig": "config",
    "HAError": "errors",
    "Leader": "coordinator",
    "Leadership": "coordinator",
    "MemberState": "coordinator",
    "NodeConfig": "config",
    "StaticCoordinator": "static",
    "StreamError": "errors",
    "SyncSet": "coordinator",
    "join_cluster": "member",
    "prepare_to_join": "member",
}


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
    name = "etcd" if config.cluster.coordinator == "etcd" else "static"
    kind = "EtcdCoordinator" if name == "etcd" else "StaticCoordinator"
    backend = getattr(importlib.import_module(f"{__name__}.{name}"), kind)
    coordinator: Coordinator = backend(config.node, config.cluster)

    return coordinator


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
