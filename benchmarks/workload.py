"""What the benchmarks append: a record shaped like a routed request's audit.

Its event type is the application's own: ``router.*`` records are the node's,
and the append route refuses them."""

from __future__ import annotations

from typing import Any

EVENT_TYPE = "app.request"


def router_request(request_id: str) -> dict[str, Any]:
    """About 160 bytes in canonical form, ``request_id`` telling records apart."""
    return {
        "request_id": request_id,
        "provider": "openai",
        "model": "gpt-4o-mini",
        "tokens_in": 812,
        "tokens_out": 143,
        "latency_ms": 412.5,
        "cost_usd": 0.000231,
        "verdict": "pass",
    }
