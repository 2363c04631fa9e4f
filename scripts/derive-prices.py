"""Derive src/penin/router/prices.json from LiteLLM's price map (MIT licence).

Usage:
    python scripts/derive-prices.py PATH/model_prices_and_context_window.json \
        --source-version 1.110.2 > src/penin/router/prices.json

Only chat models of the providers the router speaks are kept: OpenAI,
Anthropic and Gemini in their own protocols, and the OpenAI-compatible
services whose price entries LiteLLM keeps under their own name. Per model,
the provider, the two prices in USD per million tokens and the context window
are kept; cached-input, batch and long-context tiers are left out. The output
is sorted and indented the same way every time, so a refresh diffs cleanly.
"""

from __future__ import annotations

import argparse
import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

SOURCE = "litellm model_prices_and_context_window.json"

PROVIDERS = frozenset(
    {
        "openai",
        "anthropic",
        "gemini",
        "deepseek",
        "mistral",
        "groq",
        "together_ai",
        "openrouter",
        "xai",
    }
)

# LiteLLM prices Together AI's unlisted models by size bucket under names
# such as "together-ai-8.1b-21b"; no provider serves a model by that name.
SIZE_BUCKET_PREFIX = "together-ai-"


def per_million(cost_per_token: float) -> float:
    """USD per token to USD per million tokens, exact in decimal.

    Going through the float's shortest decimal form keeps 2.5e-06 as 2.5
    instead of the binary product 2.4999999999999996.
    """
    return float(Decimal(repr(cost_per_token)).scaleb(6))


def window(value: Any) -> int | None:
    return value if isinstance(value, int) and value > 0 else None


def model_entry(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The kept fields of one LiteLLM entry, or None when it is not kept."""
    if entry.get("mode") != "chat" or entry.get("litellm_provider") not in PROVIDERS:
        return None
    input_cost = entry.get("input_cost_per_token")
    output_cost = entry.get("output_cost_per_token")
    if not isinstance(input_cost, int | float) or not isinstance(
        output_cost, int | float
    ):
        return None

    return {
        "provider": entry["litellm_provider"],
        "input_per_mtok": per_million(float(input_cost)),
        "output_per_mtok": per_million(float(output_cost)),
        "max_input_tokens": window(entry.get("max_input_tokens")),
        "max_output_tokens": window(entry.get("max_output_tokens")),
    }


def derive(source: dict[str, Any], source_version: str) -> dict[str, Any]:
    models = {}
    for name, entry in source.items():
        if not isinstance(entry, dict) or name.startswith(SIZE_BUCKET_PREFIX):
            continue
        kept = model_entry(entry)
        if kept is not None:
            models[name] = kept

    return {
        "source": SOURCE,
        "source_version": source_version,
        "license": "MIT",
        "models": models,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="LiteLLM's price map (JSON)")
    parser.add_argument(
        "--source-version", required=True, help="the litellm release it comes from"
    )
    args = parser.parse_args()
    source = json.loads(args.path.read_text(encoding="utf-8"))

    table = derive(source, args.source_version)
    json.dump(table, sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
