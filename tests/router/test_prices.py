"""The price table: what it knows, how overrides apply, costs in exact nano-USD."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from penin.router.config import DeploymentConfig
from penin.router.prices import (
    Price,
    PriceError,
    PriceTable,
    cost_nusd,
    nusd,
    usd,
)

SCRIPT = Path(__file__).parents[2] / "scripts" / "derive-prices.py"
SPOKEN = {
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


def deployment(**fields: Any) -> DeploymentConfig:
    return DeploymentConfig(**{"provider": "main", "model": "gpt-4o"} | fields)


# -- the bundled table ---------------------------------------------------------


def test_bundled_table_prices_gpt_4o_as_litellm_1_110_2_does() -> None:
    price = PriceTable.bundled().lookup("gpt-4o")

    assert price == Price(2.5, 10.0, 128_000, 16_384)


def test_bundled_table_names_its_source_version_and_licence() -> None:
    text = resources.files("penin.router").joinpath("prices.json").read_text()
    document = json.loads(text)

    assert document["source"] == "litellm model_prices_and_context_window.json"
    assert document["source_version"] == "1.110.2"
    assert document["license"] == "MIT"
    assert PriceTable.bundled().source_version == "1.110.2"


def test_bundled_table_holds_only_providers_the_router_speaks_and_stays_small() -> None:
    file = resources.files("penin.router").joinpath("prices.json")
    models = json.loads(file.read_text())["models"]

    assert {entry["provider"] for entry in models.values()} <= SPOKEN
    assert len(file.read_bytes()) < 200_000
    assert "gpt-3.5-turbo-instruct" not in models  # a completion model


def test_bundled_table_is_read_once() -> None:
    assert PriceTable.bundled() is PriceTable.bundled()


# -- lookup and overrides ------------------------------------------------------


def test_gemini_models_are_found_under_litellms_gemini_prefix() -> None:
    table = PriceTable.bundled()
    expected = table.models["gemini/gemini-2.5-flash"]

    assert table.lookup("gemini-2.5-flash", "gemini") == expected
    assert table.lookup("models/gemini-2.5-flash", "gemini") == expected
    assert table.lookup("gemini-2.5-flash") is None


def test_a_provider_named_after_its_service_finds_that_services_prices() -> None:
    groq = deployment(provider="groq", model="openai/gpt-oss-20b")

    price = PriceTable.bundled().for_deployment(groq, "openai")

    assert price == PriceTable.bundled().models["groq/openai/gpt-oss-20b"]


def test_deployment_prices_override_the_table_and_keep_its_window() -> None:
    cheap = deployment(output_per_mtok=1.0, max_input_tokens=32_000)

    price = PriceTable.bundled().for_deployment(cheap, "openai")

    assert price == Price(2.5, 1.0, 32_000, 16_384)


def test_a_model_priced_only_by_its_deployment_is_accepted() -> None:
    local = deployment(model="llama3", input_per_mtok=0, output_per_mtok=0)

    price = PriceTable.bundled().for_deployment(local, "openai")

    assert price == Price(0.0, 0.0, None, None)


def test_an_unknown_price_is_one_line_that_says_what_to_set() -> None:
    unknown = deployment(model="llama3", input_per_mtok=0.5)

    with pytest.raises(PriceError) as caught:
        PriceTable.bundled().for_deployment(unknown, "openai")

    message = str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert "\n" not in message
    assert "'llama3'" in message
    assert "input_per_mtok and output_per_mtok" in message


# -- nano-USD ------------------------------------------------------------------


def test_cost_is_exact_in_nano_usd() -> None:
    mini = Price(0.15, 0.6, None, None)

    assert cost_nusd(mini, 1000, 500) == 450_000
    assert cost_nusd(mini, 0, 0) == 0


def test_cost_rounds_half_up_once_per_call() -> None:
    # 0.0005 USD per million tokens is half a nano-USD per token.
    half = Price(0.0005, 0.0005, None, None)

    assert cost_nusd(half, 1, 0) == 1
    assert cost_nusd(half, 1, 2) == 2  # 1.5, not 1 + 1
    assert cost_nusd(half, 2, 2) == 2


def test_sums_of_costs_do_not_drift_like_floats() -> None:
    price = Price(0.1, 0.0, None, None)  # 100 nano-USD per prompt token
    costs = [cost_nusd(price, 1, 0) for _ in range(10_000)]

    assert sum(costs) == nusd(0.001)
    assert nusd(0.1) + nusd(0.2) == nusd(0.3)
    assert usd(nusd(5.0)) == 5.0


def test_negative_token_counts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        cost_nusd(Price(1.0, 1.0, None, None), 10, -1)


# -- the derivation script -----------------------------------------------------


def test_derive_script_keeps_chat_models_we_speak_in_usd_per_million(
    tmp_path: Path,
) -> None:
    chat = {"mode": "chat", "input_cost_per_token": 2.5e-06}
    source = {
        "sample_spec": {"litellm_provider": "one of …", "mode": "one of …"},
        "gpt-x": chat
        | {
            "litellm_provider": "openai",
            "output_cost_per_token": 1e-05,
            "max_input_tokens": 128000,
            "cache_read_input_token_cost": 1e-06,
        },
        "babbage-x": chat
        | {
            "litellm_provider": "text-completion-openai",
            "mode": "completion",
            "output_cost_per_token": 1e-06,
        },
        "bedrock/claude-x": chat
        | {"litellm_provider": "bedrock", "output_cost_per_token": 1e-06},
        "together-ai-8.1b-21b": chat
        | {"litellm_provider": "together_ai", "output_cost_per_token": 1e-06},
        "openai/unpriced": {"mode": "chat", "litellm_provider": "openai"},
    }
    path = tmp_path / "map.json"
    path.write_text(json.dumps(source))

    outputs = [
        subprocess.run(
            [sys.executable, str(SCRIPT), str(path), "--source-version", "9.9.9"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for _ in range(2)
    ]

    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0]) == {
        "license": "MIT",
        "source": "litellm model_prices_and_context_window.json",
        "source_version": "9.9.9",
        "models": {
            "gpt-x": {
                "provider": "openai",
                "input_per_mtok": 2.5,
                "output_per_mtok": 10.0,
                "max_input_tokens": 128000,
                "max_output_tokens": None,
            }
        },
    }
