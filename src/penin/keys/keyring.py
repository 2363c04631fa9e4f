"""The key ring: scoped API keys kept as ledger records, the same set on every node.

A token is ``pk_<key id>_<secret>``; the ledger stores only the key id, its
scope and name, and SHA-256 of the whole token (``apikey.created``), and
later ``apikey.revoked``. The secret is printed once and never stored. A key
may also be held to a data class and to a list of logical models, which the
router's policy reads; both are in the record only when given, so records
written before they existed load as keys without them.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import structlog

from penin.ledger.ledger import WORMLedger

log = structlog.get_logger("penin.keys")

CREATED = "apikey.created"
REVOKED = "apikey.revoked"
_PREFIX = "pk_"
_REFRESH_S = 1.0
DATA_CLASS = re.compile(r"[a-z][a-z0-9_]*")
# Logical model names as configs spell them: "fast", "gpt-4o-mini", "claude-3.5".
MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")
_MAX_NAME_CHARS = 64


class Scope(StrEnum):
    READ = "read"
    APPEND = "append"
    ROUTE = "route"
    ADMIN = "admin"


class ApiKeyError(Exception):
    """A key that cannot be created or revoked as asked."""


@dataclass(frozen=True)
class ApiKey:
    key_id: str
    name: str
    scope: Scope
    token_sha256: str
    created_seq: int
    revoked: bool = False
    data_class: str | None = None  # None: held to the policy's default class
    models: tuple[str, ...] | None = None  # None: every logical model

    def allows(self, needed: Scope) -> bool:
        """``admin`` passes every check; any other scope passes only its own."""
        return not self.revoked and (self.scope is Scope.ADMIN or self.scope is needed)

    def public(self) -> dict[str, object]:
        return {
            "key_id": self.key_id,
            "name": self.name,
            "scope": self.scope.value,
            "created_seq": self.created_seq,
            "revoked": self.revoked,
            "data_class": self.data_class,
            "models": None if self.models is None else list(self.models),
        }


def check_data_class(value: str) -> str:
    """``value`` if it is a data class name; ApiKeyError saying why if not."""
    if len(value) > _MAX_NAME_CHARS or not DATA_CLASS.fullmatch(value):
        raise ApiKeyError(
            f"data class {value!r} is not a lowercase identifier "
            "(a letter, then letters, digits or _; like pii)"
        )

    return value


def check_models(values: Sequence[str]) -> tuple[str, ...]:
    """The logical model names, in order, once each; ApiKeyError if one is bad."""
    for value in values:
        if len(value) > _MAX_NAME_CHARS or not MODEL_NAME.fullmatch(value):
            raise ApiKeyError(
                f"model {value!r} is not a logical model name (lowercase "
                "letters, digits, '.', '_' or '-'; like fast or gpt-4o-mini)"
            )
    if not values:
        raise ApiKeyError("name at least one logical model (like fast,smart)")

    return tuple(dict.fromkeys(values))


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _key_id_of(token: str) -> str | None:
    if not token.startswith(_PREFIX):
        return None
    key_id, sep, _ = token[len(_PREFIX) :].partition("_")

    return key_id if sep and key_id else None


class KeyRing:
    """The keys the ledger holds, replayed from its records and kept fresh."""

    def __init__(self, ledger: WORMLedger) -> None:
        self._ledger = ledger
        self._keys: dict[str, ApiKey] = {}
        self._after_seq = -1
        self._refreshed = 0.0
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Apply key records appended since the last refresh (by any process)."""
        with self._lock:
            bound = self._ledger.count_records()
            for event_type in (CREATED, REVOKED):
                self._apply(event_type, bound)
            self._after_seq = bound - 1
            self._refreshed = time.monotonic()

    def _apply(self, event_type: str, bound: int) -> None:
        """Apply records of one type with seq in (after_seq, bound)."""
        cursor = self._after_seq
        while batch := self._ledger.query(
            event_type=event_type, after_seq=cursor, limit=1000
        ):
            for record in batch:
                if record.seq >= bound:
                    return
                payload = record.payload
                key_id = str(payload["key_id"])
                if event_type == CREATED:
                    models = payload.get("models")
                    self._keys[key_id] = ApiKey(
                        key_id=key_id,
                        name=str(payload.get("name", "")),
                        scope=Scope(str(payload["scope"])),
                        token_sha256=str(payload["token_sha256"]),
                        created_seq=record.seq,
                        data_class=payload.get("data_class"),
                        models=None if models is None else tuple(models),
                    )
                elif key_id in self._keys:
                    old = self._keys[key_id]
                    self._keys[key_id] = ApiKey(**{**old.__dict__, "revoked": True})
            cursor = batch[-1].seq

    def _maybe_refresh(self) -> None:
        if time.monotonic() - self._refreshed > _REFRESH_S:
            self.refresh()

    def _ledger_grew(self) -> bool:
        return self._ledger.count_records() - 1 > self._after_seq

    def authenticate(self, token: str) -> ApiKey | None:
        """The key a bearer token belongs to, or None; compared in constant time."""
        key_id = _key_id_of(token)
        if key_id is None:
            return None
        self._maybe_refresh()
        key = self._keys.get(key_id)
        if key is None and self._ledger_grew():
            # A key minted a moment ago; checking for growth costs one index
            # lookup, so a flood of unknown ids cannot force full re-reads.
            self.refresh()
            key = self._keys.get(key_id)
        expected = key.token_sha256 if key else "0" * 64
        matches = hmac.compare_digest(_digest(token), expected)

        return key if matches and key is not None and not key.revoked else None

    def create(
        self,
        scope: Scope,
        name: str = "",
        *,
        data_class: str | None = None,
        models: Sequence[str] | None = None,
    ) -> tuple[str, ApiKey]:
        """Mint a token; returns it (shown once) and the stored key.

        ``data_class`` and ``models`` are checked first; ApiKeyError if bad.
        """
        held_to = None if data_class is None else check_data_class(data_class)
        allowed = None if models is None else check_models(models)
        key_id = secrets.token_hex(6)
        token = f"{_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        payload: dict[str, object] = {
            "key_id": key_id,
            "name": name,
            "scope": scope.value,
            "token_sha256": _digest(token),
        }
        if held_to is not None:
            payload["data_class"] = held_to
        if allowed is not None:
            payload["models"] = list(allowed)
        record = self._ledger.append_record(CREATED, payload)
        log.info(
            "apikey.created",
            key_id=key_id,
            scope=scope.value,
            name=name,
            data_class=held_to,
            models=allowed,
        )
        self.refresh()

        return token, self._keys.get(key_id) or ApiKey(
            key_id, name, scope, _digest(token), record.seq, False, held_to, allowed
        )

    def revoke(self, key_id: str) -> ApiKey:
        self.refresh()
        key = self._keys.get(key_id)
        if key is None:
            raise ApiKeyError(f"no API key with id {key_id!r}; see 'penin keys list'")
        if not key.revoked:
            self._ledger.append_record(
                REVOKED, {"key_id": key_id}, idempotency_key=f"apikey.revoked:{key_id}"
            )
            log.info("apikey.revoked", key_id=key_id)
            self.refresh()

        return self._keys[key_id]

    def close(self) -> None:
        self._ledger.close()

    def list(self) -> list[ApiKey]:
        self.refresh()
        return sorted(self._keys.values(), key=lambda k: k.created_seq)
