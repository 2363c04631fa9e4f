"""The two-level cache on a real Redis: sealed L2, invalidation, a dying Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from sealing import seal_keys

from penin.cache import (
    INVALIDATE_CHANNEL,
    CacheConfigError,
    RedisCache,
    ResponseCache,
    SealKeys,
)
from penin.observability.metrics import REGISTRY
from penin.router.config import CacheConfig
from redisd import RedisCluster3, RedisServer

KEY = "c0ffee" * 10 + "beef"
BODY = b'{"id": "chatcmpl-1", "choices": []}'
PREFIX = "penin:cache:"
DEADLINE_S = 10.0


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def integrity_failures() -> float:
    return sample("penin_cache_integrity_failures_total", level="l2")


def l2_up() -> float:
    return sample("penin_cache_l2_up")


def named(events: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == event]


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds, failing after DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not await check():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.02)


def node(url: str, seal: SealKeys | None = None, ttl_s: float = 60) -> ResponseCache:
    config = CacheConfig(redis_url=url, ttl_s=ttl_s, max_entries=100)

    return ResponseCache(config, seal or seal_keys(("k1", 1)))


def test_a_value_one_node_stores_is_served_from_l2_then_l1_by_another(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.set(KEY, BODY)

        assert await a.get(KEY) == (BODY, "l1")
        assert await b.get(KEY) == (BODY, "l2")
        assert await b.get(KEY) == (BODY, "l1")
        assert await b.get("0" * 64) is None
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_l2_entries_are_sealed_and_expire_with_the_cache_ttl(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        cache = node(redis_server.url, ttl_s=30)
        await cache.set(KEY, BODY)
        await cache.close()

    asyncio.run(scenario())
    raw = redis_server.client()
    stored = raw.get(PREFIX + KEY)

    assert isinstance(stored, bytes)
    assert stored != BODY
    assert stored.endswith(BODY)
    assert 29_000 < int(raw.pttl(PREFIX + KEY)) <= 30_000  # type: ignore[arg-type]


@pytest.mark.parametrize("tamper", ["value", "moved", "garbage"])
def test_a_tampered_l2_entry_is_a_counted_miss_and_never_served(
    redis_server: RedisServer, events: list[dict[str, Any]], tamper: str
) -> None:
    raw = redis_server.client()

    async def store() -> None:
        writer = node(redis_server.url)
        await writer.set(KEY, BODY)
        await writer.set("f" * 64, b'{"other": true}')
        await writer.close()

    asyncio.run(store())
    sealed = raw.get(PREFIX + KEY)
    assert isinstance(sealed, bytes)
    if tamper == "value":
        raw.set(PREFIX + KEY, sealed.replace(b"chatcmpl-1", b"chatcmpl-2"))
    elif tamper == "moved":
        raw.set(PREFIX + KEY, raw.get(PREFIX + "f" * 64))  # type: ignore[arg-type]
    else:
        raw.set(PREFIX + KEY, b"\x00not a seal")
    before = integrity_failures()

    async def read() -> tuple[bytes, str] | None:
        reader = node(redis_server.url)
        found = await reader.get(KEY)
        again = await reader.get(KEY)
        await reader.close()
        assert again is None  # the bad value did not reach L1 either
        return found

    assert asyncio.run(read()) is None
    assert integrity_failures() == before + 2
    failed = named(events, "cache.integrity_failed")
    assert [e["cache_key"] for e in failed] == [KEY, KEY]


def test_rotated_keys_open_old_values_only_while_the_old_key_is_listed(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        old = node(redis_server.url, seal_keys(("k0", 1)))
        await old.set(KEY, BODY)
        await old.close()
        rotating = node(redis_server.url, seal_keys(("k1", 2), ("k0", 1)))
        rotated = node(redis_server.url, seal_keys(("k1", 2)))
        before = integrity_failures()

        assert await rotating.get(KEY) == (BODY, "l2")
        assert await rotated.get(KEY) is None
        assert integrity_failures() == before + 1

        await rotating.set(KEY, BODY)  # now sealed under k1
        assert await rotated.get(KEY) == (BODY, "l2")
        await rotating.close()
        await rotated.close()

    asyncio.run(scenario())


def test_an_invalidation_drops_the_entry_from_every_nodes_l1(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        await a.set(KEY, BODY)
        assert await b.get(KEY) == (BODY, "l2")
        assert b.l1.get(KEY) == BODY

        await a.invalidate(KEY)

        async def dropped() -> bool:
            return a.l1.get(KEY) is None and b.l1.get(KEY) is None

        await eventually(dropped, "both L1s dropped the invalidated key")
        assert await b.get(KEY) is None
        assert redis_server.client().exists(PREFIX + KEY) == 0
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_a_killed_redis_turns_every_call_into_a_quick_miss_with_one_warning(
    redis_server: RedisServer, events: list[dict[str, Any]]
) -> None:
    async def scenario() -> None:
        cache = node(redis_server.url)
        await cache.start()
        await cache.set(KEY, BODY)
        assert l2_up() == 1
        redis_server.kill()
        started = time.monotonic()

        for i in range(20):
            assert await cache.l2.get(KEY) is None  # type: ignore[union-attr]
            await cache.set(f"{i:064x}", BODY)
            assert await cache.get("e" * 64) is None
        await cache.invalidate(KEY)

        assert time.monotonic() - started < 2.0
        assert l2_up() == 0
        assert len(named(events, "cache.l2_unreachable")) == 1
        await cache.close()

    asyncio.run(scenario())


def test_a_restarted_redis_is_used_again_without_anyone_acting(
    redis_server: RedisServer, events: list[dict[str, Any]]
) -> None:
    async def scenario() -> None:
        a, b = node(redis_server.url), node(redis_server.url)
        await a.start()
        await b.start()
        await a.set(KEY, BODY)
        assert await b.get(KEY) == (BODY, "l2")
        redis_server.kill()

        async def down() -> bool:
            return l2_up() == 0

        await eventually(down, "the subscribers noticed the dead Redis")
        redis_server.start()  # same port, empty: no persistence

        async def recovered() -> bool:
            return a.l2.health.up and b.l2.health.up  # type: ignore[union-attr]

        await eventually(recovered, "both nodes are back on Redis")
        assert l2_up() == 1
        assert named(events, "cache.l2_recovered")
        # Invalidations sent while Redis was away were lost: B dropped its L1.
        assert b.l1.get(KEY) is None

        await a.set(KEY, BODY)
        assert await b.get(KEY) == (BODY, "l2")
        await a.invalidate(KEY)

        async def dropped() -> bool:
            return b.l1.get(KEY) is None

        await eventually(dropped, "the resubscribed node got the invalidation")
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_a_hung_redis_costs_a_request_at_most_the_short_timeout(
    redis_server: RedisServer,
) -> None:
    async def scenario() -> None:
        cache = node(redis_server.url)
        await cache.set(KEY, BODY)
        cache.l1.clear()
        redis_server.pause()
        try:
            started = time.monotonic()
            assert await cache.get(KEY) is None
            assert time.monotonic() - started < 1.5
            assert l2_up() == 0
        finally:
            redis_server.resume()
        await cache.close()

    asyncio.run(scenario())


def test_a_node_started_while_redis_is_down_starts_and_misses(tmp_path: Any) -> None:
    stopped = RedisServer(tmp_path / "never-started")

    async def scenario() -> None:
        cache = node(stopped.url)
        started = time.monotonic()
        await cache.start()
        await cache.set(KEY, BODY)
        cache.l1.clear()

        assert await cache.get(KEY) is None
        assert time.monotonic() - started < 2.0
        assert l2_up() == 0
        await cache.close()

    asyncio.run(scenario())


def test_redis_without_seal_keys_is_refused_naming_the_variable() -> None:
    config = CacheConfig(redis_url="redis://127.0.0.1:1")

    with pytest.raises(CacheConfigError, match="PENIN_CACHE_SEAL_KEYS"):
        ResponseCache(config, None)


def test_an_unknown_url_scheme_is_refused_without_showing_the_password() -> None:
    with pytest.raises(CacheConfigError, match="redis\\+cluster://") as caught:
        RedisCache("http://user:hunter2@127.0.0.1:1", seal_keys(("k1", 1)), 60)

    assert "hunter2" not in str(caught.value)


def test_without_redis_the_cache_is_l1_only() -> None:
    async def scenario() -> None:
        cache = ResponseCache(CacheConfig(max_entries=10), None)
        await cache.start()
        await cache.set(KEY, BODY)

        assert await cache.get(KEY) == (BODY, "l1")
        await cache.invalidate(KEY)
        assert await cache.get(KEY) is None
        await cache.close()

    asyncio.run(scenario())


def test_a_zero_ttl_turns_the_cache_off() -> None:
    async def scenario() -> None:
        cache = ResponseCache(CacheConfig(ttl_s=0, redis_url="redis://x:1"), None)
        await cache.set(KEY, BODY)

        assert await cache.get(KEY) is None

    asyncio.run(scenario())


def test_on_redis_cluster_values_and_invalidations_reach_every_node(
    redis_cluster: RedisCluster3,
) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    keys = [f"{i:064x}" for i in range(20)]  # spread over the three primaries

    async def scenario() -> None:
        a, b = node(url), node(url)
        await a.start()
        await b.start()
        for key in keys:
            await a.set(key, BODY + key.encode())
        for key in keys:
            assert await b.get(key) == (BODY + key.encode(), "l2")

        await a.invalidate(keys[0])

        async def dropped() -> bool:
            return b.l1.get(keys[0]) is None

        await eventually(dropped, "the other node dropped the invalidated key")
        assert await b.get(keys[0]) is None
        assert await b.get(keys[1]) == (BODY + keys[1].encode(), "l1")
        await a.close()
        await b.close()

    asyncio.run(scenario())


def test_the_invalidation_channel_carries_the_bare_cache_key(
    redis_server: RedisServer,
) -> None:
    pubsub = redis_server.client().pubsub()
    pubsub.subscribe(INVALIDATE_CHANNEL)
    assert pubsub.get_message(timeout=2)["type"] == "subscribe"  # type: ignore[index]

    async def scenario() -> None:
        cache = node(redis_server.url)
        await cache.invalidate(KEY)
        await cache.close()

    asyncio.run(scenario())
    message = pubsub.get_message(timeout=2)
    pubsub.close()

    assert message is not None
    assert message["data"] == KEY.encode()
