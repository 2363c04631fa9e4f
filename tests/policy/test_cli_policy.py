"""``penin policy eval|test|list``: as a user runs them, with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from bundles import write_bundle

from harness import node_env, penin
from penin.policy.policyset import load_policy_set

GOOD = {
    "metrics": {"rho": 0.9, "ece": 0.005, "rho_bias": 1.01, "sr": 0.85, "g": 0.9,
                "delta_linf": 0.02, "cost_increase": 0.05, "kappa": 25},
    "consent": True,
    "eco_ok": True,
}  # fmt: skip
VERDICT = "penin/guard/verdict"


def input_file(tmp_path: Path, document: Any, name: str = "input.json") -> Path:
    path = tmp_path / name
    path.write_text(document if isinstance(document, str) else json.dumps(document))

    return path


def tighter_guard(root: Path) -> Path:
    """A policy directory whose guard asks SR ≥ 0.9 (the shipped one, 0.8)."""
    thresholds = {
        "rho_max": 0.99, "ece_max": 0.01, "rho_bias_max": 1.05, "sr_min": 0.9,
        "g_min": 0.85, "delta_linf_min": 0.01, "cost_increase_max": 0.10,
        "kappa_min": 20,
    }  # fmt: skip
    return write_bundle(
        root, {"penin/guard/data.json": json.dumps({"thresholds": thresholds})}
    )


# -- eval ----------------------------------------------------------------------------


def test_eval_prints_an_allowed_decision_and_exits_0(tmp_path: Path) -> None:
    result = penin("policy", "eval", VERDICT, "--input", input_file(tmp_path, GOOD))

    assert result.returncode == 0, result.stderr
    decision = json.loads(result.stdout)
    assert decision["allowed"] is True
    assert decision["result"] == {"allow": True, "verdict": "promote", "failed": []}
    assert decision["policy_digest"] == load_policy_set().digest


def test_eval_exits_1_when_the_policy_denies(tmp_path: Path) -> None:
    weak = {**GOOD, "eco_ok": False}

    result = penin("policy", "eval", VERDICT, "--input", input_file(tmp_path, weak))

    assert result.returncode == 1, result.stderr
    decision = json.loads(result.stdout)
    assert (decision["allowed"], decision["reason"]) == (False, "denied")
    assert decision["result"]["failed"] == ["eco"]


def test_eval_reads_the_directory_from_dir_the_config_or_a_variable(
    tmp_path: Path,
) -> None:
    policies = tighter_guard(tmp_path / "policies")
    config = tmp_path / "penin.yaml"
    config.write_text(yaml.safe_dump({"policy": {"dir": str(policies)}}))
    good = input_file(tmp_path, GOOD)

    by_flag = penin("policy", "eval", VERDICT, "--input", good, "--dir", policies)
    by_config = penin("policy", "eval", VERDICT, "--input", good, "--config", config)
    by_variable = penin(
        "policy", "eval", VERDICT, "--input", good,
        env=node_env(PENIN_POLICY__DIR=str(policies)),
    )  # fmt: skip

    for result in (by_flag, by_config, by_variable):
        assert result.returncode == 1, result.stderr
        assert json.loads(result.stdout)["result"]["failed"] == ["sr"]


@pytest.mark.parametrize(
    ("document", "said"),
    [
        ("{", "not JSON: Expecting property name enclosed in double quotes"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"x": NaN}', "the input is not JSON"),
    ],
    ids=["truncated", "array", "nan"],
)
def test_eval_exits_2_on_an_input_file_it_cannot_use(
    tmp_path: Path, document: str, said: str
) -> None:
    path = input_file(tmp_path, document)

    result = penin("policy", "eval", VERDICT, "--input", path)

    assert result.returncode == 2
    assert result.stderr.startswith(f"Error: --input {path}: ")
    assert said in result.stderr
    assert result.stdout == ""


def test_eval_exits_2_on_a_missing_input_file(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.json"

    result = penin("policy", "eval", VERDICT, "--input", missing)

    assert result.returncode == 2
    assert f"Error: --input {missing}: No such file or directory" in result.stderr


def test_eval_exits_2_naming_the_file_and_line_of_a_refused_set(
    tmp_path: Path,
) -> None:
    policies = write_bundle(
        tmp_path / "policies",
        {"gate.rego": 'package gate\n\nallow if http.send({"url": "x"}).ok\n'},
    )

    result = penin(
        "policy", "eval", VERDICT, "--input", input_file(tmp_path, GOOD),
        "--dir", policies,
    )  # fmt: skip

    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"Error: policy set refused: {policies}/gate.rego:3: ")
    assert "http.send" in line


@pytest.mark.parametrize("path", ["penin//verdict", "penin/guard-x", "/penin/guard"])
def test_eval_exits_2_on_a_malformed_path(tmp_path: Path, path: str) -> None:
    result = penin("policy", "eval", path, "--input", input_file(tmp_path, GOOD))

    assert result.returncode == 2
    assert "is not identifiers separated by '/'" in result.stderr


def test_eval_exits_2_when_the_policy_cannot_decide(tmp_path: Path) -> None:
    result = penin(
        "policy", "eval", "penin/guard/nothing", "--input", input_file(tmp_path, GOOD)
    )

    assert result.returncode == 2
    assert json.loads(result.stdout)["reason"] == "no_result"
    assert "Error: penin/guard/nothing: the policy could not decide (no_result)" in (
        result.stderr
    )


# -- test ----------------------------------------------------------------------------


def test_test_runs_every_shipped_test_and_exits_0() -> None:
    result = penin("policy", "test")

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    passed = [line for line in lines if line.startswith("PASS data.penin.")]
    packages = {line.split(".")[2] for line in passed}
    assert packages == {"admin_test", "budget_test", "guard_test", "router_test"}
    assert lines[-1] == f"{len(passed)} passed, 0 failed"


def test_test_exits_1_and_names_a_failing_test(tmp_path: Path) -> None:
    policies = write_bundle(
        tmp_path / "policies",
        {
            "mine/mine.rego": "package mine\n\nlimit := 3\n",
            "mine/mine_test.rego": (
                "package mine_test\n\n"
                "test_limit_is_three if data.mine.limit == 3\n\n"
                "test_limit_is_four if data.mine.limit == 4\n"
            ),
        },
    )

    result = penin("policy", "test", policies, "--only-dir")

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "PASS data.mine_test.test_limit_is_three",
        "FAIL data.mine_test.test_limit_is_four",
        "1 passed, 1 failed",
    ]


def test_test_exits_1_when_no_test_ran(tmp_path: Path) -> None:
    policies = write_bundle(
        tmp_path / "policies", {"mine.rego": "package mine\n\nlimit := 3\n"}
    )

    result = penin("policy", "test", policies, "--only-dir")

    assert result.returncode == 1
    assert result.stdout.splitlines() == ["0 passed, 0 failed"]
    assert "no test ran" in result.stderr


def test_test_exits_2_on_a_directory_that_does_not_load(tmp_path: Path) -> None:
    policies = write_bundle(
        tmp_path / "policies", {"mine_test.rego": "package mine_test\n\ntest_x {\n}\n"}
    )

    result = penin("policy", "test", policies)

    assert result.returncode == 2
    assert f"{policies}/mine_test.rego:3: " in result.stderr


# -- list ----------------------------------------------------------------------------


def test_list_shows_each_package_its_origin_and_digest(tmp_path: Path) -> None:
    policies = write_bundle(
        tmp_path / "policies",
        {"penin/admin/admin.rego": "package penin.admin\n\ndecision := false\n"},
    )
    expected = load_policy_set(policies)

    text = penin("policy", "list", "--dir", policies)
    as_json = penin("policy", "list", "--dir", policies, "--json")

    assert text.returncode == as_json.returncode == 0, text.stderr + as_json.stderr
    listed = json.loads(as_json.stdout)
    assert listed["digest"] == expected.digest
    origins = {p["package"]: p["origin"] for p in listed["packages"]}
    assert origins == {
        "penin.admin": "user",
        "penin.budget": "shipped",
        "penin.guard": "shipped",
        "penin.router": "shipped",
    }
    lines = text.stdout.splitlines()
    assert lines[0] == f"policy set {expected.digest}"
    admin = next(p for p in listed["packages"] if p["package"] == "penin.admin")
    assert (
        f"penin.admin\tuser\t{admin['digest']}\t{policies}/penin/admin/admin.rego"
        in lines
    )
