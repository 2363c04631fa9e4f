"""The policy engine: every gate of PENIN-Ω is a Rego policy, evaluated fail-closed.

The names below are imported on first use: the node's settings import
``penin.policy.config``, and every ``penin`` command reads those settings,
so this package must not load regorus and an HTTP client for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from penin.policy.config import PolicySettings
    from penin.policy.decisions import POLICY_DECISION, decision_record
    from penin.policy.engine import Decision, EmbeddedEngine, PolicyEngine
    from penin.policy.errors import PolicyError, PolicyEvalError, PolicyLoadError
    from penin.policy.policyset import (
        Module,
        PackageInfo,
        PolicySet,
        load_bundle,
        load_policy_set,
    )
    from penin.policy.remote import RemoteEngine
    from penin.policy.service import Policies

_MODULES = {
    "POLICY_DECISION": "decisions",
    "Decision": "engine",
    "EmbeddedEngine": "engine",
    "Module": "policyset",
    "PackageInfo": "policyset",
    "Policies": "service",
    "PolicyEngine": "engine",
    "PolicyError": "errors",
    "PolicyEvalError": "errors",
    "PolicyLoadError": "errors",
    "PolicySet": "policyset",
    "PolicySettings": "config",
    "RemoteEngine": "remote",
    "decision_record": "decisions",
    "load_bundle": "policyset",
    "load_policy_set": "policyset",
}

__all__ = [
    "POLICY_DECISION",
    "Decision",
    "EmbeddedEngine",
    "Module",
    "PackageInfo",
    "Policies",
    "PolicyEngine",
    "PolicyError",
    "PolicyEvalError",
    "PolicyLoadError",
    "PolicySet",
    "PolicySettings",
    "RemoteEngine",
    "decision_record",
    "load_bundle",
    "load_policy_set",
]


def __getattr__(name: str) -> Any:
    module = _MODULES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    return getattr(importlib.import_module(f"{__name__}.{module}"), name)
