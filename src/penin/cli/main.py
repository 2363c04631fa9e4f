"""The ``penin`` console script: the root command group and error handling.

Exit codes: 0 ok, 1 something was checked and found wrong, 2 bad usage or
input. Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from penin import __version__
from penin.cli.budget import budget
from penin.cli.ha import ha
from penin.cli.keys import keys
from penin.cli.ledger import ledger
from penin.cli.policy import policy
from penin.cli.providers import providers
from penin.cli.route import route
from penin.cli.serve import serve
from penin.ledger.errors import LedgerError
from penin.observability.logging import configure


class _Group(click.Group):
    """Turn the project's own errors into one line and their exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LedgerError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except click.exceptions.Exit:
            raise
        except click.ClickException:
            raise
        except OSError as exc:
            click.echo(f"error: {exc.strerror or exc}: {exc.filename or ''}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="penin")
def cli() -> None:
    """PENIN-Ω: a self-improving, auditable LLM gateway."""
    try:
        configure("warning")
    except ValueError as exc:  # PENIN_LOG_LEVEL names no level
        raise click.UsageError(str(exc)) from None


cli.add_command(ledger)
cli.add_command(keys)
cli.add_command(serve)
cli.add_command(route)
cli.add_command(providers)
cli.add_command(budget)
cli.add_command(policy)
cli.add_command(ha)
