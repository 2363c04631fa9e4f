"""The differential corpus: each case gives, under the engine, the result OPA specifies.

A case is a directory (tests/policy/corpus/NAME) holding ``policy.rego`` (and
any other module), optional ``data.json`` and ``input.json``, ``query.txt``
(a rule path such as ``data.corpus.every.allow``) and ``expected.json``:
``{"result": ...}``, ``{"undefined": true}``, ``{"error": CODE}`` (OPA's
error code; OPA evaluated with strict built-in errors, as the engine does), or
``{"refused": {"line": N, "reason": TEXT}}`` for a set that must not load.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from penin.policy.analysis import parse_module
from penin.policy.builtins import ALLOWED_BUILTINS
from penin.policy.engine import EmbeddedEngine
from penin.policy.errors import PolicyLoadError
from penin.policy.policyset import load_bundle

CORPUS = Path(__file__).with_name("corpus")
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
UNDEFINED = ("undefined", "no_result")


@dataclass(frozen=True)
class Case:
    directory: Path
    path: str  # Data API form
    input: Any
    expected: dict[str, Any]


def read_case(name: str) -> Case:
    directory = CORPUS / name
    query = (directory / "query.txt").read_text().strip()
    assert query.startswith("data."), f"{name}: query.txt must name a data path"
    input_file = directory / "input.json"

    return Case(
        directory=directory,
        path=query.removeprefix("data.").replace(".", "/"),
        input=json.loads(input_file.read_text()) if input_file.exists() else {},
        expected=json.loads((directory / "expected.json").read_text()),
    )


def typed(value: Any) -> Any:
    """``value`` with each number and boolean tagged, so that 1, 1.0 and True
    differ (as they do in JSON) except 1 and 1.0 (which JSON does not tell
    apart)."""
    if isinstance(value, bool):
        return ("boolean", value)
    if isinstance(value, int | float):
        return ("number", float(value))
    if isinstance(value, list):
        return [typed(v) for v in value]
    if isinstance(value, dict):
        return {k: typed(v) for k, v in value.items()}

    return value


def check(case: Case) -> None:
    """Raise AssertionError unless the engine gives what ``case`` expects."""
    expected = case.expected
    if "refused" in expected:
        with pytest.raises(PolicyLoadError) as refused:
            load_bundle(case.directory)
        assert refused.value.file == str(case.directory / "policy.rego")
        assert refused.value.line == expected["refused"]["line"], refused.value
        assert expected["refused"]["reason"] in refused.value.reason
        return

    decision = EmbeddedEngine(load_bundle(case.directory)).evaluate(
        case.path, case.input
    )

    if "result" in expected:
        assert decision.reason not in (*UNDEFINED, "error"), decision
        assert typed(decision.result) == typed(expected["result"])
    elif expected.get("undefined"):
        assert decision.reason in UNDEFINED, decision
        assert decision.result is None
    else:
        assert set(expected) == {"error"}, f"unknown expectation {expected}"
        assert decision.reason == "error", decision


@pytest.mark.parametrize("name", CASES)
def test_each_case_gives_the_result_opa_specifies(name: str) -> None:
    check(read_case(name))


def test_every_allowed_builtin_is_called_by_a_case_that_passes() -> None:
    called: set[str] = set()
    for name in CASES:
        case = read_case(name)
        if "refused" in case.expected:
            continue
        check(case)
        for module in load_bundle(case.directory).modules:
            info = parse_module(module.path, module.text)
            called |= {call.name for rule in info.rules for call in rule.calls}

    assert sorted(ALLOWED_BUILTINS - called) == []


def test_the_corpus_covers_the_features_the_engine_promises() -> None:
    features = (
        "every", "some_in", "comprehension_array", "comprehension_set",
        "comprehension_object", "functions_with_several_bodies", "defaults",
        "else_chain", "partial_set", "partial_object", "with_input",
        "with_data", "with_function", "refuse_http_send", "refuse_v0",
        "refuse_parse_error", "refuse_time_now_ns", "refuse_opa_runtime",
        "refuse_net_builtins",
    )  # fmt: skip

    missing = [f for f in features if not any(n.startswith(f) for n in CASES)]

    assert missing == []
