"""``/v1/policy``: the policy set a node serves, and decisions asked for over HTTP.

``GET /v1/policy`` (read scope) lists the loaded packages and their digests.
``POST /v1/policy/{path}`` evaluates the policy at a Data API path (like
``penin/guard/verdict``) for an input sent as OPA's REST API takes it,
``{"input": {...}}``; it is an admin action (``evaluate_policy``). A deny is
still a 200, since the policy answered; only an engine that could not be
reached is a 503. Each decision is a ``policy.decision`` ledger record,
durable before the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from penin.api.auth import admit, require
from penin.api.problems import Problem, policy_problem
from penin.keys import Scope
from penin.policy.engine import canonical_input, check_path
from penin.policy.errors import PolicyEvalError
from penin.policy.service import Policies
from penin.router.errors import UNAVAILABLE_REASONS

router = APIRouter(prefix="/v1/policy", tags=["policy"])

ReadKey = Depends(require(Scope.READ))
EvaluateKey = Depends(admit("evaluate_policy"))


class PolicyQuery(BaseModel):
    """A decision request, in the shape of OPA's Data API."""

    model_config = ConfigDict(extra="forbid")

    input: dict[str, Any] = Field(description="The input document: a JSON object.")


class DecisionOut(BaseModel):
    decision_id: str = Field(description="Names the policy.decision record.")
    path: str
    allowed: bool
    reason: str | None = Field(
        description="Null when allowed; 'denied' when the policy said no; "
        "else the failure that denied (undefined, no_result, error, ...)."
    )
    result: Any = Field(description="The value the policy produced, or null.")
    policy_digest: str
    input_digest: str


class PackageOut(BaseModel):
    package: str
    origin: Literal["shipped", "user"]
    digest: str
    files: list[str]


class PolicySetOut(BaseModel):
    mode: Literal["embedded", "remote"]
    digest: str = Field(description="The policy-set digest every decision names.")
    packages: list[PackageOut] = Field(
        description="The loaded packages; empty in remote mode (OPA holds them)."
    )


def _policies(request: Request) -> Policies:
    policies: Policies = request.app.state.node.policies
    return policies


@router.get("", response_model=PolicySetOut, dependencies=[ReadKey])
def loaded(request: Request) -> PolicySetOut:
    """The policy set in service: its digest and its packages."""
    policies = _policies(request)
    packages = [
        PackageOut(
            package=p.package, origin=p.origin, digest=p.digest, files=list(p.modules)
        )
        for p in policies.packages()
    ]

    return PolicySetOut(
        mode=policies.settings.mode, digest=policies.digest, packages=packages
    )


@router.post(
    "/{path:path}",
    response_model=DecisionOut,
    dependencies=[EvaluateKey],
    responses={503: {"description": "Remote mode: the OPA server did not answer"}},
)
async def evaluate(path: str, body: PolicyQuery, request: Request) -> DecisionOut:
    """Evaluate the policy at ``path`` for ``input``; a deny is a 200 too."""
    _valid("path", check_path, path)
    _valid("input", canonical_input, body.input)
    policies = _policies(request)
    decision = await policies.decide(path, body.input)
    event_type, payload = policies.record(decision, body.input)
    await request.app.state.node.ledger.append_record_async(event_type, payload)
    if decision.reason in UNAVAILABLE_REASONS:
        detail = f"{path}: the policy engine did not answer ({decision.reason})"
        raise policy_problem(True, detail, decision.decision_id)

    return DecisionOut(
        decision_id=decision.decision_id,
        path=decision.path,
        allowed=decision.allowed,
        reason=decision.reason,
        result=decision.result,
        policy_digest=decision.policy_digest,
        input_digest=decision.input_digest,
    )


def _valid(field: str, check: Callable[[Any], object], value: Any) -> None:
    """Raise a 422 naming ``field`` when ``check`` refuses ``value``."""
    try:
        check(value)
    except PolicyEvalError as exc:
        raise Problem(422, "validation", f"{field}: {exc}", fields=[field]) from None
