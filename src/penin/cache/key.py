"""The cache key of a chat request, and whether a request may be cached at all.

The key is the SHA-256 (hex) of the canonical JSON of the request fields that
decide the answer: object keys sorted, no insignificant white space, UTF-8 as
is, and integral floats written as integers (``0.0`` and ``0`` give one key,
as RFC 8785 writes numbers). Fields that only change how the answer travels
or who asked (``stream``, ``stream_options``, ``user``) are left out, so a
streamed and a whole request for the same answer share a key.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

KEYED_FIELDS = (
    "model",
    "messages",
    "tools",
    "tool_choice",
    "response_format",
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "n",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
)

CACHE_HEADER = "X-Penin-Cache"
USE = "use"
SKIP = "skip"


def cache_key(request: dict[str, Any]) -> str | None:
    """The request's cache key, or None when it has no model or is not JSON."""
    if not isinstance(request.get("model"), str):
        return None
    keyed = {name: request[name] for name in KEYED_FIELDS if name in request}
    try:
        text = json.dumps(
            _integral_floats_as_ints(keyed),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError):
        return None

    return hashlib.sha256(text.encode()).hexdigest()


def _integral_floats_as_ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _integral_floats_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral_floats_as_ints(v) for v in value]

    return value


def is_deterministic(request: dict[str, Any]) -> bool:
    """Temperature explicitly 0 and one choice: the same request, the same answer.

    An absent temperature means 1 in the OpenAI API, so it is not deterministic.
    """
    temperature = request.get("temperature")
    n = request.get("n", 1)
    zero = _is_number(temperature) and temperature == 0
    one_choice = n is None or (_is_number(n) and n == 1)

    return zero and one_choice


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def wants_cache(request: dict[str, Any], header_value: str | None) -> bool:
    """Whether to read and fill the cache for this request.

    ``X-Penin-Cache: skip`` bypasses the cache; ``X-Penin-Cache: use`` opts a
    non-deterministic request in; without either, only deterministic requests
    are cached. Any other header value is ignored.
    """
    choice = (header_value or "").strip().lower()
    if choice == SKIP:
        return False
    if choice == USE:
        return True

    return is_deterministic(request)
