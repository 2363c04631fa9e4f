"""The OpenAI Chat Completions adapter, for OpenAI and every server that speaks it.

Requests pass through with the deployment's model; answers and chunks come
back in the provider's own shape, which is already the router's.
"""

from __future__ import annotations

import json

from penin.router.errors import ErrorKind
from penin.router.providers._http import (
    Decoder,
    EventStream,
    HttpProvider,
    checked_usage,
    status_kind,
)
from penin.router.providers.base import Completion, Json, Stream, Usage

CONTEXT_CODES = frozenset({"context_length_exceeded"})
POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
# Servers that report no code say it in the message (vLLM, llama.cpp, Ollama).
CONTEXT_PHRASES = ("context length", "context window")
# Errors inside a 200 body or a stream name a type or code, not a status.
IN_BAND = {
    "server_error": ErrorKind.SERVER,
    "rate_limit_exceeded": ErrorKind.RATE_LIMIT,
    "invalid_request_error": ErrorKind.BAD_REQUEST,
    "authentication_error": ErrorKind.AUTH,
}
DONE = "[DONE]"


class OpenAIProvider(HttpProvider):
    """``POST {base_url}/chat/completions``; ``base_url`` ends in ``/v1``."""

    @property
    def base(self) -> str:
        return self.config.base_url.rstrip("/")

    def headers(self) -> dict[str, str]:
        # A local server may need no key; then no Authorization header is sent.
        return {"authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def error_kind(self, status: int | None, error: Json) -> ErrorKind:
        code = str(error.get("code") or "")
        if status is None:
            kind = IN_BAND.get(code) or IN_BAND.get(str(error.get("type")))
            kind = kind or ErrorKind.SERVER
        else:
            kind = status_kind(status)
        if kind is not ErrorKind.BAD_REQUEST:
            return kind
        message = str(error.get("message") or "").lower()
        if code in CONTEXT_CODES or any(p in message for p in CONTEXT_PHRASES):
            return ErrorKind.CONTEXT_LENGTH
        if code in POLICY_CODES:
            return ErrorKind.CONTENT_POLICY

        return kind

    async def complete(self, model: str, request: Json) -> Completion:
        body = {**request, "model": model}
        body.pop("stream", None)
        body.pop("stream_options", None)
        answer = await self.call("POST", f"{self.base}/chat/completions", body)
        if "choices" not in answer and "error" in answer:
            raise self.in_band(answer["error"])
        with self.reading("the completion"):
            if not isinstance(answer["choices"], list):
                raise TypeError("choices is not a list")

        return Completion(answer, usage_of(self.name, answer.get("usage")))

    def stream(self, model: str, request: Json) -> Stream:
        options = request.get("stream_options")
        options = options if isinstance(options, dict) else {}
        # Usage is always asked for; the router drops its chunk if the client
        # did not ask for it.
        body = {
            **request,
            "model": model,
            "stream": True,
            "stream_options": {**options, "include_usage": True},
        }

        return EventStream(
            self, f"{self.base}/chat/completions", body, _ChunkDecoder(self)
        )

    async def list_models(self) -> list[str]:
        answer = await self.call("GET", f"{self.base}/models")
        with self.reading("the model list"):
            return [str(model["id"]) for model in answer["data"]]


def usage_of(provider: str, usage: object) -> Usage | None:
    if not isinstance(usage, dict):
        return None

    return checked_usage(
        provider,
        usage.get("prompt_tokens"),
        usage.get("completion_tokens"),
        usage.get("total_tokens"),
    )


class _ChunkDecoder(Decoder):
    """Chunks pass through; the usage chunk is noted, ``[DONE]`` ends the stream."""

    def __init__(self, provider: OpenAIProvider) -> None:
        self._provider = provider

    def feed(self, event: str, data: str) -> list[Json]:
        if data.strip() == DONE:
            self.finished = True
            return []
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError("a chunk is not a JSON object")
        if "error" in chunk and "choices" not in chunk:
            raise self._provider.in_band(chunk["error"])
        if chunk.get("usage") is not None:
            self.usage = usage_of(self._provider.name, chunk["usage"])

        return [chunk]
