"""Policy decisions: the engine interface, the fail-closed allow rule, and regorus.

Only a result that is exactly ``true``, or an object whose ``allow`` is
``true``, allows. ``false`` (or ``allow: false``) is the policy saying no.
Anything else denies as a failure, counted and logged: an undefined result, a
path that names nothing, a non-boolean ``allow``, an evaluation error, and in
remote mode a timeout or an unreachable server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import regorus
import structlog

from penin.ledger import jcs
from penin.observability.metrics import POLICY_METRICS, PolicyMetrics
from penin.policy import _regorus
from penin.policy.errors import PolicyEvalError, PolicyLoadError
from penin.policy.policyset import PackageInfo, PolicySet

log = structlog.get_logger("penin.policy")

DENIED = "denied"
_SEGMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# What eval_rule_as_json writes for an undefined rule.
_UNDEFINED_TEXT = '"<undefined>"'
_NOT_A_RULE = "not a valid rule path"
# Compiled engines a thread keeps, newest last: the serving set and the few
# before it, for decisions still in flight across a reload.
COMPILED_PER_THREAD = 4
# Results an engine remembers, by path and canonical input (least recently
# used dropped first): enough for every key × model × data class a node sees.
MEMO_ENTRIES = 4096
_thread = threading.local()


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    path: str  # Data API form: "penin/router/decision"
    allowed: bool
    result: Any  # the JSON value the policy produced; None when undefined or failed
    reason: str | None  # None when allowed; "denied", or the failure that denied
    policy_digest: str
    input_digest: str  # SHA-256 of the input's RFC 8785 text; "" if it had none
    duration_s: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one evaluation gave, before the allow rule is applied to it."""

    result: Any = None
    failure: str | None = None  # a failure reason; None when a value came back
    error: str | None = None  # what the engine or the server said, for the log


class PolicyEngine(ABC):
    """Decides a policy path for an input, embedded or against a remote OPA."""

    @property
    @abstractmethod
    def digest(self) -> str:
        """The policy-set digest every decision of this engine carries."""

    @abstractmethod
    async def decide(
        self, path: str, input: Mapping[str, Any], text: str | None = None
    ) -> Decision:
        """The decision at ``path`` (``penin/router/decision``); never raises.

        ``text`` is ``input``'s RFC 8785 text when the caller has it already
        (the router's gate writes it from parts it keeps); the engine then
        decides and digests that text instead of writing it again.
        """

    @abstractmethod
    def packages(self) -> list[PackageInfo]:
        """The loaded packages with their digests, by package name."""

    async def close(self) -> None:  # noqa: B027  (most engines hold nothing)
        """Release connections; decisions after this deny as unavailable."""


def judge(result: Any) -> tuple[bool, str | None]:
    """The allow rule for a value the policy produced: (allowed, reason)."""
    if result is True:
        return True, None
    if result is False:
        return False, DENIED
    if isinstance(result, dict):
        allow = result.get("allow")
        if allow is True:
            return True, None
        if allow is False:
            return False, DENIED

    return False, "non_boolean_allow"


def canonical_input(input: Any) -> tuple[str, str]:
    """The input's RFC 8785 text and its SHA-256; PolicyEvalError if not JSON."""
    text = canonical_text(input)

    return text, digest_of(text)


def canonical_text(input: Any) -> str:
    """The input's RFC 8785 text; PolicyEvalError if it is not JSON."""
    try:
        return jcs.dumps(input)
    except (TypeError, ValueError) as exc:
        raise PolicyEvalError(f"the input is not JSON: {exc}") from None


def digest_of(text: str) -> str:
    """The input digest a decision carries: the SHA-256 of the input's text."""
    return hashlib.sha256(text.encode()).hexdigest()


def unexpected(exc: Exception) -> str:
    """The log's text for an error no engine step expected."""
    return f"{type(exc).__name__}: {exc}"


def check_path(path: str) -> str:
    """``path`` if it is slash-separated identifiers; PolicyEvalError if not."""
    segments = path.split("/")
    if not all(_SEGMENT.fullmatch(s) for s in segments):
        raise PolicyEvalError(
            f"policy path {path!r} is not identifiers separated by '/' "
            "(like penin/router/decision)"
        )

    return path


def settle(
    path: str,
    outcome: Outcome,
    *,
    policy_digest: str,
    input_digest: str,
    started: float,
    metrics: PolicyMetrics = POLICY_METRICS,
) -> Decision:
    """Apply the allow rule to ``outcome``; count, time and log the decision."""
    if outcome.failure is None:
        allowed, reason = judge(outcome.result)
    else:
        allowed, reason = False, outcome.failure
    duration = time.perf_counter() - started
    decision = Decision(
        decision_id=os.urandom(16).hex(),
        path=path,
        allowed=allowed,
        result=outcome.result,
        reason=reason,
        policy_digest=policy_digest,
        input_digest=input_digest,
        duration_s=duration,
    )
    metrics.decided(path, allowed, duration)
    if reason is not None and reason != DENIED:
        metrics.failures.labels(metrics.path_label(path), reason).inc()
        log.warning(
            "policy.evaluation_failed",
            path=path,
            reason=reason,
            error=outcome.error,
            decision_id=decision.decision_id,
            policy_digest=policy_digest,
            input_digest=input_digest,
        )

    return decision


class EmbeddedEngine(PolicyEngine):
    """regorus in process: a policy set compiled once per thread that decides.

    A regorus engine may be used only by the thread that made it, so each
    thread compiles the set once, at its first decision, and keeps it; no
    decision parses a policy. The thread that builds this object compiles it
    at once, so that a set regorus refuses fails here, at load.
    """

    def __init__(
        self, policy_set: PolicySet, *, metrics: PolicyMetrics = POLICY_METRICS
    ) -> None:
        self._set = policy_set
        self._metrics = metrics
        self._packages = policy_set.package_infos()
        self._rules: dict[str, str] = {}
        # (path, input text) -> (the value's JSON text, the input digest)
        self._memo: OrderedDict[tuple[str, str], tuple[str, str]] = OrderedDict()
        _compiled(policy_set)

    @property
    def digest(self) -> str:
        return self._set.digest

    @property
    def policy_set(self) -> PolicySet:
        return self._set

    def packages(self) -> list[PackageInfo]:
        return list(self._packages)

    async def decide(
        self, path: str, input: Mapping[str, Any], text: str | None = None
    ) -> Decision:
        # Microseconds of CPU: cheaper inline than any hand-off to a thread.
        return self.evaluate(path, input, text)

    def evaluate(self, path: str, input: Any, text: str | None = None) -> Decision:
        """The decision at ``path`` for ``input`` (whose RFC 8785 text is
        ``text``, when the caller has it), in the calling thread."""
        started = time.perf_counter()
        input_digest = ""
        try:
            if text is None:
                text = canonical_text(input)
            remembered = self._recall(path, text)
            if remembered is None:
                input_digest = digest_of(text)
                outcome = self._first_time(path, text, input_digest)
            else:
                outcome, input_digest = remembered
        except PolicyEvalError as exc:
            outcome = Outcome(failure="error", error=str(exc))
        except Exception as exc:  # a decision fails closed, it never raises
            outcome = Outcome(failure="error", error=unexpected(exc))

        return settle(
            path,
            outcome,
            policy_digest=self._set.digest,
            input_digest=input_digest,
            started=started,
            metrics=self._metrics,
        )

    def _rule(self, path: str) -> str:
        rule = self._rules.get(path)
        if rule is None:
            rule = "data." + check_path(path).replace("/", ".")
            self._rules[path] = rule

        return rule

    def _recall(self, path: str, input_text: str) -> tuple[Outcome, str] | None:
        """The outcome and input digest of a question answered before, or None.

        A decision is a pure function of the policy set and the input: every
        built-in that reads the clock, the network or a random source is
        refused at load. So a value already produced is produced again from
        memory, as text (each decision parses its own copy), with the input's
        digest, which is a function of the text alone. Keyed by path: a
        well-formed path names one rule, and a malformed one keeps nothing.
        """
        key = (path, input_text)
        known = self._memo.get(key)
        if known is None:
            return None
        self._memo.move_to_end(key)
        raw, input_digest = known

        return Outcome(result=json.loads(raw)), input_digest

    def _first_time(self, path: str, input_text: str, input_digest: str) -> Outcome:
        """Ask regorus, and remember a value it produced. Failures are not
        kept: they are rare, and each is logged as it happens."""
        outcome, raw = self._run(self._rule(path), input_text)
        if raw is not None:
            self._memo[(path, input_text)] = (raw, input_digest)
            if len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)

        return outcome

    def _run(self, rule: str, input_text: str) -> tuple[Outcome, str | None]:
        engine = _compiled(self._set)
        try:
            engine.set_input_json(input_text)
            raw = engine.eval_rule_as_json(rule)
            # regorus writes an undefined rule as this string; only its
            # Python form (None) tells it from a rule whose value it is.
            if raw == _UNDEFINED_TEXT and engine.eval_rule(rule) is None:
                return Outcome(failure="undefined"), None
        except BaseException as exc:
            if not _regorus.is_engine_failure(exc):
                raise
            if str(exc).startswith(_NOT_A_RULE):
                return _query(engine, rule), None
            error = str(_regorus.read_message(exc))
            return Outcome(failure="error", error=error), None

        return Outcome(result=json.loads(raw)), raw


def _query(engine: regorus.Engine, rule: str) -> Outcome:
    """Evaluate a path that names no rule (a package, data, nothing) as a query.

    Written with brackets, so that a segment that is a keyword (``every``)
    reads as a name. Only such paths take this slower way.
    """
    query = "data" + "".join(f'["{s}"]' for s in rule.split(".")[1:])
    try:
        answer = json.loads(engine.eval_query_as_json(query))
    except BaseException as exc:
        if not _regorus.is_engine_failure(exc):
            raise
        return Outcome(failure="error", error=str(_regorus.read_message(exc)))
    results = answer.get("result") or []
    if not results:
        return Outcome(failure="no_result")

    return Outcome(result=results[0]["expressions"][0]["value"])


def compile_policy_set(policy_set: PolicySet) -> regorus.Engine:
    """A regorus engine holding every module and the data of ``policy_set``."""
    engine = _regorus.new_engine()
    try:
        for module in policy_set.modules:
            engine.add_policy(module.path, module.text)
        if policy_set.data:
            engine.add_data_json(json.dumps(policy_set.data))
    except BaseException as exc:
        if not _regorus.is_engine_failure(exc):
            raise
        said = _regorus.read_message(exc)
        raise PolicyLoadError(said.file or "data", said.line, said.reason) from None

    return engine


def _compiled(policy_set: PolicySet) -> regorus.Engine:
    """This thread's engine for ``policy_set``, compiled on first use."""
    engines: dict[str, regorus.Engine] | None = getattr(_thread, "engines", None)
    if engines is None:
        engines = _thread.engines = {}
    engine = engines.get(policy_set.digest)
    if engine is None:
        engine = compile_policy_set(policy_set)
        engines[policy_set.digest] = engine
        # Dropped here, in the thread that made it, as regorus requires.
        while len(engines) > COMPILED_PER_THREAD:
            del engines[next(iter(engines))]

    return engine
