"""The seam to regorus: engines in Rego v1 mode, and its errors read back.

A ``regorus.Engine`` is bound to the thread that made it (using it from
another thread is a Rust panic), and it raises ``RuntimeError`` for a policy
or evaluation error and pyo3's ``PanicException``, a ``BaseException``, when
the engine itself fails. Both are failures of the engine to the callers here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import regorus

# "--> file:line:col" then the source excerpt, then "error: reason"; with
# RUST_BACKTRACE set, a stack backtrace follows that nobody needs to read.
_WHERE = re.compile(r"^--> (?P<file>.+):(?P<line>\d+):(?P<col>\d+)$", re.MULTILINE)
_REASON = re.compile(r"^error: (?P<reason>.*)$", re.MULTILINE)
_BACKTRACE = "\n\nStack backtrace:"


@dataclass(frozen=True, slots=True)
class EngineMessage:
    """What regorus said: where (when it said) and why."""

    file: str | None
    line: int | None
    reason: str

    def __str__(self) -> str:
        if self.file is None:
            return self.reason
        return f"{self.file}:{self.line}: {self.reason}"


def new_engine() -> regorus.Engine:
    """An empty engine that parses Rego v1, as OPA 1.0 does by default."""
    engine = regorus.Engine()
    engine.set_rego_v0(False)

    return engine


def is_engine_failure(exc: BaseException) -> bool:
    """True for what regorus raises: errors, and panics of its Rust code."""
    return isinstance(exc, Exception) or type(exc).__name__ == "PanicException"


def read_message(exc: BaseException) -> EngineMessage:
    """The first location and reason in a regorus error, without the backtrace."""
    text = str(exc).split(_BACKTRACE, 1)[0]
    where = _WHERE.search(text)
    reason = _REASON.search(text)
    said = reason.group("reason").strip() if reason else " ".join(text.split())
    if where is None:
        return EngineMessage(None, None, said or type(exc).__name__)

    return EngineMessage(where.group("file"), int(where.group("line")), said)
