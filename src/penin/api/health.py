"""Health, role and metrics endpoints, following the Patroni convention.

``/health`` keeps the deployment guide's contract — ``status`` and four
boolean ``checks`` — and adds ``details`` saying what each check measured. A
member of a cluster adds a fifth check, ``replication``: on a replica, whether
it follows its primary and is caught up (penin.ha.follower).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from penin.api.auth import require
from penin.api.node import Node
from penin.keys import Scope
from penin.ledger.errors import LedgerError
from penin.observability.metrics import NODE_METRICS, render

router = APIRouter()


def _answers(status_503: str) -> dict[int | str, dict[str, Any]]:
    """A probe's 503 is an answer in JSON, not a problem document."""
    return {503: {"description": status_503, "content": {"application/json": {}}}}


_PROBE_REUSE_S = 1.0
_PROBE_TIMEOUT_S = 2.0


async def _open_or_read_key(request: Request) -> None:
    node: Node = request.app.state.node
    if not node.settings.server.open_health:
        await require(Scope.READ)(request)


async def _metrics_gate(request: Request) -> None:
    node: Node = request.app.state.node
    if not node.settings.server.open_metrics:
        await require(Scope.READ)(request)


class HealthChecks:
    """Runs the checks. The two that cost something, the worm probe and the
    metrics render, serve every caller within a second from one run, so that
    a load balancer polling hard cannot load the node."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self._lock = asyncio.Lock()
        self._probe: tuple[float, bool, dict[str, Any]] | None = None
        self._render: tuple[float, bool, dict[str, Any]] | None = None

    async def worm(self) -> tuple[bool, dict[str, Any]]:
        async with self._lock:
            if self._probe and time.monotonic() - self._probe[0] < _PROBE_REUSE_S:
                return self._probe[1], self._probe[2]
            try:
                seconds = await asyncio.wait_for(
                    self.node.ledger.probe_async(), _PROBE_TIMEOUT_S
                )
                detail: dict[str, Any] = {"write_read_ms": round(seconds * 1000, 3)}
                result = (True, detail)
            except (LedgerError, TimeoutError) as exc:
                result = (False, {"error": str(exc) or type(exc).__name__})
            self._probe = (time.monotonic(), *result)

            return result

    def core(self) -> tuple[bool, dict[str, Any]]:
        node = self.node
        ok = not node.stopping and node.ledger.accepts_writes
        return ok, {
            "stopping": node.stopping,
            "writer_running": node.ledger.accepts_writes,
        }

    def router(self) -> tuple[bool, dict[str, Any]]:
        """Every logical model has a deployment whose circuit is not open.

        A half-open deployment (its breaker's timer ran out; the next call
        is its one trial) counts as able to serve and is reported apart:
        were it to fail the check, a balancer would pull the node and the
        trial call that closes the breaker would never come. A node with no
        models configured has nothing to route, passes, and says so with
        ``models: 0``. The check reads breaker states only; it sends nothing
        upstream (``penin providers check`` does that).
        """
        routing = self.node.router
        if routing is None:
            return True, {"models": 0}
        closed = on_trial = 0
        stranded: list[str] = []
        for name, group in sorted(routing.groups.items()):
            states = [d.breaker.state for d in group.deployments]
            closed += states.count("closed")
            on_trial += states.count("half_open")
            if "closed" not in states and "half_open" not in states:
                stranded.append(name)

        return not stranded, {
            "models": len(routing.groups),
            "deployments_available": closed,
            "deployments_on_trial": on_trial,
            "models_without_deployment": stranded,
        }

    def observability(self) -> tuple[bool, dict[str, Any]]:
        if self._render and time.monotonic() - self._render[0] < _PROBE_REUSE_S:
            return self._render[1], self._render[2]
        try:
            size = len(render())
            result: tuple[bool, dict[str, Any]] = (size > 0, {"metrics_bytes": size})
        except Exception as exc:  # a failed render is the finding itself
            result = (False, {"error": type(exc).__name__})
        self._render = (time.monotonic(), *result)

        return result


@router.get(
    "/health",
    dependencies=[Depends(_open_or_read_key)],
    tags=["health"],
    responses=_answers("A check failed; the body says which"),
)
async def health(request: Request) -> JSONResponse:
    """Overall status and per-component checks: 200 when all pass, else 503."""
    checks: HealthChecks = request.app.state.health
    results = {
        "core": checks.core(),
        "worm": await checks.worm(),
        "router": checks.router(),
        "observability": checks.observability(),
    }
    member = request.app.state.node.cluster
    if member is not None:
        results["replication"] = member.health()
    for name, (ok, _) in results.items():
        NODE_METRICS.health_check.labels(name).set(1 if ok else 0)
    healthy = all(ok for ok, _ in results.values())
    body = {
        "status": "healthy" if healthy else "unhealthy",
        "checks": {name: ok for name, (ok, _) in results.items()},
        "details": {name: detail for name, (_, detail) in results.items()},
    }

    return JSONResponse(body, status_code=200 if healthy else 503)


@router.get("/livez", tags=["health"])
async def livez() -> dict[str, str]:
    """200 while the process answers at all."""
    return {"status": "alive"}


@router.get(
    "/readyz",
    dependencies=[Depends(_open_or_read_key)],
    tags=["health"],
    responses=_answers("Starting or stopping"),
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the node can serve requests, 503 while starting or stopping."""
    ok, detail = request.app.state.health.core()
    warmed = request.app.state.node.ready
    ok = ok and warmed
    body = {"ready": ok, "warmed": warmed, **detail}

    return JSONResponse(body, status_code=200 if ok else 503)


def _role(node: Node) -> dict[str, Any]:
    """The node's role; a member's adds what its role's health check says."""
    writable = node.ledger.accepts_writes and not node.stopping
    member = node.cluster
    if member is None:
        return {"role": "primary", "accepts_writes": writable}
    healthy, detail = member.health()

    return {
        **detail,
        # A primary whose lease is about to lapse is unhealthy: it refuses writes.
        "accepts_writes": writable and member.is_primary and healthy,
        "healthy": healthy and not node.stopping,
    }


@router.get(
    "/primary",
    dependencies=[Depends(_open_or_read_key)],
    tags=["health"],
    responses=_answers("This node does not accept writes"),
)
async def primary(request: Request) -> JSONResponse:
    """200 only on the node that accepts writes (a single node is its own primary)."""
    body = _role(request.app.state.node)
    return JSONResponse(body, status_code=200 if body["accepts_writes"] else 503)


@router.get(
    "/replica",
    dependencies=[Depends(_open_or_read_key)],
    tags=["health"],
    responses=_answers("This node is no healthy replica"),
)
async def replica(request: Request) -> JSONResponse:
    """200 only on a replica that follows its primary and is caught up (within
    the bound docs/ha.md states); a primary or a single node is none, so 503."""
    body = _role(request.app.state.node)
    ok = body["role"] == "replica" and body["healthy"]

    return JSONResponse(body, status_code=200 if ok else 503)


@router.get(
    "/metrics",
    dependencies=[Depends(_metrics_gate)],
    tags=["health"],
    response_class=PlainTextResponse,
    responses={200: {"description": "Prometheus text format 0.0.4"}},
)
def metrics(request: Request) -> Response:
    """Prometheus text format."""
    request.app.state.node.refresh_gauges()
    return Response(render(), media_type="text/plain; version=0.0.4; charset=utf-8")
