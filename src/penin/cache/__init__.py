"""The response cache: an in-process L1 and a sealed, shared L2 in Redis.

The router asks ``wants_cache`` whether a request may use the cache, keys it
with ``cache_key``, and reads and fills a ``ResponseCache``. docs/cache.md
says what is cached, how values are sealed, and what happens when Redis is
down.
"""

from __future__ import annotations

from penin.cache.cache import ResponseCache, check_config
from penin.cache.connection import RedisClient, check_url, connect, redact
from penin.cache.errors import CacheConfigError, CacheError
from penin.cache.key import (
    CACHE_HEADER,
    KEYED_FIELDS,
    cache_key,
    is_deterministic,
    wants_cache,
)
from penin.cache.memory import MemoryCache
from penin.cache.redis import INVALIDATE_CHANNEL, RedisCache
from penin.cache.seal import ENV_NAME as SEAL_KEYS_ENV
from penin.cache.seal import SealKeys

__all__ = [
    "CACHE_HEADER",
    "INVALIDATE_CHANNEL",
    "KEYED_FIELDS",
    "SEAL_KEYS_ENV",
    "CacheConfigError",
    "CacheError",
    "MemoryCache",
    "RedisCache",
    "RedisClient",
    "ResponseCache",
    "SealKeys",
    "cache_key",
    "check_config",
    "check_url",
    "connect",
    "is_deterministic",
    "redact",
    "wants_cache",
]
