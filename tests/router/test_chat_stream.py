"""Streamed chats through a real node: pass-through, usage, cost, audit and faults."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gateway import CHAT, COST_NUSD, REPLY_TOKENS, chat, deployment, gateway, provider
from live import COST_COMMENT, DONE, LiveNode, live_node, stream

from fakes.fault import DEFAULT_TEXT, Fault
from fakes.openai import FakeOpenAI
from harness import wait_for

DAILY_USD = 1.0
RECORD_TIMEOUT_S = 10.0


@dataclass
class Upstreams:
    node: LiveNode
    a: FakeOpenAI  # the cheaper deployment, tried first
    b: FakeOpenAI


@pytest.fixture(scope="module")
def upstreams(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstreams]:
    with FakeOpenAI() as a, FakeOpenAI() as b:
        config: dict[str, Any] = {
            "providers": [provider("a", a), provider("b", b)],
            "models": [
                {
                    "name": "fast",
                    "deployments": [
                        deployment("a"),
                        deployment("b", output_per_mtok=3.0),
                    ],
                }
            ],
            "budget": {"daily_usd": DAILY_USD},
            # No retry pass, and a breaker that the tests' faults never open.
            "router": {"retry": {"attempts": 0}, "breaker": {"failures": 100}},
        }
        with live_node(tmp_path_factory.mktemp("stream"), config) as node:
            yield Upstreams(node, a, b)


@pytest.fixture
def up(upstreams: Upstreams) -> Iterator[Upstreams]:
    """The module's node; each test must use up the faults it scripts."""
    yield upstreams

    assert upstreams.a.pending == 0
    assert upstreams.b.pending == 0


def assert_budget_matches_the_records(node: LiveNode) -> None:
    """What the budget has left is the limit minus what the records charged:
    no reservation of a finished request is still held."""
    with node.chat() as http:
        assert http.post(CHAT, json=chat()).status_code == 200
    records = node.records()
    spent_nusd = sum(r["cost_nusd"] for r in records)

    assert records[-1]["budget_remaining_usd"] == pytest.approx(
        DAILY_USD - spent_nusd / 1e9, abs=1e-12
    )


# -- the happy path ------------------------------------------------------------


def test_a_stream_carries_the_provider_text_and_ends_with_its_cost_then_done(
    up: Upstreams,
) -> None:
    with up.node.chat() as http:
        reply = stream(http, chat())
    record = up.node.record(reply.request_id)

    assert reply.text == DEFAULT_TEXT
    assert {c["object"] for c in reply.chunks} == {"chat.completion.chunk"}
    assert reply.chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert reply.usage_chunks == []
    assert reply.headers["x-penin-deployment"] == "a/gpt-4o-mini"
    assert reply.lines[-2].startswith(COST_COMMENT)
    assert reply.lines[-1] == f"data: {DONE}"
    assert reply.cost_usd == pytest.approx(COST_NUSD / 1e9)
    assert record is not None
    assert record["stream"] is True
    assert record["outcome"] == "ok"
    assert record["ttft_ms"] > 0
    assert record["prompt_tokens"] == 3
    assert record["completion_tokens"] == REPLY_TOKENS
    assert record["estimated"] is False
    assert record["cost_nusd"] == COST_NUSD


def test_include_usage_sends_exactly_one_usage_chunk_with_the_reported_numbers(
    up: Upstreams,
) -> None:
    with up.node.chat() as http:
        reply = stream(http, chat(stream_options={"include_usage": True}))

    (usage,) = reply.usage_chunks
    assert usage["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": REPLY_TOKENS,
        "total_tokens": 3 + REPLY_TOKENS,
    }
    assert usage["choices"] == []
    assert usage == reply.chunks[-1]
    assert reply.text == DEFAULT_TEXT
    assert reply.done


def test_the_record_of_a_stream_is_in_the_ledger_before_done_reaches_the_client(
    up: Upstreams,
) -> None:
    found: dict[str, Any] | None = None
    lines: list[str] = []
    with (
        up.node.chat() as http,
        http.stream("POST", CHAT, json=chat(stream=True)) as response,
    ):
        for line in filter(None, response.iter_lines()):
            lines.append(line)
            if line.startswith(COST_COMMENT):
                found = up.node.record(response.headers["x-request-id"])

    assert lines[-1] == f"data: {DONE}"
    assert found is not None, "no record when the cost comment arrived"
    assert found["stream"] is True
    assert found["ttft_ms"] > 0
    assert found["completion_tokens"] == REPLY_TOKENS
    assert found["cost_nusd"] == COST_NUSD


# -- pass-through --------------------------------------------------------------


def test_the_first_chunk_reaches_the_client_while_the_provider_still_holds_the_stream(
    up: Upstreams,
) -> None:
    # The provider sends two events and then nothing: a node that buffered
    # would have nothing to give before the provider finished, which it never does.
    up.a.script(Fault.stall(after=2))
    received: list[dict[str, Any]] = []
    with up.node.chat() as http:
        http.timeout = 10.0
        with http.stream("POST", CHAT, json=chat(stream=True)) as response:
            request_id = response.headers["x-request-id"]
            for line in response.iter_lines():
                if line.startswith("data: "):
                    received.append(json.loads(line[6:]))
                if len(received) == 2:
                    break  # the client leaves mid-stream
    record = wait_for(
        lambda: up.node.record(request_id), RECORD_TIMEOUT_S, "the stream's record"
    )

    assert record is not None
    assert received[0]["choices"][0]["delta"]["role"] == "assistant"
    assert received[1]["choices"][0]["delta"]["content"] == "Hello "
    assert record["outcome"] == "cancelled"
    assert record["deployment"] == "a/gpt-4o-mini"
    assert record["estimated"] is True
    assert record["cost_nusd"] > 0
    assert_budget_matches_the_records(up.node)


def test_chunks_reach_the_client_as_far_apart_as_the_provider_sent_them(
    up: Upstreams,
) -> None:
    gap = 0.25
    words = "one two three four"
    up.a.script(Fault.ok(words).slowed(gap=gap))
    arrivals: list[float] = []
    with (
        up.node.chat() as http,
        http.stream("POST", CHAT, json=chat(stream=True)) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: ") and '"content":"' in line:
                arrivals.append(time.monotonic())

    # The provider slept `gap` before each word after the (empty) opening chunk.
    assert len(arrivals) == len(words.split()) + 1
    assert arrivals[-1] - arrivals[0] >= 0.75 * gap * len(words.split())


# -- faults --------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    [Fault.rate_limit(), Fault.server_error(500), Fault.reset()],
    ids=["429", "500", "reset"],
)
def test_a_failure_before_the_first_chunk_moves_on_and_the_client_sees_one_clean_stream(
    up: Upstreams, fault: Fault
) -> None:
    up.a.script(fault)
    with up.node.chat() as http:
        reply = stream(http, chat(stream_options={"include_usage": True}))
    record = up.node.record(reply.request_id)

    assert reply.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert reply.text == DEFAULT_TEXT
    openings = [
        c for c in reply.chunks if "role" in (c["choices"] or [{}])[0].get("delta", {})
    ]
    assert len(openings) == 1
    assert len({c["id"] for c in reply.chunks}) == 1
    assert len(reply.usage_chunks) == 1
    assert reply.errors == []
    assert reply.done
    assert record is not None
    assert [a["deployment"] for a in record["attempts"]] == [
        "a/gpt-4o-mini",
        "b/gpt-4o-mini",
    ]
    assert record["attempts"][1]["outcome"] == "ok"
    assert record["outcome"] == "ok"


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        (Fault.truncated(after=3), "connection"),
        (Fault.malformed_json(after=3), "malformed"),
    ],
    ids=["truncated", "malformed"],
)
def test_a_stream_broken_after_its_first_chunk_ends_with_an_error_event_and_no_done(
    up: Upstreams, fault: Fault, kind: str
) -> None:
    up.a.script(fault)
    sent_to_b = len(up.b.requests)
    with up.node.chat() as http:
        reply = stream(http, chat())
    record = up.node.record(reply.request_id)

    assert reply.text == "Hello from "
    (error,) = reply.errors
    assert error["code"] == kind
    assert "a: " in error["message"]
    assert not reply.done
    assert len(up.b.requests) == sent_to_b  # no second answer after the first chunk
    assert record is not None
    assert record["outcome"] == kind
    assert record["deployment"] == "a/gpt-4o-mini"
    assert record["estimated"] is True
    assert record["cost_nusd"] > 0
    assert reply.cost_usd == pytest.approx(record["cost_usd"])
    assert_budget_matches_the_records(up.node)


def test_a_stream_that_breaks_midway_counts_against_its_deployment_breaker(
    tmp_path: Path,
) -> None:
    with FakeOpenAI() as a, FakeOpenAI() as b:
        a.script(Fault.truncated(after=3))
        config = {
            "providers": [provider("a", a), provider("b", b)],
            "models": [
                {
                    "name": "fast",
                    "deployments": [
                        deployment("a"),
                        deployment("b", output_per_mtok=3),
                    ],
                }
            ],
            "router": {"retry": {"attempts": 0}, "breaker": {"failures": 1}},
        }
        with gateway(tmp_path, **config) as gw:
            auth = {"Authorization": f"Bearer {gw.token}"}
            body = chat(stream=True)
            with gw.client.stream("POST", CHAT, json=body, headers=auth) as broken:
                assert b"[DONE]" not in broken.read()
            after = gw.post(chat())
            broken_record, after_record = gw.records()

    assert broken_record["outcome"] == "connection"
    assert after.headers["x-penin-deployment"] == "b/gpt-4o-mini"
    assert after_record["attempts"][0] == {
        "deployment": "a/gpt-4o-mini",
        "outcome": "circuit_open",
    }
    assert len(a.requests) == 1
