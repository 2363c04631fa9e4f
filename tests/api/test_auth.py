"""Every /v1 route admits exactly the keys of its scope, and secrets stay secret."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from fastapi.testclient import TestClient

from fakes.openai import FakeOpenAI
from harness import LiveServer, assert_problem, node_env, running_server, wait_for
from penin.keys import Scope

CHALLENGE = 'Bearer realm="penin"'


@dataclass(frozen=True)
class Route:
    """A /v1 route, the scope it needs, and a request it answers with 2xx.

    An admin action names the ``action`` the admin policy decides; the shipped
    policy grants every action to the admin scope alone.
    """

    scope: Scope
    url: str
    body: dict[str, Any] | None = None
    action: str | None = None
    # What a key of the right scope gets on this single node, when not 2xx.
    single_node: int | None = None


GUARD_INPUT = {
    "metrics": {"rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.85, "g": 0.9,
                "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25},
    "consent": True,
    "eco_ok": True,
}  # fmt: skip


ROUTES = {
    "POST /v1/ledger/records": Route(
        Scope.APPEND,
        "/v1/ledger/records",
        {"event_type": "test.auth", "payload": {"ok": True}},
    ),
    "GET /v1/ledger/records": Route(Scope.READ, "/v1/ledger/records"),
    "GET /v1/ledger/records/{seq}": Route(Scope.READ, "/v1/ledger/records/0"),
    "GET /v1/ledger/checkpoint": Route(Scope.READ, "/v1/ledger/checkpoint"),
    "POST /v1/ledger/checkpoint": Route(Scope.APPEND, "/v1/ledger/checkpoint"),
    "GET /v1/ledger/vkey": Route(Scope.READ, "/v1/ledger/vkey"),
    "GET /v1/ledger/proofs/inclusion": Route(
        Scope.READ, "/v1/ledger/proofs/inclusion?seq=0"
    ),
    "GET /v1/ledger/proofs/consistency": Route(
        Scope.READ, "/v1/ledger/proofs/consistency?from=1&to=2"
    ),
    "POST /v1/ledger/verify": Route(
        Scope.ADMIN, "/v1/ledger/verify", action="verify_ledger"
    ),
    "GET /v1/jobs/{job_id}": Route(Scope.READ, "/v1/jobs/{job_id}"),
    "POST /v1/cache/invalidate": Route(
        Scope.ADMIN,
        "/v1/cache/invalidate",
        {"key": "ab" * 32},
        action="invalidate_cache",
    ),
    "GET /v1/policy": Route(Scope.READ, "/v1/policy"),
    "POST /v1/policy/{path:path}": Route(
        Scope.ADMIN,
        "/v1/policy/penin/guard/verdict",
        {"input": GUARD_INPUT},
        action="evaluate_policy",
    ),
    "GET /v1/cluster": Route(Scope.READ, "/v1/cluster", single_node=404),
    "POST /v1/cluster/switchover": Route(
        Scope.ADMIN,
        "/v1/cluster/switchover",
        {"to": "n2"},
        action="switchover",
        single_node=404,
    ),
    "GET /v1/models": Route(Scope.ROUTE, "/v1/models"),
    "POST /v1/chat/completions": Route(
        Scope.ROUTE,
        "/v1/chat/completions",
        {"model": "fast", "messages": [{"role": "user", "content": "hi"}]},
    ),
}

# Who knocks: no header, a header that is no token, a token that was never
# issued, a real key id with a wrong secret, a revoked key, then each scope.
CREDENTIALS = [
    "none",
    "not-bearer",
    "garbage",
    "unknown-key",
    "wrong-secret",
    "revoked",
    *[s.value for s in Scope],
]
UNAUTHENTICATED = {"none", "not-bearer", "garbage", "unknown-key", "wrong-secret"}


def v1_routes(app: FastAPI) -> list[tuple[str, str]]:
    """(method, path template) of every /v1 route the app serves, of any kind."""
    return sorted(
        (method, route.path)
        for route in iter_route_contexts(app.routes)
        if route.path and route.path.startswith("/v1")
        for method in route.methods or {"GET"}
    )


# -- the routes, enumerated from the app ------------------------------------


def test_the_matrix_names_every_v1_route(app: FastAPI) -> None:
    served = {f"{method} {path}" for method, path in v1_routes(app)}

    assert served == set(ROUTES), "classify the new route's scope in ROUTES"


def test_every_v1_route_refuses_a_request_without_a_key(
    app: FastAPI, client: TestClient
) -> None:
    routes = v1_routes(app)
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", "0", path)
        response = client.request(method, url)

        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == CHALLENGE

    assert len(routes) >= len(ROUTES)


# -- the matrix, against a real server ---------------------------------------


@dataclass
class Node:
    server: LiveServer
    authorization: dict[str, str | None]
    job_id: str


def _authorization(server: LiveServer) -> dict[str, str | None]:
    """The Authorization header each credential sends (None: no header)."""
    keys = {scope.value: server.token(scope) for scope in Scope}
    key_id = keys["read"].split("_")[1]
    revoked = server.create_key(Scope.ADMIN, "to-revoke")
    server.revoke_key(revoked["key_id"])
    forged = {
        "garbage": "not-a-key-at-all",
        "unknown-key": "pk_000000000000_" + "A" * 43,
        "wrong-secret": f"pk_{key_id}_" + "B" * 43,
    }
    server.tokens += forged.values()
    bearers = {**forged, **keys, "revoked": revoked["token"]}

    return {
        "none": None,
        "not-bearer": f"Basic {keys['read']}",
        **{name: f"Bearer {token}" for name, token in bearers.items()},
    }


def _router_config(directory: Path, upstream: FakeOpenAI) -> Path:
    """A config routing the logical model ``fast`` to ``upstream``."""
    config = directory / "penin.yaml"
    provider = {
        "name": "fake",
        "kind": "openai",
        "base_url": upstream.base_url + "/v1",
        "api_key_env": "FAKE_PROVIDER_KEY",
    }
    deployment = {
        "provider": "fake",
        "model": "gpt-4o-mini",
        "input_per_mtok": 1,
        "output_per_mtok": 2,
    }
    model = {"name": "fast", "deployments": [deployment]}
    config.write_text(yaml.safe_dump({"providers": [provider], "models": [model]}))

    return config


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A real node routing to a fake provider, with a key of every scope, a
    revoked key, records and a job."""
    directory = tmp_path_factory.mktemp("auth")
    env = node_env(FAKE_PROVIDER_KEY="upstream-secret")
    with (
        FakeOpenAI() as upstream,
        running_server(
            directory, "--config", _router_config(directory, upstream), env=env
        ) as server,
    ):
        authorization = _authorization(server)
        # The provider's key is a secret too: it must show up nowhere either.
        server.tokens.append(env["FAKE_PROVIDER_KEY"])
        admin = {"Authorization": authorization["admin"] or ""}
        with server.client(headers=admin) as http:
            for n in range(3):
                body = {"event_type": "test.seed", "payload": {"n": n}}
                assert http.post("/v1/ledger/records", json=body).status_code == 201
            assert http.post("/v1/ledger/checkpoint").status_code == 200
            job = http.post("/v1/ledger/verify").json()
            # The node re-reads keys at most once a second: wait for the revocation.
            revoked = {"Authorization": authorization["revoked"] or ""}
            wait_for(
                lambda: http.get("/v1/ledger/vkey", headers=revoked).status_code == 401,
                10,
                "the node to refuse the revoked key",
            )

        yield Node(server, authorization, job["job_id"])


def _expected(credential: str, needed: Scope) -> int:
    if credential in UNAUTHENTICATED or credential == "revoked":
        return 401
    if credential in (needed.value, Scope.ADMIN.value):
        return 200

    return 403


def _headers(node: Node, credential: str) -> dict[str, str]:
    header = node.authorization[credential]
    return {"Authorization": header} if header else {}


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize("label", list(ROUTES))
def test_a_route_admits_only_live_keys_of_its_scope(
    node: Node, label: str, credential: str
) -> None:
    route = ROUTES[label]
    method = label.split(maxsplit=1)[0]
    url = route.url.format(job_id=node.job_id)

    with node.server.client() as http:
        response = http.request(
            method, url, json=route.body, headers=_headers(node, credential)
        )

    expected = _expected(credential, route.scope)
    if expected == 200 and route.single_node is not None:
        assert_problem(response, route.single_node, "not-found")
    elif expected == 200:
        assert 200 <= response.status_code < 300, response.text
    elif expected == 401:
        assert_problem(response, 401, "unauthorized")
        assert response.headers["www-authenticate"] == CHALLENGE
    elif route.action is not None:
        body = assert_problem(response, 403, "forbidden")
        assert body["detail"] == f"scope {credential} may not perform {route.action}"
        assert body["decision_id"]
    else:
        body = assert_problem(response, 403, "forbidden")
        assert f"needs scope '{route.scope.value}'" in body["detail"]
    for token in node.server.tokens:
        assert token not in response.text
        assert token not in str(response.headers)


def test_no_token_reaches_the_node_log(node: Node) -> None:
    """Stops the module's node, so it runs last here; then reads its whole log."""
    with node.server.client() as http:
        for credential in CREDENTIALS:
            http.get("/v1/ledger/vkey", headers=_headers(node, credential))

    assert node.server.stop() == 0
    log = node.server.log_text()

    assert len(node.server.access_lines()) >= len(CREDENTIALS)
    for token in node.server.tokens:
        assert token not in log
