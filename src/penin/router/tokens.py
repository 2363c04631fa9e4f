"""Offline token counts, for reservations and for calls that report no usage.

Text is counted with OpenAI's ``o200k_base`` encoding, bundled with
bpe-openai, so no network is needed. For other providers' models the count is
an estimate: their own tokenizers may count more. Special tokens such as
``<|endoftext|>`` in a prompt count as the plain text they are.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, cast

ENCODING = "o200k_base"

# The framing of OpenAI's chat format: each message is wrapped in a few
# tokens, a name adds one, and the reply is primed with a few more.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_PER_REPLY = 3

# bpe-openai refuses inputs of a million characters or more; longer texts
# are counted in pieces cut at whitespace, where a cut rarely moves a token.
_PIECE_CHARS = 100_000


class _Encoder(Protocol):
    def encode_ordinary(self, text: str) -> list[int]: ...


_encoder: _Encoder | None = None
_encoder_lock = threading.Lock()


def count_text(text: str) -> int:
    """Tokens of ``text`` in ``o200k_base``."""
    if not text:
        return 0
    encoder = _load()

    return sum(len(encoder.encode_ordinary(piece)) for piece in _pieces(text))


def count_prompt(
    messages: Sequence[Mapping[str, Any]],
    tools: Sequence[Mapping[str, Any]] | None = None,
) -> int:
    """Tokens of a chat prompt, framed the way OpenAI's chat format frames it.

    The rule: each message counts ``TOKENS_PER_MESSAGE`` plus the tokens of
    its role, its content (a string, or the ``text`` of its ``text`` parts;
    images and audio count nothing), its name (plus ``TOKENS_PER_NAME``) and
    each of its tool calls' function name and arguments. Each tool
    definition counts as its compact JSON. The reply's priming adds
    ``TOKENS_PER_REPLY``.
    """
    total = TOKENS_PER_REPLY
    for message in messages:
        total += TOKENS_PER_MESSAGE + _count_message(message)
    for tool in tools or ():
        total += count_text(_compact_json(tool))

    return total


def _count_message(message: Mapping[str, Any]) -> int:
    total = count_text(str(message.get("role") or ""))
    total += count_text(_content_text(message.get("content")))
    name = message.get("name")
    if isinstance(name, str) and name:
        total += TOKENS_PER_NAME + count_text(name)

    return total + _count_tool_calls(message.get("tool_calls"))


def _count_tool_calls(calls: Any) -> int:
    total = 0
    for call in calls if isinstance(calls, list) else ():
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            total += count_text(str(function.get("name") or ""))
            total += count_text(str(function.get("arguments") or ""))

    return total


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts = [
        str(part.get("text") or "")
        for part in content
        if isinstance(part, dict) and part.get("type") == "text"
    ]

    return "\n".join(texts)


def _compact_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _pieces(text: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    while len(text) - start > _PIECE_CHARS:
        end = start + _PIECE_CHARS
        cut = text.rfind(" ", start + 1, end)
        end = cut if cut > start else end
        pieces.append(text[start:end])
        start = end
    pieces.append(text[start:])

    return pieces


def preload() -> None:
    """Read the tokenizer's tables now (about half a second), not on first use."""
    _load()


def _load() -> _Encoder:
    global _encoder  # noqa: PLW0603 - loaded once, on first use, for every caller
    if _encoder is None:
        with _encoder_lock:
            if _encoder is None:
                _encoder = _read_encoding()

    return _encoder


def _read_encoding() -> _Encoder:
    # Importing bpe-openai reads its vocabularies (about 0.4 s), so it waits
    # for the first count. It reads them with importlib.resources' deprecated
    # open_binary; that warning says nothing a user can act on.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning, module="bpe_")
        import bpe_openai  # type: ignore[import-untyped]  # noqa: PLC0415

        return cast(_Encoder, bpe_openai.get_encoding(ENCODING))
