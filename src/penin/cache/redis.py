"""The L2 cache: sealed values in Redis (or Redis Cluster), shared by every node.

Values are stored sealed (see ``penin.cache.seal``) under ``prefix + key`` with
a PX expiry. One that does not open is a miss, counted and logged with its
cache key, and is never served. ``invalidate`` deletes a key and publishes it
on ``penin:cache:invalidate``; every node's subscriber hands it to its L1.

Redis being unreachable is never the caller's problem: each operation is
bounded by a short timeout and then degrades to a miss or a no-op. The first
failure sets ``penin_cache_l2_up`` to 0 and warns (at most once per
``warn_every_s``); from then on Redis is tried again only every
``retry_after_s``, so a dead Redis costs a request nothing. The first call
that succeeds again, or the subscriber getting back in, sets it to 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import structlog
from redis.asyncio.client import PubSub

from penin.cache.connection import FAILURES, MAX_IN_FLIGHT, connect, redact
from penin.cache.seal import SealKeys
from penin.observability.metrics import CACHE_METRICS, NODE_METRICS

log = structlog.get_logger("penin.cache")

T = TypeVar("T")

INVALIDATE_CHANNEL = "penin:cache:invalidate"
# An idle subscription is checked with a PING this often; one that has heard
# nothing for three periods is taken as dead (a half-open TCP connection).
PING_EVERY_S = 5.0
BACKOFF_FIRST_S = 0.1
BACKOFF_MAX_S = 5.0


class L2Health:
    """Whether Redis answers, with rate-limited warnings and a retry pause."""

    def __init__(
        self,
        where: str,
        *,
        warn_every_s: float,
        retry_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where = where
        self.up = True
        self._warn_every_s = warn_every_s
        self._retry_after_s = retry_after_s
        self._clock = clock
        self._warned_at: float | None = None
        self._retry_at = 0.0

    def may_try(self) -> bool:
        return self.up or self._clock() >= self._retry_at

    def failed(self, operation: str, error: BaseException) -> None:
        now = self._clock()
        NODE_METRICS.errors.labels("cache").inc()
        CACHE_METRICS.l2_up.set(0)
        self.up = False
        self._retry_at = now + self._retry_after_s
        if self._warned_at is None or now - self._warned_at >= self._warn_every_s:
            self._warned_at = now
            log.warning(
                "cache.l2_unreachable",
                redis=self.where,
                operation=operation,
                error=str(error) or type(error).__name__,
            )

    def succeeded(self) -> None:
        CACHE_METRICS.l2_up.set(1)
        if not self.up:
            self.up = True
            log.info("cache.l2_recovered", redis=self.where)


class RedisCache:
    """Sealed bytes by cache key in Redis; see the module docstring."""

    def __init__(
        self,
        url: str,
        seal: SealKeys,
        ttl_s: float,
        prefix: str = "penin:cache:",
        *,
        timeout_s: float = 0.25,
        warn_every_s: float = 30.0,
        retry_after_s: float = 1.0,
    ) -> None:
        self.seal = seal
        self.ttl_s = ttl_s
        self.prefix = prefix
        self.health = L2Health(
            redact(url), warn_every_s=warn_every_s, retry_after_s=retry_after_s
        )
        # One retry, so that a pooled connection Redis dropped (a restart) is
        # replaced within the call instead of costing a miss.
        self._client = connect(url, timeout_s=timeout_s, retries=1)
        self._timeout_s = timeout_s
        # A hard bound on one operation, whatever the client's own retries do.
        self._deadline_s = 4 * timeout_s
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._listener: asyncio.Task[None] | None = None
        self._first_attempt = asyncio.Event()

    # -- values ------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        found = await self.get_with_ttl(key)

        return None if found is None else found[0]

    async def get_with_ttl(self, key: str) -> tuple[bytes, float] | None:
        """The value and the seconds it has left in Redis, or None on a miss."""
        reply = await self._call("get", lambda: self._fetch(self.prefix + key), None)
        if reply is None:
            return None
        sealed, ttl_ms = reply
        opened = self.seal.verify(key, sealed)
        if opened.value is None:
            CACHE_METRICS.integrity_failures.labels("l2").inc()
            log.warning(
                "cache.integrity_failed",
                cache_key=key,
                reason=opened.reason,
                kid=opened.kid,
            )
            return None

        return opened.value, (ttl_ms / 1000 if ttl_ms > 0 else self.ttl_s)

    async def _fetch(self, name: str) -> tuple[bytes, int] | None:
        # One round trip; GET and PTTL of one key always go to one node.
        async with self._client.pipeline(transaction=False) as pipe:
            pipe.get(name)
            pipe.pttl(name)
            sealed, ttl_ms = await pipe.execute()
        if not isinstance(sealed, bytes):
            return None

        return sealed, int(ttl_ms)

    async def set(self, key: str, value: bytes) -> None:
        expiry_ms = round(self.ttl_s * 1000)
        if expiry_ms <= 0:
            return
        name, sealed = self.prefix + key, self.seal.seal(key, value)
        await self._call(
            "set", lambda: self._client.set(name, sealed, px=expiry_ms), None
        )

    async def invalidate(self, key: str) -> bool:
        """Delete ``key`` here and tell every node to drop it from its L1.

        False when Redis did not answer: the entry may still be served.
        """
        return await self._call(
            "invalidate", lambda: self._delete_and_publish(key), False
        )

    async def _delete_and_publish(self, key: str) -> bool:
        await self._client.delete(self.prefix + key)
        await self._client.publish(INVALIDATE_CHANNEL, key)

        return True

    async def ping(self) -> bool:
        return bool(await self._call("ping", self._ping, False))

    async def _ping(self) -> bool:
        return bool(await self._client.ping())

    async def _call(
        self, operation: str, call: Callable[[], Awaitable[T]], default: T
    ) -> T:
        if not self.health.may_try():
            return default
        try:
            async with asyncio.timeout(self._deadline_s), self._in_flight:
                result = await call()
        except FAILURES as exc:
            self.health.failed(operation, exc)
            return default
        self.health.succeeded()

        return result

    # -- invalidations -----------------------------------------------------

    async def start(
        self,
        on_invalidate: Callable[[str], None],
        on_gap: Callable[[], None] | None = None,
    ) -> None:
        """Subscribe to invalidations; returns once the first attempt is over.

        ``on_invalidate`` gets every invalidated cache key. ``on_gap`` is
        called each time the subscription is back after a break, since keys
        invalidated meanwhile were missed; the L1 drops everything then.
        """
        if self._listener is not None:
            return
        await self.ping()
        self._listener = asyncio.create_task(
            self._listen(on_invalidate, on_gap), name="penin-cache-invalidations"
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._deadline_s):
                await self._first_attempt.wait()

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        with contextlib.suppress(*FAILURES):
            await self._client.aclose()

    async def _listen(
        self, on_invalidate: Callable[[str], None], on_gap: Callable[[], None] | None
    ) -> None:
        delay = BACKOFF_FIRST_S
        broken = False
        while True:
            try:
                async with self._subscription() as pubsub:
                    self.health.succeeded()
                    self._first_attempt.set()
                    delay = BACKOFF_FIRST_S
                    if broken and on_gap is not None:
                        _safely("cache.gap_failed", on_gap)
                    await self._read(pubsub, on_invalidate)
            except FAILURES as exc:
                self.health.failed("subscribe", exc)
            broken = True
            self._first_attempt.set()
            # Full jitter, so that nodes do not all come back at one instant.
            await asyncio.sleep(random.uniform(0, delay))  # noqa: S311
            delay = min(delay * 2, BACKOFF_MAX_S)

    @contextlib.asynccontextmanager
    async def _subscription(self) -> AsyncIterator[PubSub]:
        pubsub: PubSub = self._client.pubsub()
        try:
            async with asyncio.timeout(self._deadline_s):
                await pubsub.subscribe(INVALIDATE_CHANNEL)
                while True:
                    message = await pubsub.get_message(timeout=self._timeout_s)
                    if message is not None and message["type"] == "subscribe":
                        break
            yield pubsub
        finally:
            with contextlib.suppress(*FAILURES):
                async with asyncio.timeout(self._deadline_s):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def _read(self, pubsub: PubSub, on_invalidate: Callable[[str], None]) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        while True:
            message = await pubsub.get_message(
                ignore_subscribe_messages=True, timeout=1.0
            )
            now = loop.time()
            if message is not None:
                heard = now
                if message["type"] == "message":
                    key = _text(message["data"])
                    _safely("cache.invalidation_failed", on_invalidate, key)
            if now - heard > 3 * PING_EVERY_S:
                raise TimeoutError(f"no answer to PING for {3 * PING_EVERY_S} s")
            if now - pinged >= PING_EVERY_S:
                pinged = now
                await pubsub.ping()


def _text(data: object) -> str:
    return data.decode(errors="replace") if isinstance(data, bytes) else str(data)


def _safely(event: str, callback: Callable[..., None], *args: str) -> None:
    try:
        callback(*args)
    except Exception as exc:  # a faulty handler must not end the subscription
        NODE_METRICS.errors.labels("cache").inc()
        log.error(event, args=list(args), error=repr(exc))
