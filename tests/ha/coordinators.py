"""Members of a test cluster, each with its own handle on the coordinator."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from penin.ha import ClusterConfig, EtcdCoordinator, NodeConfig

T = TypeVar("T")

# The shortest lease etcd grants with the fixtures' election timeout.
LEASE_TTL_S = 1
CALL_TIMEOUT_S = 0.5


def node(name: str) -> NodeConfig:
    return NodeConfig(name=name, advertise_url=f"http://{name}.test:8080")


def etcd_member(
    name: str,
    endpoints: Sequence[str],
    *,
    cluster: str = "t",
    timeout_s: float = CALL_TIMEOUT_S,
) -> EtcdCoordinator:
    config = ClusterConfig(
        coordinator="etcd",
        name=cluster,
        etcd_endpoints=list(endpoints),
        lease_ttl_s=LEASE_TTL_S,
    )

    return EtcdCoordinator(node(name), config, timeout_s=timeout_s)


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float, what: str) -> T:
    """Await ``probe`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = await probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(0.05)
