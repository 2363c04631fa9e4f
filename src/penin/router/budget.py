"""Daily budgets: worst-case reservations, settled to the actual cost.

Before a call is sent, its worst-case cost is reserved against the global and
the per-key budget of the UTC day in one atomic check-and-add; a reservation
that would pass a hard limit (100 %) is refused and nothing is sent. One that
reaches the soft limit (``soft_fraction``) succeeds but says so, and the
router then sends the cheapest deployment first. When the call ends the
reservation is settled to the actual cost, or released if the call failed.

Amounts are integers in nano-USD, so counters are exact. A store
(:class:`BudgetStore`) holds the counters: :class:`MemoryBudgetStore` here for
one process, ``budget_redis.RedisBudgetStore`` for nodes that share a budget.
A store that cannot answer raises :class:`BudgetUnavailableError` and nothing
is sent upstream; one that lost a day it had counted raises
:class:`DayNotSeededError`, and the day is seeded again from the ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from penin.router.audit import AUDIT_EVENT
from penin.router.config import BudgetConfig
from penin.router.errors import BudgetExceededError, RouterError
from penin.router.prices import nusd, usd

if TYPE_CHECKING:
    from penin.ledger.ledger import WORMLedger

log = structlog.get_logger("penin.router.budget")

_PAGE = 1000


class BudgetUnavailableError(RouterError):
    """The shared budget store did not answer; nothing may be sent upstream."""

    def __init__(self, where: str, operation: str, error: BaseException) -> None:
        detail = str(error) or type(error).__name__
        super().__init__(
            f"the budget store at {where} failed a {operation} ({detail}); "
            "no request is sent upstream until it does: check that Redis runs "
            "and that this node can reach it"
        )
        self.where = where
        self.operation = operation


class DayNotSeededError(BudgetUnavailableError):
    """The store holds no seed of this node's ledger for the day: it lost the
    day's counters (a Redis restarted without persistence) or the day is new."""

    def __init__(self, where: str, day: str) -> None:
        super().__init__(where, "reserve", RuntimeError(f"day {day} is not seeded"))
        self.day = day


@dataclass(frozen=True)
class Limits:
    """The limits of a day in nano-USD; None means unlimited."""

    global_nusd: int | None
    key_nusd: int | None
    soft_fraction: float

    @classmethod
    def from_config(cls, config: BudgetConfig) -> Limits:
        daily, per_key = config.daily_usd, config.per_key_daily_usd

        return cls(
            global_nusd=None if daily is None else nusd(daily),
            key_nusd=None if per_key is None else nusd(per_key),
            soft_fraction=config.soft_fraction,
        )

    def soft_nusd(self, limit_nusd: int) -> int:
        """The committed amount at which a limit's soft threshold is reached."""
        return math.ceil(Decimal(limit_nusd) * Decimal(repr(self.soft_fraction)))

    def check(self, global_nusd: int, key_nusd: int, amount_nusd: int) -> None:
        """Raise BudgetExceededError if adding ``amount_nusd`` passes a limit."""
        for scope, limit, committed in (
            ("global", self.global_nusd, global_nusd),
            ("key", self.key_nusd, key_nusd),
        ):
            if limit is not None and committed + amount_nusd > limit:
                raise BudgetExceededError(scope, usd(limit), usd(committed))

    def is_soft(self, limit_nusd: int | None, committed_nusd: int) -> bool:
        """Whether ``committed_nusd`` has reached that limit's soft threshold."""
        return limit_nusd is not None and committed_nusd >= self.soft_nusd(limit_nusd)

    def soft_scope(self, global_nusd: int, key_nusd: int) -> str | None:
        """``global`` or ``key`` when that committed amount is at its soft limit."""
        if self.is_soft(self.global_nusd, global_nusd):
            return "global"

        return "key" if self.is_soft(self.key_nusd, key_nusd) else None


@dataclass(frozen=True)
class Reservation:
    reservation_id: str
    day: str  # "YYYY-MM-DD", UTC
    key_id: str
    amount_nusd: int
    soft: bool  # after this reservation, committed >= soft_fraction of a limit
    soft_scope: str | None  # "global" or "key" when soft


@dataclass(frozen=True)
class Spend:
    day: str
    global_nusd: int  # settled + reserved, everyone, that day
    key_nusd: int  # settled + reserved, that key, that day (0 when key_id None)


class BudgetStore(Protocol):
    """The day's counters; every method is atomic against every other caller."""

    async def reserve(
        self, day: str, key_id: str, amount_nusd: int, limits: Limits
    ) -> Reservation:
        """Check both limits and add to both counters, or raise
        BudgetExceededError and add nothing. A store shared by nodes raises
        DayNotSeededError when this node's ledger has not been seeded into
        the day (see ``seed``); the caller seeds it and tries again."""

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        """Replace the reserved amount by the actual one, never refusing; a
        second call for the same reservation does nothing."""

    async def release(self, reservation: Reservation) -> None:
        """Give the reserved amount back; a second call does nothing."""

    async def spend(self, day: str, key_id: str | None) -> Spend: ...

    async def seed(self, day: str, global_nusd: int, per_key: dict[str, int]) -> None:
        """Count the day's settled totals from this node's ledger, once: a
        store that has them already (from this ledger) changes nothing."""

    async def close(self) -> None: ...


def new_reservation_id() -> str:
    return secrets.token_hex(16)


def previous_day(day: str) -> str:
    return (date.fromisoformat(day) - timedelta(days=1)).isoformat()


@dataclass
class _Day:
    global_nusd: int = 0
    keys: dict[str, int] = field(default_factory=dict)


class MemoryBudgetStore:
    """Counters in this process, behind one lock (threads and tasks alike).

    Days older than yesterday are dropped, with their open reservations, by
    the first reservation of a new day.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._days: dict[str, _Day] = {}
        self._open: dict[str, Reservation] = {}
        self._pruned_for = ""

    async def reserve(
        self, day: str, key_id: str, amount_nusd: int, limits: Limits
    ) -> Reservation:
        _check_amount(amount_nusd)
        with self._lock:
            if day != self._pruned_for:
                self._forget_before(previous_day(day))
                self._pruned_for = day
            totals = self._days.setdefault(day, _Day())
            key_nusd = totals.keys.get(key_id, 0)
            limits.check(totals.global_nusd, key_nusd, amount_nusd)
            totals.global_nusd += amount_nusd
            totals.keys[key_id] = key_nusd + amount_nusd
            scope = limits.soft_scope(totals.global_nusd, totals.keys[key_id])
            reservation = Reservation(
                new_reservation_id(), day, key_id, amount_nusd, scope is not None, scope
            )
            self._open[reservation.reservation_id] = reservation

        return reservation

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        _check_amount(actual_nusd)
        self._close(reservation, actual_nusd)

    async def release(self, reservation: Reservation) -> None:
        self._close(reservation, 0)

    async def spend(self, day: str, key_id: str | None) -> Spend:
        with self._lock:
            totals = self._days.get(day, _Day())
            key_nusd = 0 if key_id is None else totals.keys.get(key_id, 0)

            return Spend(day, totals.global_nusd, key_nusd)

    async def seed(self, day: str, global_nusd: int, per_key: dict[str, int]) -> None:
        with self._lock:
            if day not in self._days:
                self._days[day] = _Day(global_nusd, dict(per_key))

    async def close(self) -> None:
        return None

    def _close(self, reservation: Reservation, actual_nusd: int) -> None:
        with self._lock:
            if self._open.pop(reservation.reservation_id, None) is None:
                return
            totals = self._days[reservation.day]
            change = actual_nusd - reservation.amount_nusd
            totals.global_nusd += change
            totals.keys[reservation.key_id] += change

    def _forget_before(self, cutoff: str) -> None:
        for day in [d for d in self._days if d < cutoff]:
            del self._days[day]
        for rid in [r for r, res in self._open.items() if res.day < cutoff]:
            del self._open[rid]


@dataclass(frozen=True)
class BudgetStatus:
    """Today's budgets in USD; committed is settled plus reserved."""

    day: str
    key_id: str | None
    soft_fraction: float
    global_limit_usd: float | None
    global_committed_usd: float
    global_remaining_usd: float | None
    global_soft: bool
    key_limit_usd: float | None
    key_committed_usd: float
    key_remaining_usd: float | None  # None too when no key was asked about
    key_soft: bool

    @property
    def soft_scope(self) -> str | None:
        """The budget whose soft limit is reached, the global one first."""
        if self.global_soft:
            return "global"

        return "key" if self.key_soft else None

    @property
    def remaining_usd(self) -> float | None:
        """What is left under the tightest budget, or None when none applies."""
        both = (self.global_remaining_usd, self.key_remaining_usd)
        left = [r for r in both if r is not None]

        return min(left) if left else None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {
            "soft_scope": self.soft_scope,
            "remaining_usd": self.remaining_usd,
        }


class Budget:
    """The configured daily budgets over a store, on the UTC day of ``clock``."""

    def __init__(
        self,
        config: BudgetConfig,
        store: BudgetStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self._clock = clock
        self._limits = Limits.from_config(config)
        self._ledger: WORMLedger | None = None
        self._seeding = asyncio.Lock()
        self._seeds = 0  # rebuilds so far, so that waiters rebuild only once

    def limits(self) -> Limits:
        return self._limits

    def today(self) -> str:
        return datetime.fromtimestamp(self._clock(), UTC).date().isoformat()

    async def reserve(self, key_id: str, amount_nusd: int) -> Reservation:
        """Reserve a call's worst-case cost; BudgetExceededError if it cannot."""
        day, seeds = self.today(), self._seeds
        try:
            try:
                return await self.store.reserve(day, key_id, amount_nusd, self._limits)
            except DayNotSeededError:
                await self._reseed(seeds)
                return await self.store.reserve(day, key_id, amount_nusd, self._limits)
        except BudgetExceededError as exc:
            log.info(
                "budget.refused",
                scope=exc.scope,
                key_id=key_id,
                amount_usd=usd(amount_nusd),
                committed_usd=exc.committed_usd,
            )
            raise

    async def settle(self, reservation: Reservation, actual_nusd: int) -> None:
        # A call that was made is answered and recorded even if its store
        # went away meanwhile: the reservation stays counted at its worst
        # case, or, if the store lost the day, the record counts it when the
        # day is seeded again.
        with contextlib.suppress(BudgetUnavailableError):
            await self.store.settle(reservation, actual_nusd)

    async def release(self, reservation: Reservation) -> None:
        with contextlib.suppress(BudgetUnavailableError):
            await self.store.release(reservation)

    async def status(self, key_id: str | None) -> BudgetStatus:
        spend = await self.store.spend(self.today(), key_id)
        limits = self._limits
        key_spend = spend.key_nusd if key_id is not None else None

        return BudgetStatus(
            day=spend.day,
            key_id=key_id,
            soft_fraction=limits.soft_fraction,
            global_limit_usd=_usd_or_none(limits.global_nusd),
            global_committed_usd=usd(spend.global_nusd),
            global_remaining_usd=_remaining(limits.global_nusd, spend.global_nusd),
            global_soft=limits.is_soft(limits.global_nusd, spend.global_nusd),
            key_limit_usd=_usd_or_none(limits.key_nusd),
            key_committed_usd=usd(spend.key_nusd),
            key_remaining_usd=None
            if key_spend is None
            else _remaining(limits.key_nusd, key_spend),
            key_soft=key_spend is not None
            and limits.is_soft(limits.key_nusd, key_spend),
        )

    async def rebuild(self, ledger: WORMLedger) -> None:
        """Seed today's settled totals from the ledger's ``router.request`` records.

        A store that does not answer is seeded later, by the first
        reservation that finds the day unseeded.
        """
        self._ledger = ledger
        self._seeds += 1
        day = self.today()
        global_nusd, per_key, records = await asyncio.to_thread(_sum_day, ledger, day)
        try:
            await self.store.seed(day, global_nusd, per_key)
        except BudgetUnavailableError as exc:
            log.warning("budget.rebuild_deferred", day=day, error=str(exc))
            return
        log.info(
            "budget.rebuilt",
            day=day,
            records=records,
            keys=len(per_key),
            global_usd=usd(global_nusd),
        )

    async def _reseed(self, seeds_seen: int) -> None:
        """Seed the day again, unless another task did since ``seeds_seen``."""
        async with self._seeding:
            if self._ledger is not None and self._seeds == seeds_seen:
                await self.rebuild(self._ledger)

    async def close(self) -> None:
        await self.store.close()


def _sum_day(ledger: WORMLedger, day: str) -> tuple[int, dict[str, int], int]:
    """The day's total, its total per key and the records read, page by page."""
    since = f"{day}T00:00:00Z"
    until = f"{(date.fromisoformat(day) + timedelta(days=1)).isoformat()}T00:00:00Z"
    total, records = 0, 0
    per_key: dict[str, int] = {}
    after_seq: int | None = None
    while True:
        page = ledger.query(
            event_type=AUDIT_EVENT,
            since=since,
            until=until,
            after_seq=after_seq,
            limit=_PAGE,
        )
        for record in page:
            cost = record.payload.get("cost_nusd")
            key_id = record.payload.get("key_id")
            if isinstance(cost, int) and not isinstance(cost, bool) and cost > 0:
                total += cost
                if isinstance(key_id, str):
                    per_key[key_id] = per_key.get(key_id, 0) + cost
        records += len(page)
        if len(page) < _PAGE:
            return total, per_key, records
        after_seq = page[-1].seq


def _check_amount(amount_nusd: int) -> None:
    if amount_nusd < 0:
        raise ValueError(f"a budget amount cannot be negative, got {amount_nusd}")


def _usd_or_none(amount_nusd: int | None) -> float | None:
    return None if amount_nusd is None else usd(amount_nusd)


def _remaining(limit_nusd: int | None, committed_nusd: int) -> float | None:
    return None if limit_nusd is None else usd(max(0, limit_nusd - committed_nusd))
