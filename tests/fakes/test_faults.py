"""Every fake injects wire faults (latency, resets, hangs, truncation) the same way."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, suppress
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from fakes.anthropic import serve_anthropic
from fakes.events import Event, parse
from fakes.fault import Fault
from fakes.gemini import serve_gemini
from fakes.openai import FakeOpenAI, serve_openai
from fakes.server import FakeServer
from fakes.wire import Reply, Request

HUNG_CLIENT_TIMEOUT = httpx.Timeout(5.0, read=0.5)
PROMPT_STOP_S = 1.0


@dataclass(frozen=True)
class Provider:
    """How to reach one fake with a minimal, valid request."""

    serve: Callable[[], AbstractContextManager[FakeServer]]
    headers: dict[str, str]
    path: str
    body: dict[str, Any]
    stream_path: str
    stream_body: dict[str, Any]
    last_event: bytes

    def post(self, client: httpx.Client, **options: Any) -> httpx.Response:
        return client.post(self.path, json=self.body, **options)

    def stream(self, client: httpx.Client) -> AbstractContextManager[httpx.Response]:
        return client.stream("POST", self.stream_path, json=self.stream_body)


CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
MESSAGE = {"model": "claude-test", "max_tokens": 64, "messages": CHAT["messages"]}
CONTENTS = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
GEMINI = "/v1beta/models/gemini-2.0-flash"
PROVIDERS = {
    "openai": Provider(
        serve_openai,
        {"authorization": "Bearer test-key"},
        "/v1/chat/completions",
        CHAT,
        "/v1/chat/completions",
        {**CHAT, "stream": True},
        b"data: [DONE]",
    ),
    "anthropic": Provider(
        serve_anthropic,
        {"x-api-key": "test-key", "anthropic-version": "2023-06-01"},
        "/v1/messages",
        MESSAGE,
        "/v1/messages",
        {**MESSAGE, "stream": True},
        b"event: message_stop",
    ),
    "gemini": Provider(
        serve_gemini,
        {"x-goog-api-key": "test-key"},
        f"{GEMINI}:generateContent",
        CONTENTS,
        f"{GEMINI}:streamGenerateContent?alt=sse",
        CONTENTS,
        b'"finishReason": "STOP"',
    ),
}


@pytest.fixture(params=list(PROVIDERS.values()), ids=list(PROVIDERS))
def provider(request: pytest.FixtureRequest) -> Provider:
    chosen: Provider = request.param
    return chosen


@pytest.fixture
def fake(provider: Provider) -> Iterator[FakeServer]:
    with provider.serve() as running:
        yield running


@pytest.fixture
def client(fake: FakeServer, provider: Provider) -> Iterator[httpx.Client]:
    headers = provider.headers
    with httpx.Client(base_url=fake.base_url, headers=headers, timeout=5) as http:
        yield http


def _read_into(response: httpx.Response, received: list[bytes]) -> None:
    received.extend(response.iter_bytes())


# -- the script ---------------------------------------------------------------


def test_requests_take_the_script_in_order_then_the_default(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.rate_limit(), Fault.server_error(503))

    statuses = [provider.post(client).status_code for _ in range(3)]

    assert statuses == [429, 503, 200]
    assert fake.pending == 0


def test_always_sets_what_every_unscripted_request_gets(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.always(Fault.server_error(502))
    fake.script(Fault.ok())

    statuses = [provider.post(client).status_code for _ in range(3)]

    assert statuses == [200, 502, 502]


def test_the_fake_records_what_it_was_sent(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    provider.post(client, headers={"x-trace": "abc"})

    (request,) = fake.requests
    assert request.method == "POST"
    assert provider.path.startswith(request.path)
    assert request.header("X-Trace") == "abc"
    assert request.json == provider.body


def test_a_server_error_must_have_a_5xx_status() -> None:
    with pytest.raises(ValueError, match="5xx"):
        Fault.server_error(404)


# -- latency ------------------------------------------------------------------


def test_delay_holds_back_the_status_line(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.ok().slowed(delay=0.2))

    started = time.monotonic()
    response = provider.post(client)

    assert response.status_code == 200
    assert time.monotonic() - started >= 0.2


def test_gap_spaces_out_the_events_of_a_stream(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.ok().slowed(gap=0.04))

    started = time.monotonic()
    with provider.stream(client) as response:
        body = response.read()
    elapsed = time.monotonic() - started

    assert provider.last_event in body
    assert elapsed >= 0.04 * (len(parse(body)) - 1)


# -- broken connections --------------------------------------------------------


def test_reset_makes_the_client_see_a_read_error(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.reset())

    with pytest.raises(httpx.ReadError):
        provider.post(client)
    assert provider.post(client).status_code == 200


def test_disconnect_closes_without_a_response(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.disconnect())

    with pytest.raises(httpx.RemoteProtocolError):
        provider.post(client)


def test_hang_times_out_the_client_and_the_fake_still_stops_promptly(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.hang())

    with pytest.raises(httpx.ReadTimeout):
        provider.post(client, timeout=HUNG_CLIENT_TIMEOUT)
    started = time.monotonic()
    fake.stop()

    assert time.monotonic() - started < PROMPT_STOP_S


def test_stopping_ends_an_exchange_a_client_is_still_waiting_on(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.hang())
    outcome: list[BaseException] = []

    def wait_for_an_answer() -> None:
        try:
            provider.post(client, timeout=30)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_an_answer)
    waiter.start()
    deadline = time.monotonic() + 5
    while not fake.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.monotonic()
    fake.stop()
    waiter.join(5)

    assert time.monotonic() - started < PROMPT_STOP_S
    assert not waiter.is_alive()
    assert [type(exc) for exc in outcome] == [httpx.RemoteProtocolError]


def test_stall_leaves_a_stream_reader_waiting_until_it_times_out(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.stall(after=1))
    received: list[bytes] = []

    with (
        client.stream(
            "POST",
            provider.stream_path,
            json=provider.stream_body,
            timeout=HUNG_CLIENT_TIMEOUT,
        ) as response,
        pytest.raises(httpx.ReadTimeout),
    ):
        _read_into(response, received)

    assert len(parse(b"".join(received))) == 1


# -- broken bodies ---------------------------------------------------------------


def test_a_truncated_stream_ends_without_its_terminator(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.truncated(after=2))
    received: list[bytes] = []

    with provider.stream(client) as response, pytest.raises(httpx.RemoteProtocolError):
        _read_into(response, received)

    body = b"".join(received)
    assert len(parse(body)) == 2
    assert provider.last_event not in body


def test_a_truncated_body_is_shorter_than_its_content_length(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.truncated())

    with pytest.raises(httpx.RemoteProtocolError):
        provider.post(client)


def test_a_malformed_body_is_a_200_that_is_not_json(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.malformed_json())

    response = provider.post(client)

    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_a_malformed_stream_breaks_one_event_and_still_ends(
    fake: FakeServer, client: httpx.Client, provider: Provider
) -> None:
    fake.script(Fault.malformed_json(after=1))

    with provider.stream(client) as response:
        body = response.read()

    broken = [index for index, event in enumerate(parse(body)) if not _is_json(event)]
    assert broken == [1]
    assert provider.last_event in body


def _is_json(event: Event) -> bool:
    if event.data == "[DONE]":
        return True
    try:
        json.loads(event.data)
    except json.JSONDecodeError:
        return False

    return True


# -- the fake itself ------------------------------------------------------------


class _Broken(FakeOpenAI):
    def answer(self, request: Request, fault: Fault) -> Reply:
        raise RuntimeError("a bug in the fake")


def _use(fake: FakeServer) -> None:
    headers = PROVIDERS["openai"].headers
    with fake, suppress(httpx.HTTPError):
        httpx.post(fake.base_url + "/v1/chat/completions", json=CHAT, headers=headers)


def test_a_bug_in_a_fake_fails_the_test_that_used_it() -> None:
    with pytest.raises(AssertionError, match="a bug in the fake"):
        _use(_Broken())
