"""The rpm/tpm window: what it refuses, when room comes back, and its headroom."""

from __future__ import annotations

import pytest

from penin.router.limits import UsageWindow


class Clock:
    """A monotonic clock that moves only when a test moves it."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_rpm_refuses_the_request_past_the_limit(clock: Clock) -> None:
    window = UsageWindow(rpm=3, tpm=None, clock=clock)

    for _ in range(3):
        assert window.has_room(10)
        window.add_request(10)

    assert not window.has_room(0)
    assert window.requests_in_window() == 3


def test_tpm_refuses_a_request_that_would_pass_the_limit(clock: Clock) -> None:
    window = UsageWindow(rpm=None, tpm=1000, clock=clock)
    window.add_request(700)

    assert window.has_room(300)
    assert not window.has_room(301)


def test_requests_leave_the_window_60_seconds_later(clock: Clock) -> None:
    window = UsageWindow(rpm=2, tpm=1000, clock=clock)
    window.add_request(400)
    clock.now += 30
    window.add_request(600)
    assert not window.has_room(1)

    clock.now += 29.5
    assert not window.has_room(1)

    clock.now += 0.5
    assert window.has_room(400)
    assert not window.has_room(401)
    assert window.requests_in_window() == 1
    assert window.tokens_in_window() == 600

    clock.now += 30
    assert window.requests_in_window() == 0
    assert window.tokens_in_window() == 0


def test_a_long_quiet_spell_empties_the_window(clock: Clock) -> None:
    window = UsageWindow(rpm=5, tpm=None, clock=clock)
    for _ in range(5):
        window.add_request(1)

    clock.now += 3600

    assert window.requests_in_window() == 0
    assert window.has_room(1)


def test_fewer_real_tokens_than_estimated_give_room_back(clock: Clock) -> None:
    window = UsageWindow(rpm=None, tpm=1000, clock=clock)
    window.add_request(900)
    assert not window.has_room(200)

    clock.now += 2
    window.adjust_tokens(-800)

    assert window.tokens_in_window() == 100
    assert window.has_room(900)


def test_more_real_tokens_than_estimated_take_room(clock: Clock) -> None:
    window = UsageWindow(rpm=None, tpm=1000, clock=clock)
    window.add_request(100)

    window.adjust_tokens(850)

    assert window.tokens_in_window() == 950
    assert not window.has_room(51)


def test_taking_back_more_tokens_than_counted_stops_at_zero(clock: Clock) -> None:
    window = UsageWindow(rpm=None, tpm=1000, clock=clock)
    window.add_request(100)

    window.adjust_tokens(-500)
    clock.now += 60

    assert window.tokens_in_window() == 0
    window.add_request(1000)
    assert window.tokens_in_window() == 1000


def test_headroom_is_the_smaller_remaining_share_of_the_two_limits(
    clock: Clock,
) -> None:
    window = UsageWindow(rpm=10, tpm=1000, clock=clock)
    assert window.headroom() == 1.0

    window.add_request(100)
    assert window.headroom() == pytest.approx(0.9)

    window.add_request(500)
    assert window.headroom() == pytest.approx(0.4)

    window.adjust_tokens(5000)
    assert window.headroom() == 0.0


def test_a_window_without_limits_always_has_room_and_full_headroom(
    clock: Clock,
) -> None:
    window = UsageWindow(rpm=None, tpm=None, clock=clock)
    for _ in range(1000):
        window.add_request(10_000)

    assert window.has_room(10**9)
    assert window.headroom() == 1.0
    assert window.requests_in_window() == 1000


def test_limits_below_one_are_refused() -> None:
    with pytest.raises(ValueError, match="rpm must be at least 1"):
        UsageWindow(rpm=0, tpm=None)
