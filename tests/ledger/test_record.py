"""A record's bytes are RFC 8785 JSON, so anyone can recompute its leaf hash."""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from penin.ledger.errors import InvalidRecordError
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import (
    MAX_IDEMPOTENCY_KEY_CHARS,
    MAX_PAYLOAD_BYTES,
    canonical_payload,
    check_event_type,
    check_idempotency_key,
    format_ts,
    parse_payload_json,
    parse_ts,
    record_bytes,
)

# Characters JSON escaping gets wrong most often, plus non-BMP ones that sort
# differently in UTF-16 (RFC 8785 key order) than by code point.
TRICKY = (
    '\x00\x01\x08\t\n\x0b\x0c\r\x1f\x7f"\\/é'
    "\u2028\u2029\ufeff\uffff\U00010000\U0001f600"
)

texts = st.text(st.characters(codec="utf-8")) | st.text(st.sampled_from(TRICKY))
# ASCII-only keys take the fast json.dumps path; the others take full RFC 8785.
object_keys = texts | st.text(st.characters(codec="ascii"))
# Where Python's float repr and ECMAScript's number format part ways.
FLOAT_EDGES = [
    1e-4, 9.999999999999999e-5, 1e-7, 1e16, 9999999999999998.0, 1e21, 1e-6,
    0.1, 123.456, 5e-324, 1.7976931348623157e308, 2.0**53, -0.0,
]  # fmt: skip
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**53 - 1), 2**53 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(FLOAT_EDGES)
    | texts
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(object_keys, inner, max_size=4)
    ),
    max_leaves=20,
)
any_payloads = st.dictionaries(object_keys, json_values, max_size=6)


def _reads_back_canonical(payload: dict[str, Any]) -> bool:
    """True when the payload's canonical text parses into a canonical value."""
    try:
        rfc8785.dumps(json.loads(rfc8785.dumps(payload)))
    except rfc8785.CanonicalizationError:
        return False

    return True


# What the ledger accepts: everything whose written form reads back.
payloads = any_payloads.filter(_reads_back_canonical)
keys = st.none() | st.text(min_size=1, max_size=MAX_IDEMPOTENCY_KEY_CHARS)
event_types = st.from_regex(
    r"[a-z][a-z0-9_]{0,20}(\.[a-z][a-z0-9_]{0,20}){1,3}", fullmatch=True
)
timestamps = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(9999, 1, 1),
    timezones=st.just(UTC),
).map(format_ts)


def _documented_leaf_hash(record: dict[str, Any]) -> str:
    """The rule from the docs, with no PENIN code: SHA-256(0x00 ‖ JCS(record))."""
    body = {k: v for k, v in record.items() if k != "leaf_hash"}

    return hashlib.sha256(b"\x00" + rfc8785.dumps(body)).hexdigest()


@settings(max_examples=300, deadline=None)
@given(any_payloads)
def test_canonical_payload_is_rfc8785_or_refused_when_it_cannot_read_back(
    payload: dict[str, Any],
) -> None:
    if _reads_back_canonical(payload):
        assert canonical_payload(payload).encode() == rfc8785.dumps(payload)
    else:
        with pytest.raises(InvalidRecordError, match="not canonical JSON"):
            canonical_payload(payload)


@settings(max_examples=300, deadline=None)
@given(
    payload=payloads,
    key=keys,
    seq=st.integers(0, 2**53 - 1),
    term=st.integers(0, 2**53 - 1),
    prev=st.binary(min_size=32, max_size=32),
    ts=timestamps,
    event_type=event_types,
)
def test_record_bytes_are_the_rfc8785_form_of_the_record(
    payload: dict[str, Any],
    key: str | None,
    seq: int,
    term: int,
    prev: bytes,
    ts: str,
    event_type: str,
) -> None:
    record = {
        "seq": seq,
        "ts": ts,
        "event_type": event_type,
        "payload": payload,
        "term": term,
        "prev_hash": prev.hex(),
        "idempotency_key": key,
    }

    ours = record_bytes(
        seq, ts, event_type, canonical_payload(payload), term, prev, key
    )

    assert ours == rfc8785.dumps(record)


@pytest.fixture(scope="module")
def shared_ledger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WORMLedger]:
    led = WORMLedger(tmp_path_factory.mktemp("record") / "ledger.db")
    yield led.initialize("test.local/record")
    led.close()


_key_numbers = itertools.count()


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(payload=payloads, key=st.none() | st.text(max_size=240), event_type=event_types)
def test_a_stored_record_recomputes_to_its_leaf_hash_without_our_code(
    shared_ledger: WORMLedger, payload: dict[str, Any], key: str | None, event_type: str
) -> None:
    # A fresh prefix keeps keys unique, so every example appends a new record.
    unique_key = None if key is None else f"{next(_key_numbers)}:{key}"

    appended = shared_ledger.append_record(
        event_type, payload, idempotency_key=unique_key
    )
    fetched = shared_ledger.get(appended.seq).to_dict()

    assert fetched == appended.to_dict()
    # The append route sends to_json(), which splices in the stored payload text.
    assert json.loads(appended.to_json()) == fetched
    assert fetched["idempotency_key"] == unique_key
    assert rfc8785.dumps(fetched["payload"]) == rfc8785.dumps(payload)
    assert _documented_leaf_hash(fetched) == fetched["leaf_hash"]


@pytest.mark.parametrize("number", [1e16, 2.0**53, -9999999999999998.0, 1e20])
def test_a_float_written_as_an_integer_beyond_2_53_is_refused(
    ledger: WORMLedger, number: float
) -> None:
    # 1e16 is canonically "10000000000000000", which a JSON reader gives back
    # as an integer beyond 2**53 that RFC 8785 implementations refuse; no
    # third party could recompute the leaf hash of such a record.
    with pytest.raises(InvalidRecordError, match="not canonical JSON"):
        ledger.append_record("test.event", {"x": number})

    assert ledger.count_records() == 0


def test_a_large_float_that_reads_back_recomputes_by_the_documented_rule(
    ledger: WORMLedger,
) -> None:
    record = ledger.append_record("test.event", {"x": 1e21, "y": 9007199254740991.0})
    fetched = ledger.get(record.seq).to_dict()

    assert _documented_leaf_hash(fetched) == fetched["leaf_hash"]


def test_leaf_hash_covers_every_field_of_the_record(ledger: WORMLedger) -> None:
    record = ledger.append_record("test.event", {"a": 1}, idempotency_key="k").to_dict()

    for name, other in [
        ("seq", 1),
        ("ts", "2000-01-01T00:00:00.000000Z"),
        ("event_type", "test.other"),
        ("payload", {"a": 2}),
        ("term", 1),
        ("prev_hash", "11" * 32),
        ("idempotency_key", "j"),
    ]:
        assert _documented_leaf_hash({**record, name: other}) != record["leaf_hash"]


# -- what a record may hold ---------------------------------------------------


@pytest.mark.parametrize(
    "event_type", ["router.request", "a.b", "policy.verdict.v2", "x_1.y_2.z"]
)
def test_dotted_lowercase_event_types_are_accepted(event_type: str) -> None:
    assert check_event_type(event_type) == event_type


@pytest.mark.parametrize(
    "event_type",
    ["", "router", "Router.request", "router.", ".router", "a..b", "a.b-c",
     "1a.b", "a.b ", "a." + "b" * 127, None, 7],
)  # fmt: skip
def test_other_event_types_are_refused_naming_the_rule(event_type: object) -> None:
    with pytest.raises(InvalidRecordError, match="dotted lowercase name"):
        check_event_type(event_type)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ([1, 2], "must be a JSON object, not list"),
        ("text", "must be a JSON object, not str"),
        (None, "must be a JSON object, not NoneType"),
        ({"x": float("nan")}, "nan"),
        ({"x": float("inf")}, "inf"),
        ({"x": 2**53}, "9007199254740992"),
        ({"x": -(2**53)}, "-9007199254740992"),
        ({1: "x"}, "keys must be strings"),
        ({"x": b"bytes"}, "bytes"),
        ({"x": {1, 2}}, "set"),
    ],
)
def test_payloads_json_cannot_carry_are_refused(payload: object, problem: str) -> None:
    with pytest.raises(InvalidRecordError, match=problem):
        canonical_payload(payload)


def test_a_deeply_nested_payload_is_refused_not_crashing() -> None:
    payload: dict[str, Any] = {}
    inner = payload
    for _ in range(5000):
        inner["a"] = {}
        inner = inner["a"]

    with pytest.raises(InvalidRecordError, match="nested too deeply"):
        canonical_payload(payload)


def test_payload_limit_counts_canonical_bytes_exactly() -> None:
    overhead = len(b'{"x":""}')
    at_limit = {"x": "a" * (MAX_PAYLOAD_BYTES - overhead)}
    over_limit = {"x": "a" * (MAX_PAYLOAD_BYTES - overhead + 1)}

    assert len(canonical_payload(at_limit).encode()) == MAX_PAYLOAD_BYTES
    with pytest.raises(InvalidRecordError, match=f"limit of {MAX_PAYLOAD_BYTES}"):
        canonical_payload(over_limit)


def test_payload_limit_counts_utf8_bytes_not_characters() -> None:
    overhead = len(b'{"x":""}')
    characters = (MAX_PAYLOAD_BYTES - overhead) // 2 + 1

    with pytest.raises(InvalidRecordError, match="larger than the limit"):
        canonical_payload({"x": "é" * characters})


def test_refused_appends_write_nothing(ledger: WORMLedger) -> None:
    ledger.append_record("test.event", {"first": True})

    with pytest.raises(InvalidRecordError):
        ledger.append_record("Bad Type", {})
    with pytest.raises(InvalidRecordError):
        ledger.append_record("test.event", {"x": float("nan")})
    with pytest.raises(InvalidRecordError):
        ledger.append_record("test.event", {"x": "a" * MAX_PAYLOAD_BYTES})
    with pytest.raises(InvalidRecordError):
        ledger.append_record("test.event", {}, idempotency_key="")

    assert ledger.count_records() == 1


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1]", "must be a JSON object, not list"),
        ("42", "must be a JSON object, not int"),
        ('{"x": NaN}', "NaN"),
        ('{"x": Infinity}', "Infinity"),
        ('{"x": -Infinity}', "-Infinity"),
    ],
)
def test_user_json_is_parsed_strictly(text: str, problem: str) -> None:
    with pytest.raises(InvalidRecordError, match=problem):
        parse_payload_json(text)


@pytest.mark.parametrize(
    "key", ["", "k" * (MAX_IDEMPOTENCY_KEY_CHARS + 1), 42, b"bytes", "\ud800"]
)
def test_bad_idempotency_keys_are_refused(key: object) -> None:
    with pytest.raises(InvalidRecordError, match="idempotency key"):
        check_idempotency_key(key)


def test_idempotency_key_of_the_maximum_length_is_accepted() -> None:
    key = "\U0001f600" * MAX_IDEMPOTENCY_KEY_CHARS

    assert check_idempotency_key(key) == key


def test_times_without_a_zone_are_taken_as_utc() -> None:
    assert parse_ts("2026-01-31T12:00:00") == datetime(2026, 1, 31, 12, tzinfo=UTC)
    assert format_ts(parse_ts("2026-01-31T13:00:00+01:00")) == (
        "2026-01-31T12:00:00.000000Z"
    )


def test_a_time_that_is_not_rfc3339_is_refused_with_an_example() -> None:
    example = re.escape("e.g. 2026-01-31T12:00:00Z")
    with pytest.raises(InvalidRecordError, match=example):
        parse_ts("yesterday")
