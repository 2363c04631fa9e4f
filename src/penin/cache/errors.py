"""The cache's exceptions; each says which setting is wrong and how to fix it.

CacheError
└── CacheConfigError  the cache cannot run as configured (seal keys missing,
                      malformed or too short, or a Redis URL it cannot use)

Nothing at run time raises: an unreachable Redis, a bad seal or a lost
invalidation is a miss, counted and logged, never an error for the caller.
"""

from __future__ import annotations


class CacheError(Exception):
    """Root of every error the cache raises."""


class CacheConfigError(CacheError, ValueError):
    """The configuration is unusable; raised at start-up, never per request."""
