"""``/v1/policy``: what a node serves, and decisions asked for over HTTP."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from fakes.fault import Fault
from fakes.opa import FakeOpa
from harness import assert_problem, bearer
from penin.api.app import create_app
from penin.config import load_settings
from penin.keys import Scope
from penin.ledger import jcs
from penin.policy.policyset import load_policy_set

VERDICT = "/v1/policy/penin/guard/verdict"
GOOD = {
    "metrics": {"rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.85, "g": 0.9,
                "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25},
    "consent": True,
    "eco_ok": True,
}  # fmt: skip
SHIPPED = ["penin.admin", "penin.budget", "penin.guard", "penin.router"]


@pytest.fixture
def admin(mint: Callable[[Scope], str]) -> dict[str, str]:
    return bearer(mint(Scope.ADMIN))


def decision_records(app: FastAPI) -> list[dict[str, Any]]:
    records = app.state.node.ledger.query(event_type="policy.decision", limit=1000)
    return [r.payload for r in records]


# -- GET /v1/policy ---------------------------------------------------------------


def test_the_loaded_set_lists_each_shipped_package_with_its_digest(
    client: TestClient, mint: Callable[[Scope], str]
) -> None:
    response = client.get("/v1/policy", headers=bearer(mint(Scope.READ)))

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["mode"] == "embedded"
    assert body["digest"] == load_policy_set().digest
    assert [p["package"] for p in body["packages"]] == SHIPPED
    for package in body["packages"]:
        name = package["package"].removeprefix("penin.")
        assert package["origin"] == "shipped"
        assert package["files"] == [f"penin/{name}/{name}.rego"]
        assert len(package["digest"]) == 64
    assert len({p["digest"] for p in body["packages"]}) == len(SHIPPED)


# -- POST /v1/policy/{path} -------------------------------------------------------


def test_a_good_challenger_is_promoted_and_the_decision_recorded(
    app: FastAPI, client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(VERDICT, json={"input": GOOD}, headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["allowed"] is True
    assert body["reason"] is None
    assert body["result"] == {"allow": True, "verdict": "promote", "failed": []}
    assert body["path"] == "penin/guard/verdict"
    assert body["policy_digest"] == load_policy_set().digest
    digest = hashlib.sha256(jcs.dumps(GOOD).encode()).hexdigest()
    assert body["input_digest"] == digest
    recorded = {r["decision_id"]: r for r in decision_records(app)}
    assert recorded[body["decision_id"]]["result"] == body["result"]
    assert recorded[body["decision_id"]]["input_digest"] == digest


def test_a_refused_challenger_is_a_200_that_names_its_failed_gates(
    client: TestClient, admin: dict[str, str]
) -> None:
    weak = {**GOOD, "metrics": {**GOOD["metrics"], "sr": 0.5}, "consent": False}

    response = client.post(VERDICT, json={"input": weak}, headers=admin)

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["allowed"], body["reason"]) == (False, "denied")
    assert body["result"]["verdict"] == "rollback"
    assert body["result"]["failed"] == ["consent", "sr"]


def test_a_path_that_names_nothing_denies_with_no_result(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        "/v1/policy/penin/guard/no_such_rule", json={"input": GOOD}, headers=admin
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["allowed"], body["reason"], body["result"]) == (
        False,
        "no_result",
        None,
    )


@pytest.mark.parametrize(
    ("url", "raw", "field"),
    [
        (VERDICT, "[]", "body"),
        (VERDICT, "{}", "input"),
        (VERDICT, '{"input": 3}', "input"),
        (VERDICT, '{"input": [1]}', "input"),
        (VERDICT, '{"input": {}, "query": "x"}', "query"),
        (VERDICT, '{"input": {"x": NaN}}', "input"),
        ("/v1/policy/penin//verdict", '{"input": {}}', "path"),
        ("/v1/policy/penin/guard-x/verdict", '{"input": {}}', "path"),
        ("/v1/policy/penin/guard/", '{"input": {}}', "path"),
    ],
    ids=[
        "list",
        "no-input",
        "number",
        "array",
        "unknown-field",
        "nan",
        "empty-segment",
        "dash",
        "trailing-slash",
    ],
)
def test_a_bad_body_or_path_is_422_naming_it(
    client: TestClient, admin: dict[str, str], url: str, raw: str, field: str
) -> None:
    response = client.post(
        url, content=raw, headers={**admin, "Content-Type": "application/json"}
    )

    body = assert_problem(response, 422, "validation")
    assert body["fields"][0] == field
    assert body["detail"].startswith(f"{field}: ")


def test_a_body_that_is_not_json_is_400(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        VERDICT,
        content='{"input": {',
        headers={**admin, "Content-Type": "application/json"},
    )

    assert_problem(response, 400, "invalid-json")


def test_an_opa_server_that_does_not_answer_is_a_503(tmp_path: Path) -> None:
    with FakeOpa() as opa:
        policy = {"mode": "remote", "opa_url": opa.base_url, "timeout_s": 0.2}
        settings = load_settings(
            overrides={"data_dir": tmp_path / "data", "policy": policy}
        )
        with TestClient(create_app(settings)) as client:
            token, _ = client.app.state.node.keyring.create(Scope.ADMIN)  # type: ignore[attr-defined]
            loaded = client.get("/v1/policy", headers=bearer(token))
            served = client.post(VERDICT, json={"input": GOOD}, headers=bearer(token))
            opa.always(Fault.hang())
            refused = client.post(VERDICT, json={"input": GOOD}, headers=bearer(token))

    assert loaded.json()["mode"] == "remote"
    assert loaded.json()["packages"] == []
    assert served.status_code == 200, served.text
    assert served.json()["result"]["verdict"] == "promote"
    # Whether the admin key may evaluate is the first question that times out.
    body = assert_problem(refused, 503, "policy-unavailable")
    assert body["detail"].startswith("penin/admin/decision: ")
    assert "(timeout)" in body["detail"]
    assert refused.headers["retry-after"] == "1"


# -- who may ------------------------------------------------------------------------


@pytest.mark.parametrize("scope", list(Scope))
def test_any_live_key_may_read_the_set_but_only_admin_may_evaluate(
    app: FastAPI, client: TestClient, mint: Callable[[Scope], str], scope: Scope
) -> None:
    headers = bearer(mint(scope))

    listed = client.get("/v1/policy", headers=headers)
    evaluated = client.post(VERDICT, json={"input": GOOD}, headers=headers)

    if scope in (Scope.READ, Scope.ADMIN):
        assert listed.status_code == 200, listed.text
    else:
        body = assert_problem(listed, 403, "forbidden")
        assert "needs scope 'read'" in body["detail"]
    if scope is Scope.ADMIN:
        assert evaluated.status_code == 200, evaluated.text
    else:
        body = assert_problem(evaluated, 403, "forbidden")
        assert body["detail"] == f"scope {scope.value} may not perform evaluate_policy"
        asked = [
            r for r in decision_records(app) if r["path"] == "penin/admin/decision"
        ]
        assert asked[-1]["decision_id"] == body["decision_id"]
        assert (asked[-1]["allowed"], asked[-1]["reason"]) == (False, "denied")


@pytest.mark.parametrize("url", ["/v1/policy", VERDICT])
@pytest.mark.parametrize(
    "authorization",
    [None, "Basic x", "Bearer pk_000000000000_" + "A" * 43],
    ids=["none", "not-bearer", "unknown-key"],
)
def test_the_policy_routes_refuse_a_request_without_a_live_key(
    app: FastAPI, client: TestClient, url: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else {}
    before = len(decision_records(app))

    response = client.request(
        "GET" if url == "/v1/policy" else "POST",
        url,
        json={"input": GOOD},
        headers=headers,
    )

    assert_problem(response, 401, "unauthorized")
    assert len(decision_records(app)) == before  # nothing was decided
