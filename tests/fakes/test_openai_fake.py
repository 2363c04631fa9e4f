"""The fake OpenAI provider speaks Chat Completions and fails the way OpenAI does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.events import parse
from fakes.fault import DEFAULT_TEXT, Fault
from fakes.openai import FakeOpenAI, serve_openai

PATH = "/v1/chat/completions"
KEY = {"authorization": "Bearer test-key"}
WEATHER = {"type": "function", "function": {"name": "weather", "parameters": {}}}


def _chat(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "three words here"}]
    return {"model": "gpt-4o-mini", "messages": messages, **extra}


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with serve_openai() as running:
        yield running


@pytest.fixture
def client(fake: FakeOpenAI) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers=KEY, timeout=5) as http:
        yield http


def _stream(client: httpx.Client, body: dict[str, Any]) -> list[str]:
    response = client.post(PATH, json={**body, "stream": True})
    assert response.headers["content-type"].startswith("text/event-stream")

    return [event.data for event in parse(response.content)]


# -- protocol -----------------------------------------------------------------


def test_a_completion_echoes_the_model_and_counts_one_token_per_word(
    client: httpx.Client,
) -> None:
    body = client.post(PATH, json=_chat()).json()

    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == DEFAULT_TEXT
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
    }


def test_a_stream_is_chunks_that_join_to_the_reply_then_done(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.ok("streamed in four words"))

    data = _stream(client, _chat())

    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert {chunk["object"] for chunk in chunks} == {"chat.completion.chunk"}
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == "streamed in four words"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert all("usage" not in chunk for chunk in chunks)


def test_include_usage_adds_a_last_chunk_with_usage_and_no_choices(
    client: httpx.Client,
) -> None:
    data = _stream(client, _chat(stream_options={"include_usage": True}))

    usage_chunk = json.loads(data[-2])
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"] == {
        "prompt_tokens": 3,
        "completion_tokens": 5,
        "total_tokens": 8,
    }
    assert all(json.loads(item)["usage"] is None for item in data[:-2])


def test_models_lists_the_models_the_fake_was_given(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()

    assert body["object"] == "list"
    assert [model["id"] for model in body["data"]] == ["gpt-4o-mini", "gpt-4o"]


def test_a_scripted_tool_call_returns_the_call_with_json_arguments(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.tool_call("weather", {"city": "Paris"}))

    body = client.post(PATH, json=_chat(tools=[WEATHER])).json()

    choice = body["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["id"].startswith("call_")
    assert call["function"]["name"] == "weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}


def test_a_streamed_tool_call_sends_its_arguments_in_pieces(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.tool_call("weather", {"city": "Paris", "days": 3}))

    data = _stream(client, _chat(tools=[WEATHER]))

    deltas = [json.loads(item)["choices"][0]["delta"] for item in data[:-1]]
    calls = [call for delta in deltas for call in delta.get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "weather"
    assert {call["index"] for call in calls} == {0}
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert json.loads(arguments) == {"city": "Paris", "days": 3}
    assert len(calls) > 2


def test_a_tool_the_request_does_not_offer_is_refused_with_a_400(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.tool_call("weather", {}))

    response = client.post(PATH, json=_chat())

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "tools"


def test_a_refusal_finishes_with_content_filter_and_no_content(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.refusal())

    choice = client.post(PATH, json=_chat()).json()["choices"][0]

    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] is None


# -- requests the fake rejects ---------------------------------------------------


def test_a_request_without_a_bearer_key_is_a_401(fake: FakeOpenAI) -> None:
    response = httpx.post(fake.base_url + PATH, json=_chat(), timeout=5)

    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_request_without_messages_names_the_missing_parameter(
    client: httpx.Client,
) -> None:
    response = client.post(PATH, json={"model": "gpt-4o-mini"})

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["param"], error["code"]) == ("messages", "missing_required_parameter")


def test_an_unknown_path_is_a_404_in_openai_shape(client: httpx.Client) -> None:
    response = client.post("/v1/completions", json=_chat())

    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (POST /v1/completions)"


# -- OpenAI's error documents -----------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "type_", "code"),
    [
        (Fault.rate_limit(), 429, "requests", "rate_limit_exceeded"),
        (Fault.server_error(500), 500, "server_error", None),
        (Fault.server_error(502), 502, "server_error", None),
        (Fault.server_error(503), 503, "server_error", None),
        (
            Fault.context_length(),
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            Fault.content_policy(),
            400,
            "invalid_request_error",
            "content_policy_violation",
        ),
    ],
)
def test_an_error_fault_is_an_openai_error_document(
    fake: FakeOpenAI,
    client: httpx.Client,
    fault: Fault,
    status: int,
    type_: str,
    code: str | None,
) -> None:
    fake.script(fault)

    response = client.post(PATH, json=_chat())

    assert response.status_code == status
    error = response.json()["error"]
    assert (error["type"], error["code"]) == (type_, code)
    assert error["message"]


def test_a_rate_limit_carries_retry_after_only_when_scripted_with_one(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.rate_limit(retry_after=2), Fault.rate_limit())

    first, second = client.post(PATH, json=_chat()), client.post(PATH, json=_chat())

    assert first.headers["retry-after"] == "2"
    assert "retry-after" not in second.headers


def test_wrong_usage_does_not_add_up_and_missing_usage_is_absent(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.wrong_usage(), Fault.missing_usage())

    wrong = client.post(PATH, json=_chat()).json()["usage"]
    missing = client.post(PATH, json=_chat()).json()

    assert wrong["completion_tokens"] == -1
    assert wrong["total_tokens"] != wrong["prompt_tokens"] + wrong["completion_tokens"]
    assert "usage" not in missing


def test_missing_usage_drops_the_usage_chunk_a_stream_asked_for(
    fake: FakeOpenAI, client: httpx.Client
) -> None:
    fake.script(Fault.missing_usage())

    data = _stream(client, _chat(stream_options={"include_usage": True}))

    assert data[-1] == "[DONE]"
    assert all(json.loads(item)["choices"] for item in data[:-1])
