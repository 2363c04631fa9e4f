"""The ``policy:`` section of the node's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PolicySettings(BaseModel):
    """Where policies come from, how long a remote decision may take, what is logged.

    ``dir`` is a directory laid out as an OPA bundle whose packages add to or
    replace the shipped ones; ``watch_interval_s`` is how often it is checked
    for changes (0: only on SIGHUP). In ``remote`` mode, ``opa_url`` is the
    OPA server whose Data API decides.
    """

    model_config = ConfigDict(extra="forbid")

    dir: Path | None = None
    mode: Literal["embedded", "remote"] = "embedded"
    opa_url: str | None = None
    timeout_s: float = Field(0.5, gt=0, le=60)
    log_input: bool = False
    mask_fields: list[str] = Field(default_factory=list)
    watch_interval_s: float = Field(2.0, ge=0)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.mode == "remote" and not self.opa_url:
            raise ValueError("policy.mode remote needs policy.opa_url")
        if self.opa_url and not self.opa_url.startswith(("http://", "https://")):
            raise ValueError(
                f"policy.opa_url must start with http:// or https://, "
                f"not {self.opa_url!r}"
            )
        if any(not name for name in self.mask_fields):
            raise ValueError("policy.mask_fields holds an empty field name")

        return self
