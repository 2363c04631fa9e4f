"""Online backup with a signed manifest, verified restore, and retention.

A backup is two files in the target directory: ``ledger-<UTC time>.db``, a
copy taken with SQLite's online backup API while appends go on, and
``ledger-<UTC time>.manifest.json``: tree size, root, a checkpoint signed at
exactly that size, the verifier key and the SHA-256 of the copy. Restore checks
all of it, and verifies the copy completely, before it replaces anything.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from penin.ledger import store
from penin.ledger.errors import BackupError, BackupRejectedError, LedgerError
from penin.ledger.note import Checkpoint, NoteError, Verifier, open_checkpoint
from penin.ledger.verify import verify_file

if TYPE_CHECKING:
    from penin.ledger.ledger import WORMLedger

log = structlog.get_logger("penin.ledger")

_STAMP = "%Y%m%dT%H%M%S%fZ"
_PREFIX = "ledger-"


@dataclass(frozen=True)
class Manifest:
    file: str
    created: str
    tree_size: int
    root: str
    checkpoint: str
    vkey: str
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)

    return digest.hexdigest()


def fsync_path(path: Path) -> None:
    """Flush a file (or a directory's entries) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def backup(ledger: WORMLedger, dest_dir: Path) -> Manifest:
    """Copy the ledger online, sign its exact size, and write the manifest."""
    signer = ledger.signer()
    dest_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime(_STAMP)
    target = dest_dir / f"{_PREFIX}{stamp}.db"
    partial = target.with_suffix(".partial")
    source = store.connect(ledger.path, readonly=True)
    try:
        copy = sqlite3.connect(partial, isolation_level=None)
        try:
            source.backup(copy, pages=4096)
            copy.execute("PRAGMA journal_mode=DELETE")
            size = store.tree_size(copy)
        finally:
            copy.close()
    except sqlite3.DatabaseError as exc:
        partial.unlink(missing_ok=True)
        raise store.translate(exc, dest_dir) from None
    finally:
        source.close()
    note = _sign_copy(ledger, partial, size, signer)
    fsync_path(partial)
    partial.replace(target)
    root = open_checkpoint(note, signer.verifier).root
    manifest = Manifest(
        file=target.name,
        created=stamp,
        tree_size=size,
        root=root.hex(),
        checkpoint=note,
        vkey=signer.verifier.vkey,
        sha256=_sha256(target),
    )
    manifest_path = target.with_suffix(".manifest.json")
    manifest_path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    fsync_path(manifest_path)
    log.info("ledger.backup_written", file=str(target), tree_size=size)

    return manifest


def _sign_copy(ledger: WORMLedger, copy_path: Path, size: int, signer: Any) -> str:
    """Sign the copy's exact size (a prefix of the live log) into the copy."""
    copy = type(ledger)(copy_path, key_path=ledger.key_path)
    try:
        copy.initialize()
        if copy.count_records() != size:
            raise BackupError("the copy changed while it was being signed")
        return copy.checkpoint()
    finally:
        copy.close()
        _fold_wal(copy_path, keep_wal_mode=False)


def read_manifest(backup_file: Path) -> Manifest:
    path = backup_file.with_suffix(".manifest.json")
    try:
        data = json.loads(path.read_text())
        return Manifest(**data)
    except FileNotFoundError:
        raise BackupRejectedError(
            f"{path} is missing; a backup needs its manifest"
        ) from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise BackupRejectedError(f"{path} is not a backup manifest: {exc}") from None


def check_backup(backup_file: Path, trusted: Verifier) -> Manifest:
    """Everything restore checks, without touching the live ledger."""
    if not backup_file.is_file():
        raise BackupError(f"{backup_file} does not exist")
    manifest = read_manifest(backup_file)
    if manifest.vkey != trusted.vkey:
        raise BackupRejectedError(
            f"backup is signed by {manifest.vkey}, not by this ledger's key "
            f"{trusted.vkey}; refusing a foreign backup"
        )
    if _sha256(backup_file) != manifest.sha256:
        raise BackupRejectedError(
            f"{backup_file} does not match its manifest's SHA-256"
        )
    try:
        signed = open_checkpoint(manifest.checkpoint, trusted)
    except NoteError as exc:
        raise BackupRejectedError(
            f"manifest checkpoint does not verify: {exc}"
        ) from None
    if signed != Checkpoint(
        signed.origin, manifest.tree_size, bytes.fromhex(manifest.root)
    ):
        raise BackupRejectedError(
            "manifest tree size or root differ from its checkpoint"
        )
    try:
        report = verify_file(backup_file, trusted)
    except LedgerError as exc:
        raise BackupRejectedError(f"{backup_file}: {exc}") from None
    if not report.ok:
        where = (
            "" if report.first_bad_seq is None else f" at seq {report.first_bad_seq}"
        )
        raise BackupRejectedError(f"backup fails verification{where}: {report.reason}")
    if report.tree_size != manifest.tree_size:
        raise BackupRejectedError(
            f"backup holds {report.tree_size} records, its manifest says "
            f"{manifest.tree_size}; it is truncated or extended"
        )

    return manifest


def restore(ledger: WORMLedger, backup_file: Path, *, force: bool = False) -> Manifest:
    """Replace the ledger by a verified backup; the old file is kept aside."""
    # A data directory that lost its ledger still holds the key it trusts.
    trusted = (ledger.signer() if ledger.path.exists() else ledger.read_key()).verifier
    manifest = check_backup(backup_file, trusted)
    if ledger.path.exists() and not force:
        raise BackupError(
            f"a ledger already exists at {ledger.path}; pass --force to replace it "
            "(the old file is kept aside)"
        )
    ledger.close()
    staging = ledger.path.with_name(ledger.path.name + ".restoring")
    shutil.copyfile(backup_file, staging)
    fsync_path(staging)
    if ledger.path.exists():
        aside = ledger.path.with_name(
            f"{ledger.path.name}.replaced-{datetime.now(UTC).strftime(_STAMP)}"
        )
        _fold_wal(ledger.path, keep_wal_mode=True)
        ledger.path.replace(aside)
        log.warning("ledger.replaced", kept_as=str(aside))
    for suffix in ("-wal", "-shm"):
        Path(f"{ledger.path}{suffix}").unlink(missing_ok=True)
    staging.replace(ledger.path)
    log.info("ledger.restored", source=str(backup_file), tree_size=manifest.tree_size)

    return manifest


def _fold_wal(path: Path, *, keep_wal_mode: bool) -> None:
    """Fold the WAL into the main file, so that the file alone is complete."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        if not keep_wal_mode:
            conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


def prune(dest_dir: Path, keep_days: float, *, now: float | None = None) -> list[Path]:
    """Delete backups (file and manifest) older than ``keep_days``."""
    cutoff = (time.time() if now is None else now) - keep_days * 86400
    removed = []
    for manifest_path in sorted(dest_dir.glob(f"{_PREFIX}*.manifest.json")):
        stamp = manifest_path.name[len(_PREFIX) : -len(".manifest.json")]
        try:
            created = datetime.strptime(stamp, _STAMP).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
        if created < cutoff:
            backup_file = manifest_path.with_name(f"{_PREFIX}{stamp}.db")
            backup_file.unlink(missing_ok=True)
            manifest_path.unlink()
            removed.append(backup_file)
    if removed:
        log.info("ledger.backups_pruned", count=len(removed), keep_days=keep_days)

    return removed
