"""``penin keys``: create, list and revoke scoped API keys."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from penin.cli.ledger import data_dir_option, json_option
from penin.keys import ApiKey, ApiKeyError, KeyRing, Scope
from penin.keys.keyring import check_data_class, check_models
from penin.ledger.ledger import open_ledger
from penin.ledger.verify import require_ledger

T = TypeVar("T")


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
@click.option(
    "--data-class",
    callback=lambda ctx, param, value: _checked(check_data_class, value),
    help="The data class the key's requests are held to at least (like pii); "
    "default: the router policy's default class.",
)
@click.option(
    "--models",
    callback=lambda ctx, param, value: _checked(_model_list, value),
    help="Comma-separated logical models the key may use (like fast,smart); "
    "default: every model.",
)
@json_option
def create(
    data_dir: Path,
    scope: str,
    name: str,
    data_class: str | None,
    models: tuple[str, ...] | None,
    as_json: bool,
) -> None:
    """Create a key and print its token once; only its hash is kept."""
    ring = _keyring(data_dir)
    try:
        token, key = ring.create(
            Scope(scope), name, data_class=data_class, models=models
        )
    finally:
        ring.close()
    if as_json:
        click.echo(json.dumps({**key.public(), "token": token}))
        return
    click.echo(
        f"key id: {key.key_id}  scope: {key.scope.value}  name: {name or '-'}"
        + _limits_text(key)
    )
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
        models = ",".join(key.models) if key.models is not None else "-"
        click.echo(
            f"{key.key_id}\t{key.scope.value}\t{state}\t{key.name or '-'}"
            f"\t{key.data_class or '-'}\t{models}"
        )


def _checked(check: Callable[[str], T], value: str | None) -> T | None:
    """An option's value through ``check``; its ApiKeyError is a bad parameter."""
    if value is None:
        return None
    try:
        return check(value)
    except ApiKeyError as exc:
        raise click.BadParameter(str(exc)) from None


def _model_list(value: str) -> tuple[str, ...]:
    return check_models([name.strip() for name in value.split(",") if name.strip()])


def _limits_text(key: ApiKey) -> str:
    """The key's data class and models, when it has them, for a text line."""
    text = ""
    if key.data_class is not None:
        text += f"  data class: {key.data_class}"
    if key.models is not None:
        text += f"  models: {','.join(key.models)}"

    return text


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
