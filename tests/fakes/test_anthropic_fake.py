"""The fake Anthropic provider speaks the Messages API and fails as Anthropic does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.anthropic import MODELS, FakeAnthropic, serve_anthropic
from fakes.events import parse
from fakes.fault import DEFAULT_TEXT, Fault

PATH = "/v1/messages"
HEADERS = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
SEQUENCE = [
    "message_start",
    "content_block_start",
    "ping",
    *["content_block_delta"] * 5,
    "content_block_stop",
    "message_delta",
    "message_stop",
]


def _message(**extra: Any) -> dict[str, Any]:
    messages = [{"role": "user", "content": "three words here"}]
    return {"model": "claude-test", "max_tokens": 64, "messages": messages, **extra}


@pytest.fixture
def fake() -> Iterator[FakeAnthropic]:
    with serve_anthropic() as running:
        yield running


@pytest.fixture
def client(fake: FakeAnthropic) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers=HEADERS, timeout=5) as http:
        yield http


# -- protocol -----------------------------------------------------------------


def test_a_message_has_one_text_block_and_counts_one_token_per_word(
    client: httpx.Client,
) -> None:
    response = client.post(PATH, json=_message())

    body = response.json()
    assert body["id"].startswith("msg_")
    assert (body["type"], body["role"], body["model"]) == (
        "message",
        "assistant",
        "claude-test",
    )
    assert body["content"] == [{"type": "text", "text": DEFAULT_TEXT}]
    assert body["stop_reason"] == "end_turn"
    assert body["usage"] == {"input_tokens": 3, "output_tokens": 5}
    assert response.headers["request-id"].startswith("req_")


def test_the_system_prompt_counts_towards_input_tokens(client: httpx.Client) -> None:
    body = client.post(PATH, json=_message(system="be brief")).json()

    assert body["usage"]["input_tokens"] == 5


def test_a_stream_sends_the_documented_event_sequence(client: httpx.Client) -> None:
    response = client.post(PATH, json=_message(stream=True))

    events = parse(response.content)
    assert [event.name for event in events] == SEQUENCE
    assert all(event.json["type"] == event.name for event in events)
    deltas = [event.json["delta"] for event in events if event.name == SEQUENCE[3]]
    assert {delta["type"] for delta in deltas} == {"text_delta"}
    assert "".join(delta["text"] for delta in deltas) == DEFAULT_TEXT
    start, final = events[0].json, events[-2].json
    assert start["message"]["usage"]["input_tokens"] == 3
    assert final["delta"]["stop_reason"] == "end_turn"
    assert final["usage"] == {"output_tokens": 5}


def test_a_refusal_stops_with_refusal_and_no_content(
    fake: FakeAnthropic, client: httpx.Client
) -> None:
    fake.script(Fault.refusal(), Fault.refusal())

    body = client.post(PATH, json=_message()).json()
    events = parse(client.post(PATH, json=_message(stream=True)).content)

    assert (body["stop_reason"], body["content"]) == ("refusal", [])
    assert [event.name for event in events] == [
        "message_start",
        "message_delta",
        "message_stop",
    ]
    assert events[1].json["delta"]["stop_reason"] == "refusal"


def test_models_lists_the_fakes_models_on_one_page(client: httpx.Client) -> None:
    body = client.get("/v1/models").json()

    assert [model["id"] for model in body["data"]] == list(MODELS)
    assert body["has_more"] is False
    assert body["last_id"] == MODELS[-1]


def test_a_tool_call_cannot_be_scripted_on_this_fake(fake: FakeAnthropic) -> None:
    with pytest.raises(ValueError, match="cannot script tool_call"):
        fake.script(Fault.tool_call("weather", {}))


# -- requests the fake rejects ---------------------------------------------------


@pytest.mark.parametrize(
    ("missing", "status", "error"),
    [
        (
            "x-api-key",
            401,
            {"type": "authentication_error", "message": "x-api-key header is required"},
        ),
        (
            "anthropic-version",
            400,
            {
                "type": "invalid_request_error",
                "message": "anthropic-version: header is required",
            },
        ),
    ],
)
def test_a_request_missing_a_required_header_is_refused(
    fake: FakeAnthropic, missing: str, status: int, error: dict[str, str]
) -> None:
    headers = {name: value for name, value in HEADERS.items() if name != missing}

    response = httpx.post(fake.base_url + PATH, json=_message(), headers=headers)

    assert response.status_code == status
    assert response.json() == {"type": "error", "error": error}


def test_a_request_without_max_tokens_is_a_400(client: httpx.Client) -> None:
    body = _message()
    del body["max_tokens"]

    response = client.post(PATH, json=body)

    assert response.status_code == 400
    assert response.json()["error"]["message"] == "max_tokens: Field required"


# -- Anthropic's error documents ---------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "status", "kind"),
    [
        (Fault.rate_limit(), 429, "rate_limit_error"),
        (Fault.server_error(500), 500, "api_error"),
        (Fault.server_error(529), 529, "overloaded_error"),
        (Fault.context_length(), 400, "invalid_request_error"),
        (Fault.content_policy(), 400, "invalid_request_error"),
    ],
)
def test_an_error_fault_is_an_anthropic_error_document(
    fake: FakeAnthropic, client: httpx.Client, fault: Fault, status: int, kind: str
) -> None:
    fake.script(fault)

    response = client.post(PATH, json=_message())

    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == kind
    assert body["error"]["message"]


def test_context_length_and_content_policy_say_which_they_are(
    fake: FakeAnthropic, client: httpx.Client
) -> None:
    fake.script(Fault.context_length(), Fault.content_policy())

    too_long = client.post(PATH, json=_message()).json()["error"]["message"]
    blocked = client.post(PATH, json=_message()).json()["error"]["message"]

    assert too_long.startswith("prompt is too long")
    assert "content filtering policy" in blocked


def test_a_rate_limit_carries_retry_after_only_when_scripted_with_one(
    fake: FakeAnthropic, client: httpx.Client
) -> None:
    fake.script(Fault.rate_limit(retry_after=3), Fault.rate_limit())

    first, second = (
        client.post(PATH, json=_message()),
        client.post(PATH, json=_message()),
    )

    assert first.headers["retry-after"] == "3"
    assert "retry-after" not in second.headers


def test_wrong_usage_reports_negative_output_and_missing_usage_is_absent(
    fake: FakeAnthropic, client: httpx.Client
) -> None:
    fake.script(Fault.wrong_usage(), Fault.missing_usage())

    wrong = client.post(PATH, json=_message()).json()
    events = parse(client.post(PATH, json=_message(stream=True)).content)

    assert wrong["usage"]["output_tokens"] == -1
    assert "usage" not in events[0].json["message"]
    assert "usage" not in events[-2].json
