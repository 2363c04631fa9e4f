"""``/v1/chat/completions`` and ``/v1/models``: the OpenAI-compatible surface.

Clients send OpenAI Chat Completions requests with a ``route``-scope key and
name a logical model; ``X-Penin-Data-Class`` may raise the data class the
request is held to (its key's, else the router policy's default). Headers of
the answer say which deployment served it (``X-Penin-Deployment``), what it
cost (``X-Penin-Cost-USD``; for streams an SSE comment before ``[DONE]``) and
how much budget is left (``X-Penin-Budget-Remaining-USD``). Router errors,
policy refusals among them, are problem documents.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from starlette import types as asgi

from penin.api.auth import require
from penin.api.problems import Problem, policy_problem
from penin.keys import Scope
from penin.router.audit import Caller, Outcome
from penin.router.budget import BudgetUnavailableError
from penin.router.errors import (
    BudgetExceededError,
    ErrorKind,
    NoDeploymentError,
    PolicyDeniedError,
    ProviderError,
    RouterError,
    UnknownModelError,
)
from penin.router.router import RoutedStream, Router

router = APIRouter(prefix="/v1", tags=["router"])

_CHECK_ROUTE_KEY = require(Scope.ROUTE)
DATA_CLASS_HEADER = "x-penin-data-class"
_DATA_CLASS = re.compile(r"[a-z][a-z0-9_]{0,63}")

_CHAT_OPENAPI: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["model", "messages"],
                    "properties": {
                        "model": {"type": "string"},
                        "messages": {"type": "array", "items": {"type": "object"}},
                        "stream": {"type": "boolean"},
                    },
                }
            }
        },
    },
    "parameters": [
        {
            "name": "X-Penin-Cache",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "enum": ["use", "skip"]},
            "description": "use: cache this request even if it is not "
            "deterministic; skip: neither read nor fill the cache.",
        },
        {
            "name": "X-Penin-Data-Class",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_]{0,63}$"},
            "description": "The class of the data this request carries (like "
            "pii): it may raise the class the key is held to, never lower it. "
            "Only deployments whose data_classes list the class receive it.",
        },
    ],
}


def _router(request: Request) -> Router | None:
    """The node's router; None on a node with no ``models`` configured."""
    routing: Router | None = request.app.state.node.router
    return routing


@router.get("/models")
async def list_models(request: Request) -> dict[str, Any]:
    """The logical models a client may ask for, in OpenAI's list shape."""
    await _CHECK_ROUTE_KEY(request)
    created = int(request.app.state.node.started_at)
    routing = _router(request)
    names = routing.model_names() if routing is not None else []

    return {
        "object": "list",
        "data": [
            {"id": n, "object": "model", "created": created, "owned_by": "penin"}
            for n in names
        ],
    }


@router.post(
    "/chat/completions",
    openapi_extra=_CHAT_OPENAPI,
    responses={
        200: {
            "description": "A chat.completion, or an SSE stream of chunks",
            "content": {"text/event-stream": {}},
        },
        403: {"description": "The router policy refused the request"},
        429: {"description": "A hard budget limit; nothing was sent upstream"},
        502: {"description": "Every deployment tried failed"},
    },
)
async def chat_completions(request: Request) -> Response:
    """Route a chat request to the best deployment of its logical model."""
    key = await _CHECK_ROUTE_KEY(request)
    body = _chat_request(await request.body())
    caller = Caller(
        scope=key.scope.value,
        data_class=key.data_class,
        models=key.models,
        declared_class=_data_class(request.headers.get(DATA_CLASS_HEADER)),
    )
    routing = _router(request)
    if routing is None:
        raise _problem(UnknownModelError(str(body["model"]), []))
    outcome = Outcome(
        model=str(body["model"]),
        key_id=key.key_id,
        stream=body.get("stream") is True,
        request_id=str(request.state.request_id),
        caller=caller,
    )
    try:
        if outcome.stream:
            return await _stream(routing, body, outcome)
        answer = await routing.complete(
            body, outcome, request.headers.get("x-penin-cache")
        )
    except RouterError as exc:
        raise _problem(exc) from None

    return Response(
        json.dumps(answer, ensure_ascii=False, separators=(",", ":")),
        200,
        _headers(outcome, cost=True),
        media_type="application/json",
    )


async def _stream(routing: Router, body: dict[str, Any], outcome: Outcome) -> Response:
    routed = await routing.stream(body, outcome)

    async def events() -> AsyncIterator[bytes]:
        # aclosing: a client that leaves closes this generator, and with it
        # the router's, which settles the budget and writes the record.
        async with contextlib.aclosing(routed.chunks()) as chunks:
            try:
                async for chunk in chunks:
                    yield _event(chunk)
            except ProviderError as exc:
                # The 200 and the first chunks are out: the failure can only be
                # told in the stream. OpenAI's clients raise on an error event;
                # the missing [DONE] tells any other client the answer is cut.
                yield _cost_comment(outcome)
                yield _event({"error": _stream_error(exc)})
                return
        yield _cost_comment(outcome)
        yield b"data: [DONE]\n\n"

    return _RoutedResponse(
        routed,
        events(),
        media_type="text/event-stream",
        headers=_headers(outcome, cost=False),
    )


class _RoutedResponse(StreamingResponse):
    """A stream response that releases the routed stream however it ends."""

    def __init__(self, routed: RoutedStream, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routed = routed

    async def __call__(
        self, scope: asgi.Scope, receive: asgi.Receive, send: asgi.Send
    ) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self._routed.abandon()


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def _cost_comment(outcome: Outcome) -> bytes:
    return f": penin-cost-usd={outcome.cost_usd:.9f}\n\n".encode()


def _stream_error(exc: ProviderError) -> dict[str, Any]:
    """An error event's object, in the shape OpenAI sends mid-stream."""
    return {
        "message": f"the stream broke after it started: {exc}",
        "type": "upstream_error",
        "param": None,
        "code": exc.kind.value,
    }


def _headers(outcome: Outcome, *, cost: bool) -> dict[str, str]:
    headers = {"Cache-Control": "no-store"}
    if outcome.deployment is not None:
        headers["X-Penin-Deployment"] = outcome.deployment.name
    if outcome.cache_level is not None:
        headers["X-Penin-Cache"] = f"hit-{outcome.cache_level}"
    if cost:
        headers["X-Penin-Cost-USD"] = f"{outcome.cost_usd:.9f}"
        if outcome.estimated:
            headers["X-Penin-Cost-Estimated"] = "true"
    remaining = outcome.remaining_usd
    if remaining is not None:
        headers["X-Penin-Budget-Remaining-USD"] = f"{remaining:.6f}"

    return headers


def _chat_request(raw: bytes) -> dict[str, Any]:
    """The body as a dict with a string model and a list of message objects."""
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise Problem(
            400, "invalid-json", "the request body is not valid JSON"
        ) from None
    if not isinstance(body, dict):
        raise _invalid("body", "send a JSON object with model and messages")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _invalid("model", "a logical model name (a non-empty string) is required")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "a non-empty list of message objects is required")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _invalid(f"messages.{i}", "each message needs a string role")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise _invalid("stream", "must be true or false")

    return body


def _data_class(value: str | None) -> str | None:
    """The declared data class; a value that is no class name is a 422."""
    if value is None or _DATA_CLASS.fullmatch(value):
        return value
    raise Problem(
        422,
        "validation",
        "X-Penin-Data-Class: a data class is a lowercase identifier "
        "(a letter, then letters, digits or _; like pii)",
        fields=["X-Penin-Data-Class"],
    )


def _invalid(field: str, message: str) -> Problem:
    return Problem(422, "validation", f"{field}: {message}", fields=[field])


def _problem(exc: RouterError) -> Problem:
    if isinstance(exc, UnknownModelError):
        return Problem(404, "model-not-found", str(exc))
    if isinstance(exc, PolicyDeniedError):
        return policy_problem(exc.unavailable, str(exc), exc.decision_id)
    if isinstance(exc, BudgetExceededError):
        retry = _seconds_to_midnight()
        return Problem(
            429,
            "budget-exceeded",
            str(exc),
            {"Retry-After": str(retry)},
            scope=exc.scope,
        )
    if isinstance(exc, ProviderError):
        if exc.kind is ErrorKind.CONTENT_POLICY:
            return Problem(400, "content-policy", str(exc))
        if exc.kind is ErrorKind.BAD_REQUEST and exc.status is None:
            # The adapter could not put the request in its provider's
            # protocol, so nothing was sent: the request is what is wrong.
            return Problem(422, "validation", str(exc), fields=["messages"])
        return Problem(exc.status or 400, "upstream-rejected", str(exc))
    if isinstance(exc, BudgetUnavailableError):
        # The store's address stays in the node's log (budget.store_unreachable),
        # not in an answer to a client.
        return Problem(
            503,
            "budget-unavailable",
            "the shared budget cannot be checked now, so nothing was sent "
            "upstream; retry shortly",
            {"Retry-After": "1"},
        )
    if isinstance(exc, NoDeploymentError):
        last = exc.last
        if last is not None and last.kind is ErrorKind.CONTEXT_LENGTH:
            return Problem(400, "context-length", str(exc))
        if last is None:
            return Problem(503, "no-deployment", str(exc), {"Retry-After": "1"})
        return Problem(502, "upstream-failed", str(exc))

    return Problem(503, "unavailable", str(exc))


def _seconds_to_midnight() -> int:
    return 86_400 - int(time.time()) % 86_400
