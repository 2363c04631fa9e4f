"""The router's part of the node's YAML: providers, logical models, budget, cache.

The shape of ``providers``, ``models``, ``budget`` and ``cache`` is a public
contract (docs/router.md); new keys are added with defaults so that older
files keep loading. API keys of providers are named by environment variable
(``api_key_env``) and read from the environment only, never from the file.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ProviderKind = Literal["openai", "anthropic", "gemini"]
Strategy = Literal["cost", "latency", "least-busy", "weighted", "usage", "score"]
DATA_CLASS = re.compile(r"[a-z][a-z0-9_]*")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Timeouts(_Strict):
    """Seconds; ``read_s`` bounds each wait for bytes, ``total_s`` a whole call."""

    connect_s: float = Field(5.0, gt=0)
    read_s: float = Field(60.0, gt=0)
    total_s: float = Field(300.0, gt=0)


class ProviderConfig(_Strict):
    name: str = Field(min_length=1)
    kind: ProviderKind
    base_url: str = Field(min_length=1)
    api_key_env: str | None = None
    timeouts: Timeouts = Timeouts()


class DeploymentConfig(_Strict):
    """One provider's model serving a logical model.

    Prices (USD per million tokens) and the context window default to the
    bundled price table; set them here to override it.
    """

    provider: str
    model: str = Field(min_length=1)
    weight: float = Field(1.0, ge=0)
    rpm: int | None = Field(None, ge=1)
    tpm: int | None = Field(None, ge=1)
    input_per_mtok: float | None = Field(None, ge=0)
    output_per_mtok: float | None = Field(None, ge=0)
    max_input_tokens: int | None = Field(None, ge=1)
    # For the ``score`` strategy: a quality estimate in [0, 1] (default 0.5).
    quality: float | None = Field(None, ge=0, le=1)
    # The data classes this deployment may receive (the router policy reads
    # them): PII goes only to a deployment that lists "pii".
    data_classes: list[str] = ["public", "internal"]

    @field_validator("data_classes")
    @classmethod
    def _class_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not DATA_CLASS.fullmatch(name):
                raise ValueError(
                    f"data class {name!r} is not a lowercase identifier "
                    "(a letter, then letters, digits or _; like pii)"
                )

        return value

    @property
    def name(self) -> str:
        """How logs, metrics and response headers name it: ``provider/model``."""
        return f"{self.provider}/{self.model}"


class ModelConfig(_Strict):
    name: str = Field(min_length=1)
    strategy: Strategy = "cost"
    deployments: list[DeploymentConfig] = Field(min_length=1)
    # Tried, in order, once this group's retries are spent.
    fallbacks: list[str] = []
    # Tried when every deployment refused the prompt as too long; without
    # them, larger-context deployments of ``fallbacks`` are tried.
    context_window_fallbacks: list[str] = []
    # Tried when a provider refuses the prompt on content-policy grounds.
    content_policy_fallbacks: list[str] = []


class BudgetConfig(_Strict):
    """Daily limits in USD per UTC day; None means no limit."""

    daily_usd: float | None = Field(None, ge=0)
    per_key_daily_usd: float | None = Field(None, ge=0)
    soft_fraction: float = Field(0.95, gt=0, le=1)
    # Where reservations live so that several nodes share one budget; None:
    # cache.redis_url when that is set, else in this process only.
    redis_url: str | None = None

    @property
    def limited(self) -> bool:
        """Whether a limit is set; without one, no node needs Redis to agree."""
        return self.daily_usd is not None or self.per_key_daily_usd is not None


class CacheConfig(_Strict):
    ttl_s: float = Field(3600.0, ge=0)
    redis_url: str | None = None
    max_entries: int = Field(10_000, ge=0)


class ScoreWeights(_Strict):
    """Weights of the ``score`` strategy; each term is normalised to [0, 1]."""

    cost: float = Field(0.3, ge=0)
    latency: float = Field(0.3, ge=0)
    quality: float = Field(0.2, ge=0)
    success: float = Field(0.2, ge=0)


class RetrySettings(_Strict):
    attempts: int = Field(2, ge=0, description="retries per deployment group")
    backoff_base_s: float = Field(0.1, ge=0)
    backoff_max_s: float = Field(5.0, ge=0)
    # A Retry-After longer than this moves on to another deployment instead.
    max_retry_after_s: float = Field(10.0, ge=0)


class BreakerSettings(_Strict):
    failures: int = Field(3, ge=1, description="consecutive failures that open it")
    reset_after_s: float = Field(60.0, gt=0, description="open, then half-open")


class RouterSettings(_Strict):
    retry: RetrySettings = RetrySettings()
    breaker: BreakerSettings = BreakerSettings()
    score_weights: ScoreWeights = ScoreWeights()
    # EWMA smoothing of observed latencies: the weight of the newest call.
    latency_alpha: float = Field(0.2, gt=0, le=1)
    # Store prompts and completions in router.request records: never, or as
    # SHA-256 hashes of their canonical JSON.
    store_content: Literal["none", "hash"] = "none"


def check_references(
    providers: list[ProviderConfig], models: list[ModelConfig]
) -> None:
    """Raise ValueError naming the first dangling or duplicate name."""
    provider_names = [p.name for p in providers]
    model_names = [m.name for m in models]
    for kind, names in (("provider", provider_names), ("model", model_names)):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"{kind} name {duplicates[0]!r} is defined twice")
    clearances: dict[str, tuple[str, list[str]]] = {}
    for model in models:
        for deployment in model.deployments:
            if deployment.provider not in provider_names:
                raise ValueError(
                    f"model {model.name!r}: deployment {deployment.model!r} names "
                    f"provider {deployment.provider!r}, which is not in providers"
                )
            # Models that list one provider model share one deployment, so
            # what data it may receive cannot depend on which model sent it.
            first = clearances.setdefault(
                deployment.name, (model.name, deployment.data_classes)
            )
            if sorted(first[1]) != sorted(deployment.data_classes):
                raise ValueError(
                    f"deployment {deployment.name!r} has data_classes "
                    f"{first[1]} in model {first[0]!r} but "
                    f"{deployment.data_classes} in model {model.name!r}; "
                    "a deployment receives the same classes whichever model "
                    "sends to it"
                )
        for field in (
            "fallbacks",
            "context_window_fallbacks",
            "content_policy_fallbacks",
        ):
            for target in getattr(model, field):
                if target not in model_names:
                    raise ValueError(
                        f"model {model.name!r}: {field} names {target!r}, "
                        "which is not in models"
                    )


class RouterConfig(_Strict):
    """Everything the router reads, gathered from the node's settings."""

    providers: list[ProviderConfig] = []
    models: list[ModelConfig] = []
    budget: BudgetConfig = BudgetConfig()
    cache: CacheConfig = CacheConfig()
    router: RouterSettings = RouterSettings()

    @model_validator(mode="after")
    def _references(self) -> RouterConfig:
        check_references(self.providers, self.models)
        return self
