"""The ``router.request`` record: what one routed request did, for the ledger.

Every routed request, served or refused, becomes one record, appended and
durable before the client has the answer; docs/router.md lists its fields.
The ``policy.decision`` records of the request are appended with it, in the
same transaction, and it names them by id. Budgets are rebuilt from these
records when a node starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from penin.router.prices import usd

if TYPE_CHECKING:
    # Only their shapes: budgets read these records, so this module must not
    # import the router's parts at run time.
    from penin.router.budget import BudgetStatus
    from penin.router.deployments import Deployment
    from penin.router.routing import Attempt

AUDIT_EVENT = "router.request"


@dataclass(frozen=True, slots=True)
class Caller:
    """The key a request came with, and the data class its client declared."""

    scope: str = "route"
    data_class: str | None = None  # the key's own; None: the policy's default
    models: tuple[str, ...] | None = None  # the key's logical models; None: all
    declared_class: str | None = None  # X-Penin-Data-Class, as sent


@dataclass
class Outcome:
    """What one routed request did: the response headers and the audit record."""

    model: str
    key_id: str
    stream: bool
    request_id: str
    caller: Caller = field(default_factory=Caller)
    started: float = field(default_factory=time.perf_counter)
    deployment: Deployment | None = None
    attempts: list[Attempt] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated: bool = False
    cost_nusd: int = 0
    cache_level: str | None = None
    downgraded: str | None = None  # the budget scope whose soft limit was passed
    budget: BudgetStatus | None = None
    ttft_ms: float | None = None
    upstream_s: float = 0.0
    error: str | None = None
    hashes: dict[str, str] = field(default_factory=dict)
    data_class: str | None = None  # as the router policy decided it
    # The request's policy.decision records, written in one go with this one.
    decisions: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    @property
    def cost_usd(self) -> float:
        return usd(self.cost_nusd)

    @property
    def remaining_usd(self) -> float | None:
        return None if self.budget is None else self.budget.remaining_usd

    def record(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "request_id": self.request_id,
            "key_id": self.key_id,
            "model": self.model,
            "deployment": self.deployment.name if self.deployment else None,
            "stream": self.stream,
            "attempts": [a.to_dict() for a in self.attempts],
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "estimated": self.estimated,
            "cost_usd": self.cost_usd,
            "cost_nusd": self.cost_nusd,
            "latency_ms": round((time.perf_counter() - self.started) * 1000, 3),
            "cache": self.cache_level,
            "budget_remaining_usd": self.remaining_usd,
            "outcome": self.error or "ok",
            "policy_decisions": [p["decision_id"] for _, p in self.decisions],
        }
        if self.data_class is not None:
            payload["data_class"] = self.data_class
        if self.ttft_ms is not None:
            payload["ttft_ms"] = round(self.ttft_ms, 3)
        if self.downgraded:
            payload["downgraded"] = self.downgraded

        return payload | self.hashes
