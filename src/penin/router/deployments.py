"""Deployments as the router holds them: config, adapter, price and live state.

A deployment is one provider model serving a logical model. Its breaker, its
rpm/tpm window and its latency statistics live as long as the node, shared by
every request and every logical model that lists it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

import aiohttp

from penin.router import providers
from penin.router.breaker import CircuitBreaker
from penin.router.config import DeploymentConfig, ModelConfig, RouterConfig
from penin.router.errors import RouterError
from penin.router.limits import RateWindow, UsageWindow
from penin.router.limits_redis import SharedRates
from penin.router.prices import Price, PriceTable
from penin.router.providers.base import Provider
from penin.router.strategies import Candidate, DeploymentStats

# When neither the request nor the price table bounds the answer, the
# worst-case reservation assumes this many output tokens.
DEFAULT_MAX_OUTPUT_TOKENS = 4096


class ConfigurationError(RouterError):
    """The router's configuration cannot run: a missing key, an unknown price."""


@dataclass
class Deployment:
    config: DeploymentConfig
    provider: Provider
    price: Price
    breaker: CircuitBreaker
    window: RateWindow
    stats: DeploymentStats
    # Set by a 429's Retry-After: the deployment is skipped until then.
    cooldown_until: float = 0.0

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def max_output_tokens(self) -> int:
        return self.price.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS

    def cooling(self, now: float) -> bool:
        return now < self.cooldown_until

    def candidate(self, stream: bool) -> Candidate:
        return Candidate(
            name=self.name,
            weight=self.config.weight,
            input_per_mtok=self.price.input_per_mtok,
            output_per_mtok=self.price.output_per_mtok,
            quality=0.5 if self.config.quality is None else self.config.quality,
            stats=self.stats,
            window=self.window,
            stream=stream,
        )


@dataclass
class Group:
    """A logical model: its settings and its deployments, in config order."""

    config: ModelConfig
    deployments: list[Deployment] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.config.name


def api_key(env_name: str | None, provider: str) -> str:
    """The provider's key from the environment; '' for providers that need none."""
    if env_name is None:
        return ""
    value = os.environ.get(env_name)
    if not value:
        raise ConfigurationError(
            f"provider {provider!r}: environment variable {env_name} is not set; "
            "export the provider's API key there"
        )

    return value


def preflight(config: RouterConfig, prices: PriceTable) -> None:
    """Raise ConfigurationError for a missing provider key or an unknown price,
    before anything starts, so that ``penin serve`` can say it in one line."""
    kinds = {p.name: p.kind for p in config.providers}
    for provider in config.providers:
        api_key(provider.api_key_env, provider.name)
    for model in config.models:
        for deployment in model.deployments:
            try:
                prices.for_deployment(deployment, kinds[deployment.provider])
            except ValueError as exc:
                raise ConfigurationError(f"model {model.name!r}: {exc}") from None


def build_groups(
    config: RouterConfig,
    session: aiohttp.ClientSession,
    prices: PriceTable,
    rates: SharedRates | None = None,
) -> dict[str, Group]:
    """Every logical model with its deployments; a deployment listed by several
    models under the same provider and model is one shared deployment. With
    ``rates``, rpm/tpm windows are shared with every node through Redis."""
    adapters = {
        p.name: providers.build(p, session, api_key(p.api_key_env, p.name))
        for p in config.providers
    }
    shared: dict[tuple[str, str], Deployment] = {}
    groups: dict[str, Group] = {}
    for model in config.models:
        group = Group(model)
        for deployment in model.deployments:
            key = (deployment.provider, deployment.model)
            if key not in shared:
                shared[key] = _deployment(deployment, adapters, prices, config, rates)
            group.deployments.append(shared[key])
        groups[model.name] = group

    return groups


def _deployment(
    deployment: DeploymentConfig,
    adapters: dict[str, Provider],
    prices: PriceTable,
    config: RouterConfig,
    rates: SharedRates | None,
) -> Deployment:
    adapter = adapters[deployment.provider]
    try:
        price = prices.for_deployment(deployment, adapter.config.kind)
    except ValueError as exc:
        raise ConfigurationError(str(exc)) from None
    breaker = config.router.breaker
    rpm, tpm = deployment.rpm, deployment.tpm
    window = rates.window(deployment.name, rpm, tpm) if rates else UsageWindow(rpm, tpm)

    return Deployment(
        config=deployment,
        provider=adapter,
        price=price,
        breaker=CircuitBreaker(
            breaker.failures, breaker.reset_after_s, name=deployment.name
        ),
        window=window,
        stats=DeploymentStats(config.router.latency_alpha),
    )


def now() -> float:
    return time.monotonic()
