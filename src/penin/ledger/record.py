"""A ledger record, its validation and its RFC 8785 canonical bytes.

The record's bytes are the canonical JSON of the object with the keys
``event_type, idempotency_key, payload, prev_hash, seq, term, ts`` (the order
RFC 8785 sorts them in); its leaf hash is SHA-256(0x00 ‖ bytes). The payload is
canonicalised once, on append, and stored in that form, so the record's bytes
can be rebuilt from the stored columns without parsing the payload again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import rfc8785

from penin.ledger import jcs
from penin.ledger.errors import InvalidRecordError
from penin.ledger.merkle import leaf_hash

MAX_PAYLOAD_BYTES = 1024 * 1024
MAX_IDEMPOTENCY_KEY_CHARS = 255
ZERO_HASH = bytes(32)

_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")
_MAX_EVENT_TYPE_CHARS = 128
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@dataclass(frozen=True, slots=True)
class Record:
    """A stored record. Its payload is kept as the canonical JSON text that was
    hashed and stored; ``payload`` parses it on first use, so code that only
    passes a record on (the append route, replication) never parses it."""

    seq: int
    ts: str
    event_type: str
    payload_json: str
    term: int
    prev_hash: str
    idempotency_key: str | None
    leaf_hash: str
    _payload: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def payload(self) -> dict[str, Any]:
        payload = self._payload
        if payload is None:
            payload = json.loads(self.payload_json)
            object.__setattr__(self, "_payload", payload)

        return payload

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "ts": self.ts,
            "event_type": self.event_type,
            "payload": self.payload,
            "term": self.term,
            "prev_hash": self.prev_hash,
            "idempotency_key": self.idempotency_key,
            "leaf_hash": self.leaf_hash,
        }

    def to_json(self) -> str:
        """``to_dict()`` as compact JSON, with the payload's text inserted as
        stored instead of parsed and encoded again."""
        key = (
            "null"
            if self.idempotency_key is None
            else json.dumps(self.idempotency_key, ensure_ascii=False)
        )

        return (
            f'{{"seq":{self.seq},"ts":"{self.ts}","event_type":"{self.event_type}",'
            f'"payload":{self.payload_json},"term":{self.term},'
            f'"prev_hash":"{self.prev_hash}","idempotency_key":{key},'
            f'"leaf_hash":"{self.leaf_hash}"}}'
        )


def check_event_type(event_type: object) -> str:
    if (
        not isinstance(event_type, str)
        or len(event_type) > _MAX_EVENT_TYPE_CHARS
        or not _EVENT_TYPE.fullmatch(event_type)
    ):
        raise InvalidRecordError(
            f"event type {event_type!r} is not a dotted lowercase name "
            "like 'router.request' (letters, digits, '_', at least one '.')"
        )

    return event_type


def check_idempotency_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidRecordError(
            f"idempotency key must be a string of 1 to {MAX_IDEMPOTENCY_KEY_CHARS} "
            "characters"
        )
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRecordError("idempotency key is not valid Unicode") from None

    return key


def canonical_payload(payload: object) -> str:
    """The payload's RFC 8785 form, or InvalidRecordError naming the problem."""
    if not isinstance(payload, Mapping):
        raise InvalidRecordError(
            f"payload must be a JSON object, not {type(payload).__name__}"
        )
    try:
        text = jcs.dumps(payload)
        size = len(text.encode("utf-8"))
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRecordError(f"payload is not canonical JSON: {exc}") from None
    except UnicodeEncodeError:
        raise InvalidRecordError("payload holds a string that is not Unicode") from None
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"payload is not JSON: {exc}") from None
    except RecursionError:
        raise InvalidRecordError("payload is nested too deeply") from None
    if size > MAX_PAYLOAD_BYTES:
        raise InvalidRecordError(
            f"payload is larger than the limit of {MAX_PAYLOAD_BYTES} bytes "
            "in canonical form"
        )

    return text


def parse_payload_json(text: str) -> dict[str, Any]:
    """Parse user-given JSON text strictly: an object, no NaN or Infinity."""

    def refuse_constant(name: str) -> None:
        raise InvalidRecordError(f"payload contains {name}, which JSON does not allow")

    try:
        value = json.loads(text, parse_constant=refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidRecordError(f"payload is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRecordError(
            f"payload must be a JSON object, not {type(value).__name__}"
        )

    return value


def record_bytes(
    seq: int,
    ts: str,
    event_type: str,
    payload_json: str,
    term: int,
    prev_hash: bytes,
    idempotency_key: str | None,
) -> bytes:
    """RFC 8785 bytes of a record whose payload is already canonical.

    ``event_type`` and ``ts`` need no escaping (their syntax is restricted);
    Python's JSON string escaping with ``ensure_ascii=False`` is the one RFC
    8785 §3.2.2.2 prescribes, which a property test checks against rfc8785.
    """
    key = (
        "null"
        if idempotency_key is None
        else json.dumps(idempotency_key, ensure_ascii=False)
    )
    text = (
        f'{{"event_type":"{event_type}","idempotency_key":{key},'
        f'"payload":{payload_json},"prev_hash":"{prev_hash.hex()}",'
        f'"seq":{seq},"term":{term},"ts":"{ts}"}}'
    )

    return text.encode("utf-8")


def record_leaf_hash(*fields: Any) -> bytes:
    return leaf_hash(record_bytes(*fields))


def format_ts(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """Parse an RFC 3339 time given by a user; naive times are taken as UTC."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidRecordError(
            f"time {text!r} is not RFC 3339, e.g. 2026-01-31T12:00:00Z"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        raise InvalidRecordError(
            f"time {text!r} is outside the years 1 to 9999 once in UTC"
        ) from None


def now_ts() -> str:
    return format_ts(datetime.now(UTC))
