"""One Redis URL to an asyncio client: a single server, or a Redis Cluster.

``redis://`` and ``rediss://`` (TLS) name one server, ``unix://`` a socket;
``redis+cluster://`` and ``rediss+cluster://`` name any node of a Redis
Cluster, from which the client learns the others. The scheme decides, rather
than a probe with CLUSTER INFO, so that the client is the same whether or not
Redis answers at start-up. Every socket wait is bounded by ``timeout_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
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

T = TypeVar("T")


class BoundedRedis:
    """One Redis client whose calls are bounded and whose failures are told once.

    Each call has a deadline of three socket timeouts and waits its turn
    behind ``MAX_IN_FLIGHT`` others. A failure is logged as the warning
    ``event`` at most once per ``warn_every_s``, with ``fields``, and then
    raised for the caller to decide: fail closed, or fall back.
    """

    def __init__(
        self,
        url: str,
        *,
        log: Any,
        event: str,
        timeout_s: float,
        warn_every_s: float = 30.0,
        retries: int = 0,
        **fields: str,
    ) -> None:
        self.where = redact(url)
        self.client = connect(url, timeout_s=timeout_s, retries=retries)
        self._log = log
        self._event = event
        self._fields = fields
        self._deadline_s = 3 * timeout_s
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._warn_every_s = warn_every_s
        self._warned_at: float | None = None

    async def call(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            async with asyncio.timeout(self._deadline_s), self._in_flight:
                return await call()
        except FAILURES as exc:
            self._warn(operation, exc)
            raise

    async def close(self) -> None:
        try:
            await self.client.aclose()
        except FAILURES as exc:
            self._log.debug("redis.close_failed", redis=self.where, error=str(exc))

    def _warn(self, operation: str, error: BaseException) -> None:
        now = time.monotonic()
        if self._warned_at is not None and now - self._warned_at < self._warn_every_s:
            return
        self._warned_at = now
        self._log.warning(
            self._event,
            redis=self.where,
            operation=operation,
            error=str(error) or type(error).__name__,
            **self._fields,
        )


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
