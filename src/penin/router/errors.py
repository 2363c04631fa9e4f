"""The router's exceptions; each names the deployment or limit at fault.

RouterError
├── ProviderError       an upstream call failed; ``kind`` says how
├── NoDeploymentError   nothing could serve the request (all tried, or none open)
├── UnknownModelError   the client asked for a logical model that is not configured
├── BudgetExceededError a reservation would pass a hard budget limit
└── PolicyDeniedError   a policy refused the request, or could not decide
"""

from __future__ import annotations

import enum


class RouterError(Exception):
    """Root of every error the router raises."""


class ErrorKind(enum.Enum):
    """How an upstream call failed, which decides what the router does next."""

    RATE_LIMIT = "rate_limit"  # 429: retry (after Retry-After), then move on
    SERVER = "server"  # 5xx: retry, then move on
    TIMEOUT = "timeout"  # connect, read or total timeout: retry, then move on
    CONNECTION = "connection"  # refused, reset, closed early: retry, then move on
    MALFORMED = "malformed"  # a body or stream event that does not parse: move on
    CONTEXT_LENGTH = "context_length"  # prompt too long: a larger-context deployment
    CONTENT_POLICY = "content_policy"  # refused by policy: the configured fallback
    AUTH = "auth"  # 401/403 from the provider: our key there is wrong
    BAD_REQUEST = "bad_request"  # any other 4xx: the client's request is at fault


RETRYABLE = frozenset(
    {ErrorKind.RATE_LIMIT, ErrorKind.SERVER, ErrorKind.TIMEOUT, ErrorKind.CONNECTION}
)


class ProviderError(RouterError):
    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        provider: str = "",
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.provider = provider
        self.status = status
        self.retry_after_s = retry_after_s

    @property
    def retryable(self) -> bool:
        return self.kind in RETRYABLE

    def __str__(self) -> str:
        where = f"{self.provider}: " if self.provider else ""
        status = f" ({self.status})" if self.status is not None else ""
        return f"{where}{self.kind.value}{status}: {self.message}"


class NoDeploymentError(RouterError):
    def __init__(self, model: str, reason: str, last: ProviderError | None = None):
        super().__init__(f"no deployment of model {model!r} could serve: {reason}")
        self.model = model
        self.reason = reason
        self.last = last


class UnknownModelError(RouterError):
    def __init__(self, model: str, known: list[str]) -> None:
        names = ", ".join(repr(n) for n in known) or "none are configured"
        super().__init__(f"model {model!r} is not configured; known models: {names}")
        self.model = model


class BudgetExceededError(RouterError):
    def __init__(self, scope: str, limit_usd: float, committed_usd: float) -> None:
        super().__init__(
            f"the {scope} budget of {limit_usd:.6f} USD would be exceeded "
            f"({committed_usd:.6f} USD spent or reserved today, UTC)"
        )
        self.scope = scope
        self.limit_usd = limit_usd
        self.committed_usd = committed_usd


# Failures that say the policy engine cannot answer now, rather than that it
# found the request wanting: the client may retry.
UNAVAILABLE_REASONS = frozenset({"timeout", "unavailable"})


class PolicyDeniedError(RouterError):
    """A policy at ``path`` said no (``reason`` "denied"), or failed to decide.

    ``reasons`` are the policy's own words; the request's input is never part
    of the message.
    """

    def __init__(
        self, path: str, reason: str, reasons: list[str], decision_id: str
    ) -> None:
        if reason == "denied":
            said = "; ".join(reasons) or "the policy refused the request"
        else:
            said = f"the policy could not decide ({reason}), so the request is refused"
        super().__init__(f"{path}: {said}")
        self.path = path
        self.reason = reason
        self.reasons = reasons
        self.decision_id = decision_id

    @property
    def unavailable(self) -> bool:
        return self.reason in UNAVAILABLE_REASONS
