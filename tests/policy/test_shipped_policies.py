"""The policies shipped with the package: their Rego tests, and their contracts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import regorus

from penin.keys import Scope
from penin.policy import testing
from penin.policy.testing import TestResult, run_tests

BUNDLE = Path(testing.__file__).with_name("rego")
PACKAGES = ["penin.router", "penin.budget", "penin.guard", "penin.admin"]
ADMIN_ACTIONS = [
    "switchover",
    "restore",
    "rotate_keys",
    "change_policy",
    "create_key",
    "revoke_key",
    "invalidate_cache",
    "verify_ledger",
    "evaluate_policy",
]
PASSING_METRICS = {
    "rho": 0.9,
    "ece": 0.005,
    "rho_bias": 1.01,
    "sr": 0.85,
    "g": 0.9,
    "delta_linf": 0.02,
    "cost_increase": 0.05,
    "kappa": 25,
}


def bundle_modules(*, tests: bool) -> list[tuple[str, str]]:
    files = sorted(BUNDLE.rglob("*.rego"))
    return [
        (str(file.relative_to(BUNDLE)), file.read_text())
        for file in files
        if tests or not file.name.endswith("_test.rego")
    ]


def bundle_data(root: Path = BUNDLE) -> dict[str, Any]:
    """The bundle's data.json files, each at the path of its directory."""
    data: dict[str, Any] = {}
    for file in sorted(root.rglob("data.json")):
        node = data
        for part in file.parent.relative_to(root).parts:
            node = node.setdefault(part, {})
        node.update(json.loads(file.read_text()))

    return data


class Shipped:
    """The shipped policies in one engine, evaluated as the node would."""

    def __init__(self) -> None:
        self.engine = regorus.Engine()
        for path, text in bundle_modules(tests=False):
            self.engine.add_policy(path, text)
        # Through JSON: the binding would read a Python bool as the number 1.
        self.engine.add_data_json(json.dumps(bundle_data()))

    def evaluate(self, path: str, input: dict[str, Any]) -> Any:
        self.engine.set_input_json(json.dumps(input))
        return self.engine.eval_rule("data." + path.replace("/", "."))


@pytest.fixture(scope="module")
def shipped() -> Shipped:
    return Shipped()


@pytest.fixture(scope="module")
def rego_results() -> list[TestResult]:
    return run_tests(bundle_modules(tests=True), bundle_data())


# -- the Rego tests ------------------------------------------------------------


def test_every_shipped_rego_test_passes(rego_results: list[TestResult]) -> None:
    failures = [r for r in rego_results if not r.passed]

    assert rego_results
    assert failures == []


@pytest.mark.parametrize("package", PACKAGES)
def test_each_shipped_package_has_its_own_tests(
    rego_results: list[TestResult], package: str
) -> None:
    names = [r.name for r in rego_results if r.package == f"{package}_test"]

    assert len(names) >= 8
    assert all(name.startswith("test_") for name in names)


def test_the_bundle_holds_the_four_packages_and_their_tests() -> None:
    engine = regorus.Engine()
    for path, text in bundle_modules(tests=True):
        engine.add_policy(path, text)

    expected = {f"data.{p}" for p in PACKAGES} | {f"data.{p}_test" for p in PACKAGES}
    assert set(engine.get_packages()) == expected


def test_a_failing_rego_test_beside_the_shipped_ones_is_reported_by_name() -> None:
    wrong = (
        "extra_test.rego",
        "package penin.guard_test\n\n"
        "import data.penin.guard\n\n"
        "test_a_challenger_without_consent_is_promoted if {\n"
        '\tv := guard.verdict with input as {"metrics": {}, "consent": false}\n'
        '\tv.verdict == "promote"\n'
        "}\n",
    )

    results = run_tests([*bundle_modules(tests=True), wrong], bundle_data())

    failures = [(r.package, r.name, r.error) for r in results if not r.passed]
    assert failures == [
        ("penin.guard_test", "test_a_challenger_without_consent_is_promoted", None)
    ]


def test_policies_without_their_tests_give_no_results() -> None:
    assert run_tests(bundle_modules(tests=False), bundle_data()) == []


# -- penin/router/decision -----------------------------------------------------


def router_input(**changes: Any) -> dict[str, Any]:
    request: dict[str, Any] = {
        "key": {"id": "k1", "scope": "route", "data_class": "internal", "models": None},
        "request": {"model": "fast", "data_class": None},
        "deployments": [
            {"name": "a/mini", "provider": "a", "data_classes": ["public", "internal"]},
            {"name": "b/large", "provider": "b", "data_classes": ["pii"]},
            {"name": "c/large", "provider": "c", "data_classes": ["internal", "pii"]},
        ],
        "budget": {"state": "ok"},
    }
    for part, fields in changes.items():
        request[part] = request[part] | fields

    return request


def test_a_pii_request_goes_only_to_deployments_marked_for_pii(
    shipped: Shipped,
) -> None:
    result = shipped.evaluate(
        "penin/router/decision", router_input(request={"data_class": "pii"})
    )

    assert result == {
        "allow": True,
        "data_class": "pii",
        "deployments": ["b/large", "c/large"],
        "downgrade": False,
        "reasons": [],
    }


def test_a_request_cannot_lower_the_class_of_a_pii_key(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/router/decision",
        router_input(key={"data_class": "pii"}, request={"data_class": "public"}),
    )

    assert result["data_class"] == "pii"
    assert result["deployments"] == ["b/large", "c/large"]


def test_an_unknown_data_class_is_refused_by_the_router(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/router/decision", router_input(request={"data_class": "PII"})
    )

    assert result["allow"] is False
    assert result["deployments"] == []
    assert result["reasons"] == ["unknown data class PII"]


def test_a_key_limited_to_other_models_is_refused(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/router/decision", router_input(key={"models": ["smart"]})
    )

    assert result["allow"] is False
    assert result["reasons"] == ["the key may not use model fast"]


def test_the_soft_budget_state_asks_the_router_to_downgrade(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/router/decision", router_input(budget={"state": "soft"})
    )

    assert result["allow"] is True
    assert result["downgrade"] is True


# -- penin/budget/decision -----------------------------------------------------


@pytest.mark.parametrize(
    ("spent_day", "spent_key", "expected"),
    [
        (4.2, 0.3, {"allow": True, "state": "ok", "limit": None}),
        (4.74, 0.3, {"allow": True, "state": "soft", "limit": "daily"}),
        (4.99, 0.3, {"allow": True, "state": "soft", "limit": "daily"}),
        (5.0, 0.3, {"allow": False, "state": "hard", "limit": "daily"}),
        (1.0, 0.94, {"allow": True, "state": "soft", "limit": "per_key"}),
        (1.0, 1.0, {"allow": False, "state": "hard", "limit": "per_key"}),
    ],
    ids=["ok", "daily-soft", "daily-at-limit", "daily-hard", "key-soft", "key-hard"],
)
def test_the_budget_is_ok_then_soft_at_95_then_hard_past_100_percent(
    shipped: Shipped, spent_day: float, spent_key: float, expected: dict[str, Any]
) -> None:
    result = shipped.evaluate(
        "penin/budget/decision",
        {
            "spent_usd": {"day": spent_day, "key": spent_key},
            "limits": {"daily_usd": 5.0, "per_key_daily_usd": 1.0},
            "request_usd": 0.01,
        },
    )

    assert result == expected


def test_a_budget_without_limits_admits_any_spend(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/budget/decision",
        {
            "spent_usd": {"day": 1e9, "key": 1e9},
            "limits": {"daily_usd": None, "per_key_daily_usd": None},
            "request_usd": 1.0,
        },
    )

    assert result == {"allow": True, "state": "ok", "limit": None}


# -- penin/guard/verdict -------------------------------------------------------


def guard_input(metrics: dict[str, Any], **flags: Any) -> dict[str, Any]:
    return {"metrics": metrics, "consent": True, "eco_ok": True} | flags


def test_the_guard_thresholds_are_those_of_sigma_guard() -> None:
    guard = bundle_data()["penin"]["guard"]

    assert guard["thresholds"] == {
        "rho_max": 0.99,
        "ece_max": 0.01,
        "rho_bias_max": 1.05,
        "sr_min": 0.80,
        "g_min": 0.85,
        "delta_linf_min": 0.01,
        "cost_increase_max": 0.10,
        "kappa_min": 20,
    }
    assert sorted(guard["canary_gates"]) == ["delta_linf", "g", "sr"]


def test_a_challenger_exactly_at_every_threshold_is_promoted(shipped: Shipped) -> None:
    at_thresholds = {
        "rho": 0.98,  # the only strict gate: rho must stay below 0.99
        "ece": 0.01,
        "rho_bias": 1.05,
        "sr": 0.80,
        "g": 0.85,
        "delta_linf": 0.01,
        "cost_increase": 0.10,
        "kappa": 20,
    }

    verdict = shipped.evaluate("penin/guard/verdict", guard_input(at_thresholds))

    assert verdict == {"allow": True, "verdict": "promote", "failed": []}


@pytest.mark.parametrize("metric", sorted(PASSING_METRICS))
def test_a_missing_metric_fails_its_gate_and_no_other(
    shipped: Shipped, metric: str
) -> None:
    metrics = {k: v for k, v in PASSING_METRICS.items() if k != metric}

    verdict = shipped.evaluate("penin/guard/verdict", guard_input(metrics))

    assert verdict["allow"] is False
    assert verdict["failed"] == [metric]
    canary = metric in {"sr", "g", "delta_linf"}
    assert verdict["verdict"] == ("canary" if canary else "rollback")


@pytest.mark.parametrize("value", [None, "0.9", True], ids=["null", "string", "bool"])
def test_a_metric_that_is_not_a_number_fails_its_gate(
    shipped: Shipped, value: Any
) -> None:
    verdict = shipped.evaluate(
        "penin/guard/verdict", guard_input(PASSING_METRICS | {"kappa": value})
    )

    assert verdict["failed"] == ["kappa"]


@pytest.mark.parametrize("flag", ["consent", "eco_ok"])
def test_without_consent_or_the_eco_check_the_challenger_is_rolled_back(
    shipped: Shipped, flag: str
) -> None:
    verdict = shipped.evaluate(
        "penin/guard/verdict", guard_input(PASSING_METRICS, **{flag: False})
    )

    assert verdict["verdict"] == "rollback"
    assert verdict["failed"] == ["consent" if flag == "consent" else "eco"]


# -- penin/admin/decision ------------------------------------------------------


@pytest.mark.parametrize("scope", list(Scope))
@pytest.mark.parametrize("action", ADMIN_ACTIONS)
def test_only_admin_keys_may_perform_admin_actions(
    shipped: Shipped, scope: Scope, action: str
) -> None:
    result = shipped.evaluate(
        "penin/admin/decision",
        {"key": {"id": "k1", "scope": scope.value}, "action": action},
    )

    assert result["action"] == action
    assert result["allow"] is (scope is Scope.ADMIN)


def test_an_unknown_admin_action_is_refused_with_its_name(shipped: Shipped) -> None:
    result = shipped.evaluate(
        "penin/admin/decision",
        {"key": {"id": "k1", "scope": "admin"}, "action": "drop_ledger"},
    )

    assert result == {
        "allow": False,
        "action": "drop_ledger",
        "reasons": ["unknown action drop_ledger"],
    }
