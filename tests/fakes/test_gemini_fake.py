"""The fake Gemini provider speaks generateContent and fails the way Gemini does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from fakes.events import parse
from fakes.fault import DEFAULT_TEXT, Fault
from fakes.gemini import MODELS, FakeGemini, serve_gemini

MODEL = "gemini-2.0-flash"
PATH = f"/v1beta/models/{MODEL}:generateContent"
STREAM = f"/v1beta/models/{MODEL}:streamGenerateContent"
KEY = {"x-goog-api-key": "test-key"}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "three words here"}]}]}


@pytest.fixture
def fake() -> Iterator[FakeGemini]:
    with serve_gemini() as running:
        yield running


@pytest.fixture
def client(fake: FakeGemini) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fake.base_url, headers=KEY, timeout=5) as http:
        yield http


def _stream(client: httpx.Client) -> list[dict[str, Any]]:
    response = client.post(STREAM, params={"alt": "sse"}, json=CONTENTS)
    assert response.headers["content-type"].startswith("text/event-stream")

    return [event.json for event in parse(response.content)]


# -- protocol -----------------------------------------------------------------


def test_generate_content_has_a_candidate_and_usage_metadata(
    client: httpx.Client,
) -> None:
    body = client.post(PATH, json=CONTENTS).json()

    (candidate,) = body["candidates"]
    assert candidate["content"] == {"parts": [{"text": DEFAULT_TEXT}], "role": "model"}
    assert candidate["finishReason"] == "STOP"
    assert body["usageMetadata"] == {
        "promptTokenCount": 3,
        "candidatesTokenCount": 5,
        "totalTokenCount": 8,
    }
    assert body["modelVersion"] == MODEL


@pytest.mark.parametrize(
    ("headers", "params"),
    [({"x-goog-api-key": "test-key"}, {}), ({}, {"key": "test-key"})],
    ids=["header", "query"],
)
def test_the_key_is_taken_from_the_header_or_the_query(
    fake: FakeGemini, headers: dict[str, str], params: dict[str, str]
) -> None:
    url = fake.base_url + PATH

    response = httpx.post(url, json=CONTENTS, headers=headers, params=params)

    assert response.status_code == 200


def test_a_request_without_a_key_is_permission_denied(fake: FakeGemini) -> None:
    response = httpx.post(fake.base_url + PATH, json=CONTENTS)

    assert response.status_code == 403
    assert response.json()["error"]["status"] == "PERMISSION_DENIED"


def test_a_stream_ends_each_event_with_crlf_and_finishes_on_the_last(
    client: httpx.Client,
) -> None:
    raw = client.post(STREAM, params={"alt": "sse"}, json=CONTENTS).content
    payloads = [event.json for event in parse(raw)]

    assert raw.count(b"\r\n\r\n") == len(payloads) == 5
    parts = [p["candidates"][0]["content"]["parts"][0]["text"] for p in payloads]
    assert "".join(parts) == DEFAULT_TEXT
    assert [p["candidates"][0].get("finishReason") for p in payloads] == [
        *[None] * 4,
        "STOP",
    ]
    assert payloads[-1]["usageMetadata"]["candidatesTokenCount"] == 5


def test_models_lists_the_fakes_models_by_resource_name(
    fake: FakeGemini, client: httpx.Client
) -> None:
    body = client.get("/v1beta/models").json()
    unkeyed = httpx.get(f"{fake.base_url}/v1beta/models", timeout=5)

    assert [model["name"] for model in body["models"]] == [
        f"models/{name}" for name in MODELS
    ]
    assert "nextPageToken" not in body
    assert unkeyed.status_code == 403


def test_a_stream_without_alt_sse_is_refused_by_name(client: httpx.Client) -> None:
    response = client.post(STREAM, json=CONTENTS)

    assert response.status_code == 400
    assert "alt=sse" in response.json()["error"]["message"]


def test_an_unknown_method_is_not_found(client: httpx.Client) -> None:
    response = client.post(f"/v1beta/models/{MODEL}:countTokens", json=CONTENTS)

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_a_request_without_contents_is_an_invalid_argument(
    client: httpx.Client,
) -> None:
    response = client.post(PATH, json={})

    assert response.status_code == 400
    assert response.json()["error"]["status"] == "INVALID_ARGUMENT"


# -- Gemini's error documents and blocks ----------------------------------------------


@pytest.mark.parametrize(
    ("fault", "code", "status"),
    [
        (Fault.rate_limit(), 429, "RESOURCE_EXHAUSTED"),
        (Fault.server_error(500), 500, "INTERNAL"),
        (Fault.server_error(502), 502, "UNAVAILABLE"),
        (Fault.server_error(503), 503, "UNAVAILABLE"),
        (Fault.context_length(), 400, "INVALID_ARGUMENT"),
    ],
)
def test_an_error_fault_is_a_google_error_document(
    fake: FakeGemini, client: httpx.Client, fault: Fault, code: int, status: str
) -> None:
    fake.script(fault)

    response = client.post(PATH, json=CONTENTS)

    assert response.status_code == code
    error = response.json()["error"]
    assert (error["code"], error["status"]) == (code, status)
    assert error["message"]


def test_a_rate_limit_with_retry_after_also_carries_retry_info(
    fake: FakeGemini, client: httpx.Client
) -> None:
    fake.script(Fault.rate_limit(retry_after=2), Fault.rate_limit())

    first, second = client.post(PATH, json=CONTENTS), client.post(PATH, json=CONTENTS)

    assert first.headers["retry-after"] == "2"
    (detail,) = first.json()["error"]["details"]
    assert detail["retryDelay"] == "2s"
    assert "retry-after" not in second.headers
    assert "details" not in second.json()["error"]


def test_context_length_says_how_many_tokens_are_allowed(
    fake: FakeGemini, client: httpx.Client
) -> None:
    fake.script(Fault.context_length())

    message = client.post(PATH, json=CONTENTS).json()["error"]["message"]

    assert "exceeds the maximum number of tokens allowed (1048576)" in message


def test_content_policy_blocks_the_prompt_with_feedback_and_no_candidates(
    fake: FakeGemini, client: httpx.Client
) -> None:
    fake.script(Fault.content_policy(), Fault.content_policy())

    response = client.post(PATH, json=CONTENTS)
    (streamed,) = _stream(client)

    assert response.status_code == 200
    assert response.json() == {"promptFeedback": {"blockReason": "SAFETY"}}
    assert streamed == response.json()


def test_a_refusal_finishes_with_safety_and_no_content(
    fake: FakeGemini, client: httpx.Client
) -> None:
    fake.script(Fault.refusal())

    (candidate,) = client.post(PATH, json=CONTENTS).json()["candidates"]

    assert candidate["finishReason"] == "SAFETY"
    assert "content" not in candidate
    assert candidate["safetyRatings"][0]["probability"] == "HIGH"


def test_wrong_usage_does_not_add_up_and_missing_usage_is_absent(
    fake: FakeGemini, client: httpx.Client
) -> None:
    fake.script(Fault.wrong_usage(), Fault.missing_usage())

    wrong = client.post(PATH, json=CONTENTS).json()["usageMetadata"]
    streamed = _stream(client)

    assert wrong["candidatesTokenCount"] == -1
    assert wrong["totalTokenCount"] != (
        wrong["promptTokenCount"] + wrong["candidatesTokenCount"]
    )
    assert all("usageMetadata" not in payload for payload in streamed)
