"""The policy engine's exceptions; each names the file, line or path at fault.

PolicyError
├── PolicyLoadError  a policy set was refused at load: ``file:line: reason``
└── PolicyEvalError  a policy path or input cannot be evaluated at all

Nothing at decision time raises: an evaluation that fails is a deny, counted
and logged (see ``engine.Decision.reason``).
"""

from __future__ import annotations


class PolicyError(Exception):
    """Root of every error the policy package raises."""


class PolicyLoadError(PolicyError):
    """A module or data file that must not load, and where and why."""

    def __init__(self, file: str, line: int | None, reason: str) -> None:
        super().__init__(file, line, reason)
        self.file = file
        self.line = line
        self.reason = reason

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"

        return f"{where}: {self.reason}"


class PolicyEvalError(PolicyError):
    """A request for a decision that names no valid policy path or input."""
