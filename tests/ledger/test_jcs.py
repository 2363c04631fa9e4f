"""The fast canonical JSON writes exactly what the rfc8785 reference writes."""

from __future__ import annotations

import json
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from penin.ledger import jcs


def reference(value: Any) -> str | None:
    """rfc8785's text, or None where it refuses or would not read back."""
    try:
        text = rfc8785.dumps(value)
        rfc8785.dumps(json.loads(text))
    except rfc8785.CanonicalizationError:
        return None

    return text.decode("utf-8")


def ours(value: Any) -> str | None:
    try:
        return jcs.dumps(value)
    except rfc8785.CanonicalizationError:
        return None


@pytest.mark.parametrize(
    "number",
    [
        9.15e-06, 1e-6, 9.999999999999999e-05, 1e-7, 1.5e-7, -2.5e-9, 5e-324,
        -5e-324, 1e-4, 0.1, 0.0, -0.0, 1000.0, -3.0, 2.0**53 - 1, 2.0**53,
        1e16, 1e21, 1.7976931348623157e308, 123.456,
    ],
)  # fmt: skip
def test_every_kind_of_float_is_written_as_rfc8785_writes_it(number: float) -> None:
    value = {"n": number, "in": [number, {"deep": number}]}

    assert ours(value) == reference(value)


def test_a_router_record_takes_the_fast_path_and_matches() -> None:
    record = {
        "cost_usd": 9.15e-06,
        "budget_remaining_usd": 999.0,
        "latency_ms": 1.234,
        "attempts": [{"ms": 0.834, "status": 200}],
        "estimated": False,
        "cache": None,
    }

    assert ours(record) == reference(record)
    assert '"cost_usd":0.00000915' in (ours(record) or "")


@pytest.mark.parametrize(
    "value",
    [
        {"s": "\ue0000\ue000", "n": 1e-5},  # holds the placeholder fence
        {"ключ": 1e-5},  # a key that is not ASCII
        {"n": 2**60},  # an integer RFC 8785 refuses
        {"n": float("nan")},
    ],
)
def test_what_the_fast_path_cannot_serve_goes_to_the_reference(value: Any) -> None:
    assert ours(value) == reference(value)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.floats(min_value=-1e-4, max_value=1e-4, allow_subnormal=True)
    | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=16,
)


@settings(max_examples=500, deadline=None)
@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_any_payload_is_written_exactly_as_the_reference_writes_it(
    value: dict[str, Any],
) -> None:
    assert ours(value) == reference(value)
