"""RFC 8785 canonical JSON text, through ``json.dumps`` wherever it is the same.

The ``rfc8785`` package is the reference, written in Python; ``json.dumps``
(compact, keys sorted, non-ASCII kept) is compiled and writes the same text
for objects with ASCII keys, arrays, strings, booleans, null, integers within
±(2**53 - 1), and floats that are not whole with 1e-4 <= |x| < 1e16 (where
Python's shortest repr and ECMAScript's number format, RFC 8785 §3.2.2.3,
both write plain fixed notation). Two more kinds of float differ only in
form and are rewritten here: a whole float within ±(2**53 - 1), which
ECMAScript writes as an integer, and a float below 1e-4, which it writes in
fixed notation down to 1e-6 and as ``1.5e-7`` below. Anything else (a
non-ASCII key, a wider number, NaN) goes to ``rfc8785``, which refuses what
it must. The ledger's property tests hold this module to ``rfc8785``.
"""

from __future__ import annotations

import json
import re
from typing import Any, cast

import rfc8785

SAFE_INT = 2**53 - 1
# Fences a placeholder for a small float's text in json.dumps' output. A
# payload whose strings hold it takes the reference path instead.
_FENCE = "\ue000"
_PLACEHOLDER = re.compile(f'"{_FENCE}(\\d+){_FENCE}"')


class _NeedsReference(Exception):  # noqa: N818  (a control-flow signal, not an error)
    """The value holds something only the reference writes (or refuses)."""


def dumps(value: object) -> str:
    """The RFC 8785 text of ``value``; rfc8785's errors for what it refuses,
    or for text that would not read back as a value it accepts."""
    if not _differs(value):
        return _dumps(value)
    small: list[str] = []
    try:
        rewritten = _rewrite(value, small)
    except _NeedsReference:
        text: str = rfc8785.dumps(cast(Any, value)).decode("utf-8")
        # A reader must get back what it can canonicalise again: 1e16 is
        # written "10000000000000000", an integer RFC 8785 refuses.
        rfc8785.dumps(json.loads(text))
        return text

    return _PLACEHOLDER.sub(lambda m: small[int(m.group(1))], _dumps(rewritten))


def _dumps(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _differs(value: object) -> bool:
    """True when ``json.dumps`` might write ``value`` unlike RFC 8785."""
    kind = type(value)
    if kind is dict:
        assert isinstance(value, dict)
        return any(
            type(k) is not str or not k.isascii() or _differs(v)
            for k, v in value.items()
        )
    if kind is list:
        assert isinstance(value, list)
        return any(_differs(v) for v in value)
    if kind is int:
        assert isinstance(value, int)
        return not -SAFE_INT <= value <= SAFE_INT
    if kind is float:
        assert isinstance(value, float)
        return value.is_integer() or not 1e-4 <= abs(value) < 1e16

    return kind not in (str, bool, type(None))


def _rewrite(value: object, small: list[str]) -> object:
    """``value`` with whole floats as ints and small ones as placeholders."""
    kind = type(value)
    if kind is dict:
        assert isinstance(value, dict)
        out = {}
        for k, v in value.items():
            if type(k) is not str or not k.isascii():
                raise _NeedsReference
            out[k] = _rewrite(v, small)
        return out
    if kind is list:
        assert isinstance(value, list)
        return [_rewrite(v, small) for v in value]
    if kind is str:
        assert isinstance(value, str)
        if _FENCE in value:
            raise _NeedsReference
        return value
    if kind is int:
        assert isinstance(value, int)
        if not -SAFE_INT <= value <= SAFE_INT:
            raise _NeedsReference
        return value
    if kind is float:
        assert isinstance(value, float)
        return _rewrite_float(value, small)
    if value is None or kind is bool:
        return value

    raise _NeedsReference


def _rewrite_float(x: float, small: list[str]) -> object:
    if x.is_integer():
        if abs(x) > SAFE_INT:
            raise _NeedsReference
        return int(x)  # -0.0 too: ECMAScript writes it "0"
    if 1e-4 <= abs(x) < 1e16:
        return x
    if abs(x) < 1e-4:  # NaN and infinities fail every comparison
        small.append(_small_float(x))
        return f"{_FENCE}{len(small) - 1}{_FENCE}"

    raise _NeedsReference


def _small_float(x: float) -> str:
    """ECMAScript's text for a finite float with 0 < |x| < 1e-4.

    Python's repr writes such a float as ``D.DDDe-XX`` with the shortest
    digits that read back, as ECMAScript picks them; only the layout
    differs. With x = 0.DDDD × 10**n: fixed notation when n > -6, else
    ``D.DDDe-X`` with no padding of the exponent.
    """
    mantissa, _, exponent = repr(abs(x)).partition("e")
    digits = mantissa.replace(".", "")
    n = int(exponent) + 1
    sign = "-" if x < 0 else ""
    if n > -6:
        return f"{sign}0.{'0' * -n}{digits}"
    fraction = f".{digits[1:]}" if len(digits) > 1 else ""

    return f"{sign}{digits[0]}{fraction}e{n - 1}"
