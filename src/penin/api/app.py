"""Build the FastAPI application of a node from its settings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from penin import __version__
from penin.api import problems
from penin.api.health import HealthChecks
from penin.api.health import router as health_router
from penin.api.ledger import jobs_router
from penin.api.ledger import router as ledger_router
from penin.api.middleware import NodeMiddleware
from penin.api.node import Node
from penin.config import Settings


def create_app(settings: Settings) -> FastAPI:
    node = Node(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await node.start()
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
    )
    app.state.node = node
    app.state.health = HealthChecks(node)
    problems.install(app)
    problems.document(app)
    app.include_router(health_router)
    app.include_router(ledger_router)
    app.include_router(jobs_router)
    app.add_middleware(NodeMiddleware, max_body_bytes=settings.server.max_body_bytes)

    return app
