"""What routed requests leave behind: content hashes, /metrics and the router check."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway import CHAT, COST_NUSD, chat, deployment, gateway, provider
from live import live_node, stream
from prometheus_client.parser import text_string_to_metric_families

from fakes.fault import DEFAULT_TEXT, Fault
from fakes.openai import FakeOpenAI
from harness import assert_problem, wait_for
from penin.config import ConfigError

SECRET_PROMPT = "the launch code is swordfish-4711"
DAILY_USD = 1.0


@pytest.fixture
def fake_a() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
def fake_b() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def config_for(*fakes: FakeOpenAI, **router: Any) -> dict[str, Any]:
    """Model ``fast`` over the fakes, named a, b…, cheapest first."""
    names = "abcdefgh"
    return {
        "providers": [provider(names[i], f) for i, f in enumerate(fakes)],
        "models": [
            {
                "name": "fast",
                "deployments": [
                    deployment(names[i], output_per_mtok=2.0 + i)
                    for i in range(len(fakes))
                ],
            }
        ],
        "budget": {"daily_usd": DAILY_USD},
        "router": {"retry": {"attempts": 0}, **router},
    }


def secret_chat(**extra: Any) -> dict[str, Any]:
    return {
        "model": "fast",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": SECRET_PROMPT},
        ],
        **extra,
    }


def canonical_sha256(value: object) -> str:
    """SHA-256 of JSON with sorted keys, no white space and UTF-8 as is."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ledger_bytes(data_dir: Path) -> bytes:
    """Every byte the node wrote to its data directory (database, WAL, keys…)."""
    return b"".join(p.read_bytes() for p in sorted(data_dir.rglob("*")) if p.is_file())


# -- the audit record ----------------------------------------------------------


def test_hashed_content_records_sha256_of_the_messages_and_of_the_answer_text(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    config = config_for(fake_a, store_content="hash")
    with gateway(tmp_path, **config) as gw:
        whole = gw.post(secret_chat())
        auth = {"Authorization": f"Bearer {gw.token}"}
        body = secret_chat(stream=True)
        with gw.client.stream("POST", CHAT, json=body, headers=auth) as streamed:
            assert b"[DONE]" in streamed.read()
        records = gw.records()

    assert whole.status_code == 200, whole.text
    assert [r["stream"] for r in records] == [False, True]
    for record in records:
        assert record["prompt_sha256"] == canonical_sha256(secret_chat()["messages"])
        assert record["completion_sha256"] == canonical_sha256(DEFAULT_TEXT)
    assert SECRET_PROMPT.encode() not in ledger_bytes(tmp_path / "data")
    assert DEFAULT_TEXT.encode() not in ledger_bytes(tmp_path / "data")


def test_by_default_no_content_and_no_hash_of_it_reaches_the_ledger(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    with gateway(tmp_path, **config_for(fake_a)) as gw:
        assert gw.post(secret_chat()).status_code == 200
        (record,) = gw.records()

    assert "prompt_sha256" not in record
    assert "completion_sha256" not in record
    assert fake_a.requests[0].json["messages"][1]["content"] == SECRET_PROMPT
    assert SECRET_PROMPT.encode() not in ledger_bytes(tmp_path / "data")
    assert DEFAULT_TEXT.encode() not in ledger_bytes(tmp_path / "data")


def test_an_unknown_store_content_mode_is_refused_naming_the_setting(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    config = config_for(fake_a, store_content="plain")
    refusal = r"router\.store_content.*'none' or 'hash'"
    with pytest.raises(ConfigError, match=refusal), gateway(tmp_path, **config):
        pass

    assert fake_a.requests == []


# -- /metrics ------------------------------------------------------------------


def samples(text: str, name: str, **labels: str) -> list[float]:
    return [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    ]


def value(text: str, name: str, **labels: str) -> float:
    (found,) = samples(text, name, **labels)
    return found


def test_metrics_count_calls_by_outcome_and_add_up_to_the_charged_cost(
    tmp_path: Path, fake_a: FakeOpenAI, fake_b: FakeOpenAI
) -> None:
    fake_a.script(Fault.server_error(500))
    with live_node(tmp_path, config_for(fake_a, fake_b)) as node:
        with node.chat() as http:
            assert http.post(CHAT, json=chat()).status_code == 200  # a fails, b answers
            assert http.post(CHAT, json=chat(temperature=0)).status_code == 200
            cached = http.post(CHAT, json=chat(temperature=0))
            streamed = stream(http, chat())
        text = node.metrics()
        records = node.records()

    a = {"provider": "a", "model": "gpt-4o-mini"}
    b = {"provider": "b", "model": "gpt-4o-mini"}
    requests = "penin_router_requests_total"
    assert cached.headers["x-penin-cache"] == "hit-l1"
    assert streamed.done
    assert value(text, requests, **a, outcome="server") == 1
    assert value(text, requests, **a, outcome="ok") == 2
    assert value(text, requests, **b, outcome="ok") == 1
    assert value(text, "penin_router_upstream_duration_seconds_count", **a) == 3
    assert value(text, "penin_router_upstream_duration_seconds_count", **b) == 1
    assert value(text, "penin_router_time_to_first_token_seconds_count", **a) == 1
    assert samples(text, "penin_router_time_to_first_token_seconds_count", **b) == []
    cost_a = value(text, "penin_router_cost_usd_total", **a)
    cost_b = value(text, "penin_router_cost_usd_total", **b)
    assert cost_a == pytest.approx(2 * COST_NUSD / 1e9)
    assert cost_b == pytest.approx((3 * 1000 + 5 * 3000) / 1e9)
    charged = sum(r["cost_usd"] for r in records)
    assert cost_a + cost_b == pytest.approx(charged)
    assert value(text, "penin_budget_remaining_usd", scope="global") == pytest.approx(
        DAILY_USD - charged
    )
    assert value(text, "penin_router_overhead_seconds_count") == len(records) == 4
    assert value(text, "penin_cache_hits_total", level="l1") == 1
    assert value(text, "penin_cache_misses_total", level="l1") == 1
    assert value(text, "penin_budget_refused_total", scope="global") == 0


# -- the router health check ---------------------------------------------------


def answered(response: httpx.Response) -> httpx.Response | None:
    return response if response.status_code == 200 else None


def test_an_open_circuit_on_every_deployment_fails_health_until_a_trial_succeeds(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    fake_a.script(Fault.server_error(500), Fault.server_error(502))
    config = config_for(fake_a, breaker={"failures": 2, "reset_after_s": 0.5})
    with live_node(tmp_path, config) as node, node.chat() as http:
        failed = [http.post(CHAT, json=chat()) for _ in range(2)]
        sick = node.server.get("/health")
        refused = http.post(CHAT, json=chat())
        open_metrics = node.metrics()
        sent_while_open = len(fake_a.requests)

        # Half-open after 0.5 s: health passes and says the deployment is on
        # trial; the next request is the one trial call.
        on_trial = wait_for(
            lambda: _router_health(node.server.get("/health"), on_trial=1),
            10,
            "health to report the deployment on trial",
        )
        trial = wait_for(
            lambda: answered(http.post(CHAT, json=chat())),
            10,
            "the breaker to admit a trial call",
        )
        healthy = node.server.get("/health")
        closed_metrics = node.metrics()

    deployment_label = {"deployment": "a/gpt-4o-mini"}
    for response in failed:
        assert_problem(response, 502, "upstream-failed")
    assert sick.status_code == 503
    assert sick.json()["checks"]["router"] is False
    assert sick.json()["details"]["router"]["models_without_deployment"] == ["fast"]
    assert_problem(refused, 503, "no-deployment")
    assert sent_while_open == 2
    assert value(open_metrics, "penin_router_circuit_state", **deployment_label) == 2
    assert value(open_metrics, "penin_health_check_ok", check="router") == 0
    assert sick.json()["details"]["router"]["deployments_available"] == 0
    assert on_trial["deployments_available"] == 0
    assert on_trial["models_without_deployment"] == []
    assert trial is not None
    assert trial.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert len(fake_a.requests) == 3
    assert healthy.status_code == 200, healthy.text
    assert healthy.json()["details"]["router"]["models_without_deployment"] == []
    assert healthy.json()["details"]["router"]["deployments_on_trial"] == 0
    assert healthy.json()["details"]["router"]["deployments_available"] == 1
    assert value(closed_metrics, "penin_router_circuit_state", **deployment_label) == 0
    assert value(closed_metrics, "penin_health_check_ok", check="router") == 1


def _router_health(response: httpx.Response, on_trial: int) -> dict[str, Any] | None:
    """The router check's details when health passed with ``on_trial``."""
    router = response.json()["details"]["router"]
    if response.status_code != 200 or router["deployments_on_trial"] != on_trial:
        return None

    return dict(router)


# -- start-up --------------------------------------------------------------------


def test_a_routing_node_is_ready_once_its_tokenizer_is_loaded_and_heap_settled(
    tmp_path: Path, fake_a: FakeOpenAI
) -> None:
    with live_node(tmp_path, config_for(fake_a)) as node:
        ready = wait_for(
            lambda: (r := node.server.get("/readyz")).status_code == 200 and r,
            20,
            "/readyz to answer 200",
        )
        settled = [
            e for e in node.server.log_events() if e["event"] == "node.heap_settled"
        ]
        with node.chat() as http:
            first = http.post(CHAT, json=chat())

    assert ready.json()["warmed"] is True
    # /readyz waited for the tokenizer, then the heap was frozen, once.
    assert len(settled) == 1
    assert settled[0]["frozen_objects"] > 10_000
    assert first.status_code == 200
