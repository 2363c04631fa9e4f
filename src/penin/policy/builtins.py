"""Which Rego built-ins a policy may call, and why each other one is refused.

regorus implements most of OPA's built-ins, but not all the same way, and a
call it does not really perform can fail open: a ``deny`` rule built on
``http.send`` evaluates to nothing, so the ``allow`` beside it holds. So a
policy may call only the built-ins below, each shown by the differential
corpus (tests/policy/corpus) to give the result OPA specifies; a call to any
other is refused when the policy set loads.
"""

from __future__ import annotations

ALLOWED_BUILTINS = frozenset(
    {
        # aggregates
        "count", "sum", "product", "max", "min", "sort",
        # strings
        "concat", "startswith", "endswith", "contains", "lower", "upper",
        "sprintf", "split", "replace", "trim_space", "substring", "indexof",
        "format_int",
        # objects, arrays and sets
        "object.get", "object.keys", "object.union", "array.concat",
        "array.slice", "intersection", "union",
        # types
        "is_number", "is_string", "is_boolean", "is_object", "is_array",
        "is_set", "is_null", "type_name",
        # numbers
        "abs", "round", "ceil", "floor", "numbers.range",
    }
)  # fmt: skip

# A decision must be re-checkable from the policy-set digest and the input
# digest alone, so nothing may read the clock, the network, a random source or
# the engine itself: pass such values in the input instead.
_NOT_REPRODUCIBLE = {
    "http.send": "makes a network call",
    "net.lookup_ip_addr": "makes a DNS query",
    "time.now_ns": "reads the clock",
    "rand.intn": "draws a random number",
    "uuid.rfc4122": "draws a random UUID",
    "opa.runtime": "reads the engine's own configuration",
}
# Calls that write to the node's output instead of computing a value.
_SIDE_EFFECTS = {
    "print": "writes to the node's standard output",
    "trace": "writes to the evaluation trace",
}
# Built-ins whose result is known to differ from OPA's.
_DIFFERENT = {
    "to_number": (
        "reads strings OPA refuses (regorus reads ' 1' as 1, OPA fails on it); "
        "pass numbers in the input as numbers"
    ),
}


def refusal(name: str, *, builtin: bool) -> str:
    """Why a policy may not call ``name`` (dotted, as written in the policy)."""
    if name in _NOT_REPRODUCIBLE:
        return (
            f"calls {name}, which {_NOT_REPRODUCIBLE[name]}: a decision must "
            "follow from the policy set and the input alone"
        )
    if name.startswith("net."):
        return f"calls {name}: network built-ins are not allowed in policies"
    if name in _SIDE_EFFECTS:
        return f"calls {name}, which {_SIDE_EFFECTS[name]}"
    if name in _DIFFERENT:
        return f"calls {name}, which {_DIFFERENT[name]}"
    if not builtin:
        return (
            f"calls {name}, which is neither an allowed built-in nor a function "
            "defined in the policy set"
        )

    return (
        f"calls {name}, a built-in not proven to behave as in OPA; "
        "allowed built-ins are listed in docs/policy.md"
    )
