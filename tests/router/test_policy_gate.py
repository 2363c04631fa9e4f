"""The router asks its policies on every request: data classes, models, budgets.

A node in this process routes to fake providers; the shipped policies (or a
user's directory over them) decide, and every decision is in the ledger
beside the request's record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway import CHAT, Gateway, chat, deployment, gateway, provider

from fakes.fault import Fault
from fakes.opa import FakeOpa
from fakes.openai import FakeOpenAI
from harness import assert_problem
from penin.keys import Scope
from penin.ledger import jcs
from penin.policy.engine import EmbeddedEngine
from penin.policy.policyset import load_policy_set

PII = ["public", "internal", "pii"]
DECISION = "policy.decision"
BUDGET_PATH = "penin/budget/decision"
ROUTER_PATH = "penin/router/decision"


@pytest.fixture
def fake_a() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def cleared(fake_a: FakeOpenAI, fake_b: FakeOpenAI, **extra: Any) -> dict[str, Any]:
    """``fast``: a (cheaper, no PII) then b (cleared for PII); ``smart``: b."""
    return {
        "providers": [provider("a", fake_a), provider("b", fake_b)],
        "models": [
            {
                "name": "fast",
                "deployments": [
                    deployment("a"),
                    deployment("b", output_per_mtok=3.0, data_classes=PII),
                ],
            },
            {
                "name": "smart",
                "deployments": [deployment("b", output_per_mtok=3.0, data_classes=PII)],
            },
        ],
        **extra,
    }


def post(gw: Gateway, token: str, body: dict[str, Any], **headers: str) -> Any:
    return gw.client.post(
        CHAT, json=body, headers={"Authorization": f"Bearer {token}", **headers}
    )


def key(gw: Gateway, **limits: Any) -> str:
    token, _ = gw.node.keyring.create(Scope.ROUTE, **limits)
    return str(token)


def ledger(gw: Gateway) -> list[Any]:
    return list(gw.node.ledger.query(limit=1000))


def decisions_of(gw: Gateway, record: dict[str, Any]) -> list[dict[str, Any]]:
    """The policy.decision records a router.request names, in its order."""
    by_id = {
        r.payload["decision_id"]: r.payload
        for r in gw.node.ledger.query(event_type=DECISION, limit=1000)
    }
    return [by_id[i] for i in record["policy_decisions"]]


# -- data classes -----------------------------------------------------------------


def test_a_pii_request_reaches_only_a_deployment_cleared_for_pii(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        internal = gw.post(chat())
        pii = gw.post(chat(), **{"X-Penin-Data-Class": "pii"})
        records = gw.records()

    assert internal.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert pii.status_code == 200, pii.text
    assert pii.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert len(fake_a.requests) == 1
    assert len(fake_b.requests) == 1
    assert [r["data_class"] for r in records] == ["internal", "pii"]


def test_a_key_held_to_pii_cannot_lower_its_class_with_the_header(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        token = key(gw, data_class="pii")
        plain = post(gw, token, chat())
        lowered = post(gw, token, chat(), **{"X-Penin-Data-Class": "public"})
        records = gw.records()

    for response in (plain, lowered):
        assert response.status_code == 200, response.text
        assert response.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert fake_a.requests == []
    assert [r["data_class"] for r in records] == ["pii", "pii"]


def test_an_unknown_data_class_is_refused_and_nothing_is_sent(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        unknown = gw.post(chat(), **{"X-Penin-Data-Class": "secret"})
        malformed = gw.post(chat(), **{"X-Penin-Data-Class": "PII"})
        records = gw.records()

    body = assert_problem(unknown, 403, "policy-denied")
    assert body["detail"] == f"{ROUTER_PATH}: unknown data class secret"
    assert body["decision_id"] == records[0]["policy_decisions"][-1]
    malformed_body = assert_problem(malformed, 422, "validation")
    assert malformed_body["fields"] == ["X-Penin-Data-Class"]
    assert fake_a.requests == fake_b.requests == []
    assert [r["outcome"] for r in records] == ["policy_denied"]


def test_a_class_no_deployment_is_cleared_for_is_refused(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    config = {
        "providers": [provider("a", fake_a)],
        "models": [{"name": "fast", "deployments": [deployment("a")]}],
    }
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat(), **{"X-Penin-Data-Class": "pii"})

    body = assert_problem(response, 403, "policy-denied")
    assert body["detail"] == f"{ROUTER_PATH}: no deployment may receive data class pii"
    assert fake_a.requests == []


def test_a_pii_request_may_fall_back_only_to_cleared_deployments(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """The model's only cleared deployment fails; its fallback's uncleared one
    is never tried, and the client gets the failure."""
    config = {
        "providers": [provider("a", fake_a), provider("b", fake_b)],
        "models": [
            {
                "name": "fast",
                "deployments": [deployment("b", data_classes=PII)],
                "fallbacks": ["spare"],
            },
            {"name": "spare", "deployments": [deployment("a")]},
        ],
        "router": {"retry": {"attempts": 0}},
    }
    with gateway(tmp_path, **config) as gw:
        fake_b.always(Fault.server_error())
        pii = gw.post(chat(), **{"X-Penin-Data-Class": "pii"})
        internal = gw.post(chat())

    assert_problem(pii, 502, "upstream-failed")
    assert internal.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert len(fake_a.requests) == 1  # the internal request's fallback only
    assert len(fake_b.requests) == 2


# -- models -------------------------------------------------------------------------


def test_a_key_limited_to_fast_is_refused_smart_and_nothing_is_sent(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        token = key(gw, models=["fast"])
        smart = post(gw, token, chat("smart"))
        streamed = post(gw, token, chat("smart", stream=True))
        fast = post(gw, token, chat("fast"))
        records = gw.records()

    for refused in (smart, streamed):
        body = assert_problem(refused, 403, "policy-denied")
        assert body["detail"] == f"{ROUTER_PATH}: the key may not use model smart"
    assert fast.status_code == 200, fast.text
    assert len(fake_a.requests) == 1
    assert fake_b.requests == []
    assert [r["outcome"] for r in records] == ["policy_denied", "policy_denied", "ok"]


def test_a_cached_answer_is_not_served_to_a_key_that_may_not_use_the_model(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        first = gw.post(chat("smart", temperature=0))
        again = gw.post(chat("smart", temperature=0))
        refused = post(gw, key(gw, models=["fast"]), chat("smart", temperature=0))
        asked = [[d["path"] for d in decisions_of(gw, r)] for r in gw.records()]

    assert first.status_code == again.status_code == 200
    assert again.headers["x-penin-cache"] == "hit-l1"
    assert_problem(refused, 403, "policy-denied")
    assert len(fake_b.requests) == 1
    # A cached answer spends nothing: only the router policy is asked.
    assert asked == [[BUDGET_PATH, ROUTER_PATH], [ROUTER_PATH], [ROUTER_PATH]]


# -- budgets ------------------------------------------------------------------------


def test_at_the_policys_soft_threshold_the_cheapest_cleared_deployment_serves(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """The budget policy's own threshold (1 % here, by a user data file) makes
    the router policy downgrade: the cheapest deployment cleared for PII."""
    with FakeOpenAI() as fake_c:
        policies = tmp_path / "policies"
        (policies / "penin" / "budget").mkdir(parents=True)
        (policies / "penin" / "budget" / "data.json").write_text(
            json.dumps({"thresholds": {"soft": 0.01, "hard": 1.0}})
        )
        config = {
            "providers": [
                provider("a", fake_a),
                provider("b", fake_b),
                provider("c", fake_c),
            ],
            "models": [
                {
                    "name": "fast",
                    "strategy": "score",
                    "deployments": [
                        deployment("a", output_per_mtok=0.5),
                        deployment("b", output_per_mtok=2.0, data_classes=PII),
                        deployment(
                            "c", output_per_mtok=9.0, quality=1.0, data_classes=PII
                        ),
                    ],
                }
            ],
            "router": {
                "score_weights": {"cost": 0, "latency": 0, "quality": 1, "success": 0}
            },
            # Soft at 10,000 nano-USD by the policy, never by soft_fraction; the
            # first answer (from c) costs 3 × 1,000 + 5 × 9,000 = 48,000.
            "budget": {"daily_usd": 1e-3, "soft_fraction": 1.0},
            "policy": {"dir": str(policies)},
        }
        with gateway(tmp_path, **config) as gw:
            pii = {"X-Penin-Data-Class": "pii"}
            first = gw.post(chat(max_tokens=10), **pii)
            second = gw.post(chat(max_tokens=10), **pii)
            records = gw.records()
            budget, router = decisions_of(gw, records[1])

    assert first.headers["x-penin-deployment"] == "c/gpt-4o-mini"
    assert second.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert fake_a.requests == []
    assert "downgraded" not in records[0]
    assert records[1]["downgraded"] == "global"
    assert budget["result"] == {"allow": True, "state": "soft", "limit": "daily"}
    assert router["result"]["downgrade"] is True


def test_a_hard_limit_the_policy_finds_passed_is_a_429(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """A user threshold below the configured limit: the policy may be stricter."""
    policies = tmp_path / "policies"
    (policies / "penin" / "budget").mkdir(parents=True)
    (policies / "penin" / "budget" / "data.json").write_text(
        json.dumps({"thresholds": {"soft": 0.05, "hard": 0.1}})
    )
    config = cleared(
        fake_a, fake_b, budget={"daily_usd": 1e-3}, policy={"dir": str(policies)}
    )
    with gateway(tmp_path, **config) as gw:
        # Hard at 100,000 nano-USD by the policy, not at the 1,000,000 of the
        # config; each answer costs 13,000 (and reserves 23,000 at most).
        responses = [gw.post(chat(max_tokens=10)) for _ in range(12)]
        records = gw.records()
        last = decisions_of(gw, records[-1])

    statuses = [r.status_code for r in responses]
    assert statuses == [200] * 8 + [429] * 4
    body = assert_problem(responses[-1], 429, "budget-exceeded")
    assert body["scope"] == "global"
    assert sum(r["cost_nusd"] for r in records) == 8 * 13_000
    assert [d["path"] for d in last] == [BUDGET_PATH]
    assert last[0]["result"] == {"allow": False, "state": "hard", "limit": "daily"}


# -- failures -------------------------------------------------------------------------


def test_a_router_policy_that_cannot_decide_refuses_with_403_not_500(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    policies = tmp_path / "policies"
    (policies / "router").mkdir(parents=True)
    (policies / "router" / "router.rego").write_text(
        "package penin.router\n\n"
        'decision := {"allow": true, "deployments": []} if input.never\n'
    )
    config = cleared(fake_a, fake_b, policy={"dir": str(policies)})
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())
        (record,) = gw.records()
        budget, router = decisions_of(gw, record)

    body = assert_problem(response, 403, "policy-denied")
    assert body["detail"] == (
        f"{ROUTER_PATH}: the policy could not decide (undefined), "
        "so the request is refused"
    )
    assert fake_a.requests == fake_b.requests == []
    assert budget["allowed"] is True
    assert (router["allowed"], router["reason"]) == (False, "undefined")


def test_a_router_policy_that_names_no_deployments_refuses_the_request(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    """Allowed, but without the list of deployments the router needs."""
    policies = tmp_path / "policies"
    (policies / "router").mkdir(parents=True)
    (policies / "router" / "router.rego").write_text(
        'package penin.router\n\ndecision := {"allow": true}\n'
    )
    config = cleared(fake_a, fake_b, policy={"dir": str(policies)})
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())

    body = assert_problem(response, 403, "policy-denied")
    assert "(malformed_result)" in body["detail"]
    assert fake_a.requests == fake_b.requests == []


def test_an_opa_server_that_does_not_answer_is_a_503(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with FakeOpa() as opa:
        remote = {"mode": "remote", "opa_url": opa.base_url, "timeout_s": 0.2}
        with gateway(tmp_path, **cleared(fake_a, fake_b, policy=remote)) as gw:
            served = gw.post(chat())
            opa.always(Fault.hang())
            refused = gw.post(chat())

    assert served.status_code == 200, served.text
    body = assert_problem(refused, 503, "policy-unavailable")
    assert refused.headers["retry-after"] == "1"
    assert "(timeout)" in body["detail"]
    assert len(fake_a.requests) == 1


# -- the decision records ---------------------------------------------------------


def test_every_routed_request_writes_its_decisions_with_its_record(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b)) as gw:
        token = key(gw, models=["fast"])
        gw.post(chat(temperature=0))
        gw.post(chat(temperature=0))  # from the cache
        auth = {"Authorization": f"Bearer {gw.token}"}
        with gw.client.stream(
            "POST", CHAT, json=chat(stream=True), headers=auth
        ) as sse:
            assert sse.status_code == 200
            sse.read()
        post(gw, token, chat("smart"))
        entries = ledger(gw)
        digest = gw.node.policies.digest

    routed = [e for e in entries if e.event_type == "router.request"]
    assert [e.payload["outcome"] for e in routed] == ["ok"] * 3 + ["policy_denied"]
    asked = []
    for record in routed:
        ids = record.payload["policy_decisions"]
        # Written in one transaction, just before the record that names them.
        before = entries[record.seq - len(ids) : record.seq]
        assert [e.event_type for e in before] == [DECISION] * len(ids)
        assert [e.payload["decision_id"] for e in before] == ids
        assert {e.payload["policy_digest"] for e in before} == {digest}
        assert all("input" not in e.payload for e in before)
        asked.append([(e.payload["path"], e.payload["allowed"]) for e in before])
    assert asked == [
        [(BUDGET_PATH, True), (ROUTER_PATH, True)],
        [(ROUTER_PATH, True)],
        [(BUDGET_PATH, True), (ROUTER_PATH, True)],
        [(BUDGET_PATH, True), (ROUTER_PATH, False)],
    ]


def test_a_decision_in_the_ledger_can_be_checked_again(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **cleared(fake_a, fake_b, policy={"log_input": True})) as gw:
        gw.post(chat(), **{"X-Penin-Data-Class": "pii"})
        (record,) = gw.records()
        logged = decisions_of(gw, record)

    # Anyone with the ledger and the policy set can decide each one again.
    engine = EmbeddedEngine(load_policy_set())
    for decision in logged:
        text = jcs.dumps(decision["input"])
        assert hashlib.sha256(text.encode()).hexdigest() == decision["input_digest"]
        assert decision["policy_digest"] == engine.digest
        again = engine.evaluate(decision["path"], decision["input"])
        assert (again.allowed, again.result) == (True, decision["result"])
        assert again.input_digest == decision["input_digest"]
    router = logged[1]
    assert router["input"]["request"] == {"model": "fast", "data_class": "pii"}
    assert router["result"]["deployments"] == ["b/gpt-4o-mini"]
