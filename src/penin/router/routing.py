"""The routing loop: which deployment to try next, and what a failure means.

One pass over a group tries each open deployment once, best first by the
group's strategy. A retryable failure (429, 5xx, timeout, broken connection)
moves on to the next deployment; when a pass ends with one, the group is
passed over again after an exponential back-off with full jitter (longer when
a 429's Retry-After asks for it), ``retry.attempts`` times. Then the group's
fallbacks follow, in order. A prompt refused as too long skips every
deployment whose context is no larger and puts ``context_window_fallbacks``
first; a content-policy refusal goes straight to ``content_policy_fallbacks``
(or back to the client). Any other 4xx is the client's and goes back at once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import structlog

from penin.observability.metrics import ROUTER_METRICS
from penin.router.budget import Budget, Reservation
from penin.router.config import RouterSettings
from penin.router.deployments import Deployment, Group, now
from penin.router.errors import (
    BudgetExceededError,
    ErrorKind,
    NoDeploymentError,
    ProviderError,
)
from penin.router.prices import cost_nusd
from penin.router.strategies import cheapest, order

log = structlog.get_logger("penin.router")

T = TypeVar("T")
Call = Callable[[Deployment], Awaitable[T]]

# A failure of these kinds counts against the deployment's breaker; the
# others (context length, content policy, bad request) are the prompt's.
BREAKER_KINDS = frozenset(
    {
        ErrorKind.RATE_LIMIT,
        ErrorKind.SERVER,
        ErrorKind.TIMEOUT,
        ErrorKind.CONNECTION,
        ErrorKind.MALFORMED,
        ErrorKind.AUTH,
    }
)


@dataclass
class Attempt:
    """One deployment considered for a request, and what came of it."""

    deployment: str
    outcome: str  # "ok", an error kind, or why it was skipped
    status: int | None = None
    ms: float | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"deployment": self.deployment, "outcome": self.outcome}
        if self.status is not None:
            out["status"] = self.status
        if self.ms is not None:
            out["ms"] = round(self.ms, 3)

        return out


@dataclass
class Plan:
    """What the loop needs to know about one request."""

    key_id: str
    stream: bool
    prompt_tokens: int
    max_tokens: int | None  # as the client asked; None: the deployment's maximum
    downgrade: bool  # a soft budget limit: cheapest deployment first
    # The deployments the router policy allows; None: every one (no policy).
    allowed: frozenset[str] | None = None
    attempts: list[Attempt] = field(default_factory=list)
    upstream_s: float = 0.0  # in upstream calls and back-off waits
    min_context: int = 0  # a context-length refusal raises this

    def reserved_tokens(self, deployment: Deployment) -> int:
        return self.prompt_tokens + (self.max_tokens or deployment.max_output_tokens)


@dataclass
class Routed(Generic[T]):
    deployment: Deployment
    result: T
    reservation: Reservation
    call_s: float
    reservation_tokens: int  # counted against the rate window before the call


class Loop:
    """Routes one request through its group and fallbacks; see the module doc."""

    def __init__(
        self,
        groups: dict[str, Group],
        settings: RouterSettings,
        budget: Budget,
        rng: random.Random,
    ) -> None:
        self.groups = groups
        self.settings = settings
        self.budget = budget
        self.rng = rng

    async def run(self, group: Group, plan: Plan, call: Call[T]) -> Routed[T]:
        queue, seen = [group], {group.name}
        last: ProviderError | None = None
        refused: BudgetExceededError | None = None
        while queue:
            current = queue.pop(0)
            next_groups = current.config.fallbacks
            for attempt in range(self.settings.retry.attempts + 1):
                if attempt:
                    await self._back_off(attempt, current, plan)
                outcome = await self._pass(current, plan, call)
                if isinstance(outcome, Routed):
                    return outcome
                retry, error, budget_error = outcome
                last, refused = error or last, budget_error or refused
                if error is not None and error.kind is ErrorKind.CONTENT_POLICY:
                    next_groups = current.config.content_policy_fallbacks
                    if not next_groups:
                        raise error
                    queue.clear()
                    break
                if error is not None and error.kind is ErrorKind.CONTEXT_LENGTH:
                    queue[:0] = self._unseen(
                        current.config.context_window_fallbacks, seen
                    )
                if not retry:
                    break
            queue.extend(self._unseen(next_groups, seen))

        if refused is not None and not any(a.status for a in plan.attempts):
            raise refused
        raise NoDeploymentError(group.name, _reason(plan, last), last)

    def _unseen(self, names: list[str], seen: set[str]) -> list[Group]:
        fresh = [self.groups[n] for n in names if n not in seen]
        seen.update(g.name for g in fresh)

        return fresh

    async def _pass(
        self, group: Group, plan: Plan, call: Call[T]
    ) -> Routed[T] | tuple[bool, ProviderError | None, BudgetExceededError | None]:
        """Each deployment once; the routed result, or (retry?, last error, refusal)."""
        retry = False
        last: ProviderError | None = None
        refused: BudgetExceededError | None = None
        for deployment in self._ordered(group, plan):
            skip = self._skip(deployment, plan)
            if skip:
                plan.attempts.append(Attempt(deployment.name, skip))
                continue
            try:
                routed = await self._try(deployment, plan, call)
            except BudgetExceededError as exc:
                refused = exc
                plan.attempts.append(Attempt(deployment.name, "budget"))
                continue
            except ProviderError as exc:
                last = exc
                if exc.kind is ErrorKind.BAD_REQUEST:
                    raise
                if exc.kind is ErrorKind.CONTENT_POLICY:
                    return False, exc, refused
                if exc.kind is ErrorKind.CONTEXT_LENGTH:
                    context = deployment.price.max_input_tokens or plan.prompt_tokens
                    plan.min_context = max(plan.min_context, context + 1)
                retry = retry or exc.retryable
                continue
            if routed is not None:
                return routed

        return retry, last, refused

    def _ordered(self, group: Group, plan: Plan) -> list[Deployment]:
        allowed = plan.allowed
        by_name = {
            d.name: d for d in group.deployments if allowed is None or d.name in allowed
        }
        candidates = [d.candidate(plan.stream) for d in by_name.values()]
        if plan.downgrade:
            ranked = cheapest(candidates)
        else:
            ranked = order(
                group.config.strategy,
                candidates,
                self.settings.score_weights,
                self.rng,
            )

        return [by_name[c.name] for c in ranked]

    def _skip(self, deployment: Deployment, plan: Plan) -> str | None:
        context = deployment.price.max_input_tokens
        if context is not None and (
            plan.prompt_tokens > context or context < plan.min_context
        ):
            return "context_too_small"
        if deployment.cooling(now()):
            return "cooling_down"
        if not deployment.window.has_room(plan.reserved_tokens(deployment)):
            return "rate_limited"

        return None

    async def _try(
        self, deployment: Deployment, plan: Plan, call: Call[T]
    ) -> Routed[T] | None:
        """One upstream call with its reservation; None if the breaker refused."""
        tokens = plan.reserved_tokens(deployment)
        reservation = await self.budget.reserve(
            plan.key_id, worst_case_nusd(deployment, plan)
        )
        if not deployment.breaker.allow():
            await self.budget.release(reservation)
            plan.attempts.append(Attempt(deployment.name, "circuit_open"))
            return None
        if not await deployment.window.acquire(tokens):
            # Another request (or, with shared windows, another node) took
            # the last room since the skip check.
            deployment.breaker.release()
            await self.budget.release(reservation)
            plan.attempts.append(Attempt(deployment.name, "rate_limited"))
            return None
        deployment.stats.started()
        started = time.perf_counter()
        try:
            result = await call(deployment)
        except ProviderError as exc:
            seconds = time.perf_counter() - started
            await self._failed(deployment, plan, reservation, exc, seconds)
            raise
        except BaseException:
            deployment.breaker.release()
            deployment.stats.finished()
            await self.budget.release(reservation)
            raise
        finally:
            plan.upstream_s += time.perf_counter() - started
        seconds = time.perf_counter() - started
        plan.attempts.append(Attempt(deployment.name, "ok", 200, seconds * 1000))

        return Routed(deployment, result, reservation, seconds, tokens)

    async def _failed(
        self,
        deployment: Deployment,
        plan: Plan,
        reservation: Reservation,
        exc: ProviderError,
        seconds: float,
    ) -> None:
        deployment.stats.finished()
        deployment.stats.observe_outcome(ok=False)
        if exc.kind in BREAKER_KINDS:
            deployment.breaker.record_failure()
        else:
            deployment.breaker.release()
        if exc.kind is ErrorKind.RATE_LIMIT and exc.retry_after_s:
            deployment.cooldown_until = now() + exc.retry_after_s
        await self.budget.release(reservation)
        provider, model = deployment.provider.name, deployment.config.model
        ROUTER_METRICS.requests.labels(provider, model, exc.kind.value).inc()
        ROUTER_METRICS.latency.labels(provider, model).observe(seconds)
        plan.attempts.append(
            Attempt(deployment.name, exc.kind.value, exc.status, seconds * 1000)
        )
        log.info(
            "router.attempt_failed",
            deployment=deployment.name,
            kind=exc.kind.value,
            status=exc.status,
            error=exc.message[:200],
        )

    async def _back_off(self, attempt: int, group: Group, plan: Plan) -> None:
        retry = self.settings.retry
        ceiling = min(retry.backoff_max_s, retry.backoff_base_s * 2 ** (attempt - 1))
        delay = self.rng.uniform(0, ceiling)
        # Wait out a Retry-After when it is short and nothing else is open.
        moment = now()
        waits = [d.cooldown_until - moment for d in group.deployments]
        if all(w > 0 for w in waits):
            soonest = min(waits)
            if soonest <= retry.max_retry_after_s:
                delay = max(delay, soonest)
        started = time.perf_counter()
        await asyncio.sleep(delay)
        plan.upstream_s += time.perf_counter() - started


def _reason(plan: Plan, last: ProviderError | None) -> str:
    if last is not None:
        return f"the last attempt failed: {last}"
    skipped = sorted({a.outcome for a in plan.attempts})

    return "every deployment was skipped (" + ", ".join(skipped or ["none"]) + ")"


def worst_case_nusd(deployment: Deployment, plan: Plan) -> int:
    tokens = plan.reserved_tokens(deployment)
    return cost_nusd(deployment.price, plan.prompt_tokens, tokens - plan.prompt_tokens)
