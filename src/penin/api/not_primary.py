"""Writes sent to a replica: refused before any work, pointing at the primary.

On a replica, every ``/v1`` request other than GET, HEAD and OPTIONS would
write to the ledger (an append, the audit record of a routed request, the
decision record of an admin action), so it is answered at once with 503 and
a ``not-primary`` problem document that names the primary, and a
``Location`` header with the same path and query on the primary, which
clients and load balancers can follow. It is refused before a chat request
reaches a provider, so nothing is spent for an answer that could not be
recorded. A write that reaches the ledger by another way is refused there
(NotPrimaryError) and answered the same.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from penin.api.problems import problem_response
from penin.ledger.errors import NotPrimaryError

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def install(app: FastAPI, *, guard: bool) -> None:
    """Answer NotPrimaryError as the guard does; with ``guard`` (a member of a
    cluster), guard the app's writes too. A single node never is a replica,
    so it pays nothing for the guard.

    Call it before the node middleware is added, so that the node's logs and
    metrics count the refusals.
    """
    if guard:
        app.add_middleware(ReplicaWriteGuard)

    @app.exception_handler(NotPrimaryError)
    async def on_not_primary(request: Request, exc: NotPrimaryError) -> JSONResponse:
        return refusal(exc.primary, exc.primary_url, request.scope)


def refusal(primary: str | None, primary_url: str | None, scope: Scope) -> JSONResponse:
    """The 503 answer to a write sent to a replica of ``primary``; None while
    the cluster has no primary."""
    path: str = scope["path"]
    if primary is None or primary_url is None:
        return problem_response(
            503,
            "no-primary",
            "this node takes no writes, and the cluster is electing a primary "
            "right now; retry in a second",
            path,
            {"Retry-After": "1"},
        )
    query: bytes = scope.get("query_string", b"")
    location = primary_url + path + (f"?{query.decode('latin-1')}" if query else "")

    return problem_response(
        503,
        "not-primary",
        f"this node is a replica and takes no writes; send them to the primary, "
        f"{primary} at {primary_url}",
        path,
        {"Location": location},
        primary=primary,
        primary_url=primary_url,
    )


class ReplicaWriteGuard:
    """ASGI middleware: on a replica, answer every write with ``refusal``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] not in READ_METHODS
            and scope["path"].startswith("/v1/")
        ):
            member = scope["app"].state.node.cluster
            if member is not None and not member.is_primary:
                _name_route(scope)
                response = refusal(member.primary, member.primary_url, scope)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _name_route(scope: Scope) -> None:
    """Put the route the request would have reached in the scope, so that logs
    and metrics label the refusal by its path template."""
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match is Match.FULL:
            scope["route"] = route
            return
