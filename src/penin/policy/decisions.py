"""The ledger record of a policy decision: digests always, the input only if asked.

A record names the policy set and the input by their SHA-256 digests, so
that any past decision can be checked again: load the set with that digest,
evaluate the input with that digest at the same path, compare the results.
The raw input is written only when ``policy.log_input`` is on, and then with
every field named in ``policy.mask_fields`` replaced, at any depth, before
anything leaves this module.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from penin.policy.engine import Decision

POLICY_DECISION = "policy.decision"
MASK = "***"


def decision_record(
    decision: Decision,
    input: Any,
    *,
    log_input: bool = False,
    mask_fields: Collection[str] = (),
) -> tuple[str, dict[str, Any]]:
    """The (event_type, payload) of the ledger record for ``decision``."""
    payload: dict[str, Any] = {
        "decision_id": decision.decision_id,
        "path": decision.path,
        "policy_digest": decision.policy_digest,
        "input_digest": decision.input_digest,
        "allowed": decision.allowed,
        "reason": decision.reason,
        "result": decision.result,
        "duration_ms": round(decision.duration_s * 1000, 3),
    }
    if log_input:
        payload["input"] = masked(input, frozenset(mask_fields))

    return POLICY_DECISION, payload


def masked(value: Any, fields: frozenset[str]) -> Any:
    """A copy of ``value`` with the value of every key in ``fields`` replaced."""
    if isinstance(value, Mapping):
        return {
            key: MASK if key in fields else masked(item, fields)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [masked(item, fields) for item in value]

    return value
