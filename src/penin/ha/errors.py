"""The errors of penin.ha; every one says what was wrong and what to do.

HAError
├── CoordinatorError    the coordinator could not do something (penin.ha.coordinator)
├── ClusterSetupError   this node cannot take its place in the cluster as configured
└── StreamError         the primary answered the replication stream wrongly
"""

from __future__ import annotations


class HAError(Exception):
    """Root of every error of penin.ha."""


class ClusterSetupError(HAError):
    """The cluster configuration, the cluster token or the signing key stop this
    node from starting as a member."""


class StreamError(HAError):
    """An answer of the primary's replication stream that cannot be used: a
    refusal, an unreachable primary, or a body of the wrong shape."""

    def __init__(self, url: str, reason: str, *, status: int | None = None) -> None:
        self.url = url
        self.reason = reason
        self.status = status
        super().__init__(f"{url}: {reason}")
