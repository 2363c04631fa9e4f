"""The circuit breaker: when it opens, half-opens, admits a trial and closes."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from penin.observability.metrics import REGISTRY
from penin.router.breaker import CircuitBreaker


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> Iterator[list[dict[str, Any]]]:
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO)
    )
    with capture_logs() as captured:
        yield captured


def breaker(clock: Clock, name: str = "") -> CircuitBreaker:
    return CircuitBreaker(failures=3, reset_after_s=60.0, clock=clock, name=name)


def fail(b: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert b.allow()
        b.record_failure()


def gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value("penin_router_circuit_state", {"deployment": name})


def test_a_new_breaker_is_closed_and_lets_calls_through(clock: Clock) -> None:
    b = breaker(clock)

    assert b.state == "closed"
    assert all(b.allow() for _ in range(10))


def test_opens_at_exactly_three_consecutive_failures(clock: Clock) -> None:
    b = breaker(clock)

    fail(b, 2)
    assert b.state == "closed"
    assert b.allow()

    b.record_failure()
    assert b.state == "open"
    assert not b.allow()


def test_a_success_between_failures_resets_the_count(clock: Clock) -> None:
    b = breaker(clock)

    fail(b, 2)
    b.record_success()
    fail(b, 2)

    assert b.state == "closed"


def test_a_released_call_neither_counts_nor_resets_the_failures(
    clock: Clock,
) -> None:
    b = breaker(clock)

    fail(b, 2)
    b.release()
    fail(b, 1)

    assert b.state == "open"


def test_turns_half_open_once_the_reset_time_has_passed(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)

    clock.now += 59.9
    assert b.state == "open"
    assert not b.allow()

    clock.now += 0.1
    assert b.state == "half_open"


def test_half_open_admits_one_trial_and_refuses_the_others(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60

    assert b.allow()
    assert [b.allow() for _ in range(5)] == [False] * 5
    assert b.state == "half_open"


def test_threads_racing_for_the_trial_get_exactly_one(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60
    start = threading.Barrier(16)
    admitted: list[bool] = []

    def race() -> None:
        start.wait()
        admitted.append(b.allow())

    threads = [threading.Thread(target=race) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert admitted.count(True) == 1


def test_a_successful_trial_closes_the_breaker(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60

    assert b.allow()
    b.record_success()

    assert b.state == "closed"
    assert all(b.allow() for _ in range(5))


def test_after_closing_it_takes_three_new_failures_to_open(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60
    assert b.allow()
    b.record_success()

    fail(b, 2)
    assert b.state == "closed"
    fail(b, 1)
    assert b.state == "open"


def test_a_failed_trial_reopens_and_restarts_the_timer(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60

    assert b.allow()
    b.record_failure()
    assert b.state == "open"
    assert not b.allow()

    clock.now += 59
    assert b.state == "open"
    clock.now += 1
    assert b.state == "half_open"
    assert b.allow()


def test_release_frees_the_trial_slot_without_changing_state(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)
    clock.now += 60
    assert b.allow()

    b.release()

    assert b.state == "half_open"
    assert b.allow()
    assert not b.allow()


def test_outcomes_reported_while_open_change_nothing(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)

    clock.now += 30
    b.record_success()
    assert b.state == "open"
    b.record_failure()
    clock.now += 30

    assert b.state == "half_open"


def test_the_gauge_follows_closed_open_half_open_closed(clock: Clock) -> None:
    name = "gauge-test/model-a"
    b = breaker(clock, name)
    assert gauge(name) == 0

    fail(b, 3)
    assert gauge(name) == 2

    clock.now += 60
    assert b.allow()
    assert gauge(name) == 1

    b.record_failure()
    assert gauge(name) == 2

    clock.now += 60
    assert b.allow()
    b.record_success()
    assert gauge(name) == 0


def test_a_breaker_without_a_name_reports_no_metric(clock: Clock) -> None:
    b = breaker(clock)
    fail(b, 3)

    assert gauge("") is None


def test_each_state_change_is_logged_as_an_event(
    clock: Clock, events: list[dict[str, Any]]
) -> None:
    b = breaker(clock, "log-test/model-b")

    fail(b, 3)
    clock.now += 60
    assert b.allow()
    b.record_success()

    assert [(e["event"], e["deployment"]) for e in events] == [
        ("router.circuit_opened", "log-test/model-b"),
        ("router.circuit_half_open", "log-test/model-b"),
        ("router.circuit_closed", "log-test/model-b"),
    ]
    assert events[0]["failures"] == 3


def test_settings_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError, match="failures must be at least 1, got 0"):
        CircuitBreaker(failures=0)
    with pytest.raises(ValueError, match="reset_after_s must be positive"):
        CircuitBreaker(reset_after_s=0)
