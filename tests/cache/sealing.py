"""Seal keys for the cache tests, written as an operator writes them."""

from __future__ import annotations

import base64

from penin.cache import SealKeys


def b64key(fill: int, size: int = 32) -> str:
    """A key of one repeated byte, base64-encoded."""
    return base64.b64encode(bytes([fill]) * size).decode()


def seal_keys(*pairs: tuple[str, int]) -> SealKeys:
    """``SealKeys`` for ``(key id, fill byte)`` pairs, the first one current."""
    return SealKeys.from_env(",".join(f"{kid}:{b64key(fill)}" for kid, fill in pairs))
