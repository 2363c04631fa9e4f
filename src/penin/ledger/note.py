"""C2SP signed notes and tlog checkpoints, signed with Ed25519.

Formats (C2SP signed-note and tlog-checkpoint):

- key ID: the first 4 bytes of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key);
- verifier key: ``name+hex(key ID)+base64(0x01 ‖ public key)``;
- signer key file: ``PRIVATE+KEY+name+hex(key ID)+base64(0x01 ‖ seed)``;
- checkpoint body: origin, tree size and base64 root hash, one per line;
- note: body, a blank line, then ``— name base64(key ID ‖ signature)`` lines,
  the signature covering the body including its final newline.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

_ED25519 = b"\x01"
_SIG_PREFIX = "— "
_NAME = re.compile(r"[^\s+]+")
_SIGNATURE_LINE = re.compile(r"— ([^\s+]+) ([A-Za-z0-9+/=]+)")
_DECIMAL = re.compile(r"0|[1-9][0-9]*")


class NoteError(ValueError):
    """A key, note or checkpoint that does not parse or does not verify."""


def key_id(name: str, public_key: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + public_key).digest()[:4]


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise NoteError(f"key name {name!r} must be non-empty, without spaces or '+'")

    return name


def _b64decode(text: str, what: str) -> bytes:
    """Strict base64: ASCII, padded, and canonical (no stray bits in the last
    character), so that exactly one text stands for each byte string."""
    try:
        raw = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, or a character outside ASCII
        raise NoteError(f"{what} is not valid base64") from None
    if base64.b64encode(raw).decode() != text:
        raise NoteError(f"{what} is not canonical base64")

    return raw


@dataclass(frozen=True)
class Verifier:
    name: str
    public_key: bytes

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.public_key)

    @property
    def vkey(self) -> str:
        encoded = base64.b64encode(_ED25519 + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{encoded}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Verifier:
        name, _, rest = vkey.strip().partition("+")
        hex_id, _, encoded = rest.partition("+")
        raw = _b64decode(encoded, "verifier key")
        if not raw.startswith(_ED25519) or len(raw) != 33:
            raise NoteError("verifier key is not an Ed25519 key")
        verifier = cls(_check_name(name), raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(f"verifier key ID {hex_id!r} does not match its key")

        return verifier

    def verify(self, body: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, body)
        except InvalidSignature:
            return False

        return True


@dataclass(frozen=True)
class Signer:
    name: str
    seed: bytes

    @classmethod
    def generate(cls, name: str) -> Signer:
        seed = Ed25519PrivateKey.generate().private_bytes_raw()
        return cls(_check_name(name), seed)

    @property
    def verifier(self) -> Verifier:
        public = Ed25519PrivateKey.from_private_bytes(self.seed).public_key()
        return Verifier(self.name, public.public_bytes(Encoding.Raw, PublicFormat.Raw))

    def to_skey(self) -> str:
        encoded = base64.b64encode(_ED25519 + self.seed).decode()
        return f"PRIVATE+KEY+{self.name}+{self.verifier.key_id.hex()}+{encoded}"

    @classmethod
    def from_skey(cls, text: str) -> Signer:
        parts = text.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("not a signer key (PRIVATE+KEY+name+id+key)")
        raw = _b64decode(parts[4], "signer key")
        if not raw.startswith(_ED25519) or len(raw) != 33:
            raise NoteError("signer key is not an Ed25519 key")
        signer = cls(_check_name(parts[2]), raw[1:])
        if signer.verifier.key_id.hex() != parts[3]:
            raise NoteError("signer key ID does not match its key")

        return signer

    def sign_note(self, body: str) -> str:
        data = body.encode()
        signature = Ed25519PrivateKey.from_private_bytes(self.seed).sign(data)
        encoded = base64.b64encode(self.verifier.key_id + signature).decode()

        return f"{body}\n{_SIG_PREFIX}{self.name} {encoded}\n"


def open_note(note: str, verifier: Verifier) -> str:
    """Return the note's body if ``verifier`` signed it, else raise NoteError."""
    body, sep, signatures = note.rpartition("\n\n")
    if not sep:
        raise NoteError("note has no blank line before its signatures")
    if not signatures.endswith("\n"):
        raise NoteError("note does not end in a newline after its signatures")
    body += "\n"
    # Only U+000A ends a line in a note; str.splitlines() would accept others.
    # Every line must parse before any is trusted.
    parsed: list[tuple[str, bytes]] = []
    for line in signatures[:-1].split("\n"):
        match = _SIGNATURE_LINE.fullmatch(line)
        if match is None:
            raise NoteError(f"malformed signature line {line!r}")
        parsed.append((match[1], _b64decode(match[2], "signature")))
    for name, raw in parsed:
        if name != verifier.name or raw[:4] != verifier.key_id:
            continue
        if verifier.verify(body.encode(), raw[4:]):
            return body
        raise NoteError(f"signature by {name} does not verify")

    raise NoteError(f"note is not signed by {verifier.name}+{verifier.key_id.hex()}")


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    tree_size: int
    root: bytes

    def body(self) -> str:
        root = base64.b64encode(self.root).decode()
        return f"{self.origin}\n{self.tree_size}\n{root}\n"

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        lines = body.split("\n")
        if len(lines) < 4 or not lines[0] or not _DECIMAL.fullmatch(lines[1]):
            raise NoteError("checkpoint body is not origin, tree size and root")
        root = _b64decode(lines[2], "checkpoint root")
        if len(root) != 32:
            raise NoteError("checkpoint root is not a SHA-256 hash")

        return cls(lines[0], int(lines[1]), root)


def open_checkpoint(note: str, verifier: Verifier) -> Checkpoint:
    return Checkpoint.parse(open_note(note, verifier))
