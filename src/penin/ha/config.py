"""The ``node`` and ``cluster`` sections of the node's YAML: who this node is, and
how the members of its cluster agree on a primary.

The shape is a public contract (docs/ha.md); new keys come with defaults so
that older files keep loading. ``cluster.name`` is such an addition: it keeps
clusters that share one etcd apart (their keys live under ``/penin/<name>/``).
So are ``cluster.primary_url``, where a static replica finds its primary,
``cluster.token_file``, where a node reads the cluster token when the
environment does not hold it, and ``sync_fallback`` and ``sync_timeout_s``,
what a sync-mode primary does without enough replicas.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Coordinator = Literal["etcd", "static"]
Replication = Literal["sync", "async"]
SyncFallback = Literal["block", "async"]

# RFC 1123 labels, lowercase only: a name is a key in etcd, a metric label and
# often a host name, so it must read the same in all three.
_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _dns_label(value: str, what: str) -> str:
    if not _DNS_LABEL.fullmatch(value):
        raise ValueError(
            f"{what} {value!r} is not a DNS label: use 1 to 63 lowercase letters, "
            "digits and '-', starting and ending with a letter or a digit"
        )

    return value


def _http_url(value: str, what: str) -> str:
    """The URL without a trailing slash, once it is http(s) with a host."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(
            f"{what} {value!r} is not an http:// or https:// URL with a host"
        )
    try:
        parts.port  # noqa: B018 - reading it is what checks it
    except ValueError:
        raise ValueError(f"{what} {value!r} has a port that is not a number") from None

    return value.rstrip("/")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NodeConfig(_Strict):
    """This node: its name in the cluster and the URL its peers and clients use."""

    name: str
    advertise_url: str

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "node.name")

    @field_validator("advertise_url")
    @classmethod
    def _advertise_url(cls, value: str) -> str:
        return _http_url(value, "node.advertise_url")


class ClusterConfig(_Strict):
    """How the members agree on a primary and how records reach the replicas."""

    coordinator: Coordinator
    name: str = "penin"
    etcd_endpoints: list[str] = []
    # With coordinator: static, the name of the node that is always the primary,
    # and the URL its replicas follow and send writers to.
    primary: str | None = None
    primary_url: str | None = None
    replication: Replication = "sync"
    # In sync mode, how many replicas must store a record before it is
    # acknowledged to the client.
    sync_replicas: int = Field(1, ge=0)
    # In sync mode, when fewer replicas than that are there: block writes
    # (each waits up to sync_timeout_s, then gets 503) or acknowledge them
    # without replicas, with penin_sync_degraded raised (penin.ha.sync).
    sync_fallback: SyncFallback = "block"
    sync_timeout_s: float = Field(10.0, gt=0, le=300)
    # etcd counts leases in whole seconds.
    lease_ttl_s: int = Field(3, gt=0)
    # The file holding the token nodes present to each other, when
    # PENIN_CLUSTER_TOKEN does not; never the token itself.
    token_file: Path | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _dns_label(value, "cluster.name")

    @field_validator("primary")
    @classmethod
    def _primary(cls, value: str | None) -> str | None:
        return None if value is None else _dns_label(value, "cluster.primary")

    @field_validator("primary_url")
    @classmethod
    def _primary_url(cls, value: str | None) -> str | None:
        return None if value is None else _http_url(value, "cluster.primary_url")

    @field_validator("etcd_endpoints")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        urls = [_http_url(url, "cluster.etcd_endpoints entry") for url in value]
        if len(set(urls)) != len(urls):
            raise ValueError(f"cluster.etcd_endpoints lists a URL twice: {value}")

        return urls

    @model_validator(mode="after")
    def _coordinator_needs(self) -> Self:
        if self.coordinator == "static":
            if self.primary is None:
                raise ValueError(
                    "coordinator: static needs cluster.primary, the name of the "
                    "node that is always the primary"
                )
            if self.etcd_endpoints:
                raise ValueError(
                    "cluster.etcd_endpoints are used only with coordinator: etcd; "
                    "remove them or set coordinator: etcd"
                )
        else:
            if not self.etcd_endpoints:
                raise ValueError(
                    "coordinator: etcd needs cluster.etcd_endpoints, the client "
                    "URLs of the etcd members (e.g. [http://127.0.0.1:2379])"
                )
            if self.primary is not None or self.primary_url is not None:
                field = "primary" if self.primary is not None else "primary_url"
                raise ValueError(
                    "with coordinator: etcd the primary is elected; remove "
                    f"cluster.{field} or set coordinator: static"
                )

        return self


class HAConfig(_Strict):
    """The two sections together, as a node in a cluster needs them."""

    node: NodeConfig
    cluster: ClusterConfig

    @model_validator(mode="after")
    def _fit_together(self) -> Self:
        check_sections(self.node, self.cluster)
        return self


def check_sections(node: NodeConfig, cluster: ClusterConfig) -> None:
    """ValueError naming the problem if ``node`` cannot be a member of ``cluster``.

    Every member may share one cluster section; with the static coordinator a
    replica needs the primary's URL, and the primary's own advertised URL must
    be that URL, since it is where replicas and clients will look.
    """
    if cluster.coordinator != "static":
        return
    if node.name != cluster.primary and cluster.primary_url is None:
        raise ValueError(
            f"node {node.name} is a replica of {cluster.primary} "
            "(coordinator: static): set cluster.primary_url to the advertised "
            f"URL of {cluster.primary}"
        )
    if node.name == cluster.primary and cluster.primary_url not in (
        None,
        node.advertise_url,
    ):
        raise ValueError(
            f"cluster.primary_url {cluster.primary_url} is not node.advertise_url "
            f"{node.advertise_url} of the primary {node.name}; make them the same"
        )
