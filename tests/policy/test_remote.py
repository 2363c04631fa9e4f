"""Remote mode: an OPA server's Data API decides, under the same fail-closed rule."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bundles import decisions, failures, write_bundle
from structlog.testing import capture_logs

from fakes.fault import Fault
from fakes.opa import FakeOpa
from harness import free_port
from penin.ledger import jcs
from penin.policy.engine import Decision, EmbeddedEngine
from penin.policy.policyset import load_policy_set
from penin.policy.remote import RemoteEngine

ROUTER_INPUT = {
    "key": {"id": "k1", "scope": "route", "data_class": "internal", "models": None},
    "request": {"model": "fast", "data_class": "pii"},
    "deployments": [
        {"name": "a/small", "provider": "a", "data_classes": ["public", "internal"]},
        {"name": "b/large", "provider": "b", "data_classes": ["internal", "pii"]},
    ],
    "budget": {"state": "ok"},
}
GUARD_METRICS = {
    "rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.85, "g": 0.9,
    "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25,
}  # fmt: skip
# Each shipped gate, at decisions that allow and that deny, as the node sends them.
SHIPPED_CASES: list[tuple[str, dict[str, Any]]] = [
    ("penin/router/decision", ROUTER_INPUT),
    (
        "penin/router/decision",
        {**ROUTER_INPUT, "key": {**ROUTER_INPUT["key"], "models": ["smart"]}},
    ),
    (
        "penin/router/decision",
        {**ROUTER_INPUT, "request": {"model": "fast", "data_class": "secret"}},
    ),
    (
        "penin/budget/decision",
        {
            "spent_usd": {"day": 4.8, "key": 0.3},
            "limits": {"daily_usd": 5.0, "per_key_daily_usd": None},
            "request_usd": 0.01,
        },
    ),
    (
        "penin/budget/decision",
        {
            "spent_usd": {"day": 1.0, "key": 1.0},
            "limits": {"daily_usd": 5.0, "per_key_daily_usd": 1.0},
            "request_usd": 0.01,
        },
    ),
    (
        "penin/guard/verdict",
        {"metrics": GUARD_METRICS, "consent": True, "eco_ok": True},
    ),
    (
        "penin/guard/verdict",
        {"metrics": {**GUARD_METRICS, "sr": 0.5}, "consent": True, "eco_ok": True},
    ),
    (
        "penin/guard/verdict",
        {"metrics": {**GUARD_METRICS, "rho": 0.99}, "consent": False, "eco_ok": True},
    ),
    (
        "penin/admin/decision",
        {"key": {"id": "k1", "scope": "admin"}, "action": "restore"},
    ),
    (
        "penin/admin/decision",
        {"key": {"id": "k1", "scope": "route"}, "action": "restore"},
    ),
    (
        "penin/admin/decision",
        {"key": {"id": "k1", "scope": "admin"}, "action": "launch"},
    ),
]
TIMEOUT_S = 0.3


@pytest.fixture
def opa() -> Iterator[FakeOpa]:
    with FakeOpa() as server:
        yield server


def remote(
    base_url: str, *cases: tuple[str, Any], timeout_s: float = TIMEOUT_S
) -> list[Decision]:
    """Decide each (path, input) in turn with a remote engine, then close it."""

    async def run() -> list[Decision]:
        engine = RemoteEngine(base_url, timeout_s=timeout_s)
        try:
            return [await engine.decide(path, given) for path, given in cases]
        finally:
            await engine.close()

    return asyncio.run(run())


def test_remote_decisions_are_the_embedded_ones_for_every_shipped_gate(
    opa: FakeOpa,
) -> None:
    embedded = EmbeddedEngine(load_policy_set())

    answers = remote(opa.base_url, *SHIPPED_CASES)

    assert {d.allowed for d in answers} == {True, False}
    for (path, given), answer in zip(SHIPPED_CASES, answers, strict=True):
        local = embedded.evaluate(path, given)
        assert answer.allowed == local.allowed, path
        assert answer.reason == local.reason, path
        assert answer.result == local.result, path
        assert answer.input_digest == local.input_digest
        assert answer.policy_digest == f"opa:penin@{embedded.digest}"


def test_the_server_is_asked_with_strict_builtin_errors_and_provenance(
    opa: FakeOpa,
) -> None:
    remote(opa.base_url, ("penin/router/decision", ROUTER_INPUT))

    (request,) = opa.requests
    assert request.method == "POST"
    assert request.path == "/v1/data/penin/router/decision"
    assert request.query == {"strict-builtin-errors": "true", "provenance": "true"}
    assert request.json == {"input": ROUTER_INPUT}


def test_a_canonical_text_given_with_the_input_is_what_is_sent_and_digested(
    opa: FakeOpa,
) -> None:
    text = jcs.dumps(ROUTER_INPUT)

    async def run() -> Decision:
        engine = RemoteEngine(opa.base_url, timeout_s=TIMEOUT_S)
        try:
            return await engine.decide("penin/router/decision", ROUTER_INPUT, text)
        finally:
            await engine.close()

    decision = asyncio.run(run())

    (request,) = opa.requests
    assert request.body == f'{{"input":{text}}}'.encode()
    assert decision.input_digest == hashlib.sha256(text.encode()).hexdigest()
    assert decision.reason in (None, "denied")


def test_an_evaluation_error_on_the_server_denies_as_an_error(tmp_path: Path) -> None:
    user = write_bundle(
        tmp_path / "policies",
        {"ratio.rego": "package acme\n\nallow := input.spent / input.limit < 1\n"},
    )
    with FakeOpa(user) as server:
        (decision,) = remote(server.base_url, ("acme/allow", {"spent": 1, "limit": 0}))

    assert not decision.allowed
    assert decision.reason == "error"


FAULTS = {
    "slow_beyond_the_timeout": (Fault.ok().slowed(delay=TIMEOUT_S * 10), "timeout"),
    "no_answer_at_all": (Fault.hang(), "timeout"),
    "internal_error": (Fault.server_error(500), "error"),
    "unavailable": (Fault.server_error(503), "unavailable"),
    "malformed_json": (Fault.malformed_json(), "error"),
    "connection_closed": (Fault.disconnect(), "unavailable"),
    "connection_reset": (Fault.reset(), "unavailable"),
}


@pytest.mark.parametrize("fault", FAULTS.keys())
def test_each_fault_of_the_server_denies_with_its_reason(
    opa: FakeOpa, fault: str
) -> None:
    scripted, reason = FAULTS[fault]
    path = "penin/router/decision"
    opa.script(scripted)
    failed_before = failures(path, reason)
    denied_before = decisions(path, "deny")

    with capture_logs() as logs:
        failed, recovered = remote(
            opa.base_url, (path, ROUTER_INPUT), (path, ROUTER_INPUT)
        )

    assert not failed.allowed
    assert failed.reason == reason
    assert failed.result is None
    assert failures(path, reason) == failed_before + 1
    assert decisions(path, "deny") == denied_before + 1
    (event,) = logs
    assert event["event"] == "policy.evaluation_failed"
    assert event["reason"] == reason
    assert event["error"]
    assert recovered.allowed


def test_an_undefined_path_denies_as_undefined(opa: FakeOpa) -> None:
    before = failures("penin/router/nothing", "undefined")

    (decision,) = remote(opa.base_url, ("penin/router/nothing", ROUTER_INPUT))

    assert not decision.allowed
    assert decision.reason == "undefined"
    assert failures("penin/router/nothing", "undefined") == before + 1


def test_a_server_that_is_not_there_denies_as_unavailable() -> None:
    (decision,) = remote(f"http://127.0.0.1:{free_port()}", ("penin/a", {}))

    assert not decision.allowed
    assert decision.reason == "unavailable"
    assert decision.policy_digest.startswith("opa:http://127.0.0.1:")


def test_a_closed_engine_denies_as_unavailable(opa: FakeOpa) -> None:
    async def run() -> Decision:
        engine = RemoteEngine(opa.base_url, timeout_s=TIMEOUT_S)
        await engine.close()
        return await engine.decide("penin/router/decision", ROUTER_INPUT)

    decision = asyncio.run(run())

    assert decision.reason == "unavailable"
    assert opa.requests == []


def test_bad_paths_and_inputs_deny_before_any_call(opa: FakeOpa) -> None:
    bad_path, bad_input = remote(
        opa.base_url, ("penin/../admin", {}), ("penin/a", {"x": float("inf")})
    )

    assert (bad_path.reason, bad_input.reason) == ("error", "error")
    assert opa.requests == []


def test_a_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="timeout_s must be positive"):
        RemoteEngine("http://127.0.0.1:1", timeout_s=0)
