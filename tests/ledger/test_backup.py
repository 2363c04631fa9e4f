"""Online backups with signed manifests, verified restore, and retention."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from helpers import ORIGIN, append_n, assert_intact, assert_refused, invoke, penin
from penin.ledger import backup as backups
from penin.ledger import merkle
from penin.ledger.errors import BackupError, BackupRejectedError
from penin.ledger.ledger import WORMLedger, open_ledger
from penin.ledger.verify import verify_file

OLD_STAMP = "20200101T000000000000Z"
MARKER = "in-the-backup"


def _backup(data_dir: Path, dest: Path) -> Path:
    with WORMLedger(data_dir / "ledger.db") as led:
        manifest = backups.backup(led, dest)

    return dest / manifest.file


def _manifest_path(backup_file: Path) -> Path:
    return backup_file.with_suffix(".manifest.json")


def _edit_manifest(backup_file: Path, **changes: object) -> None:
    path = _manifest_path(backup_file)
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, **changes}))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _age(backup_file: Path) -> Path:
    """Rename a backup and its manifest as if written on 2020-01-01."""
    old = backup_file.with_name(f"ledger-{OLD_STAMP}.db")
    _manifest_path(backup_file).rename(_manifest_path(old))
    backup_file.rename(old)

    return old


@pytest.fixture
def backup_file(data_dir: Path, tmp_path: Path) -> Path:
    """A backup of data_dir's ledger grown to 5 records; seq 3 holds a marker."""
    with WORMLedger(data_dir / "ledger.db") as led:
        led.append_record("test.event", {"marker": MARKER})
        led.append_record("test.event", {"n": 3})

    return _backup(data_dir, tmp_path / "backups")


@pytest.fixture
def live(backup_file: Path, data_dir: Path) -> Path:
    """The live ledger after its backup, grown to 8 records."""
    path = data_dir / "ledger.db"
    with WORMLedger(path) as led:
        append_n(led, 3)

    return path


# -- taking backups ---------------------------------------------------------------


def test_a_backup_is_one_complete_file_with_a_signed_manifest(
    backup_file: Path, data_dir: Path
) -> None:
    manifest = backups.read_manifest(backup_file)
    trusted = open_ledger(data_dir).read_key().verifier

    assert manifest.tree_size == 5
    assert manifest.sha256 == _digest(backup_file)
    assert not Path(f"{backup_file}-wal").exists()
    assert backups.check_backup(backup_file, trusted) == manifest
    assert verify_file(backup_file, trusted).records_checked == 5


def test_backup_while_another_thread_appends_is_a_verified_prefix(
    ledger: WORMLedger, tmp_path: Path
) -> None:
    append_n(ledger, 50)
    stop = threading.Event()

    def keep_appending() -> None:
        for i in range(5000):
            if stop.is_set():
                return
            ledger.append_record("test.during_backup", {"i": i})

    appender = threading.Thread(target=keep_appending)
    appender.start()
    try:
        manifest = backups.backup(ledger, tmp_path / "backups")
    finally:
        stop.set()
        appender.join(timeout=60)
    assert not appender.is_alive()
    size = ledger.count_records()
    proof = ledger.consistency_proof(manifest.tree_size, size)

    assert 50 <= manifest.tree_size <= size
    assert merkle.verify_consistency(
        manifest.tree_size,
        size,
        bytes.fromhex(manifest.root),
        ledger.root(size),
        proof.hashes,
    )
    assert backups.check_backup(tmp_path / "backups" / manifest.file, ledger.verifier)


def test_cli_backup_prints_the_manifest_as_json(data_dir: Path, tmp_path: Path) -> None:
    result = penin("backup", "--data-dir", data_dir, "--to", tmp_path / "b", "--json")

    manifest = json.loads(result.stdout)

    assert result.returncode == 0, result.stderr
    assert manifest["tree_size"] == 3
    assert set(manifest) == {
        "file", "created", "tree_size", "root", "checkpoint", "vkey", "sha256",
        "pruned",
    }  # fmt: skip
    assert (tmp_path / "b" / manifest["file"]).is_file()


# -- restoring ----------------------------------------------------------------------


def test_restore_with_force_replaces_the_ledger_and_keeps_the_old_aside(
    backup_file: Path, live: Path, data_dir: Path
) -> None:
    result = invoke("restore", "--data-dir", data_dir, "--from", backup_file, "--force")

    aside = list(data_dir.glob("ledger.db.replaced-*"))

    assert result.exit_code == 0, result.stderr
    assert "restored: 5 records" in result.stdout
    assert_intact(live, 5)
    assert len(aside) == 1
    assert_intact(aside[0], 8)


def test_restored_ledger_takes_new_appends(backup_file: Path, live: Path) -> None:
    with WORMLedger(live) as led:
        backups.restore(led, backup_file, force=True)

    with WORMLedger(live) as led:
        record = led.append_record("test.event", {"after": "restore"})

    assert record.seq == 5
    assert_intact(live, 6)


def test_restore_without_force_refuses_and_names_the_flag(
    backup_file: Path, live: Path, data_dir: Path
) -> None:
    before = _digest(live)

    result = invoke("restore", "--data-dir", data_dir, "--from", backup_file)

    assert_refused(result, 2, "--force")
    assert _digest(live) == before
    assert_intact(live, 8)


def test_restore_into_a_data_dir_that_lost_its_ledger_but_kept_its_key(
    backup_file: Path, data_dir: Path, tmp_path: Path
) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    (fresh / "ledger.key").write_text((data_dir / "ledger.key").read_text())

    result = invoke("restore", "--data-dir", fresh, "--from", backup_file)

    assert result.exit_code == 0, result.stderr
    assert_intact(fresh / "ledger.db", 5)


def _flip_a_byte(backup_file: Path) -> None:
    data = bytearray(backup_file.read_bytes())
    data[len(data) // 2] ^= 0x01
    backup_file.write_bytes(bytes(data))


def _truncate(backup_file: Path) -> None:
    data = backup_file.read_bytes()
    backup_file.write_bytes(data[: len(data) // 2])


def _resize_in_manifest(backup_file: Path) -> None:
    _edit_manifest(backup_file, tree_size=4)


def _reroot_in_manifest(backup_file: Path) -> None:
    _edit_manifest(backup_file, root="00" * 32)


def _forge_manifest_checkpoint(backup_file: Path) -> None:
    manifest = json.loads(_manifest_path(backup_file).read_text())
    _edit_manifest(
        backup_file, checkpoint=manifest["checkpoint"].replace("\n5\n", "\n4\n")
    )


def _drop_manifest(backup_file: Path) -> None:
    _manifest_path(backup_file).unlink()


def _garble_manifest(backup_file: Path) -> None:
    _manifest_path(backup_file).write_text("{not json")


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_a_byte, "does not match its manifest's SHA-256"),
        (_truncate, "does not match its manifest's SHA-256"),
        (_resize_in_manifest, "tree size or root differ"),
        (_reroot_in_manifest, "tree size or root differ"),
        (_forge_manifest_checkpoint, "checkpoint does not verify"),
        (_drop_manifest, "manifest.json is missing"),
        (_garble_manifest, "is not a backup manifest"),
    ],
)
def test_a_damaged_backup_is_refused_and_the_live_ledger_untouched(
    backup_file: Path, live: Path, data_dir: Path, damage: object, reason: str
) -> None:
    before = _digest(live)
    damage(backup_file)  # type: ignore[operator]

    result = invoke("restore", "--data-dir", data_dir, "--from", backup_file, "--force")

    assert_refused(result, 1, reason)
    assert _digest(live) == before
    assert list(data_dir.glob("*.replaced-*")) == []
    assert_intact(live, 8)


def test_a_changed_backup_with_a_matching_sha_fails_full_verification(
    backup_file: Path, live: Path, data_dir: Path
) -> None:
    data = bytearray(backup_file.read_bytes())
    data[data.find(MARKER.encode())] ^= 0x01
    backup_file.write_bytes(bytes(data))
    _edit_manifest(backup_file, sha256=_digest(backup_file))

    result = invoke("restore", "--data-dir", data_dir, "--from", backup_file, "--force")

    assert_refused(result, 1, "fails verification at seq 3")
    assert_intact(live, 8)


def test_a_backup_of_another_ledger_is_refused_as_foreign(
    live: Path, data_dir: Path, tmp_path: Path
) -> None:
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    with WORMLedger(other_dir / "ledger.db").initialize(ORIGIN) as other:
        append_n(other, 4)
    foreign = _backup(other_dir, tmp_path / "foreign")

    result = invoke("restore", "--data-dir", data_dir, "--from", foreign, "--force")

    assert_refused(result, 1, "refusing a foreign backup")
    assert_intact(live, 8)


def test_restore_of_a_missing_backup_names_it(data_dir: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"

    with (
        WORMLedger(data_dir / "ledger.db") as led,
        pytest.raises(BackupError, match="does not exist"),
    ):
        backups.restore(led, missing, force=True)


def test_check_backup_refuses_with_the_rejection_type(
    backup_file: Path, data_dir: Path
) -> None:
    _truncate(backup_file)
    trusted = open_ledger(data_dir).read_key().verifier

    with pytest.raises(BackupRejectedError):
        backups.check_backup(backup_file, trusted)


# -- retention ----------------------------------------------------------------------


def test_prune_deletes_backups_older_than_keep_days(
    backup_file: Path, data_dir: Path
) -> None:
    fresh = _backup(data_dir, backup_file.parent)
    old = _age(backup_file)

    removed = backups.prune(backup_file.parent, keep_days=7)

    assert removed == [old]
    assert not old.exists()
    assert not _manifest_path(old).exists()
    assert fresh.exists()
    assert _manifest_path(fresh).exists()


def test_prune_keeps_everything_until_it_is_old_enough(backup_file: Path) -> None:
    created = time.time()
    dest = backup_file.parent

    assert backups.prune(dest, keep_days=1, now=created + 0.5 * 86400) == []
    assert backups.prune(dest, keep_days=1, now=created + 2 * 86400) == [backup_file]
    assert list(dest.iterdir()) == []


def test_prune_leaves_files_it_did_not_write(backup_file: Path) -> None:
    dest = backup_file.parent
    (dest / "README.txt").write_text("keep me")
    (dest / "ledger-someday.manifest.json").write_text("{}")

    backups.prune(dest, keep_days=0, now=time.time() + 86400)

    assert sorted(p.name for p in dest.iterdir()) == [
        "README.txt",
        "ledger-someday.manifest.json",
    ]


def test_cli_backup_with_keep_days_prunes_old_and_keeps_the_new(
    backup_file: Path, data_dir: Path
) -> None:
    old = _age(backup_file)

    result = penin(
        "backup", "--data-dir", data_dir, "--to", backup_file.parent, "--keep-days", 7
    )

    remaining = sorted(p.name for p in backup_file.parent.glob("*.db"))

    assert result.returncode == 0, result.stderr
    assert f"pruned: {old.name}" in result.stdout
    assert len(remaining) == 1
    assert remaining[0] != old.name
