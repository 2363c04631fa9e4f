"""A deployment's requests-per-minute and tokens-per-minute limits, kept locally.

The router counts what it sends to each deployment over a sliding window of
60 seconds and skips a deployment whose window has no room, before the
provider answers 429. The window is a ring of 60 one-second buckets with
running totals, so every operation costs O(1) amortised however many requests
go through; the price is a resolution of one second: a request counts until
the start of the 60th second after the second in which it was sent.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol

WINDOW_S = 60


class RateWindow(Protocol):
    """What the router asks of a deployment's rpm/tpm window, local or shared.

    ``acquire`` is the decision: it checks and counts one request in one step.
    ``has_room`` and ``headroom`` are cheap hints for skipping and ordering
    deployments; a shared window answers them from what it last saw.
    """

    def has_room(self, tokens: int) -> bool: ...

    def headroom(self) -> float: ...

    async def acquire(self, tokens: int) -> bool: ...

    async def adjust(self, delta: int) -> None: ...


class UsageWindow:
    """Requests and tokens sent in the last 60 seconds against rpm and tpm.

    ``None`` for a limit means there is none. Tokens are counted when a request
    is sent, from its estimate (prompt plus the most it may answer); once the
    real usage is known, :meth:`adjust_tokens` corrects the count.
    """

    def __init__(
        self,
        rpm: int | None,
        tpm: int | None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        for label, limit in (("rpm", rpm), ("tpm", tpm)):
            if limit is not None and limit < 1:
                raise ValueError(f"{label} must be at least 1 or None, got {limit}")
        self.rpm = rpm
        self.tpm = tpm
        self._clock = clock
        self._requests = [0] * WINDOW_S
        self._tokens = [0] * WINDOW_S
        self._request_total = 0
        self._token_total = 0
        self._second = math.floor(clock())

    def has_room(self, tokens: int) -> bool:
        """Whether one more request of ``tokens`` fits under both limits."""
        self._advance()
        if self.rpm is not None and self._request_total + 1 > self.rpm:
            return False

        return self.tpm is None or self._token_total + tokens <= self.tpm

    def add_request(self, tokens: int) -> None:
        """Count a request as it is sent, with its estimated tokens."""
        self._advance()
        slot = self._second % WINDOW_S
        self._requests[slot] += 1
        self._request_total += 1
        self._tokens[slot] += tokens
        self._token_total += tokens

    async def acquire(self, tokens: int) -> bool:
        """Count a request of ``tokens`` if it fits; whether it did."""
        if not self.has_room(tokens):
            return False
        self.add_request(tokens)

        return True

    async def adjust(self, delta: int) -> None:
        self.adjust_tokens(delta)

    def adjust_tokens(self, delta: int) -> None:
        """Correct the token count by ``delta`` once the real usage is known.

        More tokens than estimated count from now. Fewer are taken back from
        the newest seconds first, never below zero, because the window does not
        know in which second the request went out; its call just ended, so that
        second is usually among the newest. For a call longer than the window
        the tokens taken back belong to later requests, and the window counts
        too few until those leave it.
        """
        self._advance()
        if delta >= 0:
            self._tokens[self._second % WINDOW_S] += delta
            self._token_total += delta
            return
        owed = -delta
        for age in range(WINDOW_S):
            if owed == 0:
                break
            slot = (self._second - age) % WINDOW_S
            taken = min(owed, self._tokens[slot])
            self._tokens[slot] -= taken
            self._token_total -= taken
            owed -= taken

    def requests_in_window(self) -> int:
        self._advance()

        return self._request_total

    def tokens_in_window(self) -> int:
        self._advance()

        return self._token_total

    def headroom(self) -> float:
        """The smaller remaining fraction of the two limits, in [0, 1].

        1.0 when the deployment has no limits at all.
        """
        self._advance()
        fractions = [1.0]
        if self.rpm is not None:
            fractions.append(1.0 - self._request_total / self.rpm)
        if self.tpm is not None:
            fractions.append(1.0 - self._token_total / self.tpm)

        return max(0.0, min(fractions))

    def _advance(self) -> None:
        # Empty the buckets of the seconds that left the window since the last
        # call; a clock that went back is held at the newest second seen.
        second = math.floor(self._clock())
        if second <= self._second:
            return
        if second - self._second >= WINDOW_S:
            self._requests = [0] * WINDOW_S
            self._tokens = [0] * WINDOW_S
            self._request_total = 0
            self._token_total = 0
        else:
            for passed in range(self._second + 1, second + 1):
                slot = passed % WINDOW_S
                self._request_total -= self._requests[slot]
                self._token_total -= self._tokens[slot]
                self._requests[slot] = 0
                self._tokens[slot] = 0
        self._second = second
