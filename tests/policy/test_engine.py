"""The embedded engine: the allow rule, fail-closed failures, digests, no re-parsing."""

from __future__ import annotations

import asyncio
import hashlib
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import regorus
from bundles import decisions, failures, write_bundle
from prometheus_client import CollectorRegistry
from structlog.testing import capture_logs

from penin.ledger import jcs
from penin.observability.metrics import POLICY_PATH_SERIES, PolicyMetrics
from penin.policy import _regorus
from penin.policy import engine as engine_module
from penin.policy.engine import EmbeddedEngine
from penin.policy.policyset import load_bundle


def engine_for(tmp_path: Path, text: str, **files: str) -> EmbeddedEngine:
    """An engine over one module (``policy.rego``) and any other files."""
    root = write_bundle(tmp_path / "bundle", {"policy.rego": text, **files})

    return EmbeddedEngine(load_bundle(root))


GATE = """package gate

default allow := false

allow if input.role == "admin"

decision := {"allow": allow, "role": input.role}
"""


# -- the allow rule --------------------------------------------------------------


def test_true_allows_and_names_the_policy_set_and_input(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)
    before = decisions("gate/allow", "allow")

    decision = engine.evaluate("gate/allow", {"role": "admin"})

    assert decision.allowed
    assert decision.reason is None
    assert decision.result is True
    assert decision.path == "gate/allow"
    assert decision.policy_digest == engine.digest
    expected = hashlib.sha256(jcs.dumps({"role": "admin"}).encode()).hexdigest()
    assert decision.input_digest == expected
    assert 0 < decision.duration_s < 1
    assert decisions("gate/allow", "allow") == before + 1


def test_an_object_allows_through_its_allow_field(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)

    allowed = engine.evaluate("gate/decision", {"role": "admin"})
    denied = engine.evaluate("gate/decision", {"role": "route"})

    assert allowed.allowed
    assert allowed.result == {"allow": True, "role": "admin"}
    assert not denied.allowed
    assert denied.reason == "denied"
    assert denied.result == {"allow": False, "role": "route"}


def test_a_policy_that_says_no_denies_without_a_failure(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)
    before = failures("gate/allow", "undefined")

    with capture_logs() as logs:
        decision = engine.evaluate("gate/allow", {"role": "route"})

    assert not decision.allowed
    assert decision.reason == "denied"
    assert decision.result is False
    assert logs == []
    assert failures("gate/allow", "undefined") == before


def test_every_decision_has_its_own_id(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)

    ids = {
        engine.evaluate("gate/allow", {"role": "admin"}).decision_id for _ in range(50)
    }

    assert len(ids) == 50


def test_decide_gives_the_same_decision_on_the_event_loop(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)

    decision = asyncio.run(engine.decide("gate/decision", {"role": "admin"}))

    assert decision.allowed
    assert decision.result == {"allow": True, "role": "admin"}


# -- fail-closed ------------------------------------------------------------------

FAILING = {
    "conflict": (
        'package bad\n\ntier := "a" if input.a\n\ntier := "b" if input.b\n',
        "bad/tier",
        {"a": True, "b": True},
        "error",
        "conflicts",
    ),
    "division_by_zero": (
        "package bad\n\nallow := input.spent / input.limit < 1\n",
        "bad/allow",
        {"spent": 1, "limit": 0},
        "error",
        "divide by zero",
    ),
    "undefined": (
        'package bad\n\nallow if input.role == "admin"\n',
        "bad/allow",
        {},
        "undefined",
        None,
    ),
    "path_names_nothing": (
        "package bad\n\nallow := true\n",
        "bad/alow",
        {},
        "no_result",
        None,
    ),
    "package_names_nothing": (
        "package bad\n\nallow := true\n",
        "other/allow",
        {},
        "no_result",
        None,
    ),
    "string_allow": (
        'package bad\n\nallow := "yes"\n',
        "bad/allow",
        {},
        "non_boolean_allow",
        None,
    ),
    "number_allow_in_object": (
        'package bad\n\ndecision := {"allow": 1}\n',
        "bad/decision",
        {},
        "non_boolean_allow",
        None,
    ),
    "object_without_allow": (
        'package bad\n\ndecision := {"verdict": "promote"}\n',
        "bad/decision",
        {},
        "non_boolean_allow",
        None,
    ),
    "the_text_regorus_writes_for_undefined": (
        'package bad\n\nallow := "<undefined>"\n',
        "bad/allow",
        {},
        "non_boolean_allow",
        None,
    ),
    "input_that_is_not_json": (
        "package bad\n\nallow := true\n",
        "bad/allow",
        {"ratio": float("nan")},
        "error",
        "the input is not JSON",
    ),
    "path_that_is_not_a_path": (
        "package bad\n\nallow := true\n",
        "bad.allow",
        {},
        "error",
        "is not identifiers separated by '/'",
    ),
}


@pytest.mark.parametrize("case", FAILING.keys())
def test_each_failure_denies_counted_and_logged(tmp_path: Path, case: str) -> None:
    text, path, given, reason, error = FAILING[case]
    engine = engine_for(tmp_path, text)
    failed_before = failures(path, reason)
    denied_before = decisions(path, "deny")

    with capture_logs() as logs:
        decision = engine.evaluate(path, given)

    assert not decision.allowed
    assert decision.reason == reason
    assert failures(path, reason) == failed_before + 1
    assert decisions(path, "deny") == denied_before + 1
    (event,) = logs
    assert event["event"] == "policy.evaluation_failed"
    assert event["log_level"] == "warning"
    assert event["path"] == path
    assert event["reason"] == reason
    assert event["decision_id"] == decision.decision_id
    if error is not None:
        assert error in event["error"]
    assert "input" not in event


def test_an_evaluation_error_names_the_file_and_line(tmp_path: Path) -> None:
    text, path, given, _, _ = FAILING["division_by_zero"]
    engine = engine_for(tmp_path, text)

    with capture_logs() as logs:
        engine.evaluate(path, given)

    policy_file = tmp_path / "bundle" / "policy.rego"
    assert logs[0]["error"] == f"{policy_file}:3: divide by zero"


def test_a_failed_decision_still_carries_both_digests(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, 'package bad\n\nallow if input.role == "admin"\n')

    decision = engine.evaluate("bad/allow", {"role": "x"})

    assert decision.reason == "undefined"
    assert decision.result is None
    assert decision.policy_digest == engine.digest
    assert len(decision.input_digest) == 64


def test_an_input_that_is_not_json_has_no_input_digest(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, "package bad\n\nallow := true\n")

    decision = engine.evaluate("bad/allow", {"when": object()})

    assert decision.reason == "error"
    assert decision.input_digest == ""


# -- digests ----------------------------------------------------------------------


def test_the_policy_digest_is_stable_and_follows_modules_and_data(
    tmp_path: Path,
) -> None:
    data = '{"limits": {"daily": 5}}'
    first = load_bundle(
        write_bundle(tmp_path / "a", {"p.rego": GATE, "data.json": data})
    )
    again = load_bundle(tmp_path / "a")
    edited = load_bundle(
        write_bundle(tmp_path / "a", {"p.rego": GATE.replace("admin", "root")})
    )
    new_data = load_bundle(
        write_bundle(
            tmp_path / "a", {"p.rego": GATE, "data.json": data.replace("5", "6")}
        )
    )

    assert first.digest == again.digest
    assert len({first.digest, edited.digest, new_data.digest}) == 3


def test_the_input_digest_ignores_key_order_and_follows_values(tmp_path: Path) -> None:
    engine = engine_for(tmp_path, GATE)

    one = engine.evaluate("gate/allow", {"role": "admin", "n": 1})
    reordered = engine.evaluate("gate/allow", {"n": 1, "role": "admin"})
    whole_float = engine.evaluate("gate/allow", {"n": 1.0, "role": "admin"})
    changed = engine.evaluate("gate/allow", {"n": 2, "role": "admin"})

    assert one.input_digest == reordered.input_digest == whole_float.input_digest
    assert changed.input_digest != one.input_digest


# -- compiled once ------------------------------------------------------------------


class CountingEngine:
    """A regorus engine that counts the modules it is given to parse."""

    parsed = 0
    lock = threading.Lock()

    def __init__(self) -> None:
        self._engine = regorus.Engine()

    def add_policy(self, path: str, text: str) -> None:
        with self.lock:
            CountingEngine.parsed += 1
        self._engine.add_policy(path, text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)


@pytest.fixture
def counting(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    monkeypatch.setattr(_regorus, "new_engine", CountingEngine)
    CountingEngine.parsed = 0

    return lambda: CountingEngine.parsed


def test_decisions_never_parse_a_policy(
    tmp_path: Path, counting: Callable[[], int]
) -> None:
    engine = engine_for(tmp_path, GATE, **{"lib.rego": "package lib\n\nx := 1\n"})
    after_load = counting()

    for n in range(200):
        engine.evaluate("gate/allow", {"role": "admin", "n": n})

    assert after_load > 0
    assert counting() == after_load


def test_each_thread_compiles_once_and_decides_on_its_own_engine(
    tmp_path: Path, counting: Callable[[], int]
) -> None:
    engine = engine_for(tmp_path, GATE, **{"lib.rego": "package lib\n\nx := 1\n"})
    after_load = counting()
    results: list[bool] = []
    errors: list[BaseException] = []

    def decide_many(thread: int) -> None:
        # Inputs differ by thread: a value already decided is remembered.
        try:
            for n in range(100):
                question = {"role": "admin", "n": n, "thread": thread}
                results.append(engine.evaluate("gate/allow", question).allowed)
        except BaseException as exc:  # a panic of regorus is a BaseException
            errors.append(exc)

    threads = [threading.Thread(target=decide_many, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert errors == []
    assert results == [True] * 300
    assert counting() == after_load + 3 * len(engine.policy_set.modules)


def test_a_repeated_question_is_answered_from_memory_with_a_copy_of_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(tmp_path, GATE)
    runs = texts_run(engine, monkeypatch)
    first = engine.evaluate("gate/decision", {"role": "admin"})
    first.result["allow"] = "tampered"
    second = engine.evaluate("gate/decision", {"role": "admin"})
    other = engine.evaluate("gate/decision", {"role": "guest"})

    assert len(runs) == 2  # admin once, guest once
    assert second.allowed
    assert second.result["allow"] is True
    assert second.decision_id != first.decision_id
    assert not other.allowed


def texts_run(engine: EmbeddedEngine, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The input texts ``engine`` will hand regorus, as it hands them."""
    runs: list[str] = []
    run = engine._run

    def counted(rule: str, text: str) -> Any:
        runs.append(text)
        return run(rule, text)

    monkeypatch.setattr(engine, "_run", counted)

    return runs


def test_a_question_answered_from_memory_names_its_input_by_the_same_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(tmp_path, GATE)
    runs = texts_run(engine, monkeypatch)
    question = {"role": "admin", "n": 1}
    text = jcs.dumps(question)

    first = engine.evaluate("gate/decision", question)
    reordered = engine.evaluate("gate/decision", {"n": 1.0, "role": "admin"})
    given_text = engine.evaluate("gate/decision", question, text)

    assert runs == [text]
    expected = hashlib.sha256(text.encode()).hexdigest()
    assert first.input_digest == reordered.input_digest == expected
    assert given_text.input_digest == expected
    assert first.result == reordered.result == given_text.result


def test_a_new_engine_for_the_same_set_remembers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Policies.reload builds a new engine: this is what makes a reload forget.
    first = engine_for(tmp_path, GATE)
    first.evaluate("gate/decision", {"role": "admin"})
    second = EmbeddedEngine(first.policy_set)
    runs = texts_run(second, monkeypatch)

    decision = second.evaluate("gate/decision", {"role": "admin"})

    assert runs == [jcs.dumps({"role": "admin"})]
    assert decision.allowed


def test_an_unexpected_failure_inside_the_engine_denies_as_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = engine_for(tmp_path, GATE)

    def broken(policy_set: object) -> None:
        raise MemoryError("no room for the engine")

    monkeypatch.setattr(engine_module, "_compiled", broken)
    with capture_logs() as logs:
        decision = engine.evaluate("gate/allow", {"role": "admin"})

    assert not decision.allowed
    assert decision.reason == "error"
    assert logs[0]["error"] == "MemoryError: no room for the engine"


# -- the package ----------------------------------------------------------------------


def test_the_package_exports_exactly_its_public_names() -> None:
    import penin.policy

    exported = {name: getattr(penin.policy, name) for name in penin.policy.__all__}

    assert exported["EmbeddedEngine"] is EmbeddedEngine
    assert set(exported) == set(penin.policy._MODULES)
    with pytest.raises(AttributeError, match="no attribute 'Engine'"):
        penin.policy.Engine  # noqa: B018


def test_reading_the_settings_loads_neither_regorus_nor_an_http_client() -> None:
    script = (
        "import sys, penin.config; "
        "print(sorted({'regorus', 'aiohttp'} & set(sys.modules)))"
    )

    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert done.stdout.strip() == "[]"


def test_paths_beyond_the_series_limit_share_the_label_other(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    root = write_bundle(tmp_path / "bundle", {"policy.rego": GATE})
    engine = EmbeddedEngine(load_bundle(root), metrics=PolicyMetrics(registry))

    for n in range(POLICY_PATH_SERIES + 5):
        engine.evaluate(f"nowhere/rule_{n}", {})

    labelled = {
        sample.labels["path"]
        for family in registry.collect()
        if family.name == "penin_policy_decisions"
        for sample in family.samples
    }
    assert "other" in labelled
    assert len(labelled) == POLICY_PATH_SERIES + 1
