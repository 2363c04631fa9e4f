"""``penin route``, ``penin providers list|check`` and ``penin budget status``.

``route`` is a client of a running node (its key in ``PENIN_API_KEY``); the
other two read the node's config file and its data directory, and need no
running node.
"""

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

from penin.config import ConfigError, Settings, load_settings

# The name of the variable that holds the token, not a token.
TOKEN_ENV = "PENIN_API_KEY"  # noqa: S105

_config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's YAML config file.",
)


def _settings(config_file: Path | None, data_dir: Path | None = None) -> Settings:
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    try:
        return load_settings(config_file, overrides)
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None


# -- penin route ------------------------------------------------------------


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", required=True, help="The logical model to ask.")
@click.option("--stream", is_flag=True, help="Print the answer as it arrives.")
@click.option("--system", help="A system message before the prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1))
@click.option("--url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole response.")
def route(
    prompt: str,
    model: str,
    stream: bool,
    system: str | None,
    max_tokens: int | None,
    url: str,
    as_json: bool,
) -> None:
    """Send PROMPT to a running node and print the answer.

    The key (scope route) is read from PENIN_API_KEY. The deployment that
    answered and the cost go to stderr.
    """
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise click.UsageError(
            f"set {TOKEN_ENV} to an API key of scope route "
            "(penin keys create --scope route)"
        )
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": prompt})
    body: dict[str, Any] = {"model": model, "messages": messages, "stream": stream}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    code = asyncio.run(_route(url.rstrip("/"), token, body, as_json))
    sys.exit(code)


async def _route(url: str, token: str, body: dict[str, Any], as_json: bool) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=600, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r,
        ):
            if r.status != 200:
                problem = await r.text()
                click.echo(f"error: the node answered {r.status}: {problem}", err=True)
                return 1
            if body["stream"]:
                await _print_stream(r, as_json)
            else:
                answer = await r.json()
                text = answer["choices"][0]["message"].get("content") or ""
                click.echo(json.dumps(answer, indent=2) if as_json else text)
            _print_route_facts(r.headers)
    except aiohttp.ClientError as exc:
        click.echo(f"error: cannot reach the node at {url}: {exc}", err=True)
        return 2

    return 0


async def _print_stream(response: aiohttp.ClientResponse, as_json: bool) -> None:
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(": penin-cost-usd="):
            click.echo(f"\ncost: {line.split('=', 1)[1]} USD", err=True)
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[len("data: ") :])
        if as_json:
            click.echo(json.dumps(chunk))
            continue
        for choice in chunk.get("choices") or []:
            click.echo((choice.get("delta") or {}).get("content") or "", nl=False)
    if not as_json:
        click.echo()


def _print_route_facts(headers: Any) -> None:
    facts = [
        f"deployment: {headers.get('x-penin-deployment', '-')}",
        f"cost: {headers['x-penin-cost-usd']} USD"
        if "x-penin-cost-usd" in headers
        else "",
        f"budget left: {headers['x-penin-budget-remaining-usd']} USD"
        if "x-penin-budget-remaining-usd" in headers
        else "",
    ]
    click.echo("  ".join(f for f in facts if f), err=True)


# -- penin providers ----------------------------------------------------------


@click.group()
def providers() -> None:
    """The providers and deployments of the node's config."""


@providers.command("list")
@_config_option
@click.option("--json", "as_json", is_flag=True)
def list_providers(config_file: Path | None, as_json: bool) -> None:
    """Each provider with the deployments that use it, and their prices."""
    from penin.router.prices import PriceTable  # noqa: PLC0415

    settings = _settings(config_file)
    table = PriceTable.bundled()
    kinds = {p.name: p.kind for p in settings.providers}
    rows: list[dict[str, Any]] = []
    for provider in settings.providers:
        deployments = []
        for model in settings.models:
            for d in model.deployments:
                if d.provider != provider.name:
                    continue
                try:
                    price = table.for_deployment(d, kinds[d.provider])
                    prices: dict[str, Any] = {
                        "input_per_mtok": price.input_per_mtok,
                        "output_per_mtok": price.output_per_mtok,
                    }
                except ValueError as exc:
                    prices = {"price_error": str(exc)}
                deployments.append(
                    {"model": model.name, "deployment": d.model, **prices}
                )
        rows.append(
            {
                "name": provider.name,
                "kind": provider.kind,
                "base_url": provider.base_url,
                "api_key_env": provider.api_key_env,
                "deployments": deployments,
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no providers configured")
    for row in rows:
        click.echo(f"{row['name']}  ({row['kind']}, {row['base_url']})")
        for used in row["deployments"]:
            click.echo(f"  {used['model']} → {used['deployment']}  {_price_text(used)}")


def _price_text(used: dict[str, Any]) -> str:
    if "price_error" in used:
        return str(used["price_error"])

    return f"in {used['input_per_mtok']} / out {used['output_per_mtok']} USD per Mtok"


@providers.command("check")
@_config_option
@click.option("--timeout", type=float, default=10.0, show_default=True)
def check_providers(config_file: Path | None, timeout: float) -> None:
    """List each provider's models over its API; exit 1 if any cannot answer."""
    settings = _settings(config_file)
    if not settings.providers:
        raise click.UsageError("no providers configured; see docs/router.md")
    results = asyncio.run(_check_all(settings, timeout))
    for name, ok, detail in results:
        click.echo(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
    sys.exit(0 if all(ok for _, ok, _ in results) else 1)


async def _check_all(settings: Settings, timeout: float) -> list[tuple[str, bool, str]]:
    from penin.router import providers as adapters  # noqa: PLC0415
    from penin.router.deployments import ConfigurationError, api_key  # noqa: PLC0415
    from penin.router.errors import ProviderError  # noqa: PLC0415

    results = []
    async with aiohttp.ClientSession() as session:
        for config in settings.providers:
            try:
                adapter = adapters.build(
                    config, session, api_key(config.api_key_env, config.name)
                )
                started = time.perf_counter()
                names = await asyncio.wait_for(adapter.list_models(), timeout)
            except ConfigurationError as exc:
                results.append((config.name, False, str(exc)))
            except ProviderError as exc:
                results.append((config.name, False, str(exc)))
            except TimeoutError:
                results.append((config.name, False, f"no answer within {timeout} s"))
            else:
                ms = (time.perf_counter() - started) * 1000
                results.append(
                    (config.name, True, f"{len(names)} models in {ms:.0f} ms")
                )

    return results


# -- penin budget ---------------------------------------------------------------


@click.group()
def budget() -> None:
    """Today's spend against the configured budgets."""


@budget.command("status")
@_config_option
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--key-id", help="Also show this API key's own budget.")
@click.option("--json", "as_json", is_flag=True)
def budget_status(
    config_file: Path | None, data_dir: Path | None, key_id: str | None, as_json: bool
) -> None:
    """Spent, reserved and left today (UTC), from the ledger or the shared Redis."""
    settings = _settings(config_file, data_dir)
    status = asyncio.run(_budget_status(settings, key_id))
    if as_json:
        click.echo(json.dumps(status, indent=2))
        return
    for name, value in status.items():
        click.echo(f"{name}: {value}")


async def _budget_status(settings: Settings, key_id: str | None) -> dict[str, Any]:
    from penin.ledger.ledger import open_ledger  # noqa: PLC0415
    from penin.ledger.verify import require_ledger  # noqa: PLC0415
    from penin.router.budget import Budget, MemoryBudgetStore  # noqa: PLC0415
    from penin.router.budget_redis import RedisBudgetStore  # noqa: PLC0415

    config = settings.budget
    redis_url = config.redis_url or settings.cache.redis_url
    store = RedisBudgetStore(redis_url) if redis_url else MemoryBudgetStore()
    budget = Budget(config, store)
    try:
        if redis_url is None:
            ledger = open_ledger(settings.data_dir)
            require_ledger(ledger.path)
            with ledger:
                await budget.rebuild(ledger)
        status = await budget.status(key_id)
    finally:
        await budget.close()

    shown: dict[str, Any] = status.to_dict()

    return shown
