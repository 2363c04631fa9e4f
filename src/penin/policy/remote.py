"""Decisions from an OPA server's REST Data API, under the same fail-closed rule.

Each decision is ``POST {base_url}/v1/data/{path}`` with ``{"input": ...}``;
OPA answers ``{"result": ...}``, or an object without ``result`` when the
path is undefined. The query asks for strict built-in errors, so that OPA, as
regorus does, fails on a built-in error instead of making the expression
undefined, and for provenance, so that each decision names the bundle
revisions that made it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import aiohttp

from penin._session import LazySession
from penin.observability.metrics import POLICY_METRICS, PolicyMetrics
from penin.policy.engine import (
    Decision,
    Outcome,
    PolicyEngine,
    canonical_text,
    check_path,
    digest_of,
    settle,
    unexpected,
)
from penin.policy.errors import PolicyEvalError
from penin.policy.policyset import PackageInfo

QUERY = {"strict-builtin-errors": "true", "provenance": "true"}
# Statuses that say the server, or a proxy before it, cannot answer now.
_UNAVAILABLE = frozenset({502, 503, 504})
MAX_ERROR_CHARS = 300


class RemoteEngine(PolicyEngine):
    """An OPA server reached over HTTP; every failure to get an answer denies."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = 0.5,
        metrics: PolicyMetrics = POLICY_METRICS,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, not {timeout_s}")
        self.base_url = base_url.rstrip("/")
        self._metrics = metrics
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session = LazySession(self._timeout)
        self._closed = False
        self._digest = f"opa:{self.base_url}"

    @property
    def digest(self) -> str:
        """The bundle revisions OPA reported with its last answer.

        ``opa:NAME@REVISION,...``; before the first answer, or from a server
        that reports no bundles, ``opa:`` and the server's address.
        """
        return self._digest

    def packages(self) -> list[PackageInfo]:
        return []  # the OPA server, not this node, knows what it has loaded

    async def close(self) -> None:
        self._closed = True
        await self._session.close()

    async def decide(
        self, path: str, input: Mapping[str, Any], text: str | None = None
    ) -> Decision:
        started = time.perf_counter()
        input_digest = ""
        digest = self._digest
        try:
            if text is None:
                text = canonical_text(input)
            input_digest = digest_of(text)
            outcome, digest = await self._call(check_path(path), text)
        except PolicyEvalError as exc:
            outcome = Outcome(failure="error", error=str(exc))
        except Exception as exc:  # a decision fails closed, it never raises
            outcome = Outcome(failure="error", error=unexpected(exc))

        return settle(
            path,
            outcome,
            policy_digest=digest,
            input_digest=input_digest,
            started=started,
            metrics=self._metrics,
        )

    async def _call(self, path: str, input_text: str) -> tuple[Outcome, str]:
        """What OPA answered, and the digest of the bundles that answered it."""
        if self._closed:
            failure = Outcome(failure="unavailable", error="the engine is closed")
            return failure, self._digest
        url = f"{self.base_url}/v1/data/{path}"
        body = f'{{"input":{input_text}}}'.encode()
        try:
            async with self._session.get().post(
                url,
                data=body,
                params=QUERY,
                headers={"content-type": "application/json"},
            ) as response:
                status = response.status
                payload = await response.read()
        except TimeoutError:
            late = f"no answer within {self._timeout.total} s"
            return Outcome(failure="timeout", error=late), self._digest
        except aiohttp.ClientConnectionError as exc:
            return Outcome(failure="unavailable", error=_describe(exc)), self._digest
        except aiohttp.ClientError as exc:
            return Outcome(failure="error", error=_describe(exc)), self._digest
        outcome, reported = _read(status, payload)
        if reported is not None:
            self._digest = reported

        return outcome, reported or self._digest


def _read(status: int, payload: bytes) -> tuple[Outcome, str | None]:
    """The outcome in an answer, and the bundle digest it reports if any."""
    if status != 200:
        failure = "unavailable" if status in _UNAVAILABLE else "error"
        said = payload[:MAX_ERROR_CHARS].decode("utf-8", "replace")
        return Outcome(failure=failure, error=f"HTTP {status}: {said}"), None
    try:
        answer = json.loads(payload)
    except ValueError:
        return Outcome(failure="error", error="the answer is not JSON"), None
    if not isinstance(answer, dict):
        return Outcome(failure="error", error="the answer is not a JSON object"), None
    digest = _provenance(answer.get("provenance"))
    if "result" not in answer:
        return Outcome(failure="undefined"), digest

    return Outcome(result=answer["result"]), digest


def _provenance(provenance: Any) -> str | None:
    """``opa:NAME@REVISION,...`` from OPA's provenance, when it names bundles."""
    if not isinstance(provenance, dict):
        return None
    bundles = provenance.get("bundles")
    if not isinstance(bundles, dict) or not bundles:
        return None
    named = [
        f"{name}@{info.get('revision', '')}" if isinstance(info, dict) else name
        for name, info in sorted(bundles.items())
    ]

    return "opa:" + ",".join(named)


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__

    return text[:MAX_ERROR_CHARS]
