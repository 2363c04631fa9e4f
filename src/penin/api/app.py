"""Build the FastAPI application of a node from its settings."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

from penin import __version__
from penin.api import not_primary, problems
from penin.api.cache import router as cache_router
from penin.api.chat import router as chat_router
from penin.api.cluster import router as cluster_router
from penin.api.health import HealthChecks
from penin.api.health import router as health_router
from penin.api.ledger import AppendEndpoint, jobs_router
from penin.api.ledger import router as ledger_router
from penin.api.middleware import WARM_UP, NodeMiddleware
from penin.api.node import Node
from penin.api.policy import router as policy_router
from penin.api.replication import RecordsEndpoint
from penin.api.replication import router as replication_router
from penin.config import Settings
from penin.ha.peer import RECORDS_PATH

_PATH_PARAM = re.compile(r"\{[^}]+\}")


def create_app(settings: Settings) -> FastAPI:
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
        await _warm_up(app)
        node.warm()
        try:
            yield
        finally:
            await node.stop()

    app = FastAPI(
        title="PENIN-Ω",
        version=__version__,
        description="An auditable LLM gateway node. "
        "Every error is an RFC 9457 problem document.",
        lifespan=lifespan,
        # The node reports through Prometheus and its own logs. FastAPI's
        # OpenTelemetry hooks, on by default, cost every request a look at
        # the global tracer, meter and logger providers.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.node = node
    app.state.health = HealthChecks(node)
    problems.install(app)
    problems.document(app)
    # Routes match in order: the hot one, appending, is tried first.
    app.include_router(ledger_router)
    app.include_router(chat_router)
    app.include_router(cache_router)
    app.include_router(jobs_router)
    app.include_router(policy_router)
    app.include_router(health_router)
    app.include_router(cluster_router)
    if settings.cluster is not None:
        # Members only: a single node serves no replication stream.
        app.include_router(replication_router)
        app.router.routes.insert(
            0, _PlainRoute(RECORDS_PATH, RecordsEndpoint(), methods=["GET"])
        )
    # Appending is the node's hot path. A bare ASGI endpoint on a route placed
    # first serves it without FastAPI's dependency solving, nested router
    # matching and request/response objects (together nearly half its CPU);
    # the FastAPI route of the same path and method stays behind it, never
    # reached, to describe it in the API. A primary's replication stream is
    # served the same way, just above.
    app.router.routes.insert(
        0, _PlainRoute("/v1/ledger/records", AppendEndpoint(), methods=["POST"])
    )
    not_primary.install(app, guard=settings.cluster is not None)
    app.add_middleware(NodeMiddleware, max_body_bytes=settings.server.max_body_bytes)

    return app


class _PlainRoute(Route):
    """A Starlette route that names itself in the scope, as FastAPI's routes
    do, so that metrics and logs label it by its path template."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope["route"] = self
        await super().handle(scope, receive, send)


async def _warm_up(app: FastAPI) -> None:
    """Route each path once, unauthenticated, before the first client does.

    FastAPI builds a route's matching and dependency state on the first
    request that reaches it, about 15 ms; this pays that at startup. The
    requests are marked, so the node middleware neither logs nor counts
    them, and carry no key, so no /v1 route does any work.
    """

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    # The API description names every route, and building it is warm-up too.
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": method.upper(),
                "scheme": "http",
                "path": _PATH_PARAM.sub("0", path),
                "raw_path": b"",
                "query_string": b"",
                "root_path": "",
                "headers": [],
                "client": ("127.0.0.1", 0),
                "server": ("127.0.0.1", 0),
                "state": {},
                WARM_UP: True,
            }
            # Whatever the route answers (401 above all) is not the point.
            with contextlib.suppress(Exception):
                await app(scope, receive, send)
