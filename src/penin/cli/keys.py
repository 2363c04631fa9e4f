"""``penin keys``: create, list and revoke scoped API keys."""

from __future__ import annotations

import json
from pathlib import Path

import click

from penin.cli.ledger import data_dir_option, json_option
from penin.keys import ApiKeyError, KeyRing, Scope
from penin.ledger.ledger import open_ledger
from penin.ledger.verify import require_ledger


def _keyring(data_dir: Path) -> KeyRing:
    ledger = open_ledger(data_dir)
    require_ledger(ledger.path)

    return KeyRing(ledger)


@click.group()
def keys() -> None:
    """Scoped API keys (stored as hashes in the ledger)."""


@keys.command()
@data_dir_option
@click.option("--scope", type=click.Choice([s.value for s in Scope]), required=True)
@click.option("--name", default="", help="A label to recognise the key by.")
@json_option
def create(data_dir: Path, scope: str, name: str, as_json: bool) -> None:
    """Create a key and print its token once; only its hash is kept."""
    ring = _keyring(data_dir)
    try:
        token, key = ring.create(Scope(scope), name)
    finally:
        ring.close()
    if as_json:
        click.echo(json.dumps({**key.public(), "token": token}))
        return
    click.echo(f"key id: {key.key_id}  scope: {key.scope.value}  name: {name or '-'}")
    click.echo(f"token:  {token}")
    click.echo("The token is shown once and cannot be recovered.", err=True)


@keys.command("list")
@data_dir_option
@json_option
def list_keys(data_dir: Path, as_json: bool) -> None:
    """List keys (never their tokens)."""
    ring = _keyring(data_dir)
    try:
        found = ring.list()
    finally:
        ring.close()
    if as_json:
        click.echo(json.dumps([k.public() for k in found]))
        return
    for key in found:
        state = "revoked" if key.revoked else "active"
        click.echo(f"{key.key_id}\t{key.scope.value}\t{state}\t{key.name or '-'}")


@keys.command()
@data_dir_option
@click.argument("key_id")
def revoke(data_dir: Path, key_id: str) -> None:
    """Revoke a key by its id; every node stops accepting it."""
    ring = _keyring(data_dir)
    try:
        ring.revoke(key_id)
    except ApiKeyError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        ring.close()
    click.echo(f"revoked: {key_id}")
