"""Helpers for the policy tests: bundles written to disk, metric samples, waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from penin.observability.metrics import REGISTRY

WAIT_POLL_S = 0.02


def write_bundle(root: Path, files: dict[str, str]) -> Path:
    """Write ``files`` (relative path -> text) under ``root``; return ``root``."""
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return root


def allow_module(package: str, allow: str = "true") -> str:
    """A module whose ``allow`` is ``allow`` (a Rego expression)."""
    return f"package {package}\n\nallow := {allow}\n"


def sample(name: str, **labels: str) -> float:
    """The current value of a sample of the node's registry; 0 if absent."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def failures(path: str, reason: str) -> float:
    return sample("penin_policy_failures_total", path=path, reason=reason)


def decisions(path: str, outcome: str) -> float:
    return sample("penin_policy_decisions_total", path=path, outcome=outcome)


async def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``probe`` on the running loop until it holds; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up after {timeout} s waiting for {what}")
        await asyncio.sleep(WAIT_POLL_S)
