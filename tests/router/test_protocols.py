"""Anthropic, Gemini and OpenAI tool calls through the router, in OpenAI's shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway import CHAT, REPLY_TOKENS, Gateway, chat, deployment, gateway, provider

from fakes.anthropic import FakeAnthropic
from fakes.fault import DEFAULT_TEXT, Fault
from fakes.gemini import FakeGemini
from fakes.openai import FakeOpenAI
from fakes.server import FakeServer
from harness import assert_problem

MODELS = {"anthropic": "claude-3-5-haiku-latest", "gemini": "gemini-2.0-flash"}
USAGE = {"prompt_tokens": 3, "completion_tokens": REPLY_TOKENS, "total_tokens": 8}
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
# A conversation in which the assistant called the tool and the result came back.
TOOL_TURNS = [
    {"role": "user", "content": "Weather in Paris?"},
    {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "content": '{"celsius": 21}'},
]


def one_provider(kind: str, fake: FakeServer) -> dict[str, Any]:
    model = MODELS.get(kind, "gpt-4o-mini")
    return {
        "providers": [provider("p", fake, kind=kind)],
        "models": [{"name": "fast", "deployments": [deployment("p", model=model)]}],
    }


@pytest.fixture(params=["anthropic", "gemini"])
def translated(request: pytest.FixtureRequest) -> Iterator[tuple[str, FakeServer]]:
    """A fake of a protocol the router translates to and from OpenAI's."""
    fake: FakeServer = FakeAnthropic() if request.param == "anthropic" else FakeGemini()
    with fake:
        yield request.param, fake


def read_stream(gw: Gateway, body: dict[str, Any]) -> list[dict[str, Any]]:
    """The JSON chunks of a streamed answer, which must end with [DONE]."""
    auth = {"Authorization": f"Bearer {gw.token}"}
    with gw.client.stream(
        "POST", CHAT, json={**body, "stream": True}, headers=auth
    ) as r:
        assert r.status_code == 200, r.read()
        data = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]

    assert data[-1] == "[DONE]"

    return [json.loads(d) for d in data[:-1]]


def streamed_text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )


def finish_reasons(chunks: list[dict[str, Any]]) -> list[str]:
    return [
        c["choices"][0]["finish_reason"]
        for c in chunks
        if c["choices"] and c["choices"][0]["finish_reason"]
    ]


# -- Anthropic and Gemini ------------------------------------------------------


def test_an_answer_comes_back_as_an_openai_chat_completion(
    tmp_path: Path, translated: tuple[str, FakeServer]
) -> None:
    kind, fake = translated
    with gateway(tmp_path, **one_provider(kind, fake)) as gw:
        response = gw.post(chat())
        (record,) = gw.records()

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    (choice,) = body["choices"]
    assert choice["message"] == {"role": "assistant", "content": DEFAULT_TEXT}
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == USAGE
    assert record["completion_tokens"] == REPLY_TOKENS
    assert record["estimated"] is False


def test_a_refusal_is_an_openai_content_filter_finish(
    tmp_path: Path, translated: tuple[str, FakeServer]
) -> None:
    kind, fake = translated
    fake.script(Fault.refusal())
    with gateway(tmp_path, **one_provider(kind, fake)) as gw:
        response = gw.post(chat())

    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "content_filter"
    assert choice["message"]["content"] is None


def test_a_stream_comes_back_as_openai_chunks_with_one_usage_chunk(
    tmp_path: Path, translated: tuple[str, FakeServer]
) -> None:
    kind, fake = translated
    with gateway(tmp_path, **one_provider(kind, fake)) as gw:
        with_usage = read_stream(gw, chat(stream_options={"include_usage": True}))
        without = read_stream(gw, chat())
        records = gw.records()

    assert {c["object"] for c in with_usage} == {"chat.completion.chunk"}
    assert with_usage[0]["choices"][0]["delta"]["role"] == "assistant"
    assert streamed_text(with_usage) == DEFAULT_TEXT
    assert finish_reasons(with_usage) == ["stop"]
    usage = [c for c in with_usage if c.get("usage")]
    assert [c["usage"] for c in usage] == [USAGE]
    assert usage[0] == with_usage[-1]
    assert usage[0]["choices"] == []
    assert streamed_text(without) == DEFAULT_TEXT
    assert [c for c in without if c.get("usage")] == []
    assert [r["completion_tokens"] for r in records] == [REPLY_TOKENS] * 2
    assert {r["estimated"] for r in records} == {False}


def test_anthropic_gets_tools_as_tool_use_and_tool_results_as_tool_result_blocks(
    tmp_path: Path,
) -> None:
    with FakeAnthropic() as fake:
        config = one_provider("anthropic", fake)
        with gateway(tmp_path, **config) as gw:
            response = gw.post(
                {**chat(), "messages": TOOL_TURNS, "tools": [WEATHER_TOOL]}
            )
        sent = fake.requests[-1].json

    assert response.status_code == 200, response.text
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "input_schema": WEATHER_TOOL["function"]["parameters"],
            "description": "The weather in a city",
        }
    ]
    user, assistant, result = sent["messages"]
    assert user == {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Paris?"}],
    }
    assert assistant == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "call_1",
                "name": "get_weather",
                "input": {"city": "Paris"},
            }
        ],
    }
    assert result == {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "call_1",
                "content": '{"celsius": 21}',
            }
        ],
    }


def test_gemini_gets_tools_as_function_declarations_and_results_as_function_responses(
    tmp_path: Path,
) -> None:
    with FakeGemini() as fake:
        config = one_provider("gemini", fake)
        with gateway(tmp_path, **config) as gw:
            response = gw.post(
                {**chat(), "messages": TOOL_TURNS, "tools": [WEATHER_TOOL]}
            )
        sent = fake.requests[-1].json

    assert response.status_code == 200, response.text
    (declaration,) = sent["tools"][0]["functionDeclarations"]
    assert declaration["name"] == "get_weather"
    assert declaration["parameters"] == WEATHER_TOOL["function"]["parameters"]
    assert sent["contents"] == [
        {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
        {
            "role": "model",
            "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}
            ],
        },
        {
            "role": "user",
            "parts": [
                {
                    "functionResponse": {
                        "name": "get_weather",
                        "response": {"celsius": 21},
                    }
                }
            ],
        },
    ]


def test_a_tool_result_that_answers_no_call_is_a_problem_and_reaches_no_provider(
    tmp_path: Path,
) -> None:
    orphan = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "21"}]
    with FakeGemini() as fake:
        with gateway(tmp_path, **one_provider("gemini", fake)) as gw:
            response = gw.post({**chat(), "messages": orphan})
        sent = len(fake.requests)

    body = assert_problem(response, 422, "validation")
    assert "answers no tool call" in body["detail"]
    assert sent == 0


# -- OpenAI tool calls ---------------------------------------------------------


@pytest.fixture
def openai_fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as fake:
        yield fake


def test_a_tool_call_comes_back_as_openai_tool_calls(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.script(Fault.tool_call("get_weather", {"city": "Paris"}))
    with gateway(tmp_path, **one_provider("openai", openai_fake)) as gw:
        response = gw.post(chat(tools=[WEATHER_TOOL]))
        (record,) = gw.records()

    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
    assert openai_fake.requests[-1].json["tools"] == [WEATHER_TOOL]
    assert record["outcome"] == "ok"


def test_a_streamed_tool_call_comes_back_as_tool_call_deltas(
    tmp_path: Path, openai_fake: FakeOpenAI
) -> None:
    openai_fake.script(Fault.tool_call("get_weather", {"city": "Paris"}))
    with gateway(tmp_path, **one_provider("openai", openai_fake)) as gw:
        chunks = read_stream(gw, chat(tools=[WEATHER_TOOL]))

    deltas = [
        call
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert deltas[0]["function"]["name"] == "get_weather"
    assert {d["index"] for d in deltas} == {0}
    arguments = "".join(d["function"].get("arguments") or "" for d in deltas)
    assert json.loads(arguments) == {"city": "Paris"}
    assert finish_reasons(chunks) == ["tool_calls"]
