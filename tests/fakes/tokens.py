"""Token counts a test can predict: one token per whitespace-separated word."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fakes.fault import Fault, Kind


@dataclass(frozen=True)
class Usage:
    prompt: int
    completion: int
    total: int


def pieces(text: str) -> list[str]:
    """``text`` as its stream events carry it: one word each, spaces kept."""
    return re.findall(r"\S+\s*|\s+", text) or [""]


def count(text: str) -> int:
    return len(text.split())


def prompt_text(node: Any) -> str:
    """Every piece of text in a request's messages, whatever the provider's shape."""
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return " ".join(prompt_text(item) for item in node)
    if isinstance(node, dict):
        return " ".join(
            prompt_text(node.get(key)) for key in ("content", "text", "parts")
        )

    return ""


def usage_for(fault: Fault, prompt: int, completion: int) -> Usage | None:
    """The usage a fake reports; a usage fault changes or removes it."""
    if fault.kind is Kind.MISSING_USAGE:
        return None
    if fault.kind is Kind.WRONG_USAGE:
        return Usage(prompt, -1, prompt + completion)

    return Usage(prompt, completion, prompt + completion)
