"""One Redis URL to an asyncio client: a single server, or a Redis Cluster.

``redis://`` and ``rediss://`` (TLS) name one server, ``unix://`` a socket;
``redis+cluster://`` and ``rediss+cluster://`` name any node of a Redis
Cluster, from which the client learns the others. The scheme decides, rather
than a probe with CLUSTER INFO, so that the client is the same whether or not
Redis answers at start-up. Every socket wait is bounded by ``timeout_s``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException, RedisError

from penin.cache.errors import CacheConfigError

RedisClient = Redis | RedisCluster

CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
SINGLE_SCHEMES = ("redis", "rediss", "unix")

# redis-py refuses a command, rather than waiting, when a pool (or a cluster
# node) already has 100 connections; callers let at most this many commands
# be in flight per client, so a burst of requests waits its turn instead.
MAX_IN_FLIGHT = 64

# What a call to an unreachable, dying or timing-out Redis raises.
FAILURES = (RedisError, RedisClusterException, OSError, TimeoutError)


def check_url(url: str) -> None:
    """Raise CacheConfigError unless ``connect`` knows the scheme of ``url``."""
    scheme = url.partition("://")[0]
    if scheme not in CLUSTER_SCHEMES and scheme not in SINGLE_SCHEMES:
        raise CacheConfigError(
            f"Redis URL {redact(url)!r} has scheme {scheme!r}; use one of "
            f"{', '.join(s + '://' for s in (*SINGLE_SCHEMES, *CLUSTER_SCHEMES))}"
        )


def connect(url: str, *, timeout_s: float, retries: int = 0) -> RedisClient:
    """A client for ``url``; it connects lazily, on its first command."""
    check_url(url)
    scheme, _, rest = url.partition("://")
    options: dict[str, Any] = {
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(NoBackoff(), retries),
    }
    if scheme in CLUSTER_SCHEMES:
        return RedisCluster.from_url(f"{CLUSTER_SCHEMES[scheme]}://{rest}", **options)

    return Redis.from_url(url, **options)


def redact(url: str) -> str:
    """``url`` without its password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    port = f":{parts.port}" if parts.port is not None else ""

    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
