"""The ledger's signing key file: ``ledger.key`` beside ``ledger.db``.

It holds one Ed25519 signing key in C2SP note format (``PRIVATE+KEY+...``),
mode 0600, created with the ledger and never rewritten. Every member of a
cluster holds the same file (docs/ha.md, "The cluster's signing key").
"""

from __future__ import annotations

import os
from pathlib import Path

from penin.ledger.errors import KeyFileError, LedgerError, LedgerUnavailableError
from penin.ledger.note import NoteError, Signer


def load_or_create(path: Path, origin: str) -> Signer:
    """The key at ``path``; a new one named after ``origin`` if there is none."""
    if path.exists():
        return read(path)
    try:
        signer = Signer.generate(origin)
    except NoteError as exc:
        raise LedgerError(f"origin {origin!r} cannot name a key: {exc}") from None
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise LedgerUnavailableError(
            f"cannot create key file {path}: {exc.strerror}"
        ) from None
    with os.fdopen(fd, "w") as handle:
        handle.write(signer.to_skey() + "\n")
        handle.flush()
        os.fsync(handle.fileno())

    return signer


def read(path: Path) -> Signer:
    """The key at ``path``; KeyFileError saying why when it cannot be read."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise KeyFileError(
            f"signing key {path} is missing; restore it from your backup"
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot read signing key {path}: {exc.strerror}") from None
    try:
        return Signer.from_skey(text)
    except NoteError as exc:
        raise KeyFileError(f"{path} is not a signing key: {exc}") from None
