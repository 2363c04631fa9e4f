"""A fake OpenAI-compatible provider: Chat Completions, streamed or not, and models."""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from fakes.fault import Fault, Kind
from fakes.server import FakeServer
from fakes.tokens import Usage, count, pieces, prompt_text, usage_for
from fakes.wire import Reply, Request, json_reply, sse, sse_reply

MODELS = ("gpt-4o-mini", "gpt-4o")
CONTEXT_WINDOW = 128_000
DONE = b"data: [DONE]\n\n"
ROUTES = {("POST", "/v1/chat/completions"), ("GET", "/v1/models")}


@contextmanager
def serve_openai(models: Iterable[str] = MODELS) -> Iterator[FakeOpenAI]:
    """A running fake; point the client at ``fake.base_url + "/v1"``."""
    with FakeOpenAI(models) as fake:
        yield fake


class FakeOpenAI(FakeServer):
    """Speaks Chat Completions; the only fake that can be told to call a tool."""

    name = "openai"
    kinds = frozenset(Kind)

    def __init__(self, models: Iterable[str] = MODELS) -> None:
        super().__init__()
        self.models = tuple(models)
        self._ids = itertools.count(1)

    def check(self, request: Request) -> Reply | None:
        if (request.method, request.path) not in ROUTES:
            return _error(404, f"Invalid URL ({request.method} {request.path})")
        scheme, _, key = request.header("authorization").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return _error(401, "You didn't provide an API key.")
        if request.method == "GET":
            return None
        body = request.json
        if not isinstance(body, dict):
            return _error(400, "We could not parse the JSON body of your request.")
        for name in ("model", "messages"):
            if name not in body:
                message = f"Missing required parameter: '{name}'."
                return _error(
                    400, message, code="missing_required_parameter", param=name
                )

        return None

    def failure(self, request: Request, fault: Fault) -> Reply:
        if fault.kind is Kind.RATE_LIMIT:
            retry = (
                {}
                if fault.retry_after is None
                else {"retry-after": str(fault.retry_after)}
            )
            message = "Rate limit reached for requests. Please try again later."
            return _error(
                429, message, "requests", "rate_limit_exceeded", headers=retry
            )
        if fault.kind is Kind.CONTEXT_LENGTH:
            message = (
                f"This model's maximum context length is {CONTEXT_WINDOW} tokens. "
                "Please reduce the length of the messages."
            )
            return _error(
                400, message, code="context_length_exceeded", param="messages"
            )
        if fault.kind is Kind.CONTENT_POLICY:
            message = "Your request was rejected as a result of our safety system."
            return _error(400, message, code="content_policy_violation")

        message = "The server had an error while processing your request."
        return _error(fault.status, message, "server_error")

    def answer(self, request: Request, fault: Fault) -> Reply:
        if request.method == "GET":
            models = [_model(name) for name in self.models]
            return json_reply(200, {"object": "list", "data": models})
        body: dict[str, Any] = request.json
        if fault.kind is Kind.TOOL_CALL and fault.tool not in _offered_tools(body):
            message = f"the fake was told to call {fault.tool!r}, which is not in tools"
            return _error(400, message, param="tools")

        turn = self._turn(body, fault)
        if not body.get("stream"):
            return json_reply(200, turn.completion(), _request_id(turn.ident))
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        return sse_reply(turn.chunks(include_usage), _request_id(turn.ident))

    def _turn(self, body: dict[str, Any], fault: Fault) -> _Turn:
        number = next(self._ids)
        content: str | None = fault.text
        call: dict[str, Any] | None = None
        finish = "stop"
        if fault.kind is Kind.TOOL_CALL:
            function = {"name": fault.tool, "arguments": json.dumps(fault.arguments)}
            call = {
                "id": f"call_fake{number}",
                "type": "function",
                "function": function,
            }
            content, finish = None, "tool_calls"
        elif fault.kind is Kind.REFUSAL:
            content, finish = None, "content_filter"
        said = call["function"]["arguments"] if call else content or ""
        prompt = count(prompt_text(body["messages"]))

        return _Turn(
            f"chatcmpl-fake{number}",
            str(body["model"]),
            content,
            call,
            finish,
            usage_for(fault, prompt, count(said)),
        )


@dataclass(frozen=True)
class _Turn:
    """One assistant turn, which can be sent whole or as chunks."""

    ident: str
    model: str
    content: str | None
    call: dict[str, Any] | None
    finish: str
    usage: Usage | None

    def completion(self) -> dict[str, Any]:
        message: dict[str, Any] = {
            "role": "assistant",
            "content": self.content,
            "refusal": None,
        }
        if self.call is not None:
            message["tool_calls"] = [self.call]
        choice = {"index": 0, "message": message, "finish_reason": self.finish}
        payload = {**self._envelope("chat.completion"), "choices": [choice]}
        if self.usage is not None:
            payload["usage"] = _usage(self.usage)

        return payload

    def chunks(self, include_usage: bool) -> list[bytes]:
        opening = None if self.content is None else ""
        first: dict[str, Any] = {"role": "assistant", "content": opening}
        deltas = [first]
        if self.call is not None:
            function = self.call["function"]
            first["tool_calls"] = [
                {**self.call, "index": 0, "function": {**function, "arguments": ""}}
            ]
            deltas += [
                {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                for piece in pieces(function["arguments"])
            ]
        elif self.content is not None:
            deltas += [{"content": piece} for piece in pieces(self.content)]
        events = [self._chunk(delta, None, include_usage) for delta in deltas]
        events.append(self._chunk({}, self.finish, include_usage))
        # The usage chunk has no choices (the stream_options.include_usage contract).
        if include_usage and self.usage is not None:
            usage_chunk = {**self._envelope("chat.completion.chunk"), "choices": []}
            events.append(sse({**usage_chunk, "usage": _usage(self.usage)}))

        return [*events, DONE]

    def _chunk(self, delta: dict[str, Any], finish: str | None, usage: bool) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        payload = {**self._envelope("chat.completion.chunk"), "choices": [choice]}
        if usage:
            payload["usage"] = None

        return sse(payload)

    def _envelope(self, kind: str) -> dict[str, Any]:
        return {
            "id": self.ident,
            "object": kind,
            "created": int(time.time()),
            "model": self.model,
        }


def _error(
    status: int,
    message: str,
    type_: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    error = {"message": message, "type": type_, "param": param, "code": code}

    return json_reply(status, {"error": error}, headers)


def _usage(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt,
        "completion_tokens": usage.completion,
        "total_tokens": usage.total,
    }


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "fake"}


def _offered_tools(body: dict[str, Any]) -> set[str]:
    return {
        tool.get("function", {}).get("name")
        for tool in body.get("tools") or []
        if isinstance(tool, dict)
    }


def _request_id(ident: str) -> dict[str, str]:
    return {"x-request-id": f"req_{ident}"}
