"""The deployment statistics and how each strategy orders the deployments."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from penin.router.config import ScoreWeights
from penin.router.limits import UsageWindow
from penin.router.strategies import (
    Candidate,
    DeploymentStats,
    cheapest,
    order,
    scores,
)

STRATEGIES = ("cost", "latency", "least-busy", "weighted", "usage", "score")
DEFAULT_WEIGHTS = ScoreWeights()


def candidate(
    name: str,
    *,
    price: tuple[float, float] = (1.0, 2.0),
    weight: float = 1.0,
    quality: float = 0.5,
    latency: float | None = None,
    ttft: float | None = None,
    in_flight: int = 0,
    failures: int = 0,
    window: UsageWindow | None = None,
    stream: bool = False,
) -> Candidate:
    stats = DeploymentStats(alpha=0.5)
    if latency is not None:
        stats.observe_latency(latency)
    if ttft is not None:
        stats.observe_ttft(ttft)
    for _ in range(in_flight):
        stats.started()
    for _ in range(failures):
        stats.observe_outcome(ok=False)

    return Candidate(
        name=name,
        weight=weight,
        input_per_mtok=price[0],
        output_per_mtok=price[1],
        quality=quality,
        stats=stats,
        window=window or UsageWindow(rpm=None, tpm=None),
        stream=stream,
    )


def names(
    strategy: str,
    candidates: list[Candidate],
    seed: int = 0,
    weights: ScoreWeights = DEFAULT_WEIGHTS,
) -> list[str]:
    ranked = order(strategy, candidates, weights, random.Random(seed))

    return [c.name for c in ranked]


def firsts(strategy: str, candidates: list[Candidate], draws: int) -> Counter[str]:
    rng = random.Random(1234)

    return Counter(
        order(strategy, candidates, DEFAULT_WEIGHTS, rng)[0].name for _ in range(draws)
    )


# -- statistics ---------------------------------------------------------------


def test_latency_averages_start_empty_and_follow_an_ewma() -> None:
    stats = DeploymentStats(alpha=0.25)
    assert stats.latency_s is None
    assert stats.ttft_s is None

    stats.observe_latency(2.0)
    assert stats.latency_s == 2.0
    stats.observe_latency(6.0)
    assert stats.latency_s == 3.0

    stats.observe_ttft(0.4)
    assert stats.ttft_s == 0.4
    assert stats.latency_s == 3.0


def test_success_starts_at_one_and_falls_with_failures() -> None:
    stats = DeploymentStats(alpha=0.5)
    assert stats.success == 1.0

    stats.observe_outcome(ok=False)
    assert stats.success == 0.5
    stats.observe_outcome(ok=True)
    assert stats.success == 0.75


def test_in_flight_counts_calls_and_never_goes_negative() -> None:
    stats = DeploymentStats(alpha=0.5)
    stats.started()
    stats.started()
    stats.finished()
    assert stats.in_flight == 1

    stats.finished()
    stats.finished()
    assert stats.in_flight == 0


def test_alpha_outside_zero_to_one_is_refused() -> None:
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\], got 0"):
        DeploymentStats(alpha=0)


# -- every strategy -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_returns_every_candidate_once(strategy: str) -> None:
    candidates = [
        candidate("a/x", price=(3, 3), weight=0, latency=1.0, in_flight=2),
        candidate("b/y", price=(1, 1), weight=2, in_flight=1),
        candidate("c/z", price=(2, 2), weight=1, latency=0.5),
    ]

    assert sorted(names(strategy, candidates)) == ["a/x", "b/y", "c/z"]
    assert names(strategy, []) == []


def test_an_unknown_strategy_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown routing strategy 'fastest'"):
        order("fastest", [candidate("a/x")], DEFAULT_WEIGHTS, random.Random(0))


# -- cost ---------------------------------------------------------------------


def test_cost_puts_the_cheapest_total_price_first() -> None:
    candidates = [
        candidate("dear/x", price=(5, 15)),
        candidate("cheap/y", price=(1, 4)),
        candidate("mid/z", price=(3, 3)),
    ]

    assert names("cost", candidates) == ["cheap/y", "mid/z", "dear/x"]


def test_cost_breaks_a_price_tie_by_fewer_calls_in_flight() -> None:
    candidates = [
        candidate("busy/x", price=(1, 1), in_flight=4),
        candidate("idle/y", price=(1, 1), in_flight=1),
    ]

    assert names("cost", candidates) == ["idle/y", "busy/x"]


def test_cheapest_orders_like_the_cost_strategy() -> None:
    candidates = [
        candidate("dear/x", price=(5, 15)),
        candidate("busy/y", price=(1, 1), in_flight=3),
        candidate("idle/z", price=(1, 1)),
    ]

    assert [c.name for c in cheapest(candidates)] == ["idle/z", "busy/y", "dear/x"]


# -- latency ------------------------------------------------------------------


def test_latency_tries_unmeasured_deployments_first_then_the_fastest() -> None:
    candidates = [
        candidate("slow/x", latency=2.0),
        candidate("new/y"),
        candidate("fast/z", latency=0.3),
    ]

    assert names("latency", candidates) == ["new/y", "fast/z", "slow/x"]


def test_latency_of_a_stream_is_its_time_to_first_token() -> None:
    candidates = [
        candidate("quick-start/x", latency=5.0, ttft=0.2, stream=True),
        candidate("slow-start/y", latency=1.0, ttft=0.9, stream=True),
        candidate("no-ttft/z", latency=0.5, stream=True),
    ]

    assert names("latency", candidates) == [
        "quick-start/x",
        "no-ttft/z",
        "slow-start/y",
    ]


def test_latency_ignores_ttft_for_a_request_that_does_not_stream() -> None:
    candidates = [
        candidate("quick-start/x", latency=5.0, ttft=0.2),
        candidate("slow-start/y", latency=1.0, ttft=0.9),
    ]

    assert names("latency", candidates) == ["slow-start/y", "quick-start/x"]


def test_latency_spreads_new_deployments_at_random() -> None:
    candidates = [
        candidate("new/x"),
        candidate("new/y"),
        candidate("old/z", latency=0.1),
    ]

    counts = firsts("latency", candidates, 400)

    assert set(counts) == {"new/x", "new/y"}
    assert min(counts.values()) > 150


# -- least-busy ---------------------------------------------------------------


def test_least_busy_puts_the_fewest_calls_in_flight_first() -> None:
    candidates = [
        candidate("busy/x", in_flight=5),
        candidate("idle/y"),
        candidate("some/z", in_flight=2),
    ]

    assert names("least-busy", candidates) == ["idle/y", "some/z", "busy/x"]


def test_least_busy_breaks_ties_at_random() -> None:
    candidates = [candidate("a/x", in_flight=1), candidate("b/y", in_flight=1)]

    counts = firsts("least-busy", candidates, 400)

    assert min(counts["a/x"], counts["b/y"]) > 150


# -- weighted -----------------------------------------------------------------


def test_weighted_puts_each_first_in_proportion_to_its_weight() -> None:
    candidates = [candidate("heavy/x", weight=3), candidate("light/y", weight=1)]

    counts = firsts("weighted", candidates, 4000)

    assert counts["heavy/x"] / 4000 == pytest.approx(0.75, abs=0.03)


def test_weighted_draws_the_rest_in_proportion_too() -> None:
    candidates = [
        candidate("a/x", weight=2),
        candidate("b/y", weight=1),
        candidate("c/z", weight=1),
    ]
    rng = random.Random(99)

    seconds = Counter(
        order("weighted", candidates, DEFAULT_WEIGHTS, rng)[1].name for _ in range(4000)
    )

    # a/x second: 1/4·2/3 + 1/4·2/3 = 1/3; b/y second: 1/2·1/2 + 1/4·1/3 = 1/3.
    assert seconds["a/x"] / 4000 == pytest.approx(1 / 3, abs=0.03)
    assert seconds["b/y"] / 4000 == pytest.approx(1 / 3, abs=0.03)


def test_weight_zero_is_never_first_while_another_weighs_more() -> None:
    candidates = [candidate("off/x", weight=0), candidate("on/y", weight=0.01)]

    counts = firsts("weighted", candidates, 500)

    assert counts == {"on/y": 500}


def test_weighted_with_all_weights_zero_still_spreads_the_calls() -> None:
    candidates = [candidate("a/x", weight=0), candidate("b/y", weight=0)]

    counts = firsts("weighted", candidates, 400)

    assert min(counts["a/x"], counts["b/y"]) > 150


# -- usage --------------------------------------------------------------------


def test_usage_puts_the_most_headroom_first_and_breaks_ties_by_cost() -> None:
    nearly_full = UsageWindow(rpm=10, tpm=None)
    for _ in range(9):
        nearly_full.add_request(1)
    half_full = UsageWindow(rpm=None, tpm=1000)
    half_full.add_request(500)
    candidates = [
        candidate("full/x", window=nearly_full),
        candidate("half/y", window=half_full),
        candidate("free-dear/z", price=(9, 9)),
        candidate("free-cheap/w", price=(1, 1)),
    ]

    assert names("usage", candidates) == [
        "free-cheap/w",
        "free-dear/z",
        "half/y",
        "full/x",
    ]


# -- score --------------------------------------------------------------------


def test_each_score_term_is_normalised_against_the_candidates() -> None:
    dear = candidate("dear/x", price=(6, 4), latency=2.0, quality=1.0)
    cheap = candidate("cheap/y", price=(3, 2), latency=0.5, quality=0.2, failures=1)
    both = [dear, cheap]

    assert scores(both, ScoreWeights(cost=1, latency=0, quality=0, success=0)) == [
        0.0,
        0.5,
    ]
    assert scores(both, ScoreWeights(cost=0, latency=1, quality=0, success=0)) == [
        0.0,
        0.75,
    ]
    assert scores(both, ScoreWeights(cost=0, latency=0, quality=1, success=0)) == [
        1.0,
        0.2,
    ]
    assert scores(both, ScoreWeights(cost=0, latency=0, quality=0, success=1)) == [
        1.0,
        0.5,
    ]


def test_the_score_is_the_weighted_sum_of_its_terms() -> None:
    dear = candidate("dear/x", price=(6, 4), latency=2.0, quality=1.0)
    cheap = candidate("cheap/y", price=(3, 2), latency=0.5, quality=0.2, failures=1)

    result = scores([dear, cheap], ScoreWeights(cost=0.3, latency=0.3, quality=0.2))

    assert result == pytest.approx([0.2 + 0.2, 0.15 + 0.225 + 0.04 + 0.1])


def test_the_weights_decide_which_deployment_scores_first() -> None:
    dear = candidate("dear/x", price=(6, 4), latency=2.0, quality=1.0)
    cheap = candidate("cheap/y", price=(3, 2), latency=0.5, quality=0.2)
    by_quality = ScoreWeights(cost=0, latency=0, quality=1, success=0)
    by_cost = ScoreWeights(cost=1, latency=0, quality=0, success=0)

    assert names("score", [dear, cheap], weights=by_quality) == ["dear/x", "cheap/y"]
    assert names("score", [dear, cheap], weights=by_cost) == ["cheap/y", "dear/x"]


def test_score_tries_a_deployment_without_latency_before_a_measured_one() -> None:
    measured = candidate("measured/x", latency=0.1)
    new = candidate("new/y")
    only_latency = ScoreWeights(cost=0, latency=1, quality=0, success=0)

    assert scores([measured, new], only_latency) == [0.0, 1.0]
    assert names("score", [measured, new]) == ["new/y", "measured/x"]


def test_free_deployments_all_score_full_marks_on_cost() -> None:
    candidates = [candidate("a/x", price=(0, 0)), candidate("b/y", price=(0, 0))]
    only_cost = ScoreWeights(cost=1, latency=0, quality=0, success=0)

    assert scores(candidates, only_cost) == [1.0, 1.0]
