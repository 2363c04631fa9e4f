"""The OpenAI chat shapes that translating adapters read from requests and build.

Readers raise TypeError, KeyError or ValueError for a request they cannot
read; adapters call them inside ``HttpProvider.translating``, which makes that
a BAD_REQUEST.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

from penin.router.providers.base import Json, Usage

# -- reading a request ---------------------------------------------------------


def parts_of(content: object) -> list[Json]:
    """A message's content as a list of parts; a string is one text part."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return content
    raise TypeError(f"message content cannot be a {type(content).__name__}")


def text_of(content: object) -> str:
    """The text of a message's content, its text parts joined."""
    return "".join(
        str(part["text"]) for part in parts_of(content) if part["type"] == "text"
    )


def image_url(part: Json) -> str:
    """The URL of an ``image_url`` part, in either of its two shapes."""
    value = part["image_url"]

    return value if isinstance(value, str) else str(value["url"])


def data_url(url: str) -> tuple[str, str] | None:
    """The media type and base64 data of a ``data:`` URL; None for other URLs."""
    if not url.startswith("data:"):
        return None
    header, comma, data = url.removeprefix("data:").partition(",")
    media_type, _, encoding = header.partition(";")
    if not comma or encoding != "base64":
        raise ValueError("an image data URL must be base64 encoded")

    return media_type, data


def max_tokens(request: Json) -> int | None:
    """The client's output limit; ``max_completion_tokens`` replaces ``max_tokens``."""
    for name in ("max_completion_tokens", "max_tokens"):
        value = request.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
            return value

    return None


def stop_sequences(request: Json) -> list[str] | None:
    stop = request.get("stop")
    if stop is None:
        return None
    if isinstance(stop, str):
        return [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise TypeError("stop must be a string or a list of strings")

    return stop


def functions(request: Json) -> list[Json]:
    """The ``function`` objects of the request's function tools."""
    return [
        tool["function"]
        for tool in request.get("tools") or []
        if tool.get("type", "function") == "function"
    ]


def chosen_function(choice: Json) -> str:
    """The function a ``{"type": "function", ...}`` tool choice names."""
    return str(choice["function"]["name"])


def arguments(call: Json) -> Json:
    """The parsed arguments of one of an assistant message's tool calls."""
    text = call["function"].get("arguments") or "{}"
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"tool call arguments must be a JSON object, not {text!r}")

    return value


# -- building an answer --------------------------------------------------------


def new_id(prefix: str) -> str:
    """An id for a tool call or an answer whose provider gave it none."""
    return f"{prefix}_{secrets.token_hex(12)}"


def tool_call(ident: str, name: str, args: object) -> Json:
    function = {"name": name, "arguments": json.dumps(args)}

    return {"id": ident, "type": "function", "function": function}


def completion(
    ident: str,
    model: str,
    created: int,
    message: Json,
    finish_reason: str,
    usage: Usage | None,
) -> Json:
    """A ``chat.completion`` with one choice; ``usage`` is left out when None."""
    choice = {"index": 0, "message": message, "finish_reason": finish_reason}
    body: Json = {
        "id": ident,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if usage is not None:
        body["usage"] = usage.to_dict()

    return body


def assistant(text: str, calls: list[Json]) -> Json:
    """The assistant message of a completion; content is None when there is no text."""
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls

    return message


class Chunks:
    """Builds the ``chat.completion.chunk`` dicts of one streamed answer."""

    def __init__(self, ident: str, model: str, created: int) -> None:
        self.ident = ident
        self.model = model
        self.created = created

    def delta(self, delta: Json, finish_reason: str | None = None) -> Json:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}

        return {**self._envelope(), "choices": [choice]}

    def usage(self, usage: Usage) -> Json:
        """The last chunk: no choices, only usage (OpenAI's include_usage shape)."""
        return {**self._envelope(), "choices": [], "usage": usage.to_dict()}

    def _envelope(self) -> Json:
        return {
            "id": self.ident,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
        }
