"""The response cache: the in-process L1 in front of the shared, sealed L2.

A look-up tries L1, then L2; an L2 hit is put into L1 for the time it has
left in Redis, unless an invalidation arrived while it was being fetched. A
store goes to both. Invalidating drops the key from this node's L1 and, via
Redis, from every other node's. Without ``redis_url`` there is only L1; a TTL
of 0 turns the whole cache off.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from penin.cache.connection import check_url
from penin.cache.errors import CacheConfigError
from penin.cache.memory import MemoryCache
from penin.cache.redis import RedisCache
from penin.cache.seal import ENV_NAME, SealKeys
from penin.observability.metrics import CACHE_METRICS

if TYPE_CHECKING:
    # Only its shape: the cache does not depend on the router at run time.
    from penin.router.config import CacheConfig


def check_config(config: CacheConfig, seal: SealKeys | None) -> None:
    """Raise CacheConfigError when an L2 is configured that cannot run."""
    if config.ttl_s <= 0 or not config.redis_url:
        return
    if seal is None:
        raise CacheConfigError(
            f"cache.redis_url is set but {ENV_NAME} is not: L2 values are "
            f"sealed, so set {ENV_NAME}=KEY_ID:BASE64KEY (32 bytes or more, "
            "e.g. from openssl rand -base64 32), the same on every node"
        )
    check_url(config.redis_url)


class ResponseCache:
    """Cached response bodies by cache key, with the level that served them."""

    def __init__(self, config: CacheConfig, seal: SealKeys | None) -> None:
        check_config(config, seal)
        self.enabled = config.ttl_s > 0
        self.l1 = MemoryCache(config.max_entries, config.ttl_s)
        self.l2: RedisCache | None = None
        if self.enabled and config.redis_url and seal is not None:
            self.l2 = RedisCache(config.redis_url, seal, config.ttl_s)
        # Counts invalidations, so that an L2 value fetched while one arrived
        # is served but not kept in L1 (it may be the value just invalidated).
        self._generation = 0

    async def get(self, key: str) -> tuple[bytes, str] | None:
        if not self.enabled:
            return None
        if self.l1.max_entries > 0:
            value = self.l1.get(key)
            if value is not None:
                CACHE_METRICS.hits.labels("l1").inc()
                return value, "l1"
            CACHE_METRICS.misses.labels("l1").inc()
        if self.l2 is None:
            return None

        return await self._get_l2(self.l2, key)

    async def _get_l2(self, l2: RedisCache, key: str) -> tuple[bytes, str] | None:
        generation = self._generation
        found = await l2.get_with_ttl(key)
        if found is None:
            CACHE_METRICS.misses.labels("l2").inc()
            return None
        CACHE_METRICS.hits.labels("l2").inc()
        value, ttl_s = found
        if generation == self._generation:
            self.l1.set(key, value, ttl_s)

        return value, "l2"

    async def set(self, key: str, value: bytes) -> None:
        if not self.enabled:
            return
        self.l1.set(key, value)
        if self.l2 is not None:
            await self.l2.set(key, value)

    async def invalidate(self, key: str) -> list[str]:
        """Drop ``key`` here, in Redis, and from the L1 of every other node.

        Returns the levels it was dropped from: ``l2`` is missing when Redis
        did not answer, and then other nodes may go on serving the entry.
        """
        self._drop(key)
        if self.l2 is not None and await self.l2.invalidate(key):
            return ["l1", "l2"]

        return ["l1"]

    async def start(self) -> None:
        if self.l2 is not None:
            await self.l2.start(self._heard, on_gap=self._heard_gap)

    async def close(self) -> None:
        if self.l2 is not None:
            await self.l2.close()

    def _drop(self, key: str) -> None:
        self._generation += 1
        self.l1.delete(key)

    def _heard(self, key: str) -> None:
        CACHE_METRICS.invalidations.labels("key").inc()
        self._drop(key)

    def _heard_gap(self) -> None:
        CACHE_METRICS.invalidations.labels("all").inc()
        self._drop_all()

    def _drop_all(self) -> None:
        self._generation += 1
        self.l1.clear()
