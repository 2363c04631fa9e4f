"""Live statistics of deployments and the strategies that rank them per request.

``ModelConfig.strategy`` names one of the six strategies of :func:`order`.
Every strategy returns all candidates, best first; the router then skips the
ones whose breaker refuses or whose rpm/tpm window has no room, and falls
through the list when a call fails.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from penin.router.config import ScoreWeights
from penin.router.limits import RateWindow


class DeploymentStats:
    """What the router has seen of one deployment: calls in flight, smoothed
    latencies and the smoothed share of calls that succeeded.

    Each average is an EWMA in which the newest sample weighs ``alpha``.
    ``latency_s`` covers successful non-streaming calls, ``ttft_s`` the time to
    the first chunk of streams; both are None until their first sample.
    ``success`` starts at 1.0, so an untried deployment is not held back.
    """

    def __init__(self, alpha: float) -> None:
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be in (0, 1], got {alpha}")
        self.alpha = alpha
        self.in_flight = 0
        self.latency_s: float | None = None
        self.ttft_s: float | None = None
        self.success = 1.0

    def started(self) -> None:
        self.in_flight += 1

    def finished(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def observe_latency(self, seconds: float) -> None:
        self.latency_s = self._smooth(self.latency_s, seconds)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft_s = self._smooth(self.ttft_s, seconds)

    def observe_outcome(self, ok: bool) -> None:
        self.success = self._smooth(self.success, 1.0 if ok else 0.0)

    def _smooth(self, average: float | None, sample: float) -> float:
        if average is None:
            return sample

        return average + self.alpha * (sample - average)


@dataclass(frozen=True)
class Candidate:
    """One deployment as a strategy sees it, for one request."""

    name: str  # "provider/model"
    weight: float
    input_per_mtok: float
    output_per_mtok: float
    quality: float  # 0..1
    stats: DeploymentStats
    window: RateWindow
    stream: bool  # the request streams: latency uses the ttft EWMA when known

    @property
    def price(self) -> float:
        """Input plus output price, USD per million tokens."""
        return self.input_per_mtok + self.output_per_mtok

    @property
    def latency_s(self) -> float | None:
        """The latency that matters to this request; None when unmeasured."""
        if self.stream and self.stats.ttft_s is not None:
            return self.stats.ttft_s

        return self.stats.latency_s


Ranking = Callable[[Sequence[Candidate], ScoreWeights, random.Random], list[Candidate]]


def order(
    strategy: str,
    candidates: Sequence[Candidate],
    weights: ScoreWeights,
    rng: random.Random,
) -> list[Candidate]:
    """All ``candidates``, best first under ``strategy``.

    cost
        Input plus output price, lowest first; ties go to fewer calls in flight.
    latency
        The latency EWMA (time to first token for a stream, once known),
        lowest first. Deployments never measured come first, so that each one
        gets measured; ties are broken at random.
    least-busy
        Fewest calls in flight first; ties are broken at random.
    weighted
        A random order drawn without replacement in proportion to ``weight``:
        a deployment of weight 3 is first three times as often as one of
        weight 1, and one of weight 0 is first only when all weigh 0.
    usage
        Most rpm/tpm headroom first; ties go to the cheaper.
    score
        Highest score first, ties broken at random, where::

            score = w_cost    * (1 - price / max_price)
                  + w_latency * (1 - latency / max_latency)
                  + w_quality * quality
                  + w_success * success

        Maxima are taken over the candidates, so each term lies in [0, 1].
        A missing latency scores 1, the best, so that new deployments get
        tried; when every price (or every latency) is 0 or missing, that term
        is 1 for all.
    """
    ranking = _STRATEGIES.get(strategy)
    if ranking is None:
        known = ", ".join(sorted(_STRATEGIES))
        raise ValueError(f"unknown routing strategy {strategy!r}; use one of {known}")

    return ranking(candidates, weights, rng)


def cheapest(candidates: Sequence[Candidate]) -> list[Candidate]:
    """All candidates, cheapest first: the order once a soft budget is passed."""
    return sorted(candidates, key=lambda c: (c.price, c.stats.in_flight))


def scores(candidates: Sequence[Candidate], weights: ScoreWeights) -> list[float]:
    """The ``score`` strategy's value of each candidate, in the given order."""
    max_price = max((c.price for c in candidates), default=0.0)
    latencies = [c.latency_s for c in candidates if c.latency_s is not None]
    max_latency = max(latencies, default=0.0)

    return [_score(c, max_price, max_latency, weights) for c in candidates]


def _score(
    c: Candidate, max_price: float, max_latency: float, w: ScoreWeights
) -> float:
    cost = 1.0 - c.price / max_price if max_price > 0 else 1.0
    latency = c.latency_s or 0.0  # unmeasured counts as the fastest
    speed = 1.0 - latency / max_latency if max_latency > 0 else 1.0
    quality = min(1.0, max(0.0, c.quality))
    success = min(1.0, max(0.0, c.stats.success))

    return w.cost * cost + w.latency * speed + w.quality * quality + w.success * success


def _by_cost(
    candidates: Sequence[Candidate], _w: ScoreWeights, _rng: random.Random
) -> list[Candidate]:
    return cheapest(candidates)


def _by_latency(
    candidates: Sequence[Candidate], _w: ScoreWeights, rng: random.Random
) -> list[Candidate]:
    def key(c: Candidate) -> tuple[bool, float]:
        latency = c.latency_s

        return (latency is not None, latency or 0.0)

    return sorted(_shuffled(candidates, rng), key=key)


def _by_load(
    candidates: Sequence[Candidate], _w: ScoreWeights, rng: random.Random
) -> list[Candidate]:
    return sorted(_shuffled(candidates, rng), key=lambda c: c.stats.in_flight)


def _by_weight(
    candidates: Sequence[Candidate], _w: ScoreWeights, rng: random.Random
) -> list[Candidate]:
    # Each candidate draws an exponential variate of rate ``weight``; sorting
    # by it is the same as drawing one at a time in proportion to weight
    # (Efraimidis and Spirakis, 2006). Weight 0 draws infinity: always last.
    def key(c: Candidate) -> float:
        if c.weight <= 0:
            return math.inf

        return -math.log(1.0 - rng.random()) / c.weight

    return sorted(_shuffled(candidates, rng), key=key)


def _by_headroom(
    candidates: Sequence[Candidate], _w: ScoreWeights, _rng: random.Random
) -> list[Candidate]:
    return sorted(candidates, key=lambda c: (-c.window.headroom(), c.price))


def _by_score(
    candidates: Sequence[Candidate], w: ScoreWeights, rng: random.Random
) -> list[Candidate]:
    shuffled = _shuffled(candidates, rng)
    ranked = sorted(zip(scores(shuffled, w), shuffled, strict=True), key=_first)

    return [c for _, c in ranked]


def _first(pair: tuple[float, Candidate]) -> float:
    return -pair[0]


def _shuffled(candidates: Sequence[Candidate], rng: random.Random) -> list[Candidate]:
    shuffled = list(candidates)
    rng.shuffle(shuffled)

    return shuffled


_STRATEGIES: dict[str, Ranking] = {
    "cost": _by_cost,
    "latency": _by_latency,
    "least-busy": _by_load,
    "weighted": _by_weight,
    "usage": _by_headroom,
    "score": _by_score,
}
