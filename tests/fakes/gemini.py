"""A fake Gemini provider: generateContent and streamGenerateContent with alt=sse."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fakes.fault import Fault, Kind
from fakes.server import FakeServer
from fakes.tokens import Usage, count, pieces, prompt_text, usage_for
from fakes.wire import Reply, Request, json_reply, sse, sse_reply

PREFIX = "/v1beta/models/"
MODELS_PATH = "/v1beta/models"
MODELS = ("gemini-2.5-flash", "gemini-2.5-pro")
METHODS = ("generateContent", "streamGenerateContent")
CONTEXT_WINDOW = 1_048_576
# Google's canonical codes, which Gemini reports beside the HTTP status.
STATUSES = {
    500: "INTERNAL",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
# Gemini ends its events with CRLF pairs, which an SSE client must accept.
CRLF = b"\r\n"
SAFETY = {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH"}


@contextmanager
def serve_gemini() -> Iterator[FakeGemini]:
    """A running fake; point the client at ``fake.base_url``."""
    with FakeGemini() as fake:
        yield fake


class FakeGemini(FakeServer):
    """Speaks ``/v1beta/models/{model}:{method}`` and lists its models (one page)
    at ``GET /v1beta/models``; the key is a header or ``?key=``."""

    name = "gemini"

    def __init__(self) -> None:
        super().__init__()
        self._ids = itertools.count(1)

    def check(self, request: Request) -> Reply | None:
        listing = (request.method, request.path) == ("GET", MODELS_PATH)
        route = _route(request.path)
        if not listing and (route is None or request.method != "POST"):
            return _error(404, "NOT_FOUND", f"{request.path} is not found.")
        if not (request.header("x-goog-api-key") or request.query.get("key")):
            message = "Method doesn't allow unregistered callers. Please use API Key."
            return _error(403, "PERMISSION_DENIED", message)
        if listing or route is None:
            return None
        if route[1] == "streamGenerateContent" and request.query.get("alt") != "sse":
            # The JSON-array stream (no alt=sse) is not implemented by this fake.
            message = (
                "the fake streams only with alt=sse; the JSON-array stream is missing"
            )
            return _error(400, "INVALID_ARGUMENT", message)
        body = request.json
        if not isinstance(body, dict) or "contents" not in body:
            message = "* GenerateContentRequest.contents: contents is not specified"
            return _error(400, "INVALID_ARGUMENT", message)

        return None

    def failure(self, request: Request, fault: Fault) -> Reply:
        if fault.kind is Kind.RATE_LIMIT:
            return _rate_limited(fault.retry_after)
        if fault.kind is Kind.CONTEXT_LENGTH:
            message = (
                f"The input token count ({CONTEXT_WINDOW + 1}) exceeds the maximum "
                f"number of tokens allowed ({CONTEXT_WINDOW})."
            )
            return _error(400, "INVALID_ARGUMENT", message)
        if fault.kind is Kind.CONTENT_POLICY:
            # Gemini blocks a prompt with a 200 that has feedback and no candidates.
            blocked = {"promptFeedback": {"blockReason": "SAFETY"}}
            return self._send(request, [blocked])

        status = STATUSES.get(fault.status, "INTERNAL")
        return _error(fault.status, status, "An internal error has occurred.")

    def answer(self, request: Request, fault: Fault) -> Reply:
        if request.method == "GET":
            models = [{"name": f"models/{name}"} for name in MODELS]
            return json_reply(200, {"models": models})
        body: dict[str, Any] = request.json
        model, _ = _route(request.path) or ("", "")
        ident = f"fake-response-{next(self._ids)}"
        prompt = count(prompt_text([body.get("systemInstruction"), body["contents"]]))
        if fault.kind is Kind.REFUSAL:
            usage = _metadata(usage_for(fault, prompt, 0))
            candidate = {
                "index": 0,
                "finishReason": "SAFETY",
                "safetyRatings": [SAFETY],
            }
            return self._send(request, [_response(ident, model, candidate, usage)])

        usage = _metadata(usage_for(fault, prompt, count(fault.text)))
        if not _streams(request):
            candidate = _candidate(fault.text, "STOP")
            return self._send(request, [_response(ident, model, candidate, usage)])
        parts = pieces(fault.text)
        # Only the last event holds the finish reason and the final usage.
        payloads = [
            _response(ident, model, _candidate(part, None), _so_far(usage))
            for part in parts[:-1]
        ]
        payloads.append(_response(ident, model, _candidate(parts[-1], "STOP"), usage))

        return self._send(request, payloads)

    def _send(self, request: Request, payloads: list[dict[str, Any]]) -> Reply:
        if _streams(request):
            return sse_reply(sse(payload, end=CRLF) for payload in payloads)

        return json_reply(200, payloads[0])


def _route(path: str) -> tuple[str, str] | None:
    """The model and method named by a path, or None for any other path."""
    model, colon, method = path.removeprefix(PREFIX).rpartition(":")
    if not path.startswith(PREFIX) or not colon or not model or method not in METHODS:
        return None

    return model, method


def _streams(request: Request) -> bool:
    return request.path.endswith(":streamGenerateContent")


def _candidate(text: str, finish: str | None) -> dict[str, Any]:
    candidate: dict[str, Any] = {
        "content": {"parts": [{"text": text}], "role": "model"},
        "index": 0,
    }
    if finish is not None:
        candidate["finishReason"] = finish

    return candidate


def _response(
    ident: str, model: str, candidate: dict[str, Any], usage: dict[str, int] | None
) -> dict[str, Any]:
    payload: dict[str, Any] = {"candidates": [candidate]}
    if usage is not None:
        payload["usageMetadata"] = usage

    return {**payload, "modelVersion": model, "responseId": ident}


def _metadata(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None

    return {
        "promptTokenCount": usage.prompt,
        "candidatesTokenCount": usage.completion,
        "totalTokenCount": usage.total,
    }


def _so_far(usage: dict[str, int] | None) -> dict[str, int] | None:
    """Usage before the last event, which Gemini reports without candidates."""
    if usage is None:
        return None
    prompt = usage["promptTokenCount"]

    return {"promptTokenCount": prompt, "totalTokenCount": prompt}


def _rate_limited(retry_after: int | None) -> Reply:
    if retry_after is None:
        return _error(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.")
    # Gemini says when to retry in a RetryInfo detail; the header is for clients
    # that read only Retry-After.
    info = {"@type": "type.googleapis.com/google.rpc.RetryInfo"}
    details = [{**info, "retryDelay": f"{retry_after}s"}]
    headers = {"retry-after": str(retry_after)}

    return _error(
        429, "RESOURCE_EXHAUSTED", "Resource has been exhausted.", details, headers
    )


def _error(
    code: int,
    status: str,
    message: str,
    details: list[dict[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details

    return json_reply(code, {"error": error}, headers)
