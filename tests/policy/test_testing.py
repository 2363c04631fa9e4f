"""The Rego test runner: which rules are tests, and how each outcome is reported."""

from __future__ import annotations

import pytest

from penin.policy.testing import TestResult, run_tests


def run(text: str, data: dict[str, object] | None = None) -> list[TestResult]:
    return run_tests([("checks_test.rego", text)], data or {})


def test_a_test_whose_value_is_true_passes() -> None:
    results = run("package checks\n\ntest_sum if 1 + 1 == 2\n")

    assert results == [TestResult("checks", "test_sum", passed=True, error=None)]


@pytest.mark.parametrize(
    "rule",
    [
        "test_it if 1 + 1 == 3",  # undefined: the body fails
        "test_it := false",
        "test_it := 1",  # true only, not truthy
        'test_it := "true"',
        "test_it contains 1 if true",  # a set is not true
    ],
    ids=["undefined", "false", "number", "string", "set"],
)
def test_a_test_whose_value_is_not_true_fails_without_an_error(rule: str) -> None:
    results = run(f"package checks\n\n{rule}\n")

    assert results == [TestResult("checks", "test_it", passed=False, error=None)]


def test_an_evaluation_error_fails_the_test_with_its_place_and_reason() -> None:
    (result,) = run("package checks\n\ntest_divide if 1 / 0 == 1\n")

    assert result.name == "test_divide"
    assert result.passed is False
    assert result.error is not None
    assert "checks_test.rego:3" in result.error
    assert "divide by zero" in result.error
    assert "backtrace" not in result.error.lower()


def test_an_error_in_one_test_leaves_the_others_running() -> None:
    results = run(
        "package checks\n\n"
        "test_first if true\n"
        "test_broken if 1 / 0 == 1\n"
        "test_last if true\n"
    )

    assert [(r.name, r.passed) for r in results] == [
        ("test_first", True),
        ("test_broken", False),
        ("test_last", True),
    ]


def test_only_rules_named_test_are_run() -> None:
    results = run(
        "package checks\n\n"
        "helper := true\n"
        "check_it if true\n"
        "todo_test_later if false\n"
        "test_(x) := x\n"
        "test_with_args(x) := true if x\n"
        "test_real if helper\n"
    )

    assert [r.name for r in results] == ["test_real"]


def test_a_module_without_tests_gives_no_results() -> None:
    assert run("package checks\n\nallow := true\n") == []
    assert run_tests([], {}) == []


def test_tests_are_reported_per_package_in_module_then_line_order() -> None:
    modules = [
        ("b_test.rego", "package b_test\n\ntest_two if true\n\ntest_one if true\n"),
        ("a_test.rego", "package a.deep_test\n\ntest_only if true\n"),
    ]

    results = run_tests(modules, {})

    assert [(r.package, r.name) for r in results] == [
        ("b_test", "test_two"),
        ("b_test", "test_one"),
        ("a.deep_test", "test_only"),
    ]


def test_a_test_may_mock_input_and_data_of_the_package_it_tests() -> None:
    modules = [
        (
            "gate.rego",
            "package gate\n\n"
            "default allow := false\n\n"
            "allow if input.level <= data.gate.max_level\n",
        ),
        (
            "gate_test.rego",
            "package gate_test\n\n"
            "import data.gate\n\n"
            "test_low_passes if gate.allow with input as {'level': 1}\n"
            "test_high_fails if not gate.allow with input as {'level': 9}\n"
            "test_raised_max if gate.allow with input as {'level': 9}"
            " with data.gate.max_level as 10\n",
        ),
    ]

    results = run_tests(
        [(path, text.replace("'", '"')) for path, text in modules],
        {"gate": {"max_level": 3}},
    )

    assert [(r.name, r.passed) for r in results] == [
        ("test_low_passes", True),
        ("test_high_fails", True),
        ("test_raised_max", True),
    ]


def test_booleans_in_the_data_stay_booleans() -> None:
    results = run(
        "package checks\n\n"
        "test_enabled if data.flags.enabled == true\n"
        "test_not_a_number if not data.flags.enabled == 1\n",
        {"flags": {"enabled": True}},
    )

    assert [r.passed for r in results] == [True, True]


def test_a_test_name_defined_twice_fails_naming_each_definition() -> None:
    # Joined into one rule, the passing definition would hide the failing one.
    modules = [
        ("one_test.rego", "package checks\n\ntest_twice if true\n"),
        (
            "two_test.rego",
            "package checks\n\ntest_other if true\n\ntest_twice if false\n",
        ),
    ]

    results = run_tests(modules, {})

    twice = next(r for r in results if r.name == "test_twice")
    assert twice.passed is False
    assert twice.error is not None
    assert "defined 2 times" in twice.error
    assert "one_test.rego:3" in twice.error
    assert "two_test.rego:5" in twice.error
    assert [r.name for r in results] == ["test_twice", "test_other"]


def test_a_default_value_is_part_of_its_test_not_a_second_one() -> None:
    results = run(
        "package checks\n\n"
        "default test_guarded := false\n\n"
        "test_guarded if 2 > 1\n\n"
        "default test_only_default := true\n"
    )

    assert [(r.name, r.passed, r.error) for r in results] == [
        ("test_guarded", True, None),
        ("test_only_default", True, None),
    ]


def test_a_test_named_by_a_dotted_rule_head_is_found() -> None:
    results = run("package checks\n\ncases.test_nested if true\n")

    assert results == [TestResult("checks", "cases.test_nested", True, None)]


def test_a_module_that_does_not_parse_is_refused_naming_its_file_and_line() -> None:
    with pytest.raises(ValueError, match=r"broken_test\.rego") as caught:
        run_tests([("broken_test.rego", "package broken\n\ntest_x if ) true\n")], {})

    assert "broken_test.rego:3" in str(caught.value)
    assert "backtrace" not in str(caught.value).lower()


def test_a_pre_1_0_rule_body_is_refused() -> None:
    # Rego v1, as OPA 1.0 parses it: a rule body needs `if`.
    with pytest.raises(ValueError, match=r"old_test\.rego"):
        run_tests([("old_test.rego", "package old\n\ntest_x { true }\n")], {})
