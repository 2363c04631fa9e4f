"""rpm/tpm windows in Redis, so that a deployment's limit holds across all nodes.

Limits counted in each node admit N × rpm between N nodes. With a shared
store configured (``budget.redis_url``, else ``cache.redis_url``), each
limited deployment's window is one Redis hash, ``penin:rate:{<deployment>}``,
whose fields count the requests (``r:<second>``) and tokens (``t:<second>``)
sent in each Unix second. One Lua script sums the last 60 seconds, checks both
limits and counts the request, so the nodes together admit at most ``rpm``
requests a minute. Seconds come from each node's clock: nodes kept in step by
NTP put a request in the same or the neighbouring bucket.

When Redis does not answer, a window counts in this node alone (limits then
hold per node, as they would without Redis) and warns once per interval. A
rate limit protects a provider's quota, and counting per node for a while is
better than refusing all traffic; budgets, which protect money, fail closed
instead (``budget_redis``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from penin.cache.connection import FAILURES, BoundedRedis
from penin.router.limits import WINDOW_S, RateWindow, UsageWindow

log = structlog.get_logger("penin.router")

PREFIX = "penin:rate:"
TTL_MS = 2 * WINDOW_S * 1000
# A shared window's last answer serves as a hint for skipping and ordering
# deployments for this long; after that, only acquiring again can tell.
HINT_S = 1.0

# KEYS: the window. ARGV: second, tokens, rpm ("" for none), tpm ("" for
# none), ttl. Returns {1 counted | 0 refused, requests, tokens} over the 60
# seconds up to ARGV[1], this request included when counted.
_ACQUIRE = """
local now = tonumber(ARGV[1])
local fields = redis.call('HGETALL', KEYS[1])
local requests, tokens, stale = 0, 0, {}
for i = 1, #fields, 2 do
  local second = tonumber(string.sub(fields[i], 3))
  if second <= now - 60 then
    table.insert(stale, fields[i])
  elseif string.sub(fields[i], 1, 1) == 'r' then
    requests = requests + tonumber(fields[i + 1])
  else
    tokens = tokens + tonumber(fields[i + 1])
  end
end
if #stale > 0 then
  redis.call('HDEL', KEYS[1], unpack(stale))
end
local want = tonumber(ARGV[2])
if (ARGV[3] ~= '' and requests + 1 > tonumber(ARGV[3]))
    or (ARGV[4] ~= '' and tokens + want > tonumber(ARGV[4])) then
  return {0, requests, tokens}
end
redis.call('HINCRBY', KEYS[1], 'r:' .. ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], 't:' .. ARGV[1], want)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {1, requests + 1, tokens + want}
"""

# KEYS: the window. ARGV: second, delta, ttl. More tokens than estimated
# count in this second; fewer are taken back from the newest seconds first,
# never below zero, as the local window does.
_ADJUST = """
local now = tonumber(ARGV[1])
local delta = tonumber(ARGV[2])
if delta >= 0 then
  redis.call('HINCRBY', KEYS[1], 't:' .. now, delta)
else
  local owed = -delta
  for second = now, now - 59, -1 do
    if owed == 0 then
      break
    end
    local field = 't:' .. second
    local taken = math.min(owed, tonumber(redis.call('HGET', KEYS[1], field) or '0'))
    if taken > 0 then
      redis.call('HINCRBY', KEYS[1], field, -taken)
      owed = owed - taken
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""


class SharedRates:
    """One Redis client for all the shared windows of a node."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 1.0,
        warn_every_s: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = BoundedRedis(
            url,
            log=log,
            event="rate_window.store_unreachable",
            timeout_s=timeout_s,
            warn_every_s=warn_every_s,
            fallback="limits counted per node",
        )
        self.where = self._redis.where
        self.clock = clock
        self.acquire_script = self._redis.client.register_script(_ACQUIRE)
        self.adjust_script = self._redis.client.register_script(_ADJUST)

    def window(self, deployment: str, rpm: int | None, tpm: int | None) -> RateWindow:
        """A shared window when the deployment has a limit, else a local one."""
        if rpm is None and tpm is None:
            return UsageWindow(None, None)

        return SharedUsageWindow(self, deployment, rpm, tpm)

    async def run(self, operation: str, call: Callable[[], Awaitable[Any]]) -> Any:
        """``call``'s answer, or None when Redis failed (warned once per interval)."""
        try:
            return await self._redis.call(operation, call)
        except FAILURES:
            return None

    async def close(self) -> None:
        await self._redis.close()


class SharedUsageWindow:
    """One deployment's window in Redis, with a local window to fall back on."""

    def __init__(
        self, rates: SharedRates, deployment: str, rpm: int | None, tpm: int | None
    ) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._rates = rates
        self._key = f"{PREFIX}{{{deployment}}}"
        self._local = UsageWindow(rpm, tpm)
        self._seen = (0, 0)  # requests and tokens in the window at the last answer
        self._seen_at = -math.inf

    def has_room(self, tokens: int) -> bool:
        if time.monotonic() - self._seen_at > HINT_S:
            return True
        requests, used = self._seen

        return _fits(requests + 1, self.rpm) and _fits(used + tokens, self.tpm)

    def headroom(self) -> float:
        if time.monotonic() - self._seen_at > HINT_S:
            return 1.0
        requests, used = self._seen
        fractions = [1.0]
        if self.rpm is not None:
            fractions.append(1.0 - requests / self.rpm)
        if self.tpm is not None:
            fractions.append(1.0 - used / self.tpm)

        return max(0.0, min(fractions))

    async def acquire(self, tokens: int) -> bool:
        args: list[int | str] = [
            self._second(),
            tokens,
            _limit(self.rpm),
            _limit(self.tpm),
            TTL_MS,
        ]
        script = self._rates.acquire_script
        answer = await self._rates.run(
            "acquire", lambda: script(keys=[self._key], args=args)
        )
        if answer is None:
            return await self._local.acquire(tokens)
        counted, requests, used = (int(v) for v in answer)
        self._seen = (requests, used)
        self._seen_at = time.monotonic()

        return counted == 1

    async def adjust(self, delta: int) -> None:
        args: list[int | str] = [self._second(), delta, TTL_MS]
        script = self._rates.adjust_script
        answer = await self._rates.run(
            "adjust", lambda: script(keys=[self._key], args=args)
        )
        if answer is None:
            await self._local.adjust(delta)

    def _second(self) -> int:
        return math.floor(self._rates.clock())


def _fits(count: int, limit: int | None) -> bool:
    return limit is None or count <= limit


def _limit(limit: int | None) -> str:
    return "" if limit is None else str(limit)
