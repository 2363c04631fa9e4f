"""The L1 cache: what it returns, when entries expire, which one leaves first."""

from __future__ import annotations

from penin.cache import MemoryCache


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_stored_value_is_returned_until_its_ttl_passes() -> None:
    clock = Clock()
    cache = MemoryCache(10, ttl_s=60, clock=clock)
    cache.set("k", b"v")

    clock.now += 59.9
    assert cache.get("k") == b"v"

    clock.now += 0.1
    assert cache.get("k") is None
    assert len(cache) == 0


def test_when_full_the_least_recently_used_entry_leaves_first() -> None:
    cache = MemoryCache(2, ttl_s=60, clock=Clock())
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # now "b" is the least recently used

    cache.set("c", b"3")

    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"
    assert len(cache) == 2


def test_setting_a_key_again_replaces_its_value_and_ttl() -> None:
    clock = Clock()
    cache = MemoryCache(10, ttl_s=60, clock=clock)
    cache.set("k", b"old")
    clock.now += 50
    cache.set("k", b"new")

    clock.now += 50
    assert cache.get("k") == b"new"
    assert len(cache) == 1


def test_a_shorter_ttl_for_one_entry_is_kept_and_a_longer_one_is_capped() -> None:
    clock = Clock()
    cache = MemoryCache(10, ttl_s=60, clock=clock)
    cache.set("short", b"1", ttl_s=5)
    cache.set("long", b"2", ttl_s=600)

    clock.now += 5
    assert cache.get("short") is None
    assert cache.get("long") == b"2"

    clock.now += 55
    assert cache.get("long") is None


def test_deleted_and_cleared_entries_are_gone() -> None:
    cache = MemoryCache(10, ttl_s=60, clock=Clock())
    for key in "abc":
        cache.set(key, key.encode())

    cache.delete("a")
    cache.delete("missing")
    assert cache.get("a") is None
    assert len(cache) == 2

    cache.clear()
    assert cache.get("b") is None
    assert len(cache) == 0


def test_max_entries_zero_turns_the_cache_off() -> None:
    cache = MemoryCache(0, ttl_s=60, clock=Clock())
    cache.set("k", b"v")

    assert cache.get("k") is None
    assert len(cache) == 0
