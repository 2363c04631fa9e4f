"""Model prices: the bundled table, per-deployment overrides, costs in nano-USD.

The table (``prices.json``) is derived from LiteLLM's MIT-licensed price map
by ``scripts/derive-prices.py`` and pinned to one litellm release. Costs are
integers in nano-USD (10⁻⁹ USD) so that budgets add them up exactly: a call's
cost is computed in decimal and rounded half up once per call, never per
token.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from importlib import resources
from typing import Any

from penin.router.config import DeploymentConfig
from penin.router.errors import RouterError

NUSD_PER_USD = 1_000_000_000
# USD per million tokens, times this, is nano-USD per token.
_NUSD_PER_TOKEN_PER_MTOK = Decimal(1000)

# Where LiteLLM files the models of each provider kind, besides the bare name.
_KIND_PREFIXES = {"openai": "openai/", "anthropic": "anthropic/", "gemini": "gemini/"}


class PriceError(RouterError, ValueError):
    """Neither the price table nor the deployment gives a model's prices."""


@dataclass(frozen=True)
class Price:
    """USD per million tokens, and the context window when it is known."""

    input_per_mtok: float
    output_per_mtok: float
    max_input_tokens: int | None
    max_output_tokens: int | None


class PriceTable:
    """Prices by model name, as the price table spells the names."""

    def __init__(self, models: Mapping[str, Price], source_version: str = "") -> None:
        self.models = dict(models)
        self.source_version = source_version

    @classmethod
    def bundled(cls) -> PriceTable:
        """The table shipped with the package, read once per process."""
        return _bundled()

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> PriceTable:
        models = {
            name: Price(
                input_per_mtok=float(entry["input_per_mtok"]),
                output_per_mtok=float(entry["output_per_mtok"]),
                max_input_tokens=entry.get("max_input_tokens"),
                max_output_tokens=entry.get("max_output_tokens"),
            )
            for name, entry in document["models"].items()
        }

        return cls(models, str(document.get("source_version", "")))

    def lookup(
        self,
        model: str,
        provider_kind: str | None = None,
        *,
        provider_name: str | None = None,
    ) -> Price | None:
        """The first of these names the table knows, or None.

        ``provider_name/model`` (an OpenAI-compatible provider named after
        its service, e.g. ``groq``, finds LiteLLM's ``groq/…`` entries), the
        bare ``model``, then ``kind/model`` for the provider kind (Gemini
        model names are also tried without a leading ``models/``).
        """
        for name in _candidates(model, provider_kind, provider_name):
            price = self.models.get(name)
            if price is not None:
                return price

        return None

    def for_deployment(self, deployment: DeploymentConfig, provider_kind: str) -> Price:
        """The table's price with the deployment's own values laid over it."""
        found = self.lookup(
            deployment.model, provider_kind, provider_name=deployment.provider
        )
        input_per_mtok = deployment.input_per_mtok
        output_per_mtok = deployment.output_per_mtok
        if found is not None:
            input_per_mtok = _or(input_per_mtok, found.input_per_mtok)
            output_per_mtok = _or(output_per_mtok, found.output_per_mtok)
        if input_per_mtok is None or output_per_mtok is None:
            raise PriceError(
                f"no price is known for model {deployment.model!r} of provider "
                f"{deployment.provider!r}; set input_per_mtok and output_per_mtok "
                "on its deployment"
            )

        return Price(
            input_per_mtok=input_per_mtok,
            output_per_mtok=output_per_mtok,
            max_input_tokens=deployment.max_input_tokens
            or (found.max_input_tokens if found else None),
            max_output_tokens=found.max_output_tokens if found else None,
        )


def cost_nusd(price: Price, prompt_tokens: int, completion_tokens: int) -> int:
    """The cost of one call in nano-USD, rounded half up once for the call."""
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError(
            f"token counts cannot be negative: prompt {prompt_tokens}, "
            f"completion {completion_tokens}"
        )
    exact = (
        _decimal(price.input_per_mtok) * prompt_tokens
        + _decimal(price.output_per_mtok) * completion_tokens
    ) * _NUSD_PER_TOKEN_PER_MTOK

    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def usd(nusd: int) -> float:
    """Nano-USD as USD, for display; sums stay in nano-USD."""
    return nusd / NUSD_PER_USD


def nusd(usd: float) -> int:
    """USD as nano-USD, rounded half up (a configured limit, a logged cost)."""
    exact = _decimal(usd) * NUSD_PER_USD

    return int(exact.to_integral_value(rounding=ROUND_HALF_UP))


def _decimal(value: float) -> Decimal:
    # The shortest decimal form: 0.15 USD stays 0.15, not 0.1499999999999999944.
    return Decimal(repr(value))


def _candidates(
    model: str, provider_kind: str | None, provider_name: str | None
) -> list[str]:
    names = [f"{provider_name}/{model}"] if provider_name else []
    names.append(model)
    if provider_kind == "gemini" and model.startswith("models/"):
        model = model.removeprefix("models/")
        names.append(model)
    prefix = _KIND_PREFIXES.get(provider_kind or "")
    if prefix is not None:
        names.append(prefix + model)

    return names


def _or(override: float | None, default: float) -> float:
    return default if override is None else override


@functools.cache
def _bundled() -> PriceTable:
    text = resources.files("penin.router").joinpath("prices.json").read_text("utf-8")

    return PriceTable.from_json(json.loads(text))
