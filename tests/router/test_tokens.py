"""Offline token counts: known o200k_base counts and the chat framing rule."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from penin.router import tokens
from penin.router.tokens import (
    TOKENS_PER_MESSAGE,
    TOKENS_PER_NAME,
    TOKENS_PER_REPLY,
    count_prompt,
    count_text,
)

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city today.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("hello", 1),
        ("Hello world", 2),
        ("Hello world, this is a test of the tokenizer.", 11),
        ("你好，世界", 3),
    ],
)
def test_text_counts_match_o200k_base(text: str, tokens: int) -> None:
    assert count_text(text) == tokens


def test_counts_grow_with_the_text() -> None:
    counts = [count_text("budget " * n) for n in range(0, 200, 10)]

    assert counts == sorted(counts)
    assert counts[-1] > counts[1] > 0


def test_special_tokens_in_a_prompt_count_as_plain_text() -> None:
    assert count_text("<|endoftext|>") == 7


def test_a_text_beyond_the_tokenizers_input_limit_is_still_counted() -> None:
    text = "word " * 300_000  # 1.5 million characters

    assert count_text(text) == 300_001


def test_one_user_message_costs_its_text_plus_the_chat_framing() -> None:
    messages = [{"role": "user", "content": "Hello"}]

    # OpenAI reports 8 prompt tokens for this request to gpt-4o.
    assert count_prompt(messages) == 8
    assert count_prompt(messages) == (
        TOKENS_PER_REPLY + TOKENS_PER_MESSAGE + count_text("user") + 1
    )


def test_more_messages_cost_more() -> None:
    one = [{"role": "user", "content": "Hello"}]
    two = [*one, {"role": "assistant", "content": "Hi, how can I help?"}]

    assert count_prompt(two) > count_prompt(one)


def test_content_parts_count_like_the_same_text_as_a_string() -> None:
    as_string = [{"role": "user", "content": "Describe this picture"}]
    as_parts = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Describe this picture"},
                {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
            ],
        }
    ]

    assert count_prompt(as_parts) == count_prompt(as_string)


def test_a_name_adds_its_tokens_and_one_more() -> None:
    anonymous = [{"role": "user", "content": "Hello"}]
    named = [{"role": "user", "content": "Hello", "name": "ana"}]

    assert count_prompt(named) == (
        count_prompt(anonymous) + TOKENS_PER_NAME + count_text("ana")
    )


def test_tool_definitions_and_tool_call_arguments_are_counted() -> None:
    messages = [{"role": "user", "content": "Weather in Lisbon?"}]
    call = {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Lisbon"}'},
            }
        ],
    }

    plain = count_prompt(messages)
    with_tools = count_prompt(messages, [WEATHER_TOOL])
    with_call = count_prompt([*messages, call])

    assert with_tools - plain > 20
    assert with_call - plain == (
        TOKENS_PER_MESSAGE
        + count_text("assistant")
        + count_text("get_weather")
        + count_text('{"city":"Lisbon"}')
    )


def test_threads_that_count_first_at_once_load_one_tokenizer_and_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(tokens, "_encoder", None)
    text = "Hello world, this is a test of the tokenizer."

    with ThreadPoolExecutor(16) as pool:
        counts = list(pool.map(lambda _: count_text(text), range(200)))

    assert set(counts) == {11}
