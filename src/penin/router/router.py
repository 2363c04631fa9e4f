"""The router: a chat request in, the best deployment's answer out, audited.

For each request it finds the logical model, serves a cached answer when the
request may be cached and the router policy admits it, counts the prompt,
asks the budget and router policies (``gate``) whether it may go and where,
runs the routing loop over the deployments they allow (the cheapest first at
the soft budget limit), settles the reservation to the reported (or
estimated) cost, and appends the request's ``policy.decision`` records and
its ``router.request`` record, in one transaction, before the client has the
answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import random
import time
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

import aiohttp
import structlog

from penin.cache import ResponseCache, SealKeys, cache_key, wants_cache
from penin.ledger.ledger import WORMLedger
from penin.observability.metrics import NODE_METRICS, ROUTER_METRICS
from penin.policy import Policies
from penin.router.audit import AUDIT_EVENT, Outcome
from penin.router.budget import (
    Budget,
    BudgetStatus,
    BudgetStore,
    BudgetUnavailableError,
    MemoryBudgetStore,
)
from penin.router.config import RouterConfig
from penin.router.deployments import Deployment, Group, build_groups
from penin.router.errors import (
    BudgetExceededError,
    PolicyDeniedError,
    ProviderError,
    UnknownModelError,
)
from penin.router.gate import Admission, Gate
from penin.router.limits_redis import SharedRates
from penin.router.prices import PriceTable, cost_nusd
from penin.router.providers.base import Completion, Json, Stream, Usage
from penin.router.routing import BREAKER_KINDS, Loop, Plan, Routed
from penin.router.tokens import count_prompt, count_text

log = structlog.get_logger("penin.router")

SEAL_KEYS_ENV = "PENIN_CACHE_SEAL_KEYS"
_UNSTOPPABLE: set[asyncio.Future[None]] = set()


class Router:
    """Owns the deployments, the budget, the cache and the upstream session."""

    def __init__(
        self,
        config: RouterConfig,
        ledger: WORMLedger,
        policies: Policies,
        *,
        budget_store: BudgetStore | None = None,
        rates: SharedRates | None = None,
        seal_keys: SealKeys | None = None,
        prices: PriceTable | None = None,
    ) -> None:
        self.config = config
        self.ledger = ledger
        self.policies = policies
        self.prices = prices or PriceTable.bundled()
        self.budget = Budget(config.budget, budget_store or MemoryBudgetStore())
        self.cache = ResponseCache(config.cache, seal_keys)
        self.rates = rates
        self.groups: dict[str, Group] = {}
        self._session: aiohttp.ClientSession | None = None
        self._loop: Loop | None = None
        self._gate: Gate | None = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=connector)
        try:
            self.groups = build_groups(
                self.config, self._session, self.prices, self.rates
            )
        except BaseException:
            await self._session.close()
            raise
        # Jitter and weighted order need no cryptographic randomness.
        rng = random.Random()  # noqa: S311
        self._loop = Loop(self.groups, self.config.router, self.budget, rng)
        self._gate = Gate(self.policies, self.groups)
        await self.budget.rebuild(self.ledger)
        await self.cache.start()
        # A node whose budget store is down starts all the same, and refuses
        # paid calls until the store answers.
        with contextlib.suppress(BudgetUnavailableError):
            await self._refresh_budget_gauge()
        log.info(
            "router.started",
            models=len(self.groups),
            deployments=len(
                {d.name for g in self.groups.values() for d in g.deployments}
            ),
        )

    async def close(self) -> None:
        await self.cache.close()
        await self.budget.close()
        if self.rates is not None:
            await self.rates.close()
        if self._session is not None:
            await self._session.close()

    def model_names(self) -> list[str]:
        return list(self.groups)

    def group(self, name: object) -> Group:
        if not isinstance(name, str) or name not in self.groups:
            raise UnknownModelError(str(name), self.model_names())

        return self.groups[name]

    # -- requests ----------------------------------------------------------

    async def complete(
        self, request: Json, outcome: Outcome, cache_header: str | None = None
    ) -> Json:
        """A whole answer for ``request``; raises RouterError subclasses."""
        group = self.group(request.get("model"))
        use_cache = wants_cache(request, cache_header)
        key = cache_key(request) if use_cache else None
        if key is not None:
            cached = await self.cache.get(key)
            if cached is not None:
                # Who may see what holds for a stored answer too; a cached
                # answer spends nothing, so no budget is asked.
                try:
                    await self._admit(group, outcome, None)
                except BaseException as exc:
                    await self._failed(outcome, request, exc)
                    raise
                body = _cached_body(cached[0])
                outcome.cache_level = cached[1]
                await self._finish(outcome, request, body)
                return body
        try:
            plan = await self._plan(group, request, outcome)
            routed = await self._run(group, plan, outcome, _complete_call(request))
        except BaseException as exc:
            await self._failed(outcome, request, exc)
            raise
        completion: Completion = routed.result
        self._observe(routed.deployment, routed.call_s, stream=False)
        text = _answer_text(completion.body)
        await self._settle(routed, outcome, completion.usage, request, text)
        if key is not None:
            await self.cache.set(key, json.dumps(completion.body).encode())
        await self._finish(outcome, request, completion.body)

        return completion.body

    async def stream(self, request: Json, outcome: Outcome) -> RoutedStream:
        """A started stream: its first chunk has arrived from the deployment."""
        group = self.group(request.get("model"))
        try:
            plan = await self._plan(group, request, outcome)
            routed = await self._run(group, plan, outcome, _stream_call(request))
        except BaseException as exc:
            await self._failed(outcome, request, exc)
            raise
        outcome.ttft_ms = routed.call_s * 1000
        deployment = routed.deployment
        ROUTER_METRICS.ttft.labels(
            deployment.provider.name, deployment.config.model
        ).observe(routed.call_s)
        deployment.stats.observe_ttft(routed.call_s)

        return RoutedStream(self, routed, outcome, request)

    async def _plan(self, group: Group, request: Json, outcome: Outcome) -> Plan:
        assert self._gate is not None, "Router.start() was not awaited"
        messages = request.get("messages")
        tools = request.get("tools")
        outcome.prompt_tokens = count_prompt(
            messages if isinstance(messages, list) else [],
            tools if isinstance(tools, list) else None,
        )
        max_tokens = _max_tokens(request)
        status = await self.budget.status(outcome.key_id)
        soft_scope = await self._gate.budget(status, outcome)
        admission = await self._admit(group, outcome, "soft" if soft_scope else "ok")
        if admission.downgrade:
            outcome.downgraded = soft_scope or "policy"
        if admission.downgrade and soft_scope is not None:
            ROUTER_METRICS.budget_soft.labels(soft_scope).inc()
            log.warning("budget.soft_limit", scope=soft_scope, model=outcome.model)

        return Plan(
            key_id=outcome.key_id,
            stream=outcome.stream,
            prompt_tokens=outcome.prompt_tokens,
            max_tokens=max_tokens,
            downgrade=admission.downgrade,
            allowed=admission.deployments,
        )

    async def _admit(
        self, group: Group, outcome: Outcome, budget_state: str | None
    ) -> Admission:
        assert self._gate is not None, "Router.start() was not awaited"
        return await self._gate.route(group, outcome, budget_state)

    async def _run(
        self, group: Group, plan: Plan, outcome: Outcome, call: Any
    ) -> Routed[Any]:
        assert self._loop is not None, "Router.start() was not awaited"
        try:
            routed: Routed[Any] = await self._loop.run(group, plan, call)
        finally:
            outcome.attempts = plan.attempts
            outcome.upstream_s = plan.upstream_s
        outcome.deployment = routed.deployment

        return routed

    def _observe(self, deployment: Deployment, seconds: float, *, stream: bool) -> None:
        provider, model = deployment.provider.name, deployment.config.model
        ROUTER_METRICS.requests.labels(provider, model, "ok").inc()
        ROUTER_METRICS.latency.labels(provider, model).observe(seconds)
        deployment.breaker.record_success()
        deployment.stats.finished()
        deployment.stats.observe_outcome(ok=True)
        if not stream:
            deployment.stats.observe_latency(seconds)

    async def _settle(
        self,
        routed: Routed[Any],
        outcome: Outcome,
        usage: Usage | None,
        request: Json,
        answer: str,
    ) -> None:
        """Charge the actual cost: reported usage, else the tokenizer's count.

        ``answer`` is the answer's text, tool-call arguments included.
        """
        deployment = routed.deployment
        if usage is None:
            usage = Usage(outcome.prompt_tokens, count_text(answer))
            outcome.estimated = True
        outcome.prompt_tokens = usage.prompt_tokens
        outcome.completion_tokens = usage.completion_tokens
        outcome.cost_nusd = cost_nusd(
            deployment.price, usage.prompt_tokens, usage.completion_tokens
        )
        await self.budget.settle(routed.reservation, outcome.cost_nusd)
        reserved = routed.reservation_tokens
        await deployment.window.adjust(usage.total_tokens - reserved)
        ROUTER_METRICS.cost.labels(
            deployment.provider.name, deployment.config.model
        ).inc(outcome.cost_usd)
        if self.config.router.store_content == "hash":
            outcome.hashes = {
                "prompt_sha256": _sha256(request.get("messages")),
                "completion_sha256": _sha256(answer),
            }

    async def _failed(
        self, outcome: Outcome, request: Json, exc: BaseException
    ) -> None:
        if isinstance(exc, BudgetExceededError):
            ROUTER_METRICS.budget_refused.labels(exc.scope).inc()
        if isinstance(exc, asyncio.CancelledError | GeneratorExit):
            outcome.error = "cancelled"
        elif isinstance(exc, PolicyDeniedError):
            outcome.error = "policy_unavailable" if exc.unavailable else "policy_denied"
        else:
            outcome.error = getattr(getattr(exc, "kind", None), "value", None) or (
                type(exc).__name__
            )
        try:
            await self._finish(outcome, request, None)
        except Exception as audit_error:  # the original error is what the client sees
            NODE_METRICS.errors.labels("router").inc()
            log.error("router.audit_failed", error=str(audit_error))

    async def _finish(self, outcome: Outcome, request: Json, body: Json | None) -> None:
        # An answer already had (or a call already failed) is recorded even
        # when the budget store went away meanwhile; only what is left is lost.
        with contextlib.suppress(BudgetUnavailableError):
            outcome.budget = await self.budget.status(outcome.key_id)
            await self._refresh_budget_gauge(outcome.budget)
        # One transaction: the decisions are durable exactly when the record
        # that names them is, and a request costs one writer round trip.
        await self.ledger.append_many_async(
            [*outcome.decisions, (AUDIT_EVENT, outcome.record())]
        )
        overhead = time.perf_counter() - outcome.started - outcome.upstream_s
        ROUTER_METRICS.overhead.observe(max(overhead, 0.0))

    async def _refresh_budget_gauge(self, status: BudgetStatus | None = None) -> None:
        status = status or await self.budget.status(None)
        if status.global_remaining_usd is not None:
            ROUTER_METRICS.budget_remaining.labels("global").set(
                status.global_remaining_usd
            )


class RoutedStream:
    """The chunks of a started stream; the audit record is written at its end."""

    def __init__(
        self, router: Router, routed: Routed[Stream], outcome: Outcome, request: Json
    ) -> None:
        self._router = router
        self._routed = routed
        self.outcome = outcome
        self._request = request
        self._include_usage = bool(
            (request.get("stream_options") or {}).get("include_usage")
        )
        self._read = False

    async def chunks(self) -> AsyncGenerator[Json, None]:
        """Chunks as they arrive; the usage chunk only if the client asked for it."""
        self._read = True
        stream = self._routed.result
        text: list[str] = []
        started = time.perf_counter()
        try:
            async for chunk in stream.chunks():
                text.append(_answer_text(chunk, "delta"))
                if not chunk.get("choices") and chunk.get("usage") is not None:
                    if self._include_usage:
                        yield chunk
                    continue
                yield chunk
        except BaseException as exc:
            seconds = time.perf_counter() - started
            self.outcome.upstream_s += seconds
            # A client that leaves cancels this task, and would cancel the
            # settling and the audit record half way through with it.
            await _shielded(self._broken(exc, "".join(text), seconds))
            raise
        await _shielded(self._ended("".join(text), time.perf_counter() - started))

    async def abandon(self) -> None:
        """Release a stream whose chunks nobody began to read.

        A client that leaves before the response body is first read cancels
        the response before ``chunks`` starts, so its own clean-up never
        runs; this frees the reservation, the breaker's trial slot and the
        upstream connection instead, and records the request as cancelled.
        Once ``chunks`` has started, it does that itself and this does nothing.
        """
        if self._read:
            return
        self._read = True
        await _shielded(self._broken(asyncio.CancelledError(), "", 0.0))

    async def _ended(self, text: str, seconds: float) -> None:
        router, routed = self._router, self._routed
        self.outcome.upstream_s += seconds
        await routed.result.close()
        router._observe(routed.deployment, seconds, stream=True)
        await router._settle(
            routed, self.outcome, routed.result.usage, self._request, text
        )
        await router._finish(self.outcome, self._request, None)

    async def _broken(self, exc: BaseException, text: str, seconds: float) -> None:
        """A stream that ended early: the provider failed or the client left.

        The provider bills what it sent, so that is charged: its reported
        usage if it got that far, else the text received, counted here.
        """
        router, routed = self._router, self._routed
        deployment = routed.deployment
        await routed.result.close()
        deployment.stats.finished()
        deployment.stats.observe_outcome(ok=False)
        if isinstance(exc, ProviderError):
            provider, model = deployment.provider.name, deployment.config.model
            ROUTER_METRICS.requests.labels(provider, model, exc.kind.value).inc()
            ROUTER_METRICS.latency.labels(provider, model).observe(seconds)
            log.warning(
                "router.stream_broken", deployment=deployment.name, kind=exc.kind.value
            )
        if isinstance(exc, ProviderError) and exc.kind in BREAKER_KINDS:
            deployment.breaker.record_failure()
        else:
            deployment.breaker.release()
        await router._settle(
            routed, self.outcome, routed.result.usage, self._request, text
        )
        await router._failed(self.outcome, self._request, exc)


async def _shielded(work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` to its end even if the caller is cancelled meanwhile."""
    task = asyncio.ensure_future(work)
    _UNSTOPPABLE.add(task)  # the loop holds tasks weakly
    task.add_done_callback(_UNSTOPPABLE.discard)
    await asyncio.shield(task)


def _complete_call(request: Json) -> Any:
    async def call(deployment: Deployment) -> Completion:
        return await deployment.provider.complete(deployment.config.model, request)

    return call


def _stream_call(request: Json) -> Any:
    async def call(deployment: Deployment) -> Stream:
        stream = deployment.provider.stream(deployment.config.model, request)
        await stream.start()
        return stream

    return call


def _max_tokens(request: Json) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value

    return None


def _answer_text(body: Json, part: str = "message") -> str:
    """The text of an answer's choices (``part`` "delta" for a stream chunk):
    content, then the arguments of its tool calls."""
    texts: list[str] = []
    for choice in body.get("choices") or []:
        said = choice.get(part) or {}
        texts.append(str(said.get("content") or ""))
        for call in said.get("tool_calls") or []:
            texts.append(str((call.get("function") or {}).get("arguments") or ""))

    return "".join(texts)


def _cached_body(value: bytes) -> Json:
    body = json.loads(value)
    if not isinstance(body, dict):
        raise TypeError("a cached answer is not a JSON object")

    return body


def _sha256(value: object) -> str:
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def build_router(
    config: RouterConfig, ledger: WORMLedger, policies: Policies
) -> Router:
    """A router with the stores its config names: Redis when a URL is set.

    One Redis can serve all three: budgets (when a limit is set) and rpm/tpm
    windows use ``budget.redis_url``, else ``cache.redis_url``. L2 cache values are
    sealed with the keys in ``PENIN_CACHE_SEAL_KEYS``, which a node with an L2
    cache must have.
    """
    from penin.router.budget_redis import RedisBudgetStore  # noqa: PLC0415

    seal_text = os.environ.get(SEAL_KEYS_ENV)
    seal = SealKeys.from_env(seal_text) if seal_text else None
    redis_url = config.budget.redis_url or config.cache.redis_url
    store = None
    if redis_url and config.budget.limited:
        store = RedisBudgetStore(redis_url, ledger_id=ledger.origin)
    rates = SharedRates(redis_url) if redis_url else None

    return Router(
        config, ledger, policies, budget_store=store, rates=rates, seal_keys=seal
    )
