"""The circuit breaker of one deployment: it stops calls to a failing provider.

A breaker starts *closed* and lets every call through. After ``failures``
consecutive failed calls it *opens* and refuses calls; ``reset_after_s`` later
it is *half-open* and admits exactly one trial call, refusing everyone else
until that trial ends. A successful trial closes it; a failed one opens it
again and restarts the timer.

The router runs on one event loop, but every method takes a lock so that the
breaker stays consistent when threads share it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Literal

import structlog

from penin.observability.metrics import ROUTER_METRICS

log = structlog.get_logger("penin.router")

State = Literal["closed", "half_open", "open"]

# The values of the penin_router_circuit_state gauge.
_GAUGE: dict[State, int] = {"closed": 0, "half_open": 1, "open": 2}
_EVENT: dict[State, str] = {
    "closed": "router.circuit_closed",
    "half_open": "router.circuit_half_open",
    "open": "router.circuit_opened",
}


class CircuitBreaker:
    """Closed, open or half-open; see the module docstring for the transitions.

    Callers ask :meth:`allow` before a call and, when it said yes, end the call
    with exactly one of :meth:`record_success`, :meth:`record_failure` or
    :meth:`release`. ``name`` (``provider/model``) labels the metric and the
    log events; without it the breaker reports nothing.
    """

    def __init__(
        self,
        failures: int = 3,
        reset_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        name: str = "",
    ) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        if reset_after_s <= 0:
            raise ValueError(f"reset_after_s must be positive, got {reset_after_s}")
        self.failures = failures
        self.reset_after_s = reset_after_s
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._state: State = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._trial_claimed = False
        if name:
            ROUTER_METRICS.circuit_state.labels(name).set(_GAUGE["closed"])

    @property
    def state(self) -> State:
        """The state now; an open breaker whose timer ran out reads half-open."""
        with self._lock:
            return self._current()

    def allow(self) -> bool:
        """Whether a call may go out now; in half-open, a yes claims the trial."""
        with self._lock:
            state = self._current()
            if state == "closed":
                return True
            if state == "open" or self._trial_claimed:
                return False
            self._trial_claimed = True

            return True

    def record_success(self) -> None:
        """A call succeeded: reset the failure count; a trial closes the breaker.

        A success reported while open (a call sent before the breaker opened)
        changes nothing: only the trial decides when to close.
        """
        with self._lock:
            state = self._current()
            if state == "open":
                return
            self._consecutive = 0
            self._trial_claimed = False
            if state == "half_open":
                self._move("closed")

    def record_failure(self) -> None:
        """A call failed: count it while closed; a failed trial opens again.

        A failure reported while open (a call sent before the breaker opened)
        does not restart the timer.
        """
        with self._lock:
            state = self._current()
            if state == "open":
                return
            self._trial_claimed = False
            self._consecutive += 1
            if state == "half_open" or self._consecutive >= self.failures:
                self._opened_at = self._clock()
                self._move("open")

    def release(self) -> None:
        """Free the trial slot of a call that ended neither way; keep the state.

        That is a cancelled call, or one refused for a reason that is not the
        provider's fault; the failure count is kept as well. The breaker does
        not know which caller holds the trial, so a call admitted while closed
        and released during a trial frees the slot early, and one more trial
        call may go out; telling them apart would need :meth:`allow` to hand
        out a ticket that the caller gives back.
        """
        with self._lock:
            self._trial_claimed = False

    def _current(self) -> State:
        # Open turns half-open lazily, on the first look after the timer ran
        # out, so that no background task is needed; the caller holds the lock.
        if (
            self._state == "open"
            and self._clock() - self._opened_at >= self.reset_after_s
        ):
            self._trial_claimed = False
            self._move("half_open")

        return self._state

    def _move(self, state: State) -> None:
        self._state = state
        if not self.name:
            return
        ROUTER_METRICS.circuit_state.labels(self.name).set(_GAUGE[state])
        if state == "open":
            log.info(
                _EVENT[state],
                deployment=self.name,
                failures=self._consecutive,
                reset_after_s=self.reset_after_s,
            )
        else:
            log.info(_EVENT[state], deployment=self.name)
