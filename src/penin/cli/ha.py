"""``penin ha``: a cluster's state, switchover and an operator's rejoin.

``status`` and ``switchover`` talk to a running member (``--url``) with the
key in ``PENIN_API_KEY``: read scope for ``status``; for ``switchover``, a key
the admin policy lets switch over. ``switchover`` sent to a replica follows
its answer to the primary. ``rejoin`` works on a stopped member's data
directory: it moves the ledger aside as a quarantined copy, so that the
member rebuilds its ledger from the primary when it next starts.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import click

from penin.ledger.ledger import open_ledger

# The name of the variable that holds the token, not a token.
TOKEN_ENV = "PENIN_API_KEY"  # noqa: S105
TIMEOUT_S = 30.0


@click.group()
def ha() -> None:
    """A cluster's members, switchover and rejoin."""


@ha.command()
@click.option("--url", default="http://127.0.0.1:8080", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole answer.")
def status(url: str, as_json: bool) -> None:
    """Members, roles, term, applied seq, lag and the sync set."""
    body = _call("GET", url.rstrip("/") + "/v1/cluster")
    if as_json:
        click.echo(json.dumps(body, indent=2, sort_keys=True))
        return
    primary = body.get("primary") or {}
    click.echo(
        f"cluster {body['cluster']} ({body['coordinator']}, {body['replication']})"
        f"  term {body['term']}  primary {primary.get('name', '(none elected)')}"
    )
    sync_set = body.get("sync_set")
    if sync_set is not None:
        click.echo(f"sync set: {', '.join(sync_set) or '(empty)'}")
    click.echo(
        f"{'member':<16} {'role':<8} {'seq':>10} {'lag':>8} {'lag s':>8}  health"
    )
    for name, member in body["members"].items():
        lag = member.get("lag_records")
        lag_s = member.get("lag_seconds")
        click.echo(
            f"{name:<16} {member['role']:<8} {member['applied_seq']:>10} "
            f"{'-' if lag is None else lag:>8} {'-' if lag_s is None else lag_s:>8}"
            f"  {'ok' if member.get('healthy') else 'UNHEALTHY'}"
        )
    if "problem" in body:
        click.echo(f"problem: {body['problem'].get('reason')}")


@ha.command()
@click.option("--to", "target", required=True, help="The replica to hand the lead to.")
@click.option("--url", default="http://127.0.0.1:8080", show_default=True)
def switchover(target: str, url: str) -> None:
    """Move the lead to a replica without losing a write."""
    endpoint = url.rstrip("/") + "/v1/cluster/switchover"
    body = _call("POST", endpoint, {"to": target})
    click.echo(
        f"{body['from']} -> {body['to']}: term {body['previous_term']} -> "
        f"{body['term']}, writes paused {body['writes_paused_s']} s, last record "
        f"of the old term seq {body['last_seq']}"
    )


@ha.command()
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="The stopped member's data directory.",
)
@click.option("--reason", default="operator rejoin", show_default=True)
def rejoin(data_dir: Path, reason: str) -> None:
    """Quarantine a stopped member's ledger; it rebuilds from the primary."""
    from penin.ha.quarantine import quarantine  # noqa: PLC0415

    ledger = open_ledger(data_dir)
    if not ledger.path.exists():
        raise click.UsageError(f"no ledger at {ledger.path}: nothing to set aside")
    holders = _processes_holding(ledger.path)
    if holders:
        raise click.UsageError(
            f"{ledger.path} is open in process {', '.join(map(str, holders))}: stop "
            "the member first"
        )
    manifest = quarantine(ledger, {"reason": reason})
    click.echo(
        f"moved {manifest['tree_size']} records (last term {manifest['last_term']}) "
        f"to {manifest['directory']}; start the member to rebuild from the primary"
    )


def _call(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    token = os.environ.get(TOKEN_ENV)
    if not token:
        raise click.UsageError(f"set {TOKEN_ENV} to an API key of the node")
    data = None if body is None else json.dumps(body).encode()
    for _ in range(2):  # a replica's answer to a write points at the primary
        request = urllib.request.Request(  # noqa: S310 - the operator's own URL
            url, data=data, method=method
        )
        request.add_header("Authorization", f"Bearer {token}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:  # noqa: S310
                return json.load(answer)
        except urllib.error.HTTPError as exc:
            problem = _problem(exc)
            location = exc.headers.get("Location")
            redirected = problem.get("type", "").endswith("not-primary")
            if exc.code == 503 and redirected and location:
                url = location
                continue
            click.echo(
                f"error: {url} answered {exc.code}: "
                f"{problem.get('detail') or exc.reason}",
                err=True,
            )
            sys.exit(1)
        except (urllib.error.URLError, OSError) as exc:
            click.echo(f"error: cannot reach the node at {url}: {exc}", err=True)
            sys.exit(2)
    click.echo(f"error: {url} pointed at another replica twice", err=True)
    sys.exit(1)


def _problem(exc: urllib.error.HTTPError) -> dict[str, Any]:
    try:
        found = json.loads(exc.read())
    except (ValueError, OSError):
        return {}
    return found if isinstance(found, dict) else {}


def _processes_holding(path: Path) -> list[int]:
    """The processes that have ``path`` open (Linux /proc; none elsewhere)."""
    target = str(path.resolve())
    holders = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            links = [str(fd.readlink()) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link.startswith(target) for link in links):
            holders.append(int(entry.name))
    return holders
