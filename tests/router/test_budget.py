"""Budgets: exact reservations under concurrency, settling, soft limits, restarts."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest

from penin.ledger.ledger import WORMLedger
from penin.router.budget import (
    Budget,
    Limits,
    MemoryBudgetStore,
    Reservation,
)
from penin.router.config import BudgetConfig
from penin.router.errors import BudgetExceededError
from penin.router.prices import nusd

ONE_CENT = nusd(0.01)


class Clock:
    """Wall-clock seconds that move only when a test moves them."""

    def __init__(self, moment: str) -> None:
        self.now = datetime.fromisoformat(moment).timestamp()

    def __call__(self) -> float:
        return self.now


def budget(
    daily_usd: float | None = None,
    per_key_daily_usd: float | None = None,
    clock: Clock | None = None,
) -> Budget:
    config = BudgetConfig(daily_usd=daily_usd, per_key_daily_usd=per_key_daily_usd)
    if clock is None:
        return Budget(config, MemoryBudgetStore())

    return Budget(config, MemoryBudgetStore(), clock)


async def outcomes(
    target: Budget, key_ids: list[str], amount: int
) -> list[Reservation | BudgetExceededError]:
    async def one(key_id: str) -> Reservation | BudgetExceededError:
        await asyncio.sleep(0)
        try:
            return await target.reserve(key_id, amount)
        except BudgetExceededError as exc:
            return exc

    return await asyncio.gather(*(one(k) for k in key_ids))


def committed_usd(target: Budget, key_id: str | None = None) -> tuple[float, float]:
    status = asyncio.run(target.status(key_id))

    return status.global_committed_usd, status.key_committed_usd


# -- concurrency ---------------------------------------------------------------


def test_concurrent_reservations_admit_exactly_what_the_budget_holds() -> None:
    target = budget(daily_usd=0.37)  # 37 reservations of one cent

    results = asyncio.run(outcomes(target, [f"k{i % 7}" for i in range(500)], ONE_CENT))

    admitted = [r for r in results if isinstance(r, Reservation)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert len(admitted) == 37
    assert len(refused) == 463
    assert {e.scope for e in refused} == {"global"}
    assert committed_usd(target) == (0.37, 0.0)


def test_reservations_from_many_threads_never_pass_the_key_limit() -> None:
    target = budget(per_key_daily_usd=0.5)  # 50 reservations of one cent
    start = threading.Barrier(32)
    peaks: list[int] = []

    def reserve_many(_: int) -> int:
        start.wait(timeout=30)
        admitted = 0
        for _ in range(20):
            try:
                asyncio.run(target.reserve("shared", ONE_CENT))
            except BudgetExceededError:
                continue
            admitted += 1
            spend = asyncio.run(target.store.spend(target.today(), "shared"))
            peaks.append(spend.key_nusd)

        return admitted

    with ThreadPoolExecutor(32) as pool:
        admitted = sum(pool.map(reserve_many, range(32)))

    assert admitted == 50
    assert max(peaks) <= nusd(0.5)
    assert committed_usd(target, "shared") == (0.5, 0.5)


# -- settle and release --------------------------------------------------------


def test_settling_lower_gives_the_difference_back() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> Reservation:
        worst_case = await target.reserve("a", nusd(0.8))
        await target.settle(worst_case, nusd(0.3))
        return await target.reserve("a", nusd(0.7))

    second = asyncio.run(scenario())

    assert second.amount_nusd == nusd(0.7)
    assert committed_usd(target, "a") == (1.0, 1.0)


def test_settling_higher_grows_past_the_limit_and_refuses_what_follows() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> None:
        reservation = await target.reserve("a", nusd(0.5))
        await target.settle(reservation, nusd(1.2))
        await target.reserve("a", 0)

    with pytest.raises(BudgetExceededError) as caught:
        asyncio.run(scenario())

    assert caught.value.committed_usd == 1.2
    status = asyncio.run(target.status("a"))
    assert status.global_committed_usd == 1.2
    assert status.remaining_usd == 0.0


def test_a_released_reservation_costs_nothing() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> None:
        reservation = await target.reserve("a", nusd(1.0))
        await target.release(reservation)

    asyncio.run(scenario())

    assert committed_usd(target, "a") == (0.0, 0.0)


def test_settling_or_releasing_twice_counts_once() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> None:
        settled = await target.reserve("a", nusd(0.5))
        await target.settle(settled, nusd(0.2))
        await target.settle(settled, nusd(0.4))
        await target.release(settled)
        released = await target.reserve("a", nusd(0.3))
        await target.release(released)
        await target.release(released)
        await target.settle(released, nusd(0.3))

    asyncio.run(scenario())

    assert committed_usd(target, "a") == (0.2, 0.2)


# -- hard and soft limits ------------------------------------------------------


def test_a_reservation_may_fill_the_budget_to_the_last_nano_usd() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> None:
        await target.reserve("a", nusd(1.0))
        await target.reserve("a", 1)

    with pytest.raises(BudgetExceededError) as caught:
        asyncio.run(scenario())

    assert (caught.value.scope, caught.value.limit_usd) == ("global", 1.0)
    assert "1.000000 USD" in str(caught.value)


def test_the_key_limit_refuses_one_key_while_others_go_on() -> None:
    target = budget(daily_usd=10.0, per_key_daily_usd=1.0)

    async def scenario() -> Reservation:
        await target.reserve("greedy", nusd(1.0))
        with pytest.raises(BudgetExceededError) as caught:
            await target.reserve("greedy", ONE_CENT)
        assert caught.value.scope == "key"
        return await target.reserve("modest", ONE_CENT)

    assert asyncio.run(scenario()).key_id == "modest"


def test_reaching_95_percent_marks_the_reservation_and_the_status_soft() -> None:
    target = budget(daily_usd=1.0)

    async def scenario() -> tuple[Reservation, Reservation]:
        below = await target.reserve("a", nusd(0.94))
        at = await target.reserve("a", ONE_CENT)
        return below, at

    below, at = asyncio.run(scenario())
    status = asyncio.run(target.status("a"))

    assert (below.soft, below.soft_scope) == (False, None)
    assert (at.soft, at.soft_scope) == (True, "global")
    assert status.soft_scope == "global"


def test_the_key_soft_limit_is_reported_for_that_key_only() -> None:
    target = budget(daily_usd=100.0, per_key_daily_usd=1.0)

    reservation = asyncio.run(target.reserve("a", nusd(0.96)))

    assert reservation.soft_scope == "key"
    assert asyncio.run(target.status("a")).soft_scope == "key"
    assert asyncio.run(target.status("b")).soft_scope is None
    assert asyncio.run(target.status(None)).soft_scope is None


def test_status_reports_the_tightest_remaining_budget() -> None:
    target = budget(daily_usd=5.0, per_key_daily_usd=1.0)
    asyncio.run(target.reserve("a", nusd(0.25)))

    status = asyncio.run(target.status("a"))
    overall = asyncio.run(target.status(None))

    assert status.global_remaining_usd == 4.75
    assert status.key_remaining_usd == 0.75
    assert status.remaining_usd == 0.75
    assert overall.remaining_usd == 4.75
    assert status.to_dict()["remaining_usd"] == 0.75


def test_without_limits_everything_is_admitted_and_nothing_is_soft() -> None:
    target = budget()

    reservation = asyncio.run(target.reserve("a", nusd(1_000_000.0)))
    status = asyncio.run(target.status("a"))

    assert not reservation.soft
    assert status.remaining_usd is None
    assert status.global_committed_usd == 1_000_000.0


def test_soft_threshold_is_exact_in_nano_usd() -> None:
    limits = Limits(global_nusd=1000, key_nusd=None, soft_fraction=0.95)

    assert limits.soft_nusd(1000) == 950
    assert limits.soft_scope(949, 0) is None
    assert limits.soft_scope(950, 0) == "global"


# -- the UTC day ---------------------------------------------------------------


def test_a_new_utc_day_starts_with_an_empty_budget() -> None:
    clock = Clock("2026-03-01T23:59:59+00:00")
    target = budget(daily_usd=1.0, clock=clock)
    late = asyncio.run(target.reserve("a", nusd(1.0)))

    clock.now += 2
    early = asyncio.run(target.reserve("a", nusd(1.0)))
    status = asyncio.run(target.status("a"))

    assert (late.day, early.day) == ("2026-03-01", "2026-03-02")
    assert (status.day, status.global_committed_usd) == ("2026-03-02", 1.0)


def test_a_call_that_ends_after_midnight_settles_on_the_day_it_reserved() -> None:
    clock = Clock("2026-03-01T23:59:59+00:00")
    target = budget(daily_usd=1.0, clock=clock)
    reservation = asyncio.run(target.reserve("a", nusd(0.5)))

    clock.now += 2
    asyncio.run(target.settle(reservation, nusd(0.1)))
    yesterday = asyncio.run(target.store.spend("2026-03-01", "a"))

    assert yesterday.global_nusd == nusd(0.1)
    assert committed_usd(target, "a") == (0.0, 0.0)


def test_days_before_yesterday_are_forgotten() -> None:
    clock = Clock("2026-03-01T12:00:00+00:00")
    target = budget(daily_usd=1.0, clock=clock)
    asyncio.run(target.reserve("a", nusd(0.5)))

    clock.now += 86_400
    asyncio.run(target.reserve("a", ONE_CENT))
    kept = asyncio.run(target.store.spend("2026-03-01", "a"))
    clock.now += 86_400
    asyncio.run(target.reserve("a", ONE_CENT))
    forgotten = asyncio.run(target.store.spend("2026-03-01", "a"))

    assert kept.global_nusd == nusd(0.5)
    assert forgotten.global_nusd == 0


# -- rebuilding from the ledger ------------------------------------------------


def audit(key_id: str, cost_nusd: int) -> tuple[str, dict[str, object]]:
    return (
        "router.request",
        {"key_id": key_id, "cost_usd": cost_nusd / 1e9, "cost_nusd": cost_nusd},
    )


def test_a_restarted_node_rebuilds_todays_spend_from_the_ledger(
    ledger: WORMLedger,
) -> None:
    # 1,500 records: the rebuild reads the ledger in pages of 1,000.
    ledger.append_many([audit(f"k{i % 3}", 1_000_000) for i in range(1500)])
    ledger.append_many(
        [
            ("router.request", {"key_id": "k0", "outcome": "no_deployment"}),
            ("test.event", {"key_id": "k0", "cost_nusd": 10**12}),
        ]
    )
    target = budget(daily_usd=2.0, per_key_daily_usd=0.5)

    asyncio.run(target.rebuild(ledger))
    status = asyncio.run(target.status("k0"))

    assert status.global_committed_usd == 1.5
    assert status.key_committed_usd == 0.5
    with pytest.raises(BudgetExceededError, match="key"):
        asyncio.run(target.reserve("k0", 1))
    assert asyncio.run(target.reserve("newcomer", 1)).amount_nusd == 1


def test_records_of_another_day_are_not_counted(ledger: WORMLedger) -> None:
    ledger.append_many([audit("k0", nusd(0.4))])
    tomorrow = Clock(datetime.now(UTC).isoformat())
    tomorrow.now += 86_400
    target = budget(daily_usd=1.0, clock=tomorrow)

    asyncio.run(target.rebuild(ledger))

    assert committed_usd(target, "k0") == (0.0, 0.0)


def test_rebuilding_does_not_overwrite_a_day_already_counted(
    ledger: WORMLedger,
) -> None:
    ledger.append_many([audit("k0", nusd(0.4))])
    target = budget(daily_usd=1.0)
    asyncio.run(target.reserve("k0", nusd(0.1)))

    asyncio.run(target.rebuild(ledger))

    assert committed_usd(target, "k0") == (0.1, 0.1)
