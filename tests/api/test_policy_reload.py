"""A real ``penin serve`` reloads its policy directory on SIGHUP and on change.

A set that fails to load is refused and the old one keeps serving; requests
in flight during reloads are each decided by the old set or the new one.
"""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from harness import (
    LiveServer,
    assert_problem,
    bearer,
    node_env,
    penin,
    running_server,
    wait_for,
)
from penin.keys import Scope

RELOAD_TIMEOUT_S = 10
VERDICT = "/v1/policy/penin/guard/verdict"
ACTIONS = [
    "switchover", "restore", "rotate_keys", "change_policy", "create_key",
    "revoke_key", "invalidate_cache", "verify_ledger", "evaluate_policy",
]  # fmt: skip
GUARD_INPUT = {
    "metrics": {"rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.85, "g": 0.9,
                "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25},
    "consent": True,
    "eco_ok": True,
}  # fmt: skip


@dataclass
class Node:
    server: LiveServer
    policies: Path
    admin: str

    def digest(self) -> str:
        response = self.server.get("/v1/policy", headers=bearer(self.admin))
        assert response.status_code == 200, response.text
        return str(response.json()["digest"])

    def hangup(self) -> None:
        self.server.process.send_signal(signal.SIGHUP)

    def reloads(self, outcome: str) -> float:
        text = self.server.get("/metrics").text
        line = f'penin_policy_reloads_total{{outcome="{outcome}"}} '
        (value,) = [
            row.removeprefix(line) for row in text.splitlines() if row.startswith(line)
        ]
        return float(value)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def admin_actions(**granted: list[str]) -> str:
    """The admin policy's data: every action to admin, and ``granted`` on top."""
    actions = {action: ["admin", *granted.get(action, [])] for action in ACTIONS}
    return json.dumps({"actions": actions})


def guard_thresholds(sr_min: float) -> str:
    thresholds = {
        "rho_max": 0.99, "ece_max": 0.01, "rho_bias_max": 1.05, "sr_min": sr_min,
        "g_min": 0.85, "delta_linf_min": 0.01, "cost_increase_max": 0.10,
        "kappa_min": 20,
    }  # fmt: skip
    return json.dumps({"thresholds": thresholds})


def config(directory: Path, policies: Path, watch_interval_s: float) -> Path:
    path = directory / "penin.yaml"
    policy = {"dir": str(policies), "watch_interval_s": watch_interval_s}
    path.write_text(yaml.safe_dump({"policy": policy}))

    return path


@pytest.fixture
def node(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Node]:
    """A node serving ``policies/`` (empty at first), reloaded only on SIGHUP
    unless the test is marked with a watch interval."""
    interval = getattr(request, "param", 0)
    policies = tmp_path / "policies"
    policies.mkdir()
    path = config(tmp_path, policies, interval)
    with running_server(tmp_path, "--config", path) as server:
        yield Node(server, policies, server.token(Scope.ADMIN))


def test_sighup_loads_a_policy_that_lets_append_keys_verify_the_ledger(
    node: Node,
) -> None:
    append = bearer(node.server.token(Scope.APPEND))
    with node.server.client() as http:
        before = http.post("/v1/ledger/verify", headers=append)
        shipped = node.digest()

        write(
            node.policies,
            "penin/admin/data.json",
            admin_actions(verify_ledger=["append"]),
        )
        node.hangup()
        wait_for(lambda: node.digest() != shipped, RELOAD_TIMEOUT_S, "the reload")
        started = http.post("/v1/ledger/verify", headers=append)
        job = http.get(started.headers["location"], headers=append)
        cache = http.post(
            "/v1/cache/invalidate", json={"key": "ab" * 32}, headers=append
        )

    body = assert_problem(before, 403, "forbidden")
    assert body["detail"] == "scope append may not perform verify_ledger"
    assert started.status_code == 202, started.text
    assert job.status_code == 200, job.text
    # Only what the new data grants: other actions stay admin's.
    body = assert_problem(cache, 403, "forbidden")
    assert body["detail"] == "scope append may not perform invalidate_cache"
    assert node.reloads("loaded") == 1


def test_a_set_that_does_not_load_is_refused_and_the_old_one_keeps_serving(
    node: Node,
) -> None:
    write(node.policies, "penin/guard/data.json", guard_thresholds(0.9))
    node.hangup()
    wait_for(lambda: node.reloads("loaded") == 1, RELOAD_TIMEOUT_S, "the reload")
    serving = node.digest()

    write(node.policies, "broken/gate.rego", "package broken\n\nallow {\n  true\n}\n")
    node.hangup()
    wait_for(lambda: node.reloads("refused") == 1, RELOAD_TIMEOUT_S, "the refusal")
    with node.server.client(node.admin) as http:
        verdict = http.post(VERDICT, json={"input": GUARD_INPUT})

    assert node.digest() == serving
    # The set still in service holds the tighter sr_min of the first reload.
    assert verdict.json()["result"]["failed"] == ["sr"]
    assert verdict.json()["policy_digest"] == serving
    (refused,) = [
        e for e in node.server.log_events() if e["event"] == "policy.reload_refused"
    ]
    assert refused["file"] == str(node.policies / "broken" / "gate.rego")
    assert refused["line"] == 3
    assert refused["serving"] == serving


@pytest.mark.parametrize("node", [0.1], indirect=True)
def test_a_change_in_the_directory_is_loaded_without_a_signal(node: Node) -> None:
    shipped = node.digest()

    write(node.policies, "penin/guard/data.json", guard_thresholds(0.9))

    wait_for(lambda: node.digest() != shipped, RELOAD_TIMEOUT_S, "the watcher")
    with node.server.client(node.admin) as http:
        verdict = http.post(VERDICT, json={"input": GUARD_INPUT})
    assert verdict.json()["result"]["verdict"] == "canary"


def test_decisions_in_flight_during_reloads_name_the_old_or_the_new_set(
    node: Node,
) -> None:
    versions = [guard_thresholds(0.8), guard_thresholds(0.9)]
    digests = []
    for text in versions:
        write(node.policies, "penin/guard/data.json", text)
        node.hangup()
        wait_for(lambda: node.digest() not in digests, RELOAD_TIMEOUT_S, "the reload")
        digests.append(node.digest())
    answers: list[tuple[int, Any]] = []
    stop = threading.Event()

    def ask() -> None:
        with node.server.client(node.admin) as http:
            while not stop.is_set():
                response = http.post(VERDICT, json={"input": GUARD_INPUT})
                answers.append((response.status_code, response.json()))

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for n in range(6):
            write(node.policies, "penin/guard/data.json", versions[n % 2])
            node.hangup()
            wait_for(
                lambda n=n: node.digest() == digests[n % 2],
                RELOAD_TIMEOUT_S,
                f"reload {n}",
            )
    finally:
        stop.set()
        for thread in threads:
            thread.join(RELOAD_TIMEOUT_S)

    assert len(answers) > 20
    assert {status for status, _ in answers} == {200}
    named = {body["policy_digest"] for _, body in answers}
    assert named == set(digests)
    verdicts = {body["policy_digest"]: body["result"]["verdict"] for _, body in answers}
    assert verdicts == {digests[0]: "promote", digests[1]: "canary"}


@pytest.mark.parametrize(
    ("files", "where"),
    [
        (
            {"gate.rego": "package gate\n\nallow := true\ndeny {\n  true\n}\n"},
            "gate.rego:4",
        ),
        ({"penin/router/data.json": '{"class_rank": [1,\n}'}, "data.json:2"),
    ],
    ids=["pre-1.0-rule", "bad-data-file"],
)
def test_a_policy_set_refused_at_startup_stops_serve_with_exit_2(
    tmp_path: Path, files: dict[str, str], where: str
) -> None:
    policies = tmp_path / "policies"
    for name, text in files.items():
        write(policies, name, text)

    result = penin(
        "serve",
        "--config",
        config(tmp_path, policies, 0),
        "--data-dir",
        tmp_path / "data",
        "--port",
        "0",
        env=node_env(),
    )

    assert result.returncode == 2, result.stderr
    (line,) = [row for row in result.stderr.splitlines() if row.startswith("Error")]
    assert line.startswith("Error: policy set refused: ")
    assert f"{where}: " in line
    assert "Traceback" not in result.stderr


def test_a_missing_policy_dir_at_startup_stops_serve_with_exit_2(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "nowhere"

    result = penin(
        "serve",
        "--config",
        config(tmp_path, missing, 0),
        "--data-dir",
        tmp_path / "data",
        "--port",
        "0",
    )

    assert result.returncode == 2, result.stderr
    assert f"Error: policy set refused: {missing}: policy directory not found" in (
        result.stderr
    )
