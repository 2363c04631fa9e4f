"""What every provider adapter offers: one call, one stream, its models.

Requests and responses are OpenAI Chat Completions dicts on both sides of an
adapter; each adapter translates them to and from its provider's wire format
and maps the provider's failures to ``ProviderError`` kinds. The router never
sees a provider's own shapes.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp

from penin.router.config import ProviderConfig

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts as the provider reported them."""

    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Completion:
    """A whole answer: ``body`` is an OpenAI ``chat.completion`` object.

    ``usage`` is None when the provider reported none, or reported numbers
    that cannot be right (negative, or a total that does not add up).
    """

    body: Json
    usage: Usage | None


class Stream(abc.ABC):
    """An answer arriving as OpenAI ``chat.completion.chunk`` dicts.

    ``usage`` is set once the provider has reported it (usually with the last
    event). Errors before the first chunk raise ``ProviderError`` from
    ``start``; errors after it raise ``ProviderError`` from iteration.
    """

    usage: Usage | None = None

    @abc.abstractmethod
    async def start(self) -> None:
        """Send the request and read until the first event (or the failure)."""

    @abc.abstractmethod
    def chunks(self) -> AsyncIterator[Json]:
        """The chunks, the first one included, as they arrive."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release the connection, whether or not the stream was read to its end."""


class Provider(abc.ABC):
    """One configured provider; adapters are built by ``providers.build``."""

    def __init__(
        self, config: ProviderConfig, session: aiohttp.ClientSession, api_key: str
    ) -> None:
        self.config = config
        self.session = session
        self.api_key = api_key

    @property
    def name(self) -> str:
        return self.config.name

    @abc.abstractmethod
    async def complete(self, model: str, request: Json) -> Completion:
        """One non-streaming call of ``model`` (the provider's own model name).

        ``request`` is the client's OpenAI request; its ``model`` is ignored.
        Raises ``ProviderError`` for every failure, never anything else.
        """

    @abc.abstractmethod
    def stream(self, model: str, request: Json) -> Stream:
        """A streaming call; nothing is sent until ``Stream.start``."""

    @abc.abstractmethod
    async def list_models(self) -> list[str]:
        """The model names the provider lists (for ``penin providers check``)."""
