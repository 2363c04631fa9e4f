"""Runs the ``test_`` rules of Rego modules and reports each one, as ``opa test`` does.

A test is a rule whose name starts with ``test_``, in any package; it passes
when its value is exactly ``true``. Undefined, ``false`` or any other value
fails it; an evaluation error fails it too and carries the engine's message.
A test name defined more than once in a package (a ``default`` value aside)
fails without being run: its definitions would be joined into one rule, and a
passing one would hide a failing one.

This module needs only regorus, so that it can run any set of modules, shipped
or not, before the engine that serves them exists.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import regorus

TEST_PREFIX = "test_"


@dataclass(frozen=True, slots=True)
class TestResult:
    """One test rule's outcome; ``error`` holds the engine's message on an error."""

    __test__ = False  # a result, not a pytest test class

    package: str
    name: str
    passed: bool
    error: str | None


@dataclass(frozen=True, slots=True)
class _Definition:
    package: str
    name: str
    file: str
    line: int
    default: bool  # a `default` value, part of the rule rather than a test


def run_tests(
    modules: Sequence[tuple[str, str]], data: Mapping[str, Any]
) -> list[TestResult]:
    """Run every test rule of ``modules`` (file path, text) over ``data``.

    Results come in the order of the modules, then of the lines. Raises
    ValueError naming the file when a module does not parse.
    """
    engine = _engine(modules, data)
    definitions = list(_test_definitions(engine))

    results = []
    for package, name in dict.fromkeys((d.package, d.name) for d in definitions):
        places = [
            d
            for d in definitions
            if (d.package, d.name) == (package, name) and not d.default
        ]
        if len(places) > 1:
            results.append(_duplicate(package, name, places))
        else:
            results.append(_run(engine, package, name))

    return results


def _engine(
    modules: Sequence[tuple[str, str]], data: Mapping[str, Any]
) -> regorus.Engine:
    engine = regorus.Engine()
    engine.set_rego_v0(False)
    for path, text in modules:
        try:
            engine.add_policy(path, text)
        except RuntimeError as exc:
            raise ValueError(f"{path} does not load: {_message(exc)}") from exc
    # Through JSON: the binding takes a Python bool for the number 1.
    engine.add_data_json(json.dumps(data))

    return engine


def _test_definitions(engine: regorus.Engine) -> Iterator[_Definition]:
    for module in json.loads(engine.get_ast_as_json()):
        file = module["source"]["file"]
        package = ".".join(_ref_path(module["ast"]["package"]["refr"]) or [])
        for rule in module["ast"]["rules"]:
            head = _test_head(rule)
            if head is not None:
                name, line, default = head
                yield _Definition(package, name, file, line, default)


def _test_head(rule: Mapping[str, Any]) -> tuple[str, int, bool] | None:
    """The name, line and defaultness of a rule that is a test, else None.

    Functions, default functions included, are never tests.
    """
    if "Default" in rule:
        default = rule["Default"]
        path, args, span = _ref_path(default["refr"]), default["args"], default["span"]
    else:
        ((kind, head),) = rule["Spec"]["head"].items()
        path, span = _ref_path(head["refr"]), head["span"]
        args = head["args"] if kind == "Func" else []
    if args or not path or not path[-1].startswith(TEST_PREFIX):
        return None

    return ".".join(path), int(span["line"]), "Default" in rule


def _ref_path(ref: Mapping[str, Any]) -> list[str] | None:
    """The names of a static reference (``a.b.c``), else None."""
    if "Var" in ref:
        return [ref["Var"]["value"]]
    if "RefDot" in ref:
        parent = _ref_path(ref["RefDot"]["refr"])
        return None if parent is None else [*parent, ref["RefDot"]["field"][1]]

    return None


def _run(engine: regorus.Engine, package: str, name: str) -> TestResult:
    try:
        value = engine.eval_rule(f"data.{package}.{name}")
    except BaseException as exc:
        # A panic of the engine's Rust code is a BaseException: it fails this
        # test like any error, where anything else (an interrupt) goes on.
        if not isinstance(exc, Exception) and type(exc).__name__ != "PanicException":
            raise
        return TestResult(package, name, passed=False, error=_message(exc))

    return TestResult(package, name, passed=value is True, error=None)


def _duplicate(package: str, name: str, places: list[_Definition]) -> TestResult:
    where = ", ".join(f"{d.file}:{d.line}" for d in places)
    error = (
        f"{name} is defined {len(places)} times ({where}); give each test its "
        "own name, or a passing definition hides a failing one"
    )

    return TestResult(package, name, passed=False, error=error)


def _message(exc: BaseException) -> str:
    """The engine's message without the native stack trace it may append."""
    return str(exc).split("Stack backtrace:", 1)[0].strip()
