"""A fake Anthropic provider: the Messages API, whole or as its event stream."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fakes.fault import Fault, Kind
from fakes.server import FakeServer
from fakes.tokens import Usage, count, pieces, prompt_text, usage_for
from fakes.wire import Reply, Request, json_reply, sse, sse_reply

CONTEXT_WINDOW = 200_000
REQUIRED = ("model", "max_tokens", "messages")
MODELS = ("claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929")
ROUTES = {("POST", "/v1/messages"), ("GET", "/v1/models")}


@contextmanager
def serve_anthropic() -> Iterator[FakeAnthropic]:
    """A running fake; point the client at ``fake.base_url``."""
    with FakeAnthropic() as fake:
        yield fake


class FakeAnthropic(FakeServer):
    """Speaks ``POST /v1/messages`` and ``GET /v1/models`` (one page); needs
    ``x-api-key`` and ``anthropic-version``."""

    name = "anthropic"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    def check(self, request: Request) -> Reply | None:
        if (request.method, request.path) not in ROUTES:
            return _error(404, "not_found_error", "Not found")
        if not request.header("x-api-key"):
            return _error(401, "authentication_error", "x-api-key header is required")
        if not request.header("anthropic-version"):
            message = "anthropic-version: header is required"
            return _error(400, "invalid_request_error", message)
        if request.method == "GET":
            return None
        body = request.json
        if not isinstance(body, dict):
            return _error(400, "invalid_request_error", "The request body is not JSON")
        for name in REQUIRED:
            if name not in body:
                return _error(400, "invalid_request_error", f"{name}: Field required")

        return None

    def failure(self, request: Request, fault: Fault) -> Reply:
        if fault.kind is Kind.RATE_LIMIT:
            retry = (
                {}
                if fault.retry_after is None
                else {"retry-after": str(fault.retry_after)}
            )
            message = "Number of requests has exceeded your rate limit."
            return _error(429, "rate_limit_error", message, retry)
        if fault.kind is Kind.CONTEXT_LENGTH:
            tokens = f"{CONTEXT_WINDOW + 1} tokens > {CONTEXT_WINDOW} maximum"
            message = f"prompt is too long: {tokens}"
            return _error(400, "invalid_request_error", message)
        if fault.kind is Kind.CONTENT_POLICY:
            message = "Output blocked by content filtering policy"
            return _error(400, "invalid_request_error", message)
        if fault.status == 529:
            return _error(529, "overloaded_error", "Overloaded")

        return _error(fault.status, "api_error", "Internal server error")

    def answer(self, request: Request, fault: Fault) -> Reply:
        if request.method == "GET":
            return json_reply(200, _model_page())
        body: dict[str, Any] = request.json
        ident = f"msg_fake{next(self._ids)}"
        text = None if fault.kind is Kind.REFUSAL else fault.text
        stop_reason = "refusal" if text is None else "end_turn"
        prompt = count(prompt_text([body.get("system"), body["messages"]]))
        usage = usage_for(fault, prompt, count(text or ""))
        message = {
            "id": ident,
            "type": "message",
            "role": "assistant",
            "content": [] if text is None else [{"type": "text", "text": text}],
            "model": body["model"],
            "stop_reason": stop_reason,
            "stop_sequence": None,
        }
        headers = {"request-id": f"req_{ident}"}
        if not body.get("stream"):
            if usage is not None:
                message["usage"] = _usage(usage)
            return json_reply(200, message, headers)

        return sse_reply(_events(message, text, usage), headers)


def _events(
    message: dict[str, Any], text: str | None, usage: Usage | None
) -> list[bytes]:
    """The documented sequence: start, one text block, delta with the stop, stop."""
    start = {**message, "content": [], "stop_reason": None}
    if usage is not None:
        # message_start carries the input count; message_delta the final output.
        start["usage"] = {"input_tokens": usage.prompt, "output_tokens": 1}
    events = [_event("message_start", message=start)]
    if text is not None:
        block = {"type": "text", "text": ""}
        events += [
            _event("content_block_start", index=0, content_block=block),
            _event("ping"),
        ]
        events += [
            _event(
                "content_block_delta",
                index=0,
                delta={"type": "text_delta", "text": piece},
            )
            for piece in pieces(text)
        ]
        events.append(_event("content_block_stop", index=0))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": None}
    final: dict[str, Any] = {"delta": delta}
    if usage is not None:
        final["usage"] = {"output_tokens": usage.completion}
    events += [_event("message_delta", **final), _event("message_stop")]

    return events


def _event(kind: str, **fields: Any) -> bytes:
    return sse({"type": kind, **fields}, event=kind)


def _error(
    status: int, kind: str, message: str, headers: dict[str, str] | None = None
) -> Reply:
    body = {"type": "error", "error": {"type": kind, "message": message}}

    return json_reply(status, body, headers)


def _model_page() -> dict[str, Any]:
    models = [
        {"type": "model", "id": name, "display_name": name, "created_at": ""}
        for name in MODELS
    ]

    return {
        "data": models,
        "has_more": False,
        "first_id": MODELS[0],
        "last_id": MODELS[-1],
    }


def _usage(usage: Usage) -> dict[str, int]:
    return {"input_tokens": usage.prompt, "output_tokens": usage.completion}
