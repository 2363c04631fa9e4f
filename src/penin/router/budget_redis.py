"""Budget counters in Redis, so that every node of a cluster shares one budget.

For a UTC day D the store keeps, all under the hash tag ``{D}`` so that a
script's keys sit in one slot of a Redis Cluster:

- ``penin:budget:{D}:global``: nano-USD settled plus reserved, everyone;
- ``penin:budget:{D}:key:<key id>``: the same for one API key;
- ``penin:budget:{D}:reservation:<id>``: the amount of an open reservation;
- ``penin:budget:{D}:seeded:<ledger id>``: present once that ledger's
  ``router.request`` records of the day have been added to the counters.

Each operation is one Lua script, so check-and-add is atomic across nodes.
Counters change only by INCRBY/DECRBY of decimal strings, never through a
float; the limit check compares in Lua numbers, exact up to 2^53 nano-USD
(about 9 million USD a day). A reservation's key is written by the script
that reserves and deleted by the one that settles or releases it, so each of
those applies once, and a retried reserve (same id) adds nothing twice. Every
key expires 48 hours after its last write. A node that dies with a
reservation open leaves it counted until the day's keys expire: the budget
errs on the side of spending less.

Seeding adds a node's ledger totals once per ledger and day, so nodes with
ledgers of their own add up, and nodes sharing one ledger (its origin names
it) count it once. A store given a ledger id refuses to reserve, with
:class:`DayNotSeededError`, while that ledger's seed of the day is missing: a
Redis that restarted empty, or a new day, is seeded again from the ledger
before anything is admitted, instead of starting the day's count from zero.

Budgets fail closed: when Redis does not answer, every operation raises
:class:`BudgetUnavailableError`, and the router sends nothing upstream.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import structlog
from redis.commands.core import AsyncScript

from penin.cache.connection import FAILURES, BoundedRedis
from penin.router.budget import (
    BudgetUnavailableError,
    DayNotSeededError,
    Limits,
    Reservation,
    Spend,
    new_reservation_id,
)
from penin.router.errors import BudgetExceededError
from penin.router.prices import usd

log = structlog.get_logger("penin.router.budget")

T = TypeVar("T")

PREFIX = "penin:budget:"
DAY_TTL_MS = 48 * 3600 * 1000
_DAY = re.compile(r"\d{4}-\d{2}-\d{2}")
_SCOPES = {-1: "global", -2: "key"}
_NOT_SEEDED = -3

# KEYS: global, key, reservation, seed mark. ARGV: amount, global limit, key
# limit ("" for none), ttl, "1" to require the seed mark. Returns {status,
# global, key}: 1 reserved (or had been, by this id), -1/-2 refused by the
# global/key limit, -3 refused for want of the seed mark; totals as strings.
_RESERVE = """
local g = redis.call('GET', KEYS[1]) or '0'
local k = redis.call('GET', KEYS[2]) or '0'
if redis.call('EXISTS', KEYS[3]) == 1 then
  return {1, g, k}
end
if ARGV[5] ~= '' and redis.call('EXISTS', KEYS[4]) == 0 then
  return {-3, g, k}
end
local amount = tonumber(ARGV[1])
if ARGV[2] ~= '' and tonumber(g) + amount > tonumber(ARGV[2]) then
  return {-1, g, k}
end
if ARGV[3] ~= '' and tonumber(k) + amount > tonumber(ARGV[3]) then
  return {-2, g, k}
end
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('INCRBY', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[4])
return {1, redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""

# KEYS: global, key, reservation. ARGV: actual amount ("0" to release), ttl.
# Returns 1 when applied, 0 when the reservation was already closed.
_SETTLE = """
local reserved = redis.call('GET', KEYS[3])
if not reserved then
  return 0
end
for i = 1, 2 do
  redis.call('DECRBY', KEYS[i], reserved)
  redis.call('INCRBY', KEYS[i], ARGV[1])
  redis.call('PEXPIRE', KEYS[i], ARGV[2])
end
redis.call('DEL', KEYS[3])
return 1
"""

# KEYS: seed mark, global, then one per key. ARGV: ttl, global total, then
# one per key. Returns 1 when added, 0 when this ledger had been added.
_SEED = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
for i = 2, #KEYS do
  redis.call('INCRBY', KEYS[i], ARGV[i])
  redis.call('PEXPIRE', KEYS[i], ARGV[1])
end
return 1
"""


class RedisBudgetStore:
    """A BudgetStore on Redis or Redis Cluster (``redis+cluster://``).

    ``ledger_id`` names the ledger this node seeds from; without it (a
    read-only client such as ``penin budget status``) nothing requires a seed.
    """

    def __init__(
        self,
        url: str,
        *,
        ledger_id: str | None = None,
        timeout_s: float = 1.0,
        warn_every_s: float = 30.0,
    ) -> None:
        # One retry is safe: every script is idempotent per reservation id.
        self._redis = BoundedRedis(
            url,
            log=log,
            event="budget.store_unreachable",
            timeout_s=timeout_s,
            warn_every_s=warn_every_s,
            retries=1,
        )
        self.where = self._redis.where
        self.ledger_id = ledger_id
        client = self._redis.client
        self._reserve = client.register_script(_RESERVE)
        self._settle = client.register_script(_SETTLE)
        self._seed = client.register_script(_SEED)

    async def reserve(
        self, day: str, key_id: str, amount_nusd: int, limits: Limits
    ) -> Reservation:
        _check_amount(amount_nusd)
        reservation_id = new_reservation_id()
        keys = [
            *_counters(day, key_id),
            _reservation(day, reservation_id),
            self._seed_mark(day),
        ]
        args = [
            amount_nusd,
            _limit(limits.global_nusd),
            _limit(limits.key_nusd),
            DAY_TTL_MS,
            "" if self.ledger_id is None else "1",
        ]
        status, global_text, key_text = await self._run(
            "reserve", self._script(self._reserve, keys, args)
        )
        if status == _NOT_SEEDED:
            raise DayNotSeededError(self.where, day)
        global_nusd, key_nusd = int(global_text), int(key_text)
        if status in _SCOPES:
            scope = _SCOPES[status]
            limit = limits.global_nusd if scope == "global" else limits.key_nusd
            committed = global_nusd if scope == "global" else key_nusd
            raise BudgetExceededError(scope, usd(limit or 0), usd(committed))
        soft_scope = limits.soft_scope(global_nusd, key_nusd)

        return Reservation(
            reservation_id, day, key_id, amount_nusd, soft_scope is not None, soft_scope
        )

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        _check_amount(actual_nusd)
        await self._close("settle", reservation, actual_nusd)

    async def release(self, reservation: Reservation) -> None:
        await self._close("release", reservation, 0)

    async def _close(
        self, operation: str, reservation: Reservation, actual_nusd: int
    ) -> None:
        day = reservation.day
        keys = [
            *_counters(day, reservation.key_id),
            _reservation(day, reservation.reservation_id),
        ]
        await self._run(
            operation, self._script(self._settle, keys, [actual_nusd, DAY_TTL_MS])
        )

    async def spend(self, day: str, key_id: str | None) -> Spend:
        global_key, key_key = _counters(day, key_id or "")
        names = [global_key] if key_id is None else [global_key, key_key]
        values = await self._run("spend", lambda: self._redis.client.mget(names))
        totals = [int(v) if v is not None else 0 for v in values]

        return Spend(day, totals[0], totals[1] if key_id is not None else 0)

    async def seed(self, day: str, global_nusd: int, per_key: dict[str, int]) -> None:
        keys = [self._seed_mark(day), _counters(day, "")[0]]
        keys += [_counters(day, k)[1] for k in per_key]
        args = [DAY_TTL_MS, global_nusd, *per_key.values()]
        await self._run("seed", self._script(self._seed, keys, args))

    def _seed_mark(self, day: str) -> str:
        return f"{_day_tag(day)}:seeded:{self.ledger_id or ''}"

    async def close(self) -> None:
        await self._redis.close()

    def _script(
        self, script: AsyncScript, keys: list[str], args: list[Any]
    ) -> Callable[[], Awaitable[Any]]:
        return lambda: script(keys=keys, args=args)

    async def _run(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        try:
            return await self._redis.call(operation, call)
        except FAILURES as exc:
            raise BudgetUnavailableError(self.where, operation, exc) from exc


def _day_tag(day: str) -> str:
    if not _DAY.fullmatch(day):
        raise ValueError(f"a budget day is YYYY-MM-DD, not {day!r}")

    return f"{PREFIX}{{{day}}}"


def _counters(day: str, key_id: str) -> tuple[str, str]:
    tag = _day_tag(day)

    return f"{tag}:global", f"{tag}:key:{key_id}"


def _reservation(day: str, reservation_id: str) -> str:
    return f"{_day_tag(day)}:reservation:{reservation_id}"


def _limit(limit_nusd: int | None) -> str:
    return "" if limit_nusd is None else str(limit_nusd)


def _check_amount(amount_nusd: int) -> None:
    if amount_nusd < 0:
        raise ValueError(f"a budget amount cannot be negative, got {amount_nusd}")
