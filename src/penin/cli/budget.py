"""``penin budget status``: today's spend against the configured budgets.

It reads the node's ledger (or the shared Redis budget) and needs no node.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import click

from penin.cli._config import BadConfigError, config_option, node_settings
from penin.config import Settings


@click.group()
def budget() -> None:
    """Today's spend against the configured budgets."""


@budget.command("status")
@config_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key-id", help="Also show this API key's own budget.")
@click.option("--json", "as_json", is_flag=True)
def budget_status(
    config_file: Path | None, data_dir: Path | None, key_id: str | None, as_json: bool
) -> None:
    """Spent and left today (UTC), from the ledger or the shared Redis.

    From the ledger, spent is the cost of today's router.request records;
    from Redis, it also counts the reservations of calls still in flight.
    """
    settings = node_settings(config_file, data_dir)
    source, status = asyncio.run(_budget_status(settings, key_id))
    if key_id is None:
        status["key_committed_usd"] = None
    if as_json:
        click.echo(json.dumps({"source": source, **status}, indent=2))
        return
    click.echo(f"budget of {status['day']} (UTC), from {source}")
    click.echo("global: " + _spend_text(status, "global"))
    if key_id is not None:
        click.echo(f"key {key_id}: " + _spend_text(status, "key"))
    elif status["key_limit_usd"] is not None:
        per_key = _amount(status["key_limit_usd"])
        click.echo(f"per key: {per_key} USD a day (--key-id shows one key's spend)")


async def _budget_status(
    settings: Settings, key_id: str | None
) -> tuple[str, dict[str, Any]]:
    from penin.cache.errors import CacheError  # noqa: PLC0415
    from penin.ledger.ledger import open_ledger  # noqa: PLC0415
    from penin.ledger.verify import require_ledger  # noqa: PLC0415
    from penin.router.budget import Budget, MemoryBudgetStore  # noqa: PLC0415
    from penin.router.budget_redis import RedisBudgetStore  # noqa: PLC0415
    from penin.router.errors import RouterError  # noqa: PLC0415

    # Nodes keep their counters in Redis only when a limit is set.
    shared = settings.budget.redis_url or settings.cache.redis_url
    redis_url = shared if settings.budget.limited else None
    try:
        store = RedisBudgetStore(redis_url) if redis_url else MemoryBudgetStore()
    except CacheError as exc:
        raise BadConfigError(str(exc)) from None
    source = f"Redis at {store.where}" if isinstance(store, RedisBudgetStore) else ""
    budget = Budget(settings.budget, store)
    try:
        if not source:
            ledger = open_ledger(settings.data_dir)
            source = f"the ledger {ledger.path}"
            require_ledger(ledger.path)
            with ledger:
                await budget.rebuild(ledger)
        status = await budget.status(key_id)
    except RouterError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        await budget.close()

    return source, status.to_dict()


def _spend_text(status: dict[str, Any], scope: str) -> str:
    spent = _amount(status[f"{scope}_committed_usd"])
    limit = status[f"{scope}_limit_usd"]
    if limit is None:
        return f"spent {spent} USD, no limit"
    left = _amount(status[f"{scope}_remaining_usd"])
    text = f"spent {spent} of {_amount(limit)} USD, {left} USD left"
    if status[f"{scope}_soft"]:
        text += f"; soft limit ({status['soft_fraction']:.0%}) reached"

    return text


def _amount(usd: float) -> str:
    """USD to the nano-USD, without trailing zeros: 0.000036, 1, 0.5."""
    return f"{usd:.9f}".rstrip("0").rstrip(".")
