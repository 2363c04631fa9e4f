"""The node's settings: one YAML file, then ``PENIN_*`` variables, then flags.

Nested keys map to variables with ``__``: ``server.port`` is
``PENIN_SERVER__PORT``. Secrets (provider keys, later) are read only from the
environment or files, never from this file's values, and never logged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from penin.ha.config import ClusterConfig, NodeConfig, check_sections
from penin.policy.config import PolicySettings
from penin.router.config import RouterConfig


class ConfigError(Exception):
    """The configuration file or a variable is missing, unreadable or invalid."""


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_body_bytes: int = Field(2 * 1024 * 1024, ge=1024)
    open_health: bool = True
    open_metrics: bool = True


class LedgerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    checkpoint_interval_s: float = Field(60.0, gt=0)


class LogSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    level: Literal["debug", "info", "warning", "error"] = "info"
    json_lines: bool | None = None

    @field_validator("level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value


class Settings(BaseSettings, RouterConfig):
    """The node's settings; the router's sections (``providers``, ``models``,
    ``budget``, ``cache``, ``router``) come from RouterConfig."""

    model_config = SettingsConfigDict(
        env_prefix="PENIN_", env_nested_delimiter="__", extra="forbid"
    )

    data_dir: Path = Path("data")
    server: ServerSettings = ServerSettings()
    ledger: LedgerSettings = LedgerSettings()
    log: LogSettings = LogSettings()
    policy: PolicySettings = PolicySettings()
    # Both or neither: without them the node is a single node (docs/ha.md).
    node: NodeConfig | None = None
    cluster: ClusterConfig | None = None

    @model_validator(mode="after")
    def _cluster_sections(self) -> Settings:
        if self.node is None and self.cluster is None:
            return self
        if self.node is None or self.cluster is None:
            missing = "node" if self.node is None else "cluster"
            given = "cluster" if self.node is None else "node"
            raise ValueError(
                f"the {given} section needs a {missing} section too: a node in a "
                "cluster names itself (node) and its cluster (cluster); remove "
                f"{given} for a single node"
            )
        check_sections(self.node, self.cluster)

        return self

    def router_config(self) -> RouterConfig:
        """The router's sections (providers to router) on their own."""
        return RouterConfig(
            **{name: getattr(self, name) for name in RouterConfig.model_fields}
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Flags (passed as init values) win over variables, which win over the file
        # (merged into init values below, under the flags).
        return init_settings, env_settings


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"config file {path} is not valid YAML: {_yaml_problem(exc)}"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top")

    return data


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The parser's complaint and where it stopped, on one line."""
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        return f"{exc.problem or exc.context} at {where}"

    return " ".join(str(exc).split())


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value

    return merged


def load_settings(
    config_file: Path | None = None, overrides: dict[str, Any] | None = None
) -> Settings:
    """File, then environment, then ``overrides`` (the command line's flags)."""
    from_file = _read_yaml(config_file) if config_file else {}
    env_only = _env_values()
    values = _merge(_merge(from_file, env_only), overrides or {})
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc, "setting")) from None


def _env_values() -> dict[str, Any]:
    """What the PENIN_* variables say, parsed by the settings' own rules."""
    try:
        return Settings().model_dump(exclude_unset=True)
    except ValidationError as exc:
        raise ConfigError(_first_problem(exc, "variable for")) from None


def _first_problem(exc: ValidationError, what: str) -> str:
    """The first error on one line: where it is, then pydantic's complaint."""
    first = exc.errors()[0]
    message = str(first["msg"]).removeprefix("Value error, ")
    where = ".".join(str(p) for p in first["loc"])

    return f"{what} {where}: {message}" if where else f"settings: {message}"
