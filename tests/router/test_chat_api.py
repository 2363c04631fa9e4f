"""/v1/chat/completions in a node: routing, fallbacks, budgets, cache and audit."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway import (
    CHAT,
    COST_NUSD,
    REPLY_TOKENS,
    Gateway,
    chat,
    deployment,
    gateway,
    provider,
)

from fakes.anthropic import FakeAnthropic
from fakes.fault import DEFAULT_TEXT, Fault
from fakes.openai import FakeOpenAI
from harness import assert_problem, wait_for
from penin.keys import Scope

FAST_RETRY = {"retry": {"attempts": 1, "backoff_base_s": 0.01, "backoff_max_s": 0.02}}


@pytest.fixture
def fake_a() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def two_providers(
    fake_a: FakeOpenAI, fake_b: FakeOpenAI, *, strategy: str = "cost", **model: Any
) -> dict[str, Any]:
    """Model ``fast``: a (cheaper) then b; both at the test prices unless told."""
    return {
        "providers": [provider("a", fake_a), provider("b", fake_b)],
        "models": [
            {
                "name": "fast",
                "strategy": strategy,
                "deployments": model.pop(
                    "deployments",
                    [deployment("a"), deployment("b", output_per_mtok=3.0)],
                ),
                **model,
            }
        ],
        "router": FAST_RETRY,
    }


# -- the happy path ------------------------------------------------------------


def test_a_completion_names_its_deployment_cost_and_budget_and_is_audited(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_providers(fake_a, fake_b) | {"budget": {"daily_usd": 1.0}}
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())
        records = gw.records()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert response.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert float(response.headers["x-penin-cost-usd"]) == pytest.approx(COST_NUSD / 1e9)
    assert float(response.headers["x-penin-budget-remaining-usd"]) == pytest.approx(
        1.0 - COST_NUSD / 1e9
    )
    assert len(fake_b.requests) == 0
    (record,) = records
    assert record["model"] == "fast"
    assert record["deployment"] == "a/gpt-4o-mini"
    assert record["cost_nusd"] == COST_NUSD
    assert record["prompt_tokens"] == 3
    assert record["completion_tokens"] == REPLY_TOKENS
    assert record["estimated"] is False
    assert record["outcome"] == "ok"
    assert [a["outcome"] for a in record["attempts"]] == ["ok"]
    assert "messages" not in record
    assert "content" not in str(record)


def test_models_lists_the_logical_models_in_openai_shape(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.client.get(
            "/v1/models", headers={"Authorization": f"Bearer {gw.token}"}
        )

    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["fast"]


def test_a_node_without_models_lists_none_and_knows_no_model(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        auth = {"Authorization": f"Bearer {gw.token}"}
        models = gw.client.get("/v1/models", headers=auth)
        answer = gw.post(chat())

    assert models.status_code == 200
    assert models.json() == {"object": "list", "data": []}
    body = assert_problem(answer, 404, "model-not-found")
    assert "none are configured" in body["detail"]


def test_missing_usage_is_counted_offline_and_marked_estimated(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script(Fault.missing_usage())
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.post(chat())
        (record,) = gw.records()

    assert response.status_code == 200
    assert response.headers["x-penin-cost-estimated"] == "true"
    assert record["estimated"] is True
    assert record["completion_tokens"] > 0
    assert record["cost_nusd"] > 0


# -- failures and fallbacks ----------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [
        Fault.server_error(500),
        Fault.server_error(503),
        Fault.reset(),
        Fault.rate_limit(),
    ],
    ids=["500", "503", "reset", "429"],
)
def test_a_retryable_failure_moves_on_to_the_next_deployment(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI, fault: Fault
) -> None:
    fake_a.script(fault)
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.post(chat())
        (record,) = gw.records()

    assert response.status_code == 200, response.text
    assert response.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert [a["deployment"] for a in record["attempts"]] == [
        "a/gpt-4o-mini",
        "b/gpt-4o-mini",
    ]
    assert record["attempts"][1]["outcome"] == "ok"


def test_retry_after_is_waited_out_when_nothing_else_is_open(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    fake_a.script(Fault.rate_limit(retry_after=1))
    config = {
        "providers": [provider("a", fake_a)],
        "models": [{"name": "fast", "deployments": [deployment("a")]}],
        "router": FAST_RETRY,
    }
    with gateway(tmp_path, **config) as gw:
        started = time.monotonic()
        response = gw.post(chat())
        waited = time.monotonic() - started

    assert response.status_code == 200, response.text
    assert len(fake_a.requests) == 2
    assert waited >= 1.0


def test_when_every_deployment_fails_the_client_gets_502_naming_the_last_error(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.always(Fault.server_error(502))
    fake_b.always(Fault.server_error(500))
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.post(chat())
        (record,) = gw.records()

    problem = assert_problem(response, 502, "upstream-failed")
    assert "server" in problem["detail"]
    # One pass and one retry pass over both deployments.
    assert len(fake_a.requests) == 2
    assert len(fake_b.requests) == 2
    assert record["outcome"] == "NoDeploymentError"
    assert record["deployment"] is None


def test_three_failures_open_the_circuit_and_the_deployment_is_skipped(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.always(Fault.server_error(500))
    config = two_providers(fake_a, fake_b)
    config["router"] = {"retry": {"attempts": 0}}
    with gateway(tmp_path, **config) as gw:
        for _ in range(4):
            assert gw.post(chat()).status_code == 200
        health = gw.client.get("/health").json()
        last = gw.records()[-1]

    assert len(fake_a.requests) == 3
    assert last["attempts"][0] == {
        "deployment": "a/gpt-4o-mini",
        "outcome": "circuit_open",
    }
    assert health["details"]["router"]["models_without_deployment"] == []


def test_a_context_length_error_falls_back_to_a_larger_context_deployment(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script(Fault.context_length())
    small = deployment("a", max_input_tokens=8_000)
    large = deployment("b", max_input_tokens=200_000, output_per_mtok=9.0)
    config = two_providers(fake_a, fake_b, deployments=[small, large])
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())

    assert response.status_code == 200, response.text
    assert response.headers["x-penin-deployment"] == "b/gpt-4o-mini"


def test_a_content_policy_refusal_follows_the_configured_fallback(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script(Fault.content_policy())
    config = {
        "providers": [provider("a", fake_a), provider("b", fake_b)],
        "models": [
            {
                "name": "fast",
                "deployments": [deployment("a")],
                "content_policy_fallbacks": ["lenient"],
            },
            {"name": "lenient", "deployments": [deployment("b")]},
        ],
    }
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())

    assert response.status_code == 200, response.text
    assert response.headers["x-penin-deployment"] == "b/gpt-4o-mini"


def test_a_content_policy_refusal_without_fallback_is_a_400_problem(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script(Fault.content_policy())
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.post(chat())

    assert_problem(response, 400, "content-policy")
    assert len(fake_b.requests) == 0


def test_fallback_models_are_tried_after_the_group_is_spent(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.always(Fault.server_error(500))
    config = {
        "providers": [provider("a", fake_a), provider("b", fake_b)],
        "models": [
            {"name": "fast", "deployments": [deployment("a")], "fallbacks": ["smart"]},
            {"name": "smart", "deployments": [deployment("b", model="gpt-4o")]},
        ],
        "router": FAST_RETRY,
    }
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())

    assert response.status_code == 200
    assert response.headers["x-penin-deployment"] == "b/gpt-4o"
    assert len(fake_a.requests) == 2  # the group's pass and its retry


def test_anthropic_deployments_answer_in_openai_shape(tmp_path: Path) -> None:
    with FakeAnthropic() as fake:
        config = {
            "providers": [provider("claude", fake, kind="anthropic")],
            "models": [
                {
                    "name": "fast",
                    "deployments": [
                        deployment("claude", model="claude-3-5-haiku-latest")
                    ],
                }
            ],
        }
        with gateway(tmp_path, **config) as gw:
            response = gw.post(chat())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert body["usage"]["completion_tokens"] == REPLY_TOKENS


# -- client errors -------------------------------------------------------------


def test_chat_needs_a_route_key(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        read_token, _ = gw.node.keyring.create(Scope.READ)
        missing = gw.client.post(CHAT, json=chat())
        wrong = gw.client.post(
            CHAT, json=chat(), headers={"Authorization": f"Bearer {read_token}"}
        )
        models = gw.client.get("/v1/models")

    assert_problem(missing, 401, "unauthorized")
    assert_problem(wrong, 403, "forbidden")
    assert_problem(models, 401, "unauthorized")
    assert fake_a.requests == []


@pytest.mark.parametrize(
    ("body", "status", "kind", "named"),
    [
        (b"{not json", 400, "invalid-json", "JSON"),
        (b"[1, 2]", 422, "validation", "body"),
        (
            b'{"messages": [{"role": "user", "content": "x"}]}',
            422,
            "validation",
            "model",
        ),
        (b'{"model": "fast", "messages": []}', 422, "validation", "messages"),
        (b'{"model": "fast", "messages": [42]}', 422, "validation", "messages.0"),
        (
            b'{"model": "nope", "messages": [{"role": "user"}]}',
            404,
            "model-not-found",
            "nope",
        ),
    ],
)
def test_bad_requests_are_problems_naming_the_field_and_send_nothing_upstream(
    tmp_path: Path,
    fake_a: FakeOpenAI,
    fake_b: FakeOpenAI,
    body: bytes,
    status: int,
    kind: str,
    named: str,
) -> None:
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        response = gw.client.post(
            CHAT,
            content=body,
            headers={
                "Authorization": f"Bearer {gw.token}",
                "Content-Type": "application/json",
            },
        )

    problem = assert_problem(response, status, kind)
    assert named in problem["detail"]
    assert fake_a.requests == []


def test_a_provider_4xx_is_returned_as_a_problem_without_fallback(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_providers(fake_a, fake_b)
    config["providers"][0]["base_url"] = fake_a.base_url + "/wrong/v1"
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())

    problem = assert_problem(response, 404, "upstream-rejected")
    assert "a: bad_request (404)" in problem["detail"]
    assert len(fake_a.requests) == 1
    assert fake_b.requests == []


# -- budgets -------------------------------------------------------------------


def test_the_hard_limit_refuses_with_429_and_sends_nothing(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_providers(fake_a, fake_b) | {"budget": {"daily_usd": 0.0}}
    with gateway(tmp_path, **config) as gw:
        response = gw.post(chat())
        (record,) = gw.records()

    problem = assert_problem(response, 429, "budget-exceeded")
    assert problem["scope"] == "global"
    assert "retry-after" in response.headers
    assert fake_a.requests == []
    assert fake_b.requests == []
    assert record["outcome"] == "BudgetExceededError"


def test_concurrent_requests_never_spend_past_the_budget(tmp_path: Path) -> None:
    """The budget admits exactly ADMITTED requests whose worst case is their cost."""
    admitted, fired = 7, 60
    with FakeOpenAI() as fake:
        # max_tokens = the reply's tokens and input free: worst case == actual cost.
        free_input = deployment("a", input_per_mtok=0.0)
        config = {
            "providers": [provider("a", fake)],
            "models": [{"name": "fast", "deployments": [free_input]}],
            "budget": {"daily_usd": admitted * REPLY_TOKENS * 2000 / 1e9},
        }
        with gateway(tmp_path, **config) as gw:
            statuses = asyncio.run(_fire(gw, fired, chat(max_tokens=REPLY_TOKENS)))
            spent = sum(r["cost_nusd"] for r in gw.records())
            status = asyncio.run(gw.node.router.budget.status(None))

    assert statuses.count(200) == admitted
    assert statuses.count(429) == fired - admitted
    assert len(fake.requests) == admitted
    assert spent == admitted * REPLY_TOKENS * 2000
    assert status.global_remaining_usd == pytest.approx(0.0, abs=1e-12)


async def _fire(gw: Gateway, n: int, body: dict[str, Any]) -> list[int]:
    """``n`` requests at once from threads (TestClient is synchronous)."""
    responses = await asyncio.gather(
        *(asyncio.to_thread(gw.post, body) for _ in range(n))
    )

    return [r.status_code for r in responses]


def test_the_soft_limit_routes_to_the_cheapest_deployment(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    cheap = deployment("a", output_per_mtok=0.5)
    dear = deployment("b", output_per_mtok=9.0, quality=1.0)
    config = two_providers(fake_a, fake_b, strategy="score", deployments=[dear, cheap])
    config["router"] = {
        "score_weights": {"cost": 0, "latency": 0, "quality": 1, "success": 0}
    }
    # The soft line is 10,000 nano-USD of 1,000,000. The first answer, from
    # the dear deployment, costs 3 × 1,000 + 5 × 9,000 = 48,000 and crosses it;
    # max_tokens keeps the worst case (3,000 + 10 × 9,000) under the hard limit.
    config["budget"] = {"daily_usd": 1e-3, "soft_fraction": 0.01}
    with gateway(tmp_path, **config) as gw:
        first = gw.post(chat(max_tokens=10))
        second = gw.post(chat(max_tokens=10))
        records = gw.records()

    assert first.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert "downgraded" not in records[0]
    assert second.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert records[-1]["downgraded"] == "global"


def test_the_budget_survives_a_restart_rebuilt_from_the_ledger(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_providers(fake_a, fake_b) | {"budget": {"daily_usd": 1.0}}
    with gateway(tmp_path, **config) as gw:
        assert gw.post(chat()).status_code == 200
    with gateway(tmp_path, **config) as gw:
        status = asyncio.run(gw.node.router.budget.status(None))

    assert status.global_remaining_usd == pytest.approx(1.0 - COST_NUSD / 1e9)


def test_a_stream_the_client_left_before_reading_holds_nothing(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    config = two_providers(fake_a, fake_b) | {"budget": {"daily_usd": 1.0}}
    with gateway(tmp_path, **config) as gw:
        gw.client.portal.call(_leave_before_reading, gw, chat(stream=True))  # type: ignore[union-attr]
        (record,) = wait_for(gw.records, 5, "the stream's audit record")
        status = asyncio.run(gw.node.router.budget.status(None))
        in_flight = [
            d.stats.in_flight for d in gw.node.router.groups["fast"].deployments
        ]

    assert record["stream"] is True
    assert record["outcome"] == "cancelled"
    # Only the prompt the provider received is charged; no reservation is held.
    assert record["completion_tokens"] == 0
    assert record["cost_nusd"] == record["prompt_tokens"] * 1000
    assert status.global_remaining_usd == pytest.approx(1 - record["cost_nusd"] / 1e9)
    assert in_flight == [0, 0]


async def _leave_before_reading(gw: Gateway, body: dict[str, Any]) -> None:
    """Call the app as a server would for a client that sends its request and
    hangs up before the response's first byte."""
    raw = json.dumps(body).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": CHAT,
        "raw_path": CHAT.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"authorization", f"Bearer {gw.token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": raw, "more_body": False},
        {"type": "http.disconnect"},
    ]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        # A real server's send may wait for the socket; the hang-up is
        # noticed meanwhile, before the body is first read.
        await asyncio.sleep(0)

    await gw.client.app(scope, receive, send)


# -- cache ---------------------------------------------------------------------


def test_a_deterministic_request_is_served_from_the_cache_the_second_time(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        first = gw.post(chat(temperature=0))
        second = gw.post(chat(temperature=0))
        sampled = gw.post(chat(temperature=0.7))
        records = gw.records()

    assert first.json() == second.json()
    assert second.headers["x-penin-cache"] == "hit-l1"
    assert "x-penin-cache" not in sampled.headers
    assert len(fake_a.requests) == 2
    assert [r["cache"] for r in records] == [None, "l1", None]
    assert records[1]["cost_nusd"] == 0


def test_the_cache_header_opts_in_and_out(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    with gateway(tmp_path, **two_providers(fake_a, fake_b)) as gw:
        gw.post(chat(temperature=0.7), **{"X-Penin-Cache": "use"})
        opted_in = gw.post(chat(temperature=0.7), **{"X-Penin-Cache": "use"})
        gw.post(chat(temperature=0), **{"X-Penin-Cache": "skip"})
        skipped = gw.post(chat(temperature=0), **{"X-Penin-Cache": "skip"})

    assert opted_in.headers["x-penin-cache"] == "hit-l1"
    assert "x-penin-cache" not in skipped.headers
    assert len(fake_a.requests) == 3
