"""The ``node`` and ``cluster`` sections: the documented shape loads, and each
mistake is refused with a message that names it."""

from __future__ import annotations

import textwrap
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from penin.ha import ClusterConfig, HAConfig

DOCUMENTED = """
node:
  name: n1
  advertise_url: http://127.0.0.1:8081
cluster:
  coordinator: etcd          # etcd | static
  etcd_endpoints: [http://127.0.0.1:2379]
  primary: null              # with coordinator: static, the name of the primary
  replication: sync          # sync | async
  sync_replicas: 1
  lease_ttl_s: 3
"""


def load(text: str) -> HAConfig:
    return HAConfig.model_validate(yaml.safe_load(textwrap.dedent(text)))


def cluster(**values: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(values)


def test_the_documented_example_loads_as_written() -> None:
    config = load(DOCUMENTED)

    assert config.node.name == "n1"
    assert config.node.advertise_url == "http://127.0.0.1:8081"
    assert config.cluster.coordinator == "etcd"
    assert config.cluster.etcd_endpoints == ["http://127.0.0.1:2379"]
    assert config.cluster.primary is None
    assert (config.cluster.replication, config.cluster.sync_replicas) == ("sync", 1)
    assert config.cluster.lease_ttl_s == 3


def test_defaults_are_a_three_second_lease_one_sync_replica_and_cluster_penin() -> None:
    config = cluster(coordinator="static", primary="n1")

    assert config.lease_ttl_s == 3
    assert config.sync_replicas == 1
    assert config.replication == "sync"
    assert config.name == "penin"


def test_trailing_slashes_of_urls_are_dropped() -> None:
    config = load(
        """
        node: {name: n1, advertise_url: "https://n1.example:8443/"}
        cluster: {coordinator: etcd, etcd_endpoints: ["http://e1:2379/"]}
        """
    )

    assert config.node.advertise_url == "https://n1.example:8443"
    assert config.cluster.etcd_endpoints == ["http://e1:2379"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"coordinator": "static"},
            "coordinator: static needs cluster.primary",
        ),
        (
            {"coordinator": "static", "primary": "n1",
             "etcd_endpoints": ["http://e1:2379"]},
            "cluster.etcd_endpoints are used only with coordinator: etcd",
        ),
        (
            {"coordinator": "etcd"},
            "coordinator: etcd needs cluster.etcd_endpoints",
        ),
        (
            {"coordinator": "etcd", "etcd_endpoints": ["http://e1:2379"],
             "primary": "n1"},
            "with coordinator: etcd the primary is elected; remove cluster.primary",
        ),
        (
            {"coordinator": "etcd", "etcd_endpoints": ["e1:2379"]},
            "cluster.etcd_endpoints entry 'e1:2379' is not an http:// or https:// URL",
        ),
        (
            {"coordinator": "etcd",
             "etcd_endpoints": ["http://e1:2379", "http://e1:2379/"]},
            "cluster.etcd_endpoints lists a URL twice",
        ),
        (
            {"coordinator": "etcd", "etcd_endpoints": ["http://e1:port"]},
            "has a port that is not a number",
        ),
        (
            {"coordinator": "zookeeper"},
            "Input should be 'etcd' or 'static'",
        ),
        (
            {"coordinator": "static", "primary": "N1"},
            "cluster.primary 'N1' is not a DNS label",
        ),
        (
            {"coordinator": "static", "primary": "n1", "name": "-x"},
            "cluster.name '-x' is not a DNS label",
        ),
        (
            {"coordinator": "static", "primary": "n1", "lease_ttl_s": 0},
            "lease_ttl_s\n  Input should be greater than 0",
        ),
        (
            {"coordinator": "static", "primary": "n1", "lease_ttl_s": 2.5},
            "Input should be a valid integer, got a number with a fractional part",
        ),
        (
            {"coordinator": "static", "primary": "n1", "sync_replicas": -1},
            "sync_replicas\n  Input should be greater than or equal to 0",
        ),
        (
            {"coordinator": "static", "primary": "n1", "replication": "semi"},
            "Input should be 'sync' or 'async'",
        ),
        (
            {"coordinator": "static", "primary": "n1", "lease_tll_s": 3},
            "lease_tll_s\n  Extra inputs are not permitted",
        ),
    ],
)  # fmt: skip
def test_a_bad_cluster_section_is_refused_naming_the_problem(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        cluster(**values)

    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"name": "n_1", "advertise_url": "http://h:1"},
         "node.name 'n_1' is not a DNS label"),
        ({"name": "a" * 64, "advertise_url": "http://h:1"},
         "is not a DNS label: use 1 to 63 lowercase letters"),
        ({"name": "", "advertise_url": "http://h:1"},
         "node.name '' is not a DNS label"),
        ({"name": "n1", "advertise_url": "ftp://h"},
         "node.advertise_url 'ftp://h' is not an http:// or https:// URL with a host"),
        ({"name": "n1", "advertise_url": "http://"},
         "node.advertise_url 'http://' is not an http:// or https:// URL with a host"),
        ({"name": "n1"}, "node.advertise_url\n  Field required"),
    ],
)  # fmt: skip
def test_a_bad_node_section_is_refused_naming_the_problem(
    node: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        HAConfig.model_validate(
            {"node": node, "cluster": {"coordinator": "static", "primary": "n1"}}
        )

    assert message in str(caught.value)
