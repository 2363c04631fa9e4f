"""``penin serve``: run the node on uvicorn until SIGTERM or SIGINT."""

from __future__ import annotations

import importlib.util
import os
import ssl
from pathlib import Path
from types import FrameType
from typing import Any

import click
import structlog
import uvicorn

from penin.cli._config import BadConfigError
from penin.config import ConfigError, Settings, load_settings
from penin.observability.logging import configure

log = structlog.get_logger("penin.node")


class _Server(uvicorn.Server):
    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        # uvicorn re-raises the signal after its graceful shutdown, which makes
        # the exit status "killed". A signal is how operators stop the node on
        # purpose, so a clean drain exits 0.
        self._captured_signals.clear()


def _check_tls(cert: Path, key: Path) -> None:
    """Load the pair once before uvicorn does: its errors name neither file."""
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        try:
            path.read_bytes()
        except OSError as exc:
            raise click.UsageError(f"{flag} {path}: {exc.strerror}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise click.UsageError(f"--tls-cert {cert}: holds no PEM certificate") from None
    try:
        context.load_cert_chain(cert, key)
    except ssl.SSLError:
        raise click.UsageError(
            f"--tls-key {key}: not the PEM private key of {cert}"
        ) from None


def _check_router(settings: Settings) -> None:
    """Provider keys, prices, seal keys and Redis URLs, checked before uvicorn
    would log a traceback."""
    if not settings.models:
        return
    from penin import cache  # noqa: PLC0415
    from penin.router.deployments import ConfigurationError, preflight  # noqa: PLC0415
    from penin.router.prices import PriceTable  # noqa: PLC0415

    config = settings.router_config()
    try:
        preflight(config, PriceTable.bundled())
        seal_text = os.environ.get(cache.SEAL_KEYS_ENV)
        cache.check_config(
            config.cache, cache.SealKeys.from_env(seal_text) if seal_text else None
        )
        if config.budget.redis_url:
            cache.check_url(config.budget.redis_url)
    except (ConfigurationError, cache.CacheConfigError) as exc:
        raise click.UsageError(str(exc)) from None


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
    if tls.tls_cert is not None and tls.tls_key is not None:
        _check_tls(tls.tls_cert, tls.tls_key)
    _check_router(settings)
    configure(settings.log.level, json=settings.log.json_lines)
    # Imported here: FastAPI takes a third of a second to import, which every
    # other penin command would pay for nothing.
    from penin.api.app import create_app  # noqa: PLC0415
    from penin.ha import ClusterSetupError, prepare_to_join  # noqa: PLC0415
    from penin.policy import PolicyLoadError  # noqa: PLC0415

    try:
        app = create_app(settings)
        prepare_to_join(app.state.node.cluster)
    except PolicyLoadError as exc:
        raise BadConfigError(f"policy set refused: {exc}") from None
    except ClusterSetupError as exc:
        raise BadConfigError(f"cannot join the cluster: {exc}") from None
    config = uvicorn.Config(
        app,
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
