"""What a fake provider does with one request: a normal answer or one scripted fault."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any

DEFAULT_TEXT = "Hello from the fake provider."


class Kind(enum.Enum):
    """The families of behaviour; `Fault`'s constructors document each one."""

    OK = "ok"
    TOOL_CALL = "tool_call"
    REFUSAL = "refusal"
    WRONG_USAGE = "wrong_usage"
    MISSING_USAGE = "missing_usage"
    RATE_LIMIT = "rate_limit"
    SERVER_ERROR = "server_error"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    MALFORMED_JSON = "malformed_json"
    TRUNCATED = "truncated"
    STALL = "stall"
    HANG = "hang"
    RESET = "reset"
    DISCONNECT = "disconnect"


# Answered by the provider's `failure`: its own error document (or, for a Gemini
# policy block, its 200 with no candidates) instead of a completion.
ERROR_KINDS = frozenset(
    {Kind.RATE_LIMIT, Kind.SERVER_ERROR, Kind.CONTEXT_LENGTH, Kind.CONTENT_POLICY}
)


@dataclass(frozen=True)
class Fault:
    """One request's behaviour; build it with the constructors, not by hand.

    ``delay`` is slept before the status line and ``gap`` between stream events,
    whatever the kind; add them to any fault with `slowed`.
    """

    kind: Kind = Kind.OK
    text: str = DEFAULT_TEXT
    status: int = 200
    retry_after: int | None = None
    after: int = 0
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    delay: float = 0.0
    gap: float = 0.0

    def slowed(self, delay: float = 0.0, gap: float = 0.0) -> Fault:
        """This fault, ``delay`` s late to start and ``gap`` s between stream events."""
        return replace(self, delay=delay, gap=gap)

    # -- answers ------------------------------------------------------------

    @classmethod
    def ok(cls, text: str = DEFAULT_TEXT) -> Fault:
        """A normal completion whose reply is ``text``; streamed one word per event."""
        return cls(Kind.OK, text=text)

    @classmethod
    def tool_call(cls, name: str, arguments: dict[str, Any]) -> Fault:
        """The model calls tool ``name``, which the request must offer (OpenAI only)."""
        return cls(Kind.TOOL_CALL, tool=name, arguments=arguments)

    @classmethod
    def refusal(cls) -> Fault:
        """A successful response in which the model declines on safety grounds."""
        return cls(Kind.REFUSAL)

    @classmethod
    def wrong_usage(cls) -> Fault:
        """Usage reports -1 completion tokens, so its numbers cannot add up."""
        return cls(Kind.WRONG_USAGE)

    @classmethod
    def missing_usage(cls) -> Fault:
        """The usage object is left out, even when a stream asked for it."""
        return cls(Kind.MISSING_USAGE)

    # -- the provider's own error documents ---------------------------------

    @classmethod
    def rate_limit(cls, retry_after: int | None = None) -> Fault:
        """429; with a ``Retry-After`` header of that many seconds when given."""
        return cls(Kind.RATE_LIMIT, status=429, retry_after=retry_after)

    @classmethod
    def server_error(cls, status: int = 500) -> Fault:
        """A 5xx error; 529 is how Anthropic says it is overloaded."""
        if not 500 <= status <= 599:
            raise ValueError(f"server_error takes a 5xx status, not {status}")
        return cls(Kind.SERVER_ERROR, status=status)

    @classmethod
    def context_length(cls) -> Fault:
        """400: the prompt is longer than the model's context window."""
        return cls(Kind.CONTEXT_LENGTH, status=400)

    @classmethod
    def content_policy(cls) -> Fault:
        """The prompt is blocked by policy, the way this provider blocks it."""
        return cls(Kind.CONTENT_POLICY, status=400)

    # -- broken wire ----------------------------------------------------------

    @classmethod
    def malformed_json(cls, after: int = 1) -> Fault:
        """A 200 whose body is cut in half; a stream's event ``after`` loses a brace."""
        return cls(Kind.MALFORMED_JSON, after=after)

    @classmethod
    def truncated(cls, after: int = 2) -> Fault:
        """Closes after ``after`` stream events, or half a body, with no terminator."""
        return cls(Kind.TRUNCATED, after=after)

    @classmethod
    def stall(cls, after: int = 2) -> Fault:
        """A stream sends ``after`` events, then nothing until the client leaves."""
        return cls(Kind.STALL, after=after)

    @classmethod
    def hang(cls) -> Fault:
        """No response at all until the client gives up or the fake stops."""
        return cls(Kind.HANG)

    @classmethod
    def reset(cls) -> Fault:
        """The request is read, then the connection is reset (TCP RST)."""
        return cls(Kind.RESET)

    @classmethod
    def disconnect(cls) -> Fault:
        """The request is read, then the connection is closed cleanly (FIN)."""
        return cls(Kind.DISCONNECT)
