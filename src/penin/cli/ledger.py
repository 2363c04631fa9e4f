"""``penin ledger …``: create, append to, read, prove, verify and back up a ledger."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
import rfc8785

from penin.ledger import backup as backups
from penin.ledger import merkle
from penin.ledger.errors import InvalidRecordError, VerificationFailedError
from penin.ledger.ledger import WORMLedger, open_ledger
from penin.ledger.note import NoteError, Verifier, open_checkpoint
from penin.ledger.record import Record, parse_payload_json
from penin.ledger.verify import VerifyReport, require_ledger, verify_file

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PENIN_DATA_DIR",
    default=Path("data"),
    show_default=True,
    help="Directory that holds ledger.db and its key (env PENIN_DATA_DIR).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _emit(value: Any) -> None:
    click.echo(json.dumps(value, ensure_ascii=False))


def _show_record(record: Record, as_json: bool) -> None:
    if as_json:
        _emit(record.to_dict())
        return
    key = f" key={record.idempotency_key}" if record.idempotency_key else ""
    payload = json.dumps(record.payload, ensure_ascii=False)
    click.echo(f"{record.seq}\t{record.ts}\t{record.event_type}{key}\t{payload}")


def _open(data_dir: Path) -> WORMLedger:
    ledger = open_ledger(data_dir)
    require_ledger(ledger.path)

    return ledger


@click.group()
def ledger() -> None:
    """The tamper-evident ledger: records, proofs, checkpoints, backups."""


@ledger.command()
@data_dir_option
@click.option("--origin", help="Log origin and key name (default: random).")
def init(data_dir: Path, origin: str | None) -> None:
    """Create the ledger and its Ed25519 signing key (mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open_ledger(data_dir).initialize(origin) as created:
        click.echo(f"ledger: {created.path}")
        click.echo(f"key:    {created.key_path}")
        click.echo(f"vkey:   {created.verifier.vkey}")


@ledger.command()
@data_dir_option
@click.option("--type", "event_type", required=True, help="Dotted lowercase name.")
@click.option("--payload", required=True, help="A JSON object.")
@click.option(
    "--idempotency-key", help="Repeat-safe key: a second use appends nothing."
)
@json_option
def append(
    data_dir: Path,
    event_type: str,
    payload: str,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Append one record; it is durable when this returns."""
    value = parse_payload_json(payload)
    with _open(data_dir) as led:
        record = led.append_record(event_type, value, idempotency_key=idempotency_key)
    _show_record(record, as_json)


@ledger.command()
@data_dir_option
@click.option("--seq", type=int, required=True)
@json_option
def get(data_dir: Path, seq: int, as_json: bool) -> None:
    """Print one record."""
    with _open(data_dir) as led:
        _show_record(led.get(seq), as_json)


@ledger.command()
@data_dir_option
@click.option(
    "-n", "count", type=click.IntRange(1, 1000), default=10, show_default=True
)
@json_option
def tail(data_dir: Path, count: int, as_json: bool) -> None:
    """Print the last records."""
    with _open(data_dir) as led:
        size = led.count_records()
        for record in led.query(after_seq=size - count - 1, limit=count):
            _show_record(record, as_json)


@ledger.command()
@data_dir_option
@json_option
def count(data_dir: Path, as_json: bool) -> None:
    """Print the number of records (the tree size)."""
    with _open(data_dir) as led:
        size = led.count_records()
    _emit({"tree_size": size}) if as_json else click.echo(size)


@ledger.command()
@data_dir_option
@click.option(
    "--vkey", help="Trusted verifier key (default: the key file beside the ledger)."
)
@json_option
def verify(data_dir: Path, vkey: str | None, as_json: bool) -> None:
    """Recompute every hash, the chain, the tree and every checkpoint."""
    led = open_ledger(data_dir)
    require_ledger(led.path)
    trusted = _trusted_verifier(led, vkey)
    report = _verify_with_progress(led.path, trusted, show=not as_json)
    if as_json:
        _emit(report.to_dict())
    else:
        for warning in report.warnings:
            click.echo(f"warning: {warning}", err=True)
        if report.ok:
            click.echo(
                f"ok: {report.records_checked} records, "
                f"{report.checkpoints_checked} checkpoints verified"
            )
        else:
            where = (
                ""
                if report.first_bad_seq is None
                else f" at seq {report.first_bad_seq}"
            )
            click.echo(f"FAILED{where}: {report.reason}")
    sys.exit(0 if report.ok else 1)


def _trusted_verifier(led: WORMLedger, vkey: str | None) -> Verifier | None:
    """The key to trust: --vkey, else the key file beside the ledger, else none."""
    if vkey is not None:
        try:
            return Verifier.from_vkey(vkey)
        except NoteError as exc:
            raise InvalidRecordError(f"--vkey: {exc}") from None
    if led.key_path.exists():
        return led.read_key().verifier

    return None


def _verify_with_progress(
    path: Path, trusted: Verifier | None, show: bool
) -> VerifyReport:
    if not (show and sys.stderr.isatty()):
        return verify_file(path, trusted)
    from rich.progress import Progress  # noqa: PLC0415  (only a terminal needs it)

    with Progress(transient=True) as bar:
        task = bar.add_task("verifying", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return verify_file(path, trusted, advance)


@ledger.command()
@data_dir_option
def checkpoint(data_dir: Path) -> None:
    """Sign the current tree head and print the C2SP checkpoint note."""
    with _open(data_dir) as led:
        click.echo(led.checkpoint(), nl=False)


@ledger.command()
@data_dir_option
def vkey(data_dir: Path) -> None:
    """Print the verifier key (C2SP vkey form)."""
    with _open(data_dir) as led:
        click.echo(led.verifier.vkey)


@ledger.command()
@data_dir_option
@click.option("--seq", type=int, required=True)
@click.option("--tree-size", type=int, help="Default: the current size.")
@json_option
def prove(data_dir: Path, seq: int, tree_size: int | None, as_json: bool) -> None:
    """Print the RFC 9162 inclusion proof of a record."""
    with _open(data_dir) as led:
        proof = led.inclusion_proof(seq, tree_size)
        root = led.root(proof.tree_size)
    if as_json:
        _emit(proof.to_dict())
        return
    click.echo(f"leaf_index {proof.leaf_index}\ntree_size {proof.tree_size}")
    click.echo(f"root {root.hex()}")
    for h in proof.hashes:
        click.echo(h.hex())


@ledger.command("prove-consistency")
@data_dir_option
@click.option("--from", "old_size", type=int, required=True)
@click.option("--to", "new_size", type=int, required=True)
@json_option
def prove_consistency(
    data_dir: Path, old_size: int, new_size: int, as_json: bool
) -> None:
    """Print the RFC 9162 consistency proof between two tree sizes."""
    with _open(data_dir) as led:
        proof = led.consistency_proof(old_size, new_size)
    if as_json:
        _emit(proof.to_dict())
        return
    click.echo(f"old_size {proof.old_size}\nnew_size {proof.new_size}")
    for h in proof.hashes:
        click.echo(h.hex())


def _read_json(path: str, what: str) -> dict[str, Any]:
    """A JSON object from a file or stdin; NaN and Infinity are not JSON."""

    def refuse_constant(name: str) -> None:
        raise InvalidRecordError(
            f"{what} {path} holds {name}, which JSON does not allow"
        )

    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
        value = json.loads(text, parse_constant=refuse_constant)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidRecordError(f"{what} {path}: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRecordError(f"{what} {path} must hold a JSON object")

    return value


def _proof_int(proof: dict[str, Any], name: str) -> int:
    value = proof.get(name)
    if type(value) is not int:
        raise InvalidRecordError(f"proof JSON needs '{name}' as an integer")

    return value


def _hex_hash(text: str, what: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != merkle.HASH_SIZE:
        raise InvalidRecordError(f"{what} must be 64 hex digits")

    return value


def leaf_hash_of_record(record: dict[str, Any]) -> bytes:
    """The documented rule: SHA-256(0x00 ‖ RFC 8785 of the record minus leaf_hash)."""
    body = {k: v for k, v in record.items() if k != "leaf_hash"}
    try:
        return merkle.leaf_hash(rfc8785.dumps(body))
    except rfc8785.CanonicalizationError as exc:
        raise InvalidRecordError(f"record is not canonical JSON: {exc}") from None


@ledger.command("verify-proof")
@click.option(
    "--proof", "proof_path", required=True, help="Proof JSON file ('-' = stdin)."
)
@click.option("--record", "record_path", help="Record JSON (from 'get --json').")
@click.option("--leaf-hash", help="Leaf hash, hex (instead of --record).")
@click.option("--root", help="Root hash, hex.")
@click.option("--checkpoint", "checkpoint_path", help="Signed checkpoint note file.")
@click.option("--vkey", help="Verifier key of the checkpoint's signer.")
@click.option("--old-root", help="Consistency proofs: root at the old size, hex.")
def verify_proof(
    proof_path: str,
    record_path: str | None,
    leaf_hash: str | None,
    root: str | None,
    checkpoint_path: str | None,
    vkey: str | None,
    old_root: str | None,
) -> None:
    """Check a proof with no database: inclusion, or consistency with --old-root."""
    proof = _read_json(proof_path, "proof")
    try:
        hashes = [_hex_hash(h, "proof hash") for h in proof["hashes"]]
    except (KeyError, TypeError):
        raise InvalidRecordError("proof JSON has no 'hashes' list") from None
    new_root, size = _trusted_root(root, checkpoint_path, vkey)
    if old_root is not None:
        ok = _check_consistency(
            proof, hashes, _hex_hash(old_root, "--old-root"), new_root, size
        )
    else:
        ok = _check_inclusion(proof, hashes, record_path, leaf_hash, new_root, size)
    click.echo("ok: proof verifies" if ok else "FAILED: proof does not verify")
    sys.exit(0 if ok else 1)


def _trusted_root(
    root: str | None, checkpoint_path: str | None, vkey: str | None
) -> tuple[bytes, int | None]:
    if checkpoint_path is None:
        if root is None:
            raise click.UsageError("give --root, or --checkpoint with --vkey")
        return _hex_hash(root, "--root"), None
    if vkey is None:
        raise click.UsageError("--checkpoint needs --vkey to check its signature")
    try:
        note = Path(checkpoint_path).read_text()
        signed = open_checkpoint(note, Verifier.from_vkey(vkey))
    except OSError as exc:
        raise InvalidRecordError(
            f"checkpoint {checkpoint_path}: {exc.strerror}"
        ) from None
    except NoteError as exc:
        raise VerificationFailedError(f"checkpoint does not verify: {exc}") from None

    return signed.root, signed.tree_size


def _check_inclusion(
    proof: dict[str, Any],
    hashes: list[bytes],
    record_path: str | None,
    leaf_hash: str | None,
    root: bytes,
    size: int | None,
) -> bool:
    if (record_path is None) == (leaf_hash is None):
        raise click.UsageError("give exactly one of --record and --leaf-hash")
    if record_path is not None:
        record = _read_json(record_path, "record")
        leaf = leaf_hash_of_record(record)
        if "leaf_hash" in record and record["leaf_hash"] != leaf.hex():
            return False
    else:
        leaf = _hex_hash(str(leaf_hash), "--leaf-hash")
    index, tree_size = _proof_int(proof, "leaf_index"), _proof_int(proof, "tree_size")
    if size is not None and size != tree_size:
        return False

    return merkle.verify_inclusion(leaf, index, tree_size, hashes, root)


def _check_consistency(
    proof: dict[str, Any],
    hashes: list[bytes],
    old_root: bytes,
    new_root: bytes,
    size: int | None,
) -> bool:
    old_size, new_size = _proof_int(proof, "old_size"), _proof_int(proof, "new_size")
    if size is not None and size != new_size:
        return False

    return merkle.verify_consistency(old_size, new_size, old_root, new_root, hashes)


@ledger.command("backup")
@data_dir_option
@click.option(
    "--to", "dest", type=click.Path(file_okay=False, path_type=Path), required=True
)
@click.option("--keep-days", type=click.FloatRange(min=0), help="Delete older backups.")
@json_option
def backup_cmd(
    data_dir: Path, dest: Path, keep_days: float | None, as_json: bool
) -> None:
    """Copy the ledger online with a signed manifest; optionally prune old ones."""
    with _open(data_dir) as led:
        manifest = backups.backup(led, dest)
    removed = backups.prune(dest, keep_days) if keep_days is not None else []
    if as_json:
        _emit({**manifest.to_dict(), "pruned": [p.name for p in removed]})
        return
    click.echo(f"backup: {dest / manifest.file} ({manifest.tree_size} records)")
    for path in removed:
        click.echo(f"pruned: {path.name}")


@ledger.command("restore")
@data_dir_option
@click.option(
    "--from", "source", type=click.Path(dir_okay=False, path_type=Path), required=True
)
@click.option("--force", is_flag=True, help="Replace an existing ledger (kept aside).")
def restore_cmd(data_dir: Path, source: Path, force: bool) -> None:
    """Verify a backup completely, then make it the ledger."""
    manifest = backups.restore(open_ledger(data_dir), source, force=force)
    click.echo(f"restored: {manifest.tree_size} records from {source}")


@ledger.command("export")
@data_dir_option
@click.option("--after-seq", type=int, default=-1, show_default=True)
def export(data_dir: Path, after_seq: int) -> None:
    """Print every record as one JSON object a line (the 'get --json' shape)."""
    with _open(data_dir) as led:
        cursor = after_seq
        while batch := led.query(after_seq=cursor, limit=1000):
            for record in batch:
                _emit(record.to_dict())
            cursor = batch[-1].seq
