"""Integrity seals for cached values: HMAC-SHA256 under a key id, so keys rotate.

A sealed value is laid out as::

    offset    size  field
    0         1     version, 0x01
    1         1     n, the length of the key id in bytes (1 to 64)
    2         n     the key id, ASCII
    2+n       32    MAC
    34+n      rest  the value

where MAC = HMAC-SHA256(key, version ‖ n ‖ key id ‖ m ‖ cache key ‖ value),
m being the length of the UTF-8 cache key as 4 bytes big-endian. The MAC
covers the cache key, so a value copied to another key no longer opens, and
every part before the value is length-prefixed, so no two inputs share a MAC
input. A blob that is too short, of another version, under a key id that is
not listed, or whose MAC differs (compared in constant time) does not open.

Keys come from ``PENIN_CACHE_SEAL_KEYS`` as ``kid1:BASE64,kid0:BASE64``: the
first seals, every listed key opens. To rotate without a failed seal, list a
new key second on every node, then first, and remove the old one a cache TTL
later (docs/cache.md). Key material never appears in an error, a log line or
a ``repr``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from penin.cache.errors import CacheConfigError

VERSION = 1
MAC_SIZE = 32
MIN_KEY_BYTES = 32
ENV_NAME = "PENIN_CACHE_SEAL_KEYS"
_KID = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Opened:
    """What opening a sealed value found: the value, or why there is none."""

    value: bytes | None
    kid: str | None = None
    reason: str | None = None  # "malformed", "unknown_kid" or "bad_mac"


class SealKeys:
    """The seal keys by key id; the first one listed seals new values."""

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        if not keys:
            raise CacheConfigError(f"{ENV_NAME} lists no key; give at least one")
        self._keys: dict[str, bytes] = {}
        for kid, key in keys:
            _check(kid, key)
            if kid in self._keys:
                raise CacheConfigError(f"{ENV_NAME} lists key id {kid!r} twice")
            self._keys[kid] = key
        self.current = keys[0][0]

    @classmethod
    def from_env(cls, value: str) -> SealKeys:
        """Parse ``kid1:BASE64KEY,kid0:BASE64KEY`` (the first is current)."""
        keys = []
        for position, entry in enumerate(value.split(","), start=1):
            kid, colon, encoded = entry.strip().partition(":")
            if not colon or not _KID.fullmatch(kid):
                raise CacheConfigError(
                    f"{ENV_NAME}: entry {position} is not KEY_ID:BASE64KEY with a "
                    "key id of 1 to 64 letters, digits, '_', '.' or '-'"
                )
            try:
                key = base64.b64decode(encoded.strip(), validate=True)
            except binascii.Error:
                raise CacheConfigError(
                    f"{ENV_NAME}: the key of key id {kid!r} is not standard base64"
                ) from None
            keys.append((kid, key))

        return cls(keys)

    @property
    def kids(self) -> list[str]:
        return list(self._keys)

    def __repr__(self) -> str:
        return f"SealKeys(current={self.current!r}, kids={self.kids!r})"

    def seal(self, cache_key: str, value: bytes) -> bytes:
        kid = self.current.encode("ascii")
        header = bytes([VERSION, len(kid)]) + kid
        mac = _mac(self._keys[self.current], header, cache_key, value)

        return header + mac + value

    def open(self, cache_key: str, sealed: bytes) -> bytes | None:
        """The value, or None when ``sealed`` does not verify for ``cache_key``."""
        return self.verify(cache_key, sealed).value

    def verify(self, cache_key: str, sealed: bytes) -> Opened:
        if len(sealed) < 2 or sealed[0] != VERSION:
            return Opened(None, reason="malformed")
        end_of_kid = 2 + sealed[1]
        if sealed[1] == 0 or len(sealed) < end_of_kid + MAC_SIZE:
            return Opened(None, reason="malformed")
        kid = sealed[2:end_of_kid].decode("ascii", errors="replace")
        key = self._keys.get(kid)
        if key is None:
            return Opened(None, kid, "unknown_kid")
        header = sealed[:end_of_kid]
        mac = sealed[end_of_kid : end_of_kid + MAC_SIZE]
        value = sealed[end_of_kid + MAC_SIZE :]
        if not hmac.compare_digest(mac, _mac(key, header, cache_key, value)):
            return Opened(None, kid, "bad_mac")

        return Opened(value, kid)


def _check(kid: str, key: bytes) -> None:
    if not _KID.fullmatch(kid):
        raise CacheConfigError(
            f"seal key id {kid!r} must be 1 to 64 letters, digits, '_', '.' or '-'"
        )
    if len(key) < MIN_KEY_BYTES:
        raise CacheConfigError(
            f"{ENV_NAME}: the key of key id {kid!r} is {len(key)} bytes; it must be "
            f"at least {MIN_KEY_BYTES} (e.g. openssl rand -base64 32)"
        )


def _mac(key: bytes, header: bytes, cache_key: str, value: bytes) -> bytes:
    encoded_key = cache_key.encode()
    mac = hmac.new(key, header, hashlib.sha256)
    mac.update(struct.pack(">I", len(encoded_key)))
    mac.update(encoded_key)
    mac.update(value)

    return mac.digest()
