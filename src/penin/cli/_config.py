"""What the commands that read the node's config file share."""

from __future__ import annotations

from pathlib import Path

import click

from penin.config import ConfigError, Settings, load_settings

config_option = click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The node's YAML config file.",
)


class BadConfigError(click.ClickException):
    """A config that cannot be read or used: one line, exit 2 (bad input)."""

    exit_code = 2


def node_settings(config_file: Path | None, data_dir: Path | None = None) -> Settings:
    """The node's settings as ``penin serve`` would read them, or one line."""
    overrides = {"data_dir": data_dir} if data_dir is not None else {}
    try:
        return load_settings(config_file, overrides)
    except ConfigError as exc:
        where = f"{config_file}: " if config_file else ""
        raise BadConfigError(f"{where}{exc}") from None
