"""One ASGI layer around the app: request id, body limit, access log, metrics.

Written as plain ASGI (not BaseHTTPMiddleware) so that it neither buffers
bodies nor adds a task per request; streamed responses pass through as sent.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from typing import Any

import structlog
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from penin.api.problems import problem_response
from penin.observability.logging import info_enabled
from penin.observability.metrics import NODE_METRICS

log = structlog.get_logger("penin.http")

# Routes that answer 503 by design (a replica asked /primary, a stopping node
# asked /readyz): their 503s are answers, not failed operations.
PROBE_ROUTES = frozenset({"/health", "/readyz", "/primary", "/replica"})

# Any token is a method to HTTP; metrics label the standard ones by name and
# the rest "other", so that clients cannot mint new series.
_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)

# Scope key of the requests the app sends itself at startup (app._warm_up).
WARM_UP = "penin.warm_up"

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Generated ids: a random prefix per process and a counter. Unique without a
# uuid4 per request, which cost a tenth of the append route's CPU.
_ID_PREFIX = secrets.token_hex(6)
_ID_COUNTER = itertools.count(1)


class _BodyTooLargeError(HTTPException):
    """An HTTPException, so that FastAPI's body parsing passes it on as sent
    instead of turning it into a 400 (it wraps every other error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the body exceeds the limit of {limit} bytes")


class NodeMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self._series: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get(WARM_UP):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self._call(scope, receive, send_with_id)
        except _BodyTooLargeError as exc:
            if not response_started:
                response = problem_response(
                    413, "payload-too-large", exc.detail, scope.get("path")
                )
                await response(scope, receive, send_with_id)
        finally:
            self._account(scope, status, started, request_id)

    async def _call(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            raise _BodyTooLargeError(self.max_body_bytes)
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _BodyTooLargeError(self.max_body_bytes)
            return message

        await self.app(scope, limited_receive, send)

    def _account(
        self, scope: Scope, status: int, started: float, request_id: str
    ) -> None:
        elapsed = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        method = scope["method"] if scope["method"] in _METHODS else "other"
        series = self._series.get((route, method, status))
        if series is None:
            # labels() locks and hashes on every call; a route's series are
            # looked up once. Routes are templates, so the dict stays small.
            series = (
                NODE_METRICS.requests.labels(route, method, str(status)),
                NODE_METRICS.latency.labels(route, method),
            )
            self._series[(route, method, status)] = series
        series[0].inc()
        series[1].observe(elapsed)
        if status >= 500 and route not in PROBE_ROUTES:
            NODE_METRICS.errors.labels("http").inc()
        if not info_enabled():
            return
        log.info(
            "http.request",
            method=method,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 3),
            request_id=request_id,
            key_id=_state(scope).get("key_id"),
        )


def _state(scope: Scope) -> dict[str, Any]:
    state: dict[str, Any] = scope.get("state", {})
    return state


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id":
            text: str = value.decode("latin-1")
            if _REQUEST_ID.fullmatch(text):
                return text
            break

    return f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None

    return None
