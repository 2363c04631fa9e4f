"""``penin policy``: evaluate, test and list the policies a node would load.

Each command reads the shipped bundle with the user's directory over it:
``--dir``, else ``policy.dir`` of the node's config (``--config``, then
``PENIN_POLICY__DIR``), else the shipped bundle alone. Evaluation is always
embedded, as ``policy.mode: embedded`` would do it. Exit codes: 0 allowed or
passed, 1 denied or failed, 2 bad input or a policy set that does not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from penin.cli._config import BadConfigError, config_option, node_settings

if TYPE_CHECKING:
    from penin.policy.policyset import PolicySet

dir_option = click.option(
    "--dir",
    "policy_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Policy directory over the shipped bundle (default: policy.dir).",
)


class _DecisionFailedError(click.ClickException):
    """The policy could not decide: the decision is printed, then this, exit 2."""

    exit_code = 2


@click.group()
def policy() -> None:
    """Rego policies: evaluate one, run their tests, list what loads."""


@policy.command("eval")
@click.argument("path")
@click.option(
    "--input",
    "input_file",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="A JSON file holding the input document (an object).",
)
@dir_option
@config_option
def eval_policy(
    path: str, input_file: Path, policy_dir: Path | None, config_file: Path | None
) -> None:
    """Decide PATH (like penin/router/decision) for the input; print it as JSON.

    Exit 0 when allowed, 1 when the policy denies, 2 when it could not decide.
    """
    from penin.policy.engine import EmbeddedEngine, check_path  # noqa: PLC0415
    from penin.policy.errors import PolicyEvalError  # noqa: PLC0415

    try:
        check_path(path)
    except PolicyEvalError as exc:
        raise click.BadParameter(str(exc), param_hint="PATH") from None
    document = _read_input(input_file)
    engine = EmbeddedEngine(_load(policy_dir, config_file))
    decision = engine.evaluate(path, document)
    click.echo(
        json.dumps(
            {
                "decision_id": decision.decision_id,
                "path": decision.path,
                "allowed": decision.allowed,
                "reason": decision.reason,
                "result": decision.result,
                "policy_digest": decision.policy_digest,
                "input_digest": decision.input_digest,
            },
            indent=2,
            ensure_ascii=False,
        )
    )
    if decision.reason not in (None, "denied"):
        raise _DecisionFailedError(
            f"{path}: the policy could not decide ({decision.reason})"
        )
    if not decision.allowed:
        raise SystemExit(1)


@policy.command("test")
@click.argument(
    "directory", required=False, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--only-dir",
    is_flag=True,
    help="Run only the tests of DIRECTORY's packages, not the shipped ones.",
)
@config_option
def test_policies(
    directory: Path | None, only_dir: bool, config_file: Path | None
) -> None:
    """Run every test_ rule, as `opa test` does, over the shipped bundle with
    DIRECTORY (default: policy.dir) over it.

    Exit 1 when a test fails or when no test ran.
    """
    from penin.policy.testing import run_tests  # noqa: PLC0415

    policy_set = _load(directory, config_file, include_tests=True)
    results = run_tests([(m.path, m.text) for m in policy_set.modules], policy_set.data)
    if only_dir:
        results = [r for r in results if r.package in policy_set.user_packages]
    for result in results:
        verdict = "PASS" if result.passed else "FAIL"
        line = f"{verdict} data.{result.package}.{result.name}"
        click.echo(line + (f": {result.error}" if result.error else ""))
    failed = sum(not r.passed for r in results)
    click.echo(f"{len(results) - failed} passed, {failed} failed")
    if not results:
        click.echo("error: no test ran: no rule is named test_…", err=True)
    if failed or not results:
        raise SystemExit(1)


@policy.command("list")
@dir_option
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_policies(
    policy_dir: Path | None, config_file: Path | None, as_json: bool
) -> None:
    """The packages that load, each with its digest, and the set's digest."""
    policy_set = _load(policy_dir, config_file)
    packages = [
        {
            "package": p.package,
            "origin": p.origin,
            "digest": p.digest,
            "files": list(p.modules),
        }
        for p in policy_set.package_infos()
    ]
    if as_json:
        click.echo(json.dumps({"digest": policy_set.digest, "packages": packages}))
        return
    click.echo(f"policy set {policy_set.digest}")
    for package in packages:
        files = ", ".join(package["files"]) or "(data only)"
        click.echo(
            f"{package['package']}\t{package['origin']}\t{package['digest']}\t{files}"
        )


def _load(
    directory: Path | None, config_file: Path | None, *, include_tests: bool = False
) -> PolicySet:
    """The policy set with ``directory`` (else the configured one) over the
    shipped bundle; one line and exit 2 if it is refused."""
    from penin.policy.errors import PolicyLoadError  # noqa: PLC0415
    from penin.policy.policyset import load_policy_set  # noqa: PLC0415

    if directory is None:
        directory = node_settings(config_file).policy.dir
    try:
        return load_policy_set(directory, include_tests=include_tests)
    except PolicyLoadError as exc:
        raise BadConfigError(f"policy set refused: {exc}") from None


def _read_input(path: Path) -> dict[str, Any]:
    from penin.policy.engine import canonical_input  # noqa: PLC0415
    from penin.policy.errors import PolicyEvalError  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise BadConfigError(f"--input {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise BadConfigError(f"--input {path}: not UTF-8 text") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise BadConfigError(
            f"--input {path}: not JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if not isinstance(document, dict):
        raise BadConfigError(f"--input {path}: must hold a JSON object")
    try:
        canonical_input(document)
    except PolicyEvalError as exc:
        raise BadConfigError(f"--input {path}: {exc}") from None

    return document
