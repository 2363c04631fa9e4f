"""A policy set: the shipped bundle with the user's directory over it, checked.

Both are laid out as OPA bundles: every ``*.rego`` file below the root is a
module, and a ``data.json`` in directory ``a/b`` is the document at
``data.a.b``. A user module whose package is a shipped package replaces every
shipped module of that package and the shipped data at its path; a user
``data.json`` replaces, key by key, the shipped data at its path. Test modules
(``*_test.rego``) load only when asked for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from penin.ledger import jcs
from penin.policy.analysis import ModuleInfo, check_policy_set, parse_module
from penin.policy.errors import PolicyLoadError

SHIPPED_DIR = Path(__file__).with_name("rego")
DATA_FILE = "data.json"
TEST_SUFFIX = "_test.rego"


@dataclass(frozen=True, slots=True)
class Module:
    path: str  # as errors and the engine name it: bundle-relative, or the user's file
    package: str  # dotted, without "data.": "penin.router"
    text: str


@dataclass(frozen=True, slots=True)
class PackageInfo:
    """One package as ``GET /v1/policy`` and ``penin policy list`` show it."""

    package: str
    origin: Literal["shipped", "user"]
    modules: tuple[str, ...]
    digest: str  # SHA-256 over the package's modules and the data at its path


@dataclass(frozen=True)
class PolicySet:
    """Modules and data that load together; equal sets have equal digests."""

    modules: tuple[Module, ...] = field(compare=False)
    data: dict[str, Any] = field(compare=False)
    digest: str
    packages: tuple[str, ...] = field(compare=False)
    user_packages: frozenset[str] = field(compare=False, default=frozenset())

    def package_infos(self) -> list[PackageInfo]:
        infos = []
        for package in self.packages:
            modules = [m for m in self.modules if m.package == package]
            data = _lookup(self.data, tuple(package.split(".")))
            origin: Literal["shipped", "user"] = (
                "user" if package in self.user_packages else "shipped"
            )
            infos.append(
                PackageInfo(
                    package=package,
                    origin=origin,
                    modules=tuple(m.path for m in modules),
                    digest=_digest(modules, data),
                )
            )

        return infos


@dataclass
class _Bundle:
    modules: list[tuple[Module, ModuleInfo]]
    data: list[tuple[tuple[str, ...], dict[str, Any], str]]  # (path, document, file)

    @property
    def packages(self) -> set[str]:
        return {module.package for module, _ in self.modules}


def load_policy_set(
    user_dir: Path | None = None,
    *,
    include_tests: bool = False,
    shipped_dir: Path = SHIPPED_DIR,
) -> PolicySet:
    """The shipped bundle with ``user_dir`` over it; PolicyLoadError if refused."""
    shipped = _read_bundle(shipped_dir, include_tests=include_tests, shipped=True)
    if user_dir is None:
        return _build(shipped.modules, shipped.data, frozenset())
    if not user_dir.is_dir():
        raise PolicyLoadError(str(user_dir), None, "policy directory not found")
    user = _read_bundle(user_dir, include_tests=include_tests, shipped=False)
    replaced = shipped.packages & user.packages
    modules = [pair for pair in shipped.modules if pair[0].package not in replaced]
    data = [
        doc
        for doc in shipped.data
        if not any(_within(doc[0], tuple(p.split("."))) for p in replaced)
    ]

    return _build(modules + user.modules, data + user.data, frozenset(user.packages))


def load_bundle(root: Path, *, include_tests: bool = False) -> PolicySet:
    """One directory on its own, as a bundle: no shipped policies under it."""
    if not root.is_dir():
        raise PolicyLoadError(str(root), None, "policy directory not found")
    bundle = _read_bundle(root, include_tests=include_tests, shipped=False)

    return _build(bundle.modules, bundle.data, frozenset(bundle.packages))


# -- reading ------------------------------------------------------------------


def _read_bundle(root: Path, *, include_tests: bool, shipped: bool) -> _Bundle:
    bundle = _Bundle([], [])
    for file in bundle_files(root):
        relative = file.relative_to(root)
        name = relative.as_posix() if shipped else str(file)
        if file.name == DATA_FILE:
            document = _read_data(file, name)
            bundle.data.append((relative.parent.parts, document, name))
        elif include_tests or not file.name.endswith(TEST_SUFFIX):
            text = _read_text(file, name)
            info = parse_module(name, text)
            bundle.modules.append((Module(name, info.package_name, text), info))

    return bundle


def bundle_files(root: Path) -> Iterator[Path]:
    """Modules and data files below ``root`` in a stable order, hidden ones skipped."""
    if not root.is_dir():
        return
    for path in sorted(root.rglob("*")):
        hidden = any(part.startswith(".") for part in path.relative_to(root).parts)
        if hidden or not path.is_file():
            continue
        if path.suffix == ".rego" or path.name == DATA_FILE:
            yield path


def _read_text(file: Path, name: str) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyLoadError(name, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise PolicyLoadError(name, None, "not UTF-8 text") from None


def _read_data(file: Path, name: str) -> dict[str, Any]:
    try:
        document = json.loads(_read_text(file, name))
    except json.JSONDecodeError as exc:
        raise PolicyLoadError(name, exc.lineno, f"not valid JSON: {exc.msg}") from None
    if not isinstance(document, dict):
        raise PolicyLoadError(name, 1, "a data file must hold a JSON object")
    try:
        jcs.dumps(document)
    except (TypeError, ValueError) as exc:
        raise PolicyLoadError(
            name, None, f"data cannot be canonicalised: {exc}"
        ) from None

    return document


# -- building -----------------------------------------------------------------


def _build(
    modules: list[tuple[Module, ModuleInfo]],
    documents: list[tuple[tuple[str, ...], dict[str, Any], str]],
    user_packages: frozenset[str],
) -> PolicySet:
    data: dict[str, Any] = {}
    for path, document, name in documents:
        _place(data, path, document, name)
    check_policy_set([info for _, info in modules], data)
    ordered = tuple(sorted((m for m, _ in modules), key=lambda m: m.path))

    return PolicySet(
        modules=ordered,
        data=data,
        digest=_digest(ordered, data),
        packages=tuple(sorted({m.package for m in ordered})),
        user_packages=user_packages,
    )


def _place(
    data: dict[str, Any], path: tuple[str, ...], document: dict[str, Any], name: str
) -> None:
    """Set each top-level key of ``document`` at ``path``; later files win."""
    node = data
    for step in path:
        child = node.setdefault(step, {})
        if not isinstance(child, dict):
            where = ".".join(("data", *path))
            raise PolicyLoadError(name, None, f"{where} is inside a non-object value")
        node = child
    node.update(document)


def _within(path: tuple[str, ...], root: tuple[str, ...]) -> bool:
    return path[: len(root)] == root


def _lookup(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for step in path:
        if not isinstance(node, Mapping) or step not in node:
            return None
        node = node[step]

    return node


def _digest(modules: Sequence[Module], data: Any) -> str:
    """SHA-256 of the RFC 8785 text of the sorted (path, text) pairs and the data."""
    pairs = sorted([m.path, m.text] for m in modules)
    text = jcs.dumps({"data": data, "modules": pairs})

    return hashlib.sha256(text.encode()).hexdigest()
