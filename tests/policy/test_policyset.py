"""Loading a policy set: the shipped bundle, the user's directory over it, refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from bundles import allow_module, write_bundle

from penin.policy.engine import EmbeddedEngine
from penin.policy.errors import PolicyLoadError
from penin.policy.policyset import load_bundle, load_policy_set

SHIPPED_PACKAGES = ("penin.admin", "penin.budget", "penin.guard", "penin.router")


@pytest.fixture
def shipped(tmp_path: Path) -> Path:
    """A stand-in for the shipped bundle: two packages, one with data."""
    return write_bundle(
        tmp_path / "shipped",
        {
            "penin/gate/gate.rego": (
                "package penin.gate\n\n"
                "allow if input.score >= data.penin.gate.minimum\n"
            ),
            "penin/gate/helpers.rego": 'package penin.gate\n\nname := "gate"\n',
            "penin/gate/data.json": '{"minimum": 0.8, "note": "shipped"}',
            "penin/gate/gate_test.rego": (
                "package penin.gate_test\n\n"
                'test_high if data.penin.gate.allow with input as {"score": 1}\n'
            ),
            "penin/other/other.rego": allow_module("penin.other"),
        },
    )


def test_the_shipped_bundle_loads_with_its_packages_and_data() -> None:
    policy_set = load_policy_set()

    assert policy_set.packages == SHIPPED_PACKAGES
    assert policy_set.user_packages == frozenset()
    assert all(m.path.startswith("penin/") for m in policy_set.modules)
    assert not any(m.path.endswith("_test.rego") for m in policy_set.modules)
    assert set(policy_set.data["penin"]) <= {p.split(".")[1] for p in SHIPPED_PACKAGES}
    EmbeddedEngine(policy_set)


def test_the_shipped_tests_load_only_when_asked_for() -> None:
    with_tests = load_policy_set(include_tests=True)

    assert any(m.path.endswith("_test.rego") for m in with_tests.modules)
    assert with_tests.digest != load_policy_set().digest


def test_a_user_package_replaces_the_shipped_one_and_its_data(
    tmp_path: Path, shipped: Path
) -> None:
    user = write_bundle(
        tmp_path / "user",
        {"gate.rego": "package penin.gate\n\nallow if input.score >= 0.5\n"},
    )

    policy_set = load_policy_set(user, shipped_dir=shipped)

    gate = [m.path for m in policy_set.modules if m.package == "penin.gate"]
    assert gate == [str(user / "gate.rego")]
    assert "gate" not in policy_set.data.get("penin", {})
    assert "penin.other" in policy_set.packages
    decision = EmbeddedEngine(policy_set).evaluate("penin/gate/allow", {"score": 0.6})
    assert decision.allowed


def test_a_user_package_that_is_new_is_added(tmp_path: Path, shipped: Path) -> None:
    user = write_bundle(tmp_path / "user", {"x/mine.rego": allow_module("acme.mine")})

    policy_set = load_policy_set(user, shipped_dir=shipped)

    assert policy_set.packages == ("acme.mine", "penin.gate", "penin.other")
    origins = {info.package: info.origin for info in policy_set.package_infos()}
    assert origins == {
        "acme.mine": "user",
        "penin.gate": "shipped",
        "penin.other": "shipped",
    }


def test_user_data_replaces_shipped_data_key_by_key(
    tmp_path: Path, shipped: Path
) -> None:
    user = write_bundle(tmp_path / "user", {"penin/gate/data.json": '{"minimum": 0.5}'})

    policy_set = load_policy_set(user, shipped_dir=shipped)

    assert policy_set.data["penin"]["gate"] == {"minimum": 0.5, "note": "shipped"}
    engine = EmbeddedEngine(policy_set)
    assert engine.evaluate("penin/gate/allow", {"score": 0.6}).allowed


def test_package_digests_follow_their_own_modules_only(
    tmp_path: Path, shipped: Path
) -> None:
    before = {
        i.package: i.digest
        for i in load_policy_set(shipped_dir=shipped).package_infos()
    }
    user = write_bundle(
        tmp_path / "user", {"o.rego": allow_module("penin.other", "false")}
    )

    after = {
        i.package: i.digest
        for i in load_policy_set(user, shipped_dir=shipped).package_infos()
    }

    assert after["penin.gate"] == before["penin.gate"]
    assert after["penin.other"] != before["penin.other"]


def test_test_modules_and_hidden_files_are_left_out(
    tmp_path: Path, shipped: Path
) -> None:
    user = write_bundle(
        tmp_path / "user",
        {
            "mine.rego": allow_module("acme.mine"),
            "mine_test.rego": "package acme.mine_test\n\ntest_x if true\n",
            ".backup/old.rego": "package broken {{{\n",
            "notes.txt": "not a policy",
        },
    )

    without = load_policy_set(user, shipped_dir=shipped)
    with_tests = load_policy_set(user, include_tests=True, shipped_dir=shipped)

    assert "acme.mine_test" not in without.packages
    assert {"acme.mine_test", "penin.gate_test"} <= set(with_tests.packages)


def test_a_missing_user_directory_is_refused(tmp_path: Path, shipped: Path) -> None:
    with pytest.raises(PolicyLoadError, match="policy directory not found") as refused:
        load_policy_set(tmp_path / "nowhere", shipped_dir=shipped)

    assert refused.value.file == str(tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ('{"a": 1,\n "b": }', 2, "not valid JSON"),
        ("[1, 2]", 1, "must hold a JSON object"),
        ('{"big": 18446744073709551616}', None, "cannot be canonicalised"),
    ],
)
def test_a_bad_data_file_is_refused_with_its_line(
    tmp_path: Path, text: str, line: int | None, reason: str
) -> None:
    root = write_bundle(
        tmp_path / "b", {"p.rego": allow_module("p"), "data.json": text}
    )

    with pytest.raises(PolicyLoadError) as refused:
        load_bundle(root)

    assert refused.value.file == str(root / "data.json")
    assert refused.value.line == line
    assert reason in refused.value.reason


def test_a_refusal_reads_as_file_line_reason(tmp_path: Path) -> None:
    root = write_bundle(
        tmp_path / "b", {"p.rego": "package p\n\nallow if http.send({})\n"}
    )

    with pytest.raises(PolicyLoadError) as refused:
        load_bundle(root)

    assert str(refused.value).startswith(f"{root / 'p.rego'}:3: calls http.send")


def test_a_module_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "b"
    root.mkdir()
    (root / "p.rego").write_bytes(b'package p\n\nx := "\xff"\n')

    with pytest.raises(PolicyLoadError, match="not UTF-8"):
        load_bundle(root)
