"""``penin route``: one chat request to a running node, its answer printed.

The key (scope ``route``) comes from ``PENIN_API_KEY``. The answer goes to
stdout, as it arrives with ``--stream``; the deployment, the cost and the
budget left go to stderr.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Mapping
from typing import Any

import aiohttp
import click

# The name of the variable that holds the token, not a token.
TOKEN_ENV = "PENIN_API_KEY"  # noqa: S105
COST_COMMENT = ": penin-cost-usd="
NODE_TIMEOUT_S = 600.0
MAX_PROBLEM_CHARS = 500


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", required=True, help="The logical model to ask.")
@click.option("--stream", is_flag=True, help="Print the answer as it arrives.")
@click.option("--system", help="A system message before the prompt.")
@click.option("--max-tokens", type=click.IntRange(min=1))
@click.option("--url", default="http://127.0.0.1:8080", show_default=True)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the whole response (a stream: "
    "one chunk per line)."
)  # fmt: skip
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
    answered and the cost go to stderr. Exit 1 when the node refuses or the
    answer fails, 2 when the node cannot be reached.
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
    timeout = aiohttp.ClientTimeout(total=NODE_TIMEOUT_S, sock_connect=10)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(f"{url}/v1/chat/completions", json=body, headers=headers) as r,
        ):
            if r.status != 200:
                problem = _problem_text(r.status, await r.text(errors="replace"))
                click.echo(f"error: the node answered {problem}", err=True)
                return 1
            if body["stream"]:
                return await _print_stream(r, as_json)
            return await _print_answer(r, as_json)
    except (aiohttp.ClientConnectorError, aiohttp.InvalidURL) as exc:
        click.echo(f"error: cannot reach the node at {url}: {exc}", err=True)
        return 2
    except aiohttp.ClientError as exc:
        click.echo(f"error: the connection to the node broke: {exc!r}", err=True)
        return 1
    except TimeoutError:
        click.echo(f"error: no answer from the node in {NODE_TIMEOUT_S:g} s", err=True)
        return 1


def _problem_text(status: int, text: str) -> str:
    """``403 forbidden: <detail>`` from a problem document, else the raw body."""
    try:
        problem = json.loads(text)
    except ValueError:
        problem = None
    if isinstance(problem, dict) and problem.get("detail"):
        kind = str(problem.get("type") or "").rsplit("/", 1)[-1]
        return f"{status} {kind or 'error'}: {problem['detail']}"

    return f"{status}: {text[:MAX_PROBLEM_CHARS]}"


async def _print_answer(response: aiohttp.ClientResponse, as_json: bool) -> int:
    try:
        answer = await response.json(content_type=None)
        text = answer["choices"][0]["message"].get("content") or ""
    except (ValueError, LookupError, TypeError, AttributeError):
        click.echo("error: the node's answer is not a chat completion", err=True)
        return 1
    click.echo(json.dumps(answer, indent=2) if as_json else text)
    click.echo(_route_facts(response.headers), err=True)

    return 0


async def _print_stream(response: aiohttp.ClientResponse, as_json: bool) -> int:
    """Echo each chunk as it arrives; 1 when the stream breaks or is cut off."""
    cost: str | None = None
    failure: str | None = None
    done = False
    async for raw in response.content:
        line = raw.decode(errors="replace").rstrip("\r\n")
        if line.startswith(COST_COMMENT):
            cost = line.removeprefix(COST_COMMENT)
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            continue
        try:
            chunk = json.loads(data)
        except ValueError:
            failure = f"a stream event is not JSON: {data[:MAX_PROBLEM_CHARS]}"
            break
        click.echo(json.dumps(chunk) if as_json else _delta_text(chunk), nl=as_json)
        failure = _stream_error(chunk)
        if failure is not None:
            break
    if not as_json:
        click.echo()
    click.echo(_route_facts(response.headers, cost), err=True)
    if failure is None and not done:
        failure = "the stream ended before [DONE]; the answer is cut short"
    if failure is not None:
        click.echo(f"error: {failure}", err=True)
        return 1

    return 0


def _delta_text(chunk: object) -> str:
    choices = chunk.get("choices") if isinstance(chunk, dict) else None
    deltas = [c.get("delta") for c in choices or [] if isinstance(c, dict)]

    return "".join(str(d.get("content") or "") for d in deltas if isinstance(d, dict))


def _stream_error(chunk: object) -> str | None:
    """The message of an error event (the node's way to say a stream broke)."""
    error = chunk.get("error") if isinstance(chunk, dict) else None
    if error is None:
        return None

    return str(error.get("message") if isinstance(error, dict) else error)


def _route_facts(headers: Mapping[str, str], stream_cost: str | None = None) -> str:
    cache = headers.get("x-penin-cache")
    facts = [f"cache: {cache}" if cache else ""]
    facts.append(f"deployment: {headers.get('x-penin-deployment') or '-'}")
    cost = headers.get("x-penin-cost-usd") or stream_cost
    if cost is not None:
        estimated = headers.get("x-penin-cost-estimated") == "true"
        facts.append(f"cost: {cost} USD" + (" (estimated)" if estimated else ""))
    left = headers.get("x-penin-budget-remaining-usd")
    facts.append(f"budget left: {left} USD" if left else "")

    return "  ".join(f for f in facts if f)
