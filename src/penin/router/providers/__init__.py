"""Provider adapters: one module per wire protocol behind the ``base`` interface."""

from __future__ import annotations

import aiohttp

from penin.router.config import ProviderConfig
from penin.router.providers.anthropic import AnthropicProvider
from penin.router.providers.base import Provider
from penin.router.providers.gemini import GeminiProvider
from penin.router.providers.openai import OpenAIProvider

__all__ = ["Provider", "build"]

_ADAPTERS: dict[str, type[Provider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "gemini": GeminiProvider,
}


def build(
    config: ProviderConfig, session: aiohttp.ClientSession, api_key: str
) -> Provider:
    """The adapter for ``config.kind``, calling through ``session``."""
    return _ADAPTERS[config.kind](config, session, api_key)
