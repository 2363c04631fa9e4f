"""Policy benchmark: decisions/s and latency of each shipped policy, embedded.

Each shipped policy is asked the question the node asks it, with an input of
the size the node sends, through the same call the node makes
(``EmbeddedEngine.evaluate``: canonical input and its digest, regorus, the
allow rule, metrics). The policies take turns, round by round:

    .venv/bin/python benchmarks/policy_bench.py [--quick] [--out FILE]

It prints a table (figure, result, target, met?) and writes every figure, the
runs behind each median and the machine to benchmarks/results/policy.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import aiohttp

import tables
from penin.ledger.record import canonical_payload
from penin.policy.config import PolicySettings
from penin.policy.engine import EmbeddedEngine
from penin.policy.policyset import load_policy_set
from penin.policy.service import Policies
from penin.router.audit import Caller, Outcome
from penin.router.budget import BudgetStatus
from penin.router.config import RouterConfig
from penin.router.deployments import build_groups
from penin.router.gate import Gate
from penin.router.prices import PriceTable
from tables import Figure

PROJECT = Path(__file__).resolve().parent.parent
RESULTS = PROJECT / "benchmarks" / "results" / "policy.json"

DEPLOYMENTS = [
    {"name": f"provider-{i}/model-{i}", "provider": f"provider-{i}",
     "data_classes": ["public", "internal"] + (["pii"] if i % 3 == 0 else [])}
    for i in range(6)
]  # fmt: skip

# The questions the node asks, with inputs shaped as it builds them.
QUESTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    "router": (
        "penin/router/decision",
        {
            "key": {"id": "3f9a1c2b7d4e", "scope": "route",
                    "data_class": "internal", "models": ["fast", "smart"]},
            "request": {"model": "fast", "data_class": "pii"},
            "deployments": DEPLOYMENTS,
            "budget": {"state": "ok"},
        },
    ),
    "budget": (
        "penin/budget/decision",
        {
            "spent_usd": {"day": 4.21, "key": 0.37},
            "limits": {"daily_usd": 5.0, "per_key_daily_usd": 1.0},
            "request_usd": 0.0125,
        },
    ),
    "guard": (
        "penin/guard/verdict",
        {
            "metrics": {"rho": 0.91, "ece": 0.006, "rho_bias": 1.02, "sr": 0.86,
                        "g": 0.9, "delta_linf": 0.018, "cost_increase": 0.04,
                        "kappa": 24},
            "consent": True,
            "eco_ok": True,
        },
    ),
    "admin": (
        "penin/admin/decision",
        {"key": {"id": "3f9a1c2b7d4e", "scope": "admin"}, "action": "verify_ledger"},
    ),
}  # fmt: skip


ROUTER = QUESTIONS["router"][0]


def varied(name: str, question: dict[str, Any], n: int) -> dict[str, Any]:
    """``question`` made the n-th distinct one, as traffic makes it: another
    key, another day's spend, another challenger's metrics."""
    copy = json.loads(json.dumps(question))
    if name in ("router", "admin"):
        copy["key"]["id"] = f"{n:012x}"
    elif name == "budget":
        copy["spent_usd"]["day"] = round(4.0 + n * 1e-6, 6)
    else:
        copy["metrics"]["kappa"] = 20 + n

    return copy


def figures_for(name: str) -> tuple[Figure, ...]:
    return (
        Figure(f"{name}_decisions_per_s", f"penin.{name}: decisions/s", "/s"),
        Figure(f"{name}_p50_ms", f"penin.{name}: p50", "ms"),
        Figure(f"{name}_p99_ms", f"penin.{name}: p99", "ms",
               "≤ 1 ms", lambda v: v <= 1.0),
    )  # fmt: skip


FIGURES = (
    *(f for name in QUESTIONS for f in figures_for(name)),
    Figure("router_repeated_p50_ms", "penin.router, a question asked before: p50",
           "ms", "≤ 0.05 ms", lambda v: v <= 0.05),
    Figure("router_repeated_p99_ms", "penin.router, a question asked before: p99",
           "ms"),
    Figure("gate_route_p50_ms", "router gate per request (decision and record): p50",
           "ms", "≤ 0.05 ms", lambda v: v <= 0.05),
    Figure("gate_route_p99_ms", "router gate per request (decision and record): p99",
           "ms"),
    Figure("gate_budget_p50_ms", "budget gate per request (decision and record): p50",
           "ms"),
    Figure("gate_budget_p99_ms", "budget gate per request (decision and record): p99",
           "ms", "≤ 1 ms", lambda v: v <= 1.0),
)  # fmt: skip

# A node's router: three deployments behind "fast", one of them cleared for
# PII, and "smart" as its fallback.
ROUTER_CONFIG = {
    "providers": [
        {"name": "openai-main", "kind": "openai", "base_url": "http://127.0.0.1:9/v1"},
        {"name": "anthropic", "kind": "anthropic", "base_url": "http://127.0.0.1:9"},
    ],
    "models": [
        {"name": "fast", "fallbacks": ["smart"], "deployments": [
            {"provider": "openai-main", "model": "gpt-4o-mini"},
            {"provider": "openai-main", "model": "gpt-4.1-nano",
             "data_classes": ["public", "internal", "pii"]},
            {"provider": "anthropic", "model": "claude-haiku-4-5"},
        ]},
        {"name": "smart", "deployments": [
            {"provider": "openai-main", "model": "gpt-4o"},
        ]},
    ],
}  # fmt: skip


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(int(fraction * len(ordered) + 0.5) - 1, 0)]


def timed(ask: Callable[[int], Any], count: int) -> dict[str, float]:
    """Each call timed alone; the rate is calls over their summed time."""
    seconds = []
    for n in range(count):
        start = time.perf_counter()
        ask(n)
        seconds.append(time.perf_counter() - start)

    return {
        "per_s": count / sum(seconds),
        "p50_ms": percentile(seconds, 0.50) * 1000,
        "p99_ms": percentile(seconds, 0.99) * 1000,
    }


def run(
    rounds: int, count: int, keys: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Every question a new one (the engine remembers answers by input, so a
    repeated input would not reach regorus), then the router's question as a
    node meets it: ``keys`` keys asking in turn, each answer remembered."""
    engine = EmbeddedEngine(load_policy_set())
    for name, (path, question) in QUESTIONS.items():
        decision = engine.evaluate(path, question)
        if decision.reason not in (None, "denied"):
            raise SystemExit(
                f"penin.{name} failed on the benchmark's input: {decision}"
            )
    runs: dict[str, list[float]] = {}
    fresh = 0
    asked = [varied("router", QUESTIONS["router"][1], n) for n in range(keys)]
    for i in range(rounds):
        for name, (path, question) in QUESTIONS.items():
            inputs = [varied(name, question, fresh + n) for n in range(count)]
            got = timed(lambda n, p=path, q=inputs: engine.evaluate(p, q[n]), count)
            _keep(runs, name, got)
            print(f"  round {i + 1} penin.{name}: {got['per_s']:,.0f}/s, "
                  f"p99 {got['p99_ms']:.3f} ms", file=sys.stderr)  # fmt: skip
        fresh += count
        got = timed(lambda n, q=asked: engine.evaluate(ROUTER, q[n % keys]), count)
        _keep(runs, "router_repeated", got)

    return {k: statistics.median(v) for k, v in runs.items()}, runs


async def gate_per_request(
    rounds: int, count: int, keys: int
) -> dict[str, list[float]]:
    """The work the router's gate adds to one request, as ``Router`` calls it:
    each decision, its ledger record's payload and that payload's canonical
    form (what the append then hashes). ``keys`` keys take turns, so the
    routing question repeats as it does in traffic; the day's spend rises
    with every request, so the budget question never does."""
    config = RouterConfig.model_validate(ROUTER_CONFIG)
    async with aiohttp.ClientSession() as session:
        groups = build_groups(config, session, PriceTable.bundled())
    gate = Gate(Policies.load(PolicySettings()), groups)
    group = groups["fast"]
    runs: dict[str, list[float]] = {}
    for _ in range(rounds):
        route_s, budget_s = [], []
        for n in range(count):
            outcome = Outcome(
                model="fast", key_id=f"{n % keys:012x}", stream=False,
                request_id=f"req-{n}", caller=Caller(data_class="internal"),
            )  # fmt: skip
            status = _status(n)
            start = time.perf_counter()
            state = await gate.budget(status, outcome)
            canonical_payload(outcome.decisions[-1][1])
            middle = time.perf_counter()
            await gate.route(group, outcome, "soft" if state else "ok")
            canonical_payload(outcome.decisions[-1][1])
            budget_s.append(middle - start)
            route_s.append(time.perf_counter() - middle)
        for name, seconds in (("gate_route", route_s), ("gate_budget", budget_s)):
            runs.setdefault(f"{name}_p50_ms", []).append(
                percentile(seconds, 0.50) * 1000
            )
            runs.setdefault(f"{name}_p99_ms", []).append(
                percentile(seconds, 0.99) * 1000
            )

    return runs


def _status(n: int) -> BudgetStatus:
    spent = 1.0 + n * 1e-5
    return BudgetStatus(
        day="2026-12-04", key_id=None, soft_fraction=0.95,
        global_limit_usd=50.0, global_committed_usd=spent,
        global_remaining_usd=50.0 - spent, global_soft=False,
        key_limit_usd=5.0, key_committed_usd=spent / 10,
        key_remaining_usd=5.0 - spent / 10, key_soft=False,
    )  # fmt: skip


def _keep(runs: dict[str, list[float]], name: str, got: dict[str, float]) -> None:
    for what, value in got.items():
        key = f"{name}_decisions_per_s" if what == "per_s" else f"{name}_{what}"
        runs.setdefault(key, []).append(value)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    rounds, count = (1, 200) if args.quick else (3, 20_000)

    figures, runs = run(rounds, count, keys=100)
    gate_runs = asyncio.run(gate_per_request(rounds, count, keys=100))
    runs.update(gate_runs)
    figures.update({k: statistics.median(v) for k, v in gate_runs.items()})
    about = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "rounds": rounds,
        "decisions_per_round": count,
    }
    rows = tables.rows(figures, FIGURES)
    tables.print_rows(rows, f"Python {about['python']} · {rounds} rounds × {count:,}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"figures": figures, "runs": runs, "machine": about}, indent=2)
        + "\n"
    )
    print(f"wrote {args.out}")

    return 0


if __name__ == "__main__":
    sys.exit(main())
