"""``penin providers list|check``: what the config file routes to, and whether
each provider answers. Both read the config file; neither needs a node."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import click

from penin.cli._config import BadConfigError, config_option, node_settings
from penin.config import Settings
from penin.router.config import DeploymentConfig, ProviderConfig


@click.group()
def providers() -> None:
    """The providers and deployments of the node's config."""


@providers.command("list")
@config_option
@click.option("--json", "as_json", is_flag=True)
def list_providers(config_file: Path | None, as_json: bool) -> None:
    """Each provider with the deployments that use it, and their prices.

    Prices are the deployment's own where it sets them, else the bundled
    price table's. A provider key is never printed, only whether it is set.
    """
    rows = _provider_rows(node_settings(config_file))
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no providers configured")
    for row in rows:
        click.echo(f"{row['name']}  {row['kind']}  {row['base_url']}  {_key_text(row)}")
        for used in row["deployments"]:
            click.echo(f"  {used['model']} → {used['deployment']}  {_price_text(used)}")
        if not row["deployments"]:
            click.echo("  (no logical model uses it)")


def _provider_rows(settings: Settings) -> list[dict[str, Any]]:
    from penin.router.prices import PriceTable  # noqa: PLC0415

    table = PriceTable.bundled()
    rows: list[dict[str, Any]] = []
    for provider in settings.providers:
        deployments = []
        for model in settings.models:
            for d in model.deployments:
                if d.provider != provider.name:
                    continue
                try:
                    price = table.for_deployment(d, provider.kind)
                    prices: dict[str, Any] = {
                        "input_per_mtok": price.input_per_mtok,
                        "output_per_mtok": price.output_per_mtok,
                        "price_source": _price_source(d, table.source_version),
                    }
                except ValueError as exc:
                    prices = {"price_error": str(exc)}
                deployments.append(
                    {"model": model.name, "deployment": d.model, **prices}
                )
        env = provider.api_key_env
        rows.append(
            {
                "name": provider.name,
                "kind": provider.kind,
                "base_url": provider.base_url,
                "api_key_env": env,
                "api_key_set": bool(env and os.environ.get(env)),
                "deployments": deployments,
            }
        )

    return rows


def _price_source(deployment: DeploymentConfig, table_version: str) -> str:
    own = (deployment.input_per_mtok, deployment.output_per_mtok)
    table = f"price table {table_version}".strip()
    if None not in own:
        return "config"

    return table if own == (None, None) else f"config and {table}"


def _key_text(row: dict[str, Any]) -> str:
    if not row["api_key_env"]:
        return "no key"

    return f"key ${row['api_key_env']} ({'set' if row['api_key_set'] else 'NOT SET'})"


def _price_text(used: dict[str, Any]) -> str:
    if "price_error" in used:
        return str(used["price_error"])

    return (
        f"in {used['input_per_mtok']:g} / out {used['output_per_mtok']:g} "
        f"USD per Mtok ({used['price_source']})"
    )


@providers.command("check")
@config_option
@click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=10.0,
    show_default=True, help="Seconds each provider has to answer.",
)  # fmt: skip
def check_providers(config_file: Path | None, timeout: float) -> None:
    """List each provider's models over its API; exit 1 if any cannot answer.

    The providers are asked at once, so the check takes at most --timeout.
    """
    settings = node_settings(config_file)
    if not settings.providers:
        raise BadConfigError("no providers configured; see docs/router.md")
    results = asyncio.run(_check_all(settings, timeout))
    for name, ok, detail in results:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


async def _check_all(settings: Settings, timeout: float) -> list[tuple[str, bool, str]]:
    async with aiohttp.ClientSession() as session:
        checks = [_check(config, session, timeout) for config in settings.providers]
        return list(await asyncio.gather(*checks))


async def _check(
    config: ProviderConfig, session: aiohttp.ClientSession, timeout: float
) -> tuple[str, bool, str]:
    from penin.router import providers as adapters  # noqa: PLC0415
    from penin.router.deployments import ConfigurationError, api_key  # noqa: PLC0415
    from penin.router.errors import ProviderError  # noqa: PLC0415

    started = time.perf_counter()
    try:
        adapter = adapters.build(
            config, session, api_key(config.api_key_env, config.name)
        )
        names = await asyncio.wait_for(adapter.list_models(), timeout)
    except ConfigurationError as exc:
        return config.name, False, str(exc)
    except ProviderError as exc:
        status = f" ({exc.status})" if exc.status is not None else ""
        return config.name, False, f"{exc.kind.value}{status}: {exc.message}"
    except TimeoutError:
        return config.name, False, f"no answer within {timeout:g} s"
    ms = (time.perf_counter() - started) * 1000

    return config.name, True, f"{len(names)} models in {ms:.0f} ms"
