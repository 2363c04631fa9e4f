"""The L1 cache: a bounded in-process LRU whose entries expire after a TTL.

Expired entries are dropped when they are looked up or counted; the least recently
used entry goes first when the cache is full. ``max_entries`` 0 turns it off:
every ``get`` misses and every ``set`` is dropped. Not thread-safe; the node
runs it on its one event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable


class MemoryCache:
    """Bytes by key, at most ``max_entries`` of them, each kept ``ttl_s`` seconds."""

    def __init__(
        self,
        max_entries: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0:
            raise ValueError(f"max_entries must be 0 or more, not {max_entries}")
        self.max_entries = max_entries
        self.ttl_s = ttl_s
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if self._clock() >= expires_at:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)

        return value

    def set(self, key: str, value: bytes, ttl_s: float | None = None) -> None:
        """Keep ``value`` for ``ttl_s`` (default: the cache's TTL) seconds."""
        ttl = self.ttl_s if ttl_s is None else min(ttl_s, self.ttl_s)
        if self.max_entries == 0 or ttl <= 0:
            return
        self._entries[key] = (self._clock() + ttl, value)
        self._entries.move_to_end(key)

        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        """Entries still alive; expired ones are dropped on the way."""
        now = self._clock()
        expired = [k for k, (at, _) in self._entries.items() if now >= at]
        for key in expired:
            del self._entries[key]

        return len(self._entries)
