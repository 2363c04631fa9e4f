"""``penin serve``: run the node on uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import FrameType
from typing import Any

import click
import structlog
import uvicorn

from penin.api.app import create_app
from penin.config import ConfigError, load_settings
from penin.observability.logging import configure

log = structlog.get_logger("penin.node")


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its graceful shutdown, which makes
        # the exit status "killed". A signal is how operators stop the node on
        # purpose, so a clean drain exits 0.
        self._captured_signals.clear()


def _overrides(**flags: Any) -> dict[str, Any]:
    server = {k: v for k, v in flags.items() if k != "data_dir" and v is not None}
    values: dict[str, Any] = {"server": server} if server else {}
    if flags.get("data_dir") is not None:
        values["data_dir"] = flags["data_dir"]

    return values


@click.command()
@click.option(
    "--config", "config_file", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port (default 8080; 0 picks a free one).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--tls-key", type=click.Path(dir_okay=False, path_type=Path))
def serve(config_file: Path | None, **flags: Any) -> None:
    """Run the HTTP node (config file, then PENIN_* variables, then these flags)."""
    try:
        settings = load_settings(config_file, _overrides(**flags))
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    tls = settings.server
    if (tls.tls_cert is None) != (tls.tls_key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    configure(settings.log.level, json=settings.log.json_lines)
    config = uvicorn.Config(
        create_app(settings),
        host=settings.server.host,
        port=settings.server.port,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        http="httptools" if importlib.util.find_spec("httptools") else "h11",
        ssl_certfile=tls.tls_cert,
        ssl_keyfile=tls.tls_key,
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=30,
    )
    _Server(config).run()
