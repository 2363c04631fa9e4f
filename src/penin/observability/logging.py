"""Structured event logs: JSON lines in production, readable text on a terminal.

Events are lowercase snake_case names with context as fields, written to
stderr so that a command's own output (stdout) stays machine-readable.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

_LEVELS = {"debug": 10, "info": 20, "warning": 30, "error": 40}

# The level configure() set, 0 (everything) until it runs. Hot paths ask
# info_enabled() before logging: the call on a filtered-out level still costs
# structlog's proxy a logger bind, several microseconds a request.
_configured = {"min_level": 0}


def configure(level: str | None = None, *, json: bool | None = None) -> None:
    """Set up structlog once per process; ``PENIN_LOG_LEVEL``/``PENIN_LOG_JSON`` win."""
    from_env = os.environ.get("PENIN_LOG_LEVEL")
    name = (from_env or level or "info").lower()
    if name not in _LEVELS:
        source = "PENIN_LOG_LEVEL" if from_env else "log level"
        raise ValueError(f"{source} {name!r} is not one of {', '.join(_LEVELS)}")
    env_json = os.environ.get("PENIN_LOG_JSON")
    if env_json is not None:
        json = env_json.lower() in ("1", "true", "yes")
    elif json is None:
        json = not sys.stderr.isatty()
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    _configured["min_level"] = _LEVELS[name]
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[name]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=_LEVELS[name], stream=sys.stderr, format="%(message)s")


def info_enabled() -> bool:
    """Whether an info event would be written under the current configuration."""
    return _configured["min_level"] <= _LEVELS["info"]
