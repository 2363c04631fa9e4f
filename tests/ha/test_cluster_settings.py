"""The node's cluster settings: both sections or neither, the static primary's
URL, the cluster token, and what is not built yet, each refused by name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import node_env, penin
from penin.config import ConfigError, load_settings
from penin.ha import ClusterSetupError, ClusterToken, join_cluster
from penin.ha.config import ClusterConfig, NodeConfig
from penin.ha.token import TOKEN_ENV
from penin.ledger.ledger import WORMLedger

TOKEN = "k" * 40
N1 = {"name": "n1", "advertise_url": "http://127.0.0.1:8081"}
N2 = {"name": "n2", "advertise_url": "http://127.0.0.1:8082"}
STATIC = {
    "coordinator": "static",
    "primary": "n1",
    "primary_url": "http://127.0.0.1:8081",
    "replication": "async",
}


@pytest.fixture(autouse=True)
def _no_token_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)


def settings(**sections: Any) -> Any:
    return load_settings(overrides=sections)


# -- the sections ---------------------------------------------------------------------


def test_without_the_sections_the_node_is_a_single_node(tmp_path: Path) -> None:
    loaded = settings(data_dir=tmp_path)

    assert loaded.node is None
    assert loaded.cluster is None
    assert (
        join_cluster(loaded.node, loaded.cluster, WORMLedger(tmp_path / "l.db")) is None
    )


def test_the_documented_static_cluster_loads() -> None:
    loaded = settings(node=N2, cluster=STATIC)

    assert loaded.node is not None
    assert loaded.cluster is not None
    assert loaded.node.name == "n2"
    assert loaded.cluster.primary_url == "http://127.0.0.1:8081"


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"node": N1}, "the node section needs a cluster section too"),
        ({"cluster": STATIC}, "the cluster section needs a node section too"),
        (
            {"node": N2, "cluster": {**STATIC, "primary_url": None}},
            "node n2 is a replica of n1 (coordinator: static): set "
            "cluster.primary_url",
        ),
        (
            {"node": N1, "cluster": {**STATIC, "primary_url": "http://10.0.0.1:1"}},
            "cluster.primary_url http://10.0.0.1:1 is not node.advertise_url "
            "http://127.0.0.1:8081 of the primary n1",
        ),
        (
            {"node": N1, "cluster": {**STATIC, "primary_url": "n1:8081"}},
            "cluster.primary_url 'n1:8081' is not an http:// or https:// URL",
        ),
        (
            {"node": N1, "cluster": {"coordinator": "etcd",
             "etcd_endpoints": ["http://e1:2379"], "primary_url": "http://n1:1"}},
            "with coordinator: etcd the primary is elected; remove "
            "cluster.primary_url",
        ),
    ],
)  # fmt: skip
def test_sections_that_cannot_work_together_are_refused_by_name(
    sections: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(**sections)

    assert message in str(refused.value)


# -- the cluster token --------------------------------------------------------


def test_the_token_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)

    token = ClusterToken.load(ClusterConfig.model_validate(STATIC))

    assert token.matches(TOKEN)
    assert not token.matches(TOKEN[:-1] + "x")
    assert not token.matches("")
    assert TOKEN not in repr(token)


def test_the_token_comes_from_a_file_when_the_environment_has_none(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cluster.token"
    path.write_text(TOKEN + "\n")

    token = ClusterToken.load(
        ClusterConfig.model_validate({**STATIC, "token_file": path})
    )

    assert token.matches(TOKEN)
    assert token.headers() == {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("env", "file", "message"),
    [
        (None, None, f"needs the cluster token: set {TOKEN_ENV}"),
        (TOKEN, TOKEN, f"both {TOKEN_ENV} and cluster.token_file are set"),
        ("short", None, "at least 32 printable ASCII characters"),
        (None, "with space " * 4, "at least 32 printable ASCII characters"),
        (None, "missing", "cannot read cluster.token_file"),
    ],
)
def test_a_missing_or_weak_token_is_refused_by_name(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    env: str | None,
    file: str | None,
    message: str,
) -> None:
    if env is not None:
        monkeypatch.setenv(TOKEN_ENV, env)
    values: dict[str, Any] = dict(STATIC)
    if file is not None:
        values["token_file"] = tmp_path / "cluster.token"
        if file != "missing":
            values["token_file"].write_text(file)

    with pytest.raises(ClusterSetupError) as refused:
        ClusterToken.load(ClusterConfig.model_validate(values))

    assert message in str(refused.value)
    assert TOKEN not in str(refused.value)


# -- what cannot work, and what a new replica needs -----------------------------


def test_sync_replication_without_etcd_is_refused_saying_what_to_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    ledger = WORMLedger(tmp_path / "ledger.db")
    cluster = ClusterConfig.model_validate({**STATIC, "replication": "sync"})

    with pytest.raises(ClusterSetupError) as refused:
        join_cluster(NodeConfig.model_validate(N1), cluster, ledger)

    assert "replication: sync needs coordinator: etcd" in str(refused.value)
    assert "set cluster.replication: async" in str(refused.value)


def test_a_new_replica_without_the_cluster_key_is_refused_before_it_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, TOKEN)
    ledger = WORMLedger(tmp_path / "ledger.db")

    with pytest.raises(ClusterSetupError) as refused:
        join_cluster(
            NodeConfig.model_validate(N2), ClusterConfig.model_validate(STATIC), ledger
        )

    assert "copy the cluster's signing key" in str(refused.value)
    assert str(tmp_path / "ledger.key") in str(refused.value)


def test_penin_serve_refuses_a_cluster_without_a_token_in_one_line(
    tmp_path: Path,
) -> None:
    config = tmp_path / "n1.yaml"
    config.write_text(yaml.safe_dump({"node": N1, "cluster": STATIC}))
    env = {k: v for k, v in node_env().items() if k != TOKEN_ENV}

    result = penin("serve", "--config", config, "--data-dir", tmp_path, env=env)

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert "cannot join the cluster" in last
    assert TOKEN_ENV in last
    assert not (tmp_path / "ledger.db").exists()
