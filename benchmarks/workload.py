"""What the benchmarks append: a router request as the gateway will log it."""

from __future__ import annotations

from typing import Any

EVENT_TYPE = "router.request"


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
