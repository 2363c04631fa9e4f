"""The Anthropic Messages adapter: OpenAI chat requests to ``/v1/messages`` and back.

System messages become the top-level ``system``; tool calls and tool results
become ``tool_use`` and ``tool_result`` blocks, and consecutive messages of one
role are merged, as the API wants turns to alternate. The event stream is
translated into OpenAI chunks as it arrives.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlencode

from penin.router.errors import ErrorKind
from penin.router.providers import _chat
from penin.router.providers._http import (
    Decoder,
    EventStream,
    HttpProvider,
    checked_usage,
    status_kind,
)
from penin.router.providers.base import Completion, Json, Stream, Usage

VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # Anthropic requires max_tokens; OpenAI clients often omit it
MAX_MODEL_PAGES = 20
FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Error types, for errors that arrive in a stream rather than with a status.
ERROR_TYPES = {
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "not_found_error": ErrorKind.BAD_REQUEST,
    "request_too_large": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
    "permission_error": ErrorKind.AUTH,
    "rate_limit_error": ErrorKind.RATE_LIMIT,
    "timeout_error": ErrorKind.TIMEOUT,
    "api_error": ErrorKind.SERVER,
    "overloaded_error": ErrorKind.SERVER,
}
CONTEXT_PHRASES = ("prompt is too long", "context window")
POLICY_PHRASES = ("content filtering", "content policy")


class AnthropicProvider(HttpProvider):
    """``POST {base_url}/v1/messages``; ``base_url`` is the API's root."""

    @property
    def root(self) -> str:
        return self.config.base_url.rstrip("/").removesuffix("/v1")

    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.api_key, "anthropic-version": VERSION}

    def error_kind(self, status: int | None, error: Json) -> ErrorKind:
        if status is None:
            kind = ERROR_TYPES.get(str(error.get("type")), ErrorKind.SERVER)
        else:
            kind = status_kind(status)  # 529, "overloaded", is a 5xx like the rest
        if kind is not ErrorKind.BAD_REQUEST:
            return kind
        message = str(error.get("message") or "").lower()
        if any(phrase in message for phrase in CONTEXT_PHRASES):
            return ErrorKind.CONTEXT_LENGTH
        if any(phrase in message for phrase in POLICY_PHRASES):
            return ErrorKind.CONTENT_POLICY

        return kind

    async def complete(self, model: str, request: Json) -> Completion:
        with self.translating():
            body = messages_request(model, request)
        answer = await self.call("POST", f"{self.root}/v1/messages", body)
        with self.reading("the message"):
            return self._completion(answer)

    def stream(self, model: str, request: Json) -> Stream:
        with self.translating():
            body = {**messages_request(model, request), "stream": True}

        return EventStream(self, f"{self.root}/v1/messages", body, _Events(self))

    async def list_models(self) -> list[str]:
        names: list[str] = []
        query: dict[str, str] = {"limit": "1000"}
        for _ in range(MAX_MODEL_PAGES):
            url = f"{self.root}/v1/models?{urlencode(query)}"
            page = await self.call("GET", url)
            with self.reading("the model list"):
                names += [str(model["id"]) for model in page["data"]]
                if not page.get("has_more") or not page.get("last_id"):
                    break
                query["after_id"] = str(page["last_id"])

        return names

    def _completion(self, answer: Json) -> Completion:
        blocks = answer["content"]
        text = "".join(b["text"] for b in blocks if b["type"] == "text")
        calls = [
            _chat.tool_call(b["id"], b["name"], b.get("input") or {})
            for b in blocks
            if b["type"] == "tool_use"
        ]
        usage = usage_of(self.name, answer.get("usage") or {})
        body = _chat.completion(
            str(answer["id"]),
            str(answer["model"]),
            int(time.time()),
            _chat.assistant(text, calls),
            FINISH.get(str(answer.get("stop_reason")), "stop"),
            usage,
        )

        return Completion(body, usage)


def usage_of(provider: str, counts: Json) -> Usage | None:
    """Prompt tokens count those written to and read from the prompt cache too."""
    prompt = counts.get("input_tokens")
    if isinstance(prompt, int):
        cached = ("cache_creation_input_tokens", "cache_read_input_tokens")
        prompt += sum(int(counts.get(name) or 0) for name in cached)

    return checked_usage(provider, prompt, counts.get("output_tokens"))


# -- the request -----------------------------------------------------------------


def messages_request(model: str, request: Json) -> Json:
    """The Messages API body for an OpenAI chat request."""
    system, messages = _conversation(request["messages"])
    body: Json = {
        "model": model,
        "max_tokens": _chat.max_tokens(request) or DEFAULT_MAX_TOKENS,
        "messages": messages,
    }
    if system:
        body["system"] = system
    for name in ("temperature", "top_p"):
        if request.get(name) is not None:
            body[name] = request[name]
    stops = _chat.stop_sequences(request)
    if stops:
        body["stop_sequences"] = stops
    tools = [_tool(function) for function in _chat.functions(request)]
    if tools:
        body["tools"] = tools
        choice = _tool_choice(
            request.get("tool_choice"), request.get("parallel_tool_calls")
        )
        if choice is not None:
            body["tool_choice"] = choice
    if isinstance(request.get("user"), str):
        body["metadata"] = {"user_id": request["user"]}

    return body


def _conversation(messages: list[Json]) -> tuple[str, list[Json]]:
    system: list[str] = []
    turns: list[Json] = []
    for message in messages:
        role = message["role"]
        if role in {"system", "developer"}:
            system.append(_chat.text_of(message.get("content")))
            continue
        blocks = _blocks(role, message)
        if not blocks:
            continue
        speaker = "assistant" if role == "assistant" else "user"
        if turns and turns[-1]["role"] == speaker:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": speaker, "content": blocks})

    return "\n\n".join(text for text in system if text), turns


def _blocks(role: str, message: Json) -> list[Json]:
    content = message.get("content")
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": str(message["tool_call_id"]),
            "content": _chat.text_of(content),
        }
        return [result]
    if role == "user":
        return [_block(part) for part in _chat.parts_of(content) if _wanted(part)]
    if role == "assistant":
        text = _chat.text_of(content)
        blocks = [{"type": "text", "text": text}] if text else []
        return blocks + [_tool_use(call) for call in message.get("tool_calls") or []]
    raise ValueError(f"messages of role {role!r} cannot be sent to Anthropic")


def _wanted(part: Json) -> bool:
    # Anthropic rejects empty text blocks.
    return part["type"] != "text" or bool(part["text"])


def _block(part: Json) -> Json:
    if part["type"] == "text":
        return {"type": "text", "text": str(part["text"])}
    if part["type"] == "image_url":
        url = _chat.image_url(part)
        inline = _chat.data_url(url)
        if inline is None:
            return {"type": "image", "source": {"type": "url", "url": url}}
        media_type, data = inline
        source = {"type": "base64", "media_type": media_type, "data": data}
        return {"type": "image", "source": source}
    raise ValueError(f"content parts of type {part['type']!r} cannot be sent")


def _tool_use(call: Json) -> Json:
    return {
        "type": "tool_use",
        "id": str(call["id"]),
        "name": str(call["function"]["name"]),
        "input": _chat.arguments(call),
    }


def _tool(function: Json) -> Json:
    schema = function.get("parameters") or {"type": "object", "properties": {}}
    tool: Json = {"name": function["name"], "input_schema": schema}
    if function.get("description"):
        tool["description"] = function["description"]

    return tool


def _tool_choice(choice: object, parallel: object) -> Json | None:
    if choice is None and parallel is not False:
        return None
    picked: dict[str, Any]
    if choice is None or choice == "auto":
        picked = {"type": "auto"}
    elif choice == "required":
        picked = {"type": "any"}
    elif choice == "none":
        return {"type": "none"}
    elif isinstance(choice, dict):
        picked = {"type": "tool", "name": _chat.chosen_function(choice)}
    else:
        raise ValueError(f"tool_choice {choice!r} is not one OpenAI defines")
    if parallel is False:
        picked["disable_parallel_tool_use"] = True

    return picked


# -- the stream ------------------------------------------------------------------


class _Events(Decoder):
    """Message events to chunks; usage from ``message_start`` and ``message_delta``."""

    def __init__(self, provider: AnthropicProvider) -> None:
        self._provider = provider
        self._chunks = _chat.Chunks("", "", int(time.time()))
        self._tools: dict[int, int] = {}  # content block index -> tool call index
        self._counts: Json = {}

    def feed(self, event: str, data: str) -> list[Json]:
        payload = json.loads(data)
        kind = payload.get("type", event)
        if kind == "error":
            raise self._provider.in_band(payload.get("error"))
        if kind == "message_start":
            return self._start(payload["message"])
        if kind == "content_block_start":
            return self._block(payload["index"], payload["content_block"])
        if kind == "content_block_delta":
            return self._delta(payload["index"], payload["delta"])
        if kind == "message_delta":
            return self._stop(payload["delta"], payload.get("usage") or {})
        if kind == "message_stop":
            self.finished = True
            return [] if self.usage is None else [self._chunks.usage(self.usage)]

        return []  # ping, content_block_stop, and event types added later

    def _start(self, message: Json) -> list[Json]:
        self._chunks.ident = str(message["id"])
        self._chunks.model = str(message["model"])
        self._counts.update(message.get("usage") or {})

        return [self._chunks.delta({"role": "assistant", "content": ""})]

    def _block(self, index: int, block: Json) -> list[Json]:
        if block["type"] == "text" and block.get("text"):
            return [self._chunks.delta({"content": block["text"]})]
        if block["type"] != "tool_use":
            return []
        position = self._tools[index] = len(self._tools)
        call = _chat.tool_call(block["id"], block["name"], {})
        call["function"]["arguments"] = ""

        return [self._chunks.delta({"tool_calls": [{"index": position, **call}]})]

    def _delta(self, index: int, delta: Json) -> list[Json]:
        if delta["type"] == "text_delta":
            return [self._chunks.delta({"content": delta["text"]})]
        if delta["type"] == "input_json_delta" and delta["partial_json"]:
            function = {"arguments": delta["partial_json"]}
            call = {"index": self._tools[index], "function": function}
            return [self._chunks.delta({"tool_calls": [call]})]

        return []  # thinking and signature deltas have no OpenAI counterpart

    def _stop(self, delta: Json, usage: Json) -> list[Json]:
        self._counts.update(usage)
        if self._counts:
            self.usage = usage_of(self._provider.name, self._counts)
        finish = FINISH.get(str(delta.get("stop_reason")), "stop")

        return [self._chunks.delta({}, finish)]
