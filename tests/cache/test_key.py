"""The cache key: which fields decide it, and which requests may use the cache."""

from __future__ import annotations

from typing import Any

import pytest

from penin.cache import KEYED_FIELDS, cache_key, is_deterministic, wants_cache

REQUEST: dict[str, Any] = {
    "model": "chat",
    "messages": [{"role": "user", "content": "Olá, 世界"}],
    "temperature": 0,
}

CHANGED = {
    "model": "other",
    "messages": [{"role": "user", "content": "something else"}],
    "tools": [{"type": "function", "function": {"name": "f"}}],
    "tool_choice": "none",
    "response_format": {"type": "json_object"},
    "temperature": 0.5,
    "top_p": 0.9,
    "max_tokens": 10,
    "max_completion_tokens": 10,
    "stop": ["\n"],
    "seed": 7,
    "n": 2,
    "presence_penalty": 0.1,
    "frequency_penalty": 0.1,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
}


def test_the_key_is_a_sha256_hex_digest() -> None:
    key = cache_key(REQUEST)

    assert key is not None
    assert len(key) == 64
    assert int(key, 16) >= 0


def test_streaming_and_the_caller_do_not_change_the_key() -> None:
    streamed = REQUEST | {
        "stream": True,
        "stream_options": {"include_usage": True},
        "user": "alice",
    }

    assert cache_key(streamed) == cache_key(REQUEST)


@pytest.mark.parametrize("field", KEYED_FIELDS)
def test_every_field_that_decides_the_answer_changes_the_key(field: str) -> None:
    changed = REQUEST | {field: CHANGED[field]}

    assert cache_key(changed) != cache_key(REQUEST)


def test_every_keyed_field_has_a_changed_value_in_this_test() -> None:
    assert set(CHANGED) == set(KEYED_FIELDS)


def test_field_order_and_integral_floats_do_not_change_the_key() -> None:
    reordered = {
        "temperature": 0.0,
        "messages": [{"content": "Olá, 世界", "role": "user"}],
        "model": "chat",
    }

    assert cache_key(reordered) == cache_key(REQUEST)


def test_a_request_without_a_model_or_with_nan_has_no_key() -> None:
    assert cache_key({"messages": []}) is None
    assert cache_key(REQUEST | {"temperature": float("nan")}) is None


@pytest.mark.parametrize(
    ("extra", "deterministic"),
    [
        ({"temperature": 0}, True),
        ({"temperature": 0.0, "n": 1}, True),
        ({"temperature": 0, "n": None}, True),
        ({}, False),  # absent means 1 in the OpenAI API
        ({"temperature": 0.2}, False),
        ({"temperature": 0, "n": 3}, False),
        ({"temperature": False}, False),
        ({"temperature": "0"}, False),
    ],
)
def test_only_temperature_zero_with_one_choice_is_deterministic(
    extra: dict[str, Any], deterministic: bool
) -> None:
    assert is_deterministic({"model": "chat", **extra}) is deterministic


def test_without_the_header_only_deterministic_requests_use_the_cache() -> None:
    assert wants_cache(REQUEST, None)
    assert not wants_cache(REQUEST | {"temperature": 0.7}, None)


def test_the_use_header_opts_a_non_deterministic_request_in() -> None:
    assert wants_cache(REQUEST | {"temperature": 0.7}, "use")
    assert wants_cache(REQUEST | {"n": 4}, " Use ")


def test_the_skip_header_bypasses_the_cache_even_when_deterministic() -> None:
    assert not wants_cache(REQUEST, "skip")
    assert not wants_cache(REQUEST, "SKIP")


def test_an_unknown_header_value_leaves_the_default_rule() -> None:
    assert wants_cache(REQUEST, "please")
    assert not wants_cache(REQUEST | {"temperature": 1}, "please")
