"""What each Rego module declares and calls, read from regorus's syntax tree.

A policy set is refused at load, with ``file:line`` and a reason, for what
would not mean under regorus what it means under OPA, or could fail open:
pre-1.0 syntax and parse errors (regorus in v1 mode refuses them), a call to
a built-in outside ``builtins.ALLOWED_BUILTINS``, a call to a function through
an import alias (regorus does not resolve it and fails at evaluation), rules
that depend on themselves (OPA refuses recursion; regorus would overflow its
stack on a recursive function and kill the process), and data that overlaps
a rule (OPA refuses the conflict; regorus lets the data win).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from penin.policy import _regorus
from penin.policy.builtins import ALLOWED_BUILTINS, refusal
from penin.policy.errors import PolicyLoadError

Segments = tuple[str, ...]
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REF_KINDS = ("Var", "RefDot", "RefBrack")


@dataclass(frozen=True, slots=True)
class Ref:
    """A name as the policy writes it (``count``, ``data.lib.f``) and its line."""

    segments: Segments
    line: int

    @property
    def name(self) -> str:
        return ".".join(self.segments)


@dataclass(frozen=True, slots=True)
class Rule:
    """A rule or function: its path from the data root, and what it refers to."""

    path: Segments
    line: int
    function: bool
    refs: tuple[Ref, ...] = ()
    calls: tuple[Ref, ...] = ()
    with_values: tuple[Ref, ...] = ()


@dataclass(frozen=True, slots=True)
class ModuleInfo:
    path: str
    package: Segments  # from the data root: ("data", "penin", "router")
    imports: Mapping[str, Segments]  # alias -> the imported path
    rules: tuple[Rule, ...]

    @property
    def package_name(self) -> str:
        return ".".join(self.package[1:])


def parse_module(path: str, text: str) -> ModuleInfo:
    """Parse one module as Rego v1; PolicyLoadError names the file and line."""
    engine = _regorus.new_engine()
    try:
        engine.add_policy(path, text)
        tree = json.loads(engine.get_ast_as_json())[0]["ast"]
    except BaseException as exc:
        if not _regorus.is_engine_failure(exc):
            raise
        said = _regorus.read_message(exc)
        raise PolicyLoadError(path, said.line, said.reason) from None
    package = ("data", *_package(path, tree["package"]))
    raw = text.encode()

    return ModuleInfo(
        path=path,
        package=package,
        imports=dict(_import(item, raw) for item in tree.get("imports", [])),
        rules=tuple(_rule(package, item) for item in tree.get("rules", [])),
    )


def check_policy_set(modules: Sequence[ModuleInfo], data: Mapping[str, Any]) -> None:
    """Refuse calls, recursion and data conflicts across the whole set."""
    index = _Index(modules)
    for module in modules:
        for rule in module.rules:
            _check_calls(index, module, rule)
    _check_recursion(index)
    _check_data(modules, data)


# -- reading the tree ---------------------------------------------------------


def _package(path: str, node: dict[str, Any]) -> Segments:
    segments, dynamic = _chain(node["refr"])
    line = node["span"]["line"]
    if dynamic or not all(_IDENTIFIER.fullmatch(s) for s in segments):
        raise PolicyLoadError(path, line, "a package name must be dotted identifiers")

    return segments


def _import(node: dict[str, Any], raw: bytes) -> tuple[str, Segments]:
    segments, _ = _chain(node["refr"])
    alias = node.get("as")
    if alias is None:
        return segments[-1], segments

    return raw[alias["start"] : alias["end"]].decode(), segments


def _rule(package: Segments, item: dict[str, Any]) -> Rule:
    kind, node = next(iter(item.items()))
    if kind == "Default":
        own, _ = _chain(node["refr"])
        return Rule(package + own, node["span"]["line"], function=False)
    ((head_kind, head),) = node["head"].items()
    own, _ = _chain(head["refr"])
    body = {
        "head": {k: v for k, v in head.items() if k not in ("refr", "args")},
        "bodies": node.get("bodies", []),
    }
    found = _Found()
    found.walk(body)

    return Rule(
        path=package + own,
        line=node["span"]["line"],
        function=head_kind == "Func",
        refs=tuple(found.refs),
        calls=tuple(found.calls),
        with_values=tuple(found.with_values),
    )


def _chain(node: dict[str, Any]) -> tuple[Segments, list[dict[str, Any]]]:
    """A reference's static prefix, and the expressions in it past that prefix."""
    ((kind, body),) = node.items()
    if kind == "Var":
        return (body["value"],), []
    if kind not in ("RefDot", "RefBrack"):
        return (), [node]  # a reference into a literal or a call's result
    base, dynamic = _chain(body["refr"])
    if kind == "RefDot":
        step: str | None = body["field"][1]
    else:
        index = body["index"]
        step = index["String"]["value"] if "String" in index else None
        if step is None:
            dynamic = [*dynamic, index]
    if dynamic:
        return base, dynamic
    assert step is not None

    return (*base, step), dynamic


def _line(node: dict[str, Any]) -> int:
    ((_, body),) = node.items()
    line: int = body["span"]["line"]

    return line


@dataclass
class _Found:
    """The references, calls and ``with`` values inside a rule's head and bodies."""

    refs: list[Ref] = field(default_factory=list)
    calls: list[Ref] = field(default_factory=list)
    with_values: list[Ref] = field(default_factory=list)

    def walk(self, node: Any) -> None:
        if isinstance(node, list):
            for item in node:
                self.walk(item)
            return
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            if key in _REF_KINDS:
                self._ref({key: value})
            elif key == "Call":
                self._call(value)
            elif key == "with_mods":
                self._with(value)
            else:
                self.walk(value)

    def _ref(self, node: dict[str, Any]) -> None:
        segments, dynamic = _chain(node)
        if segments:
            self.refs.append(Ref(segments, _line(node)))
        self.walk(dynamic)

    def _call(self, node: dict[str, Any]) -> None:
        segments, dynamic = _chain(node["fcn"])
        ref = Ref(segments, _line(node["fcn"]))
        self.calls.append(ref)
        self.refs.append(ref)
        self.walk(dynamic)
        self.walk(node.get("params", []))

    def _with(self, mods: list[dict[str, Any]]) -> None:
        for mod in mods:
            value = mod["as"]
            if next(iter(value)) in _REF_KINDS:
                segments, dynamic = _chain(value)
                self.with_values.append(Ref(segments, _line(value)))
                self.walk(dynamic)
            else:
                self.walk(value)


# -- the checks ---------------------------------------------------------------


class _Index:
    """Every rule and function of the set, by path."""

    def __init__(self, modules: Sequence[ModuleInfo]) -> None:
        self.rules: dict[Segments, list[tuple[ModuleInfo, Rule]]] = {}
        for module in modules:
            for rule in module.rules:
                self.rules.setdefault(rule.path, []).append((module, rule))
        self.functions = {p for p, rs in self.rules.items() if rs[0][1].function}

    def resolve(self, module: ModuleInfo, segments: Segments) -> Segments | None:
        """The path a name refers to from ``module``; None for input and locals."""
        root = segments[0]
        if root == "data":
            return segments
        if root == "input":
            return None
        if root in module.imports:
            return module.imports[root] + segments[1:]

        return module.package + segments

    def touched(self, target: Segments) -> Iterator[Segments]:
        """Rule paths that a reference to ``target`` reads."""
        for path in self.rules:
            depth = min(len(path), len(target))
            if path[:depth] == target[:depth]:
                yield path


def _check_calls(index: _Index, module: ModuleInfo, rule: Rule) -> None:
    for call in rule.calls:
        root = call.segments[0]
        imported = module.imports.get(root)
        if imported is not None and imported[0] == "data":
            direct = ".".join(imported + call.segments[1:])
            raise PolicyLoadError(
                module.path,
                call.line,
                f"calls {call.name} through the import of {'.'.join(imported)}; "
                f"call it as {direct}(...), the engine does not resolve "
                "functions through imports",
            )
        if index.resolve(module, call.segments) in index.functions:
            continue
        if root == "data" or call.name not in ALLOWED_BUILTINS:
            known = root != "data" and call.name in engine_builtins()
            raise PolicyLoadError(
                module.path, call.line, refusal(call.name, builtin=known)
            )
    for value in rule.with_values:
        is_rule = index.resolve(module, value.segments) in index.rules
        if (
            not is_rule
            and value.name in engine_builtins()
            and value.name not in ALLOWED_BUILTINS
        ):
            raise PolicyLoadError(
                module.path, value.line, refusal(value.name, builtin=True)
            )


def _check_recursion(index: _Index) -> None:
    edges: dict[Segments, set[Segments]] = {}
    for path, defined in index.rules.items():
        targets = edges.setdefault(path, set())
        for module, rule in defined:
            for ref in rule.refs:
                resolved = index.resolve(module, ref.segments)
                if resolved is not None:
                    targets.update(index.touched(resolved))
    cycle = _find_cycle(edges)
    if cycle is None:
        return
    module, rule = index.rules[cycle[0]][0]
    names = " -> ".join(".".join(p[1:]) for p in cycle)
    raise PolicyLoadError(
        module.path,
        rule.line,
        f"rule {'.'.join(rule.path[1:])} depends on itself ({names}); "
        "OPA refuses recursive rules",
    )


def _find_cycle(edges: Mapping[Segments, set[Segments]]) -> list[Segments] | None:
    """A cycle of the dependency graph as a path back to its start, if any."""
    done: set[Segments] = set()
    for start in sorted(edges):
        if start in done:
            continue
        trail: list[Segments] = [start]
        on_trail = {start}
        stack = [iter(sorted(edges[start]))]
        while stack:
            step = next(stack[-1], None)
            if step is None:
                stack.pop()
                on_trail.discard(trail.pop())
                continue
            if step in on_trail:
                return [*trail[trail.index(step) :], step]
            if step in done:
                continue
            done.add(step)
            trail.append(step)
            on_trail.add(step)
            stack.append(iter(sorted(edges.get(step, ()))))
        done.add(start)

    return None


def _check_data(modules: Sequence[ModuleInfo], data: Mapping[str, Any]) -> None:
    for module in modules:
        for rule in module.rules:
            if _holds_data(data, rule.path[1:], len(module.package) - 1):
                _data_conflict(module, rule)


def _holds_data(data: Mapping[str, Any], steps: Segments, package: int) -> bool:
    """True when data overlaps a rule at ``steps`` (its first ``package`` steps
    name its package): data under the rule's name, or a non-object on the way."""
    node: Any = data
    for depth, step in enumerate(steps):
        if not isinstance(node, Mapping):
            return True
        if step not in node:
            return False
        if depth >= package:
            return True
        node = node[step]

    return True


def _data_conflict(module: ModuleInfo, rule: Rule) -> None:
    name = ".".join(rule.path)
    raise PolicyLoadError(
        module.path,
        rule.line,
        f"rule {name} overlaps data from a data.json; "
        "a path holds either rules or data, not both",
    )


@functools.cache
def engine_builtins() -> frozenset[str]:
    """Every built-in regorus implements, as it lists them itself."""
    engine = _regorus.new_engine()
    engine.add_policy("builtins.rego", "package builtins\nnames := opa.runtime()\n")
    runtime = json.loads(engine.eval_rule_as_json("data.builtins.names"))

    return frozenset(runtime["builtins"])
