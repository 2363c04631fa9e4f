"""RFC 9457 problem documents: every HTTP error the node returns is one.

Each kind of problem has a stable ``type`` URI under ``PROBLEM_BASE``, a
title, the status, and a ``detail`` that names the offending value. No stack
trace ever reaches a client.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from penin.ledger.errors import (
    InvalidRecordError,
    LedgerError,
    RecordNotFoundError,
    SyncReplicationError,
    TreeSizeError,
)

log = structlog.get_logger("penin.api")

PROBLEM_BASE = "https://penin.dev/problems/"
MEDIA_TYPE = "application/problem+json"

_TITLES = {
    "bad-request": "The request is malformed",
    "invalid-json": "The body is not valid JSON",
    "validation": "A field is missing or invalid",
    "unauthorized": "Missing or invalid API key",
    "forbidden": "The API key's scope does not allow this",
    "not-found": "No such resource",
    "method-not-allowed": "Method not allowed on this resource",
    "payload-too-large": "The body is larger than the limit",
    "unavailable": "The node cannot serve this now",
    "model-not-found": "No such logical model is configured",
    "budget-exceeded": "A hard budget limit is reached; nothing was sent upstream",
    "content-policy": "The provider refused the prompt on content-policy grounds",
    "context-length": "The prompt is longer than any deployment's context window",
    "upstream-rejected": "The provider rejected the request",
    "upstream-failed": "Every deployment tried failed",
    "no-deployment": "No deployment can take the request now",
    "no-cache": "This node has no response cache",
    "budget-unavailable": "The shared budget store does not answer",
    "policy-denied": "A policy refused the request",
    "policy-unavailable": "The policy engine cannot decide now",
    "not-primary": "This node is a replica; writes go to the primary",
    "replica-ahead": "The replica holds records this primary never wrote",
    "no-primary": "The cluster is electing a primary; retry shortly",
    "sync-replication-timeout": (
        "Too few synchronous replicas stored the write in time; it is not acknowledged"
    ),
    "switchover-failed": "The switchover did not happen; the primary is unchanged",
    "internal": "Internal error",
}


class Problem(Exception):  # noqa: N818  (RFC 9457's own word)
    """Raise from a route to answer with a problem document."""

    def __init__(
        self,
        status: int,
        kind: str,
        detail: str,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra


def policy_problem(unavailable: bool, detail: str, decision_id: str) -> Problem:
    """A policy's refusal: 403, or 503 when the engine could not be reached.

    ``detail`` names the policy and its reasons, never the input it was given;
    ``decision_id`` finds the ``policy.decision`` record in the ledger.
    """
    if unavailable:
        return Problem(
            503,
            "policy-unavailable",
            detail,
            {"Retry-After": "1"},
            decision_id=decision_id,
        )

    return Problem(403, "policy-denied", detail, decision_id=decision_id)


class ProblemDocument(BaseModel):
    """The body of every error response (for /openapi.json)."""

    model_config = ConfigDict(extra="allow", title="Problem")

    type: str = Field(description=f"Stable URI of the kind, under {PROBLEM_BASE}")
    title: str
    status: int
    detail: str = Field(description="What was wrong, naming the value at fault.")
    instance: str | None = Field(None, description="The request path.")
    fields: list[str] | None = Field(
        None, description="Validation errors only: every field at fault."
    )


def problem_response(
    status: int,
    kind: str,
    detail: str,
    instance: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: object,
) -> JSONResponse:
    body = {
        "type": PROBLEM_BASE + kind,
        "title": _TITLES.get(kind, kind.replace("-", " ").capitalize()),
        "status": status,
        "detail": detail,
        **({"instance": instance} if instance else {}),
        **extra,
    }
    return JSONResponse(
        body, status_code=status, media_type=MEDIA_TYPE, headers=headers
    )


_STATUS_KIND = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    413: "payload-too-large",
    503: "unavailable",
}


def _validation_detail(exc: RequestValidationError) -> tuple[str, str, list[str]]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return "invalid-json", "the request body is not valid JSON", []
    fields = [_field_name(e.get("loc", ())) for e in errors]
    message = str(errors[0].get("msg", "invalid"))
    if fields[0] == "body" and errors[0].get("type") in (
        "model_attributes_type",
        "model_type",
        "dict_type",
    ):
        message += "; send a JSON object with Content-Type: application/json"

    return "validation", f"{fields[0]}: {message}", fields


def _field_name(loc: Sequence[object]) -> str:
    """``("body", "payload", "x")`` → ``payload.x``; the body itself is ``body``."""
    parts = [str(p) for p in loc]
    if parts[:1] == ["body"] and len(parts) > 1:
        parts = parts[1:]

    return ".".join(parts) or "body"


def document(app: FastAPI) -> None:
    """Make /openapi.json say what the handlers below do: every error is a
    problem document. FastAPI would otherwise describe 422 as its own JSON
    shape and leave the other errors out."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            _describe_problems(schema)
            app.openapi_schema = schema

        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented hook


def _describe_problems(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    components["Problem"] = ProblemDocument.model_json_schema()
    content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation["responses"]
            if "422" in responses:
                responses["422"] = {
                    "description": "A parameter or field is invalid",
                    "content": content,
                }
            responses["default"] = {
                "description": "Any other error, as an RFC 9457 problem document",
                "content": content,
            }


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(Problem)
    async def on_problem(request: Request, exc: Problem) -> JSONResponse:
        return problem_response(
            exc.status, exc.kind, exc.detail, request.url.path, exc.headers, **exc.extra
        )

    @app.exception_handler(RequestValidationError)
    async def on_validation(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        kind, detail, fields = _validation_detail(exc)
        status = 400 if kind == "invalid-json" else 422
        if fields:
            return problem_response(
                status, kind, detail, request.url.path, fields=fields
            )

        return problem_response(status, kind, detail, request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        kind = _STATUS_KIND.get(exc.status_code, "bad-request")
        return problem_response(
            exc.status_code,
            kind,
            str(exc.detail),
            request.url.path,
            dict(exc.headers or {}),
        )

    @app.exception_handler(InvalidRecordError)
    async def on_invalid(request: Request, exc: InvalidRecordError) -> JSONResponse:
        return problem_response(422, "validation", str(exc), request.url.path)

    @app.exception_handler(RecordNotFoundError)
    async def on_missing(request: Request, exc: RecordNotFoundError) -> JSONResponse:
        return problem_response(404, "not-found", str(exc), request.url.path)

    @app.exception_handler(TreeSizeError)
    async def on_size(request: Request, exc: TreeSizeError) -> JSONResponse:
        return problem_response(422, "validation", str(exc), request.url.path)

    @app.exception_handler(SyncReplicationError)
    async def on_sync(request: Request, exc: SyncReplicationError) -> JSONResponse:
        log.warning("replication.sync_timeout", path=request.url.path, seq=exc.seq)
        return problem_response(
            503,
            "sync-replication-timeout",
            str(exc),
            request.url.path,
            {"Retry-After": "1"},
            seq=exc.seq,
        )

    @app.exception_handler(LedgerError)
    async def on_ledger(request: Request, exc: LedgerError) -> JSONResponse:
        log.error("ledger.request_failed", path=request.url.path, error=str(exc))
        return problem_response(503, "unavailable", str(exc), request.url.path)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, exc: Exception) -> JSONResponse:
        log.error(
            "http.unhandled_error", path=request.url.path, error=type(exc).__name__
        )
        return problem_response(
            500, "internal", "the node failed; see its log", request.url.path
        )
