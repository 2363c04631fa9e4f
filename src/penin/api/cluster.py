"""``/v1/cluster``: the members of this node's cluster, and switchover.

``GET /v1/cluster`` (read scope) answers with the cluster as this member
knows it: its role and term, the primary, the sync set and every live
member's role, applied seq, health and lag. On a single node it is 404.

``POST /v1/cluster/switchover`` (admin action ``switchover``, decided by the
``penin.admin`` policy) moves the lead from this primary to the replica
named in the body, losing no write (``penin.ha.elected``). On a replica it
is refused like every write, pointing at the primary.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from penin.api.auth import admit, require
from penin.api.problems import Problem
from penin.keys import ApiKey, Scope

router = APIRouter(prefix="/v1/cluster", tags=["cluster"])

ReadKey = Depends(require(Scope.READ))
SwitchoverKey = Depends(admit("switchover"))

_NODE_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


class SwitchoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    to: str = Field(pattern=_NODE_NAME, description="The replica to hand the lead to")


def _member(request: Request) -> Any:
    member = request.app.state.node.cluster
    if member is None:
        raise Problem(
            404,
            "not-found",
            "this node is a single node, not a member of a cluster (its config "
            "has no node and cluster sections)",
        )
    return member


@router.get("")
async def status(request: Request, key: ApiKey = ReadKey) -> JSONResponse:
    """Members, roles, term, applied seq, lag in records and seconds, sync set."""
    from penin.ha import CoordinatorError  # noqa: PLC0415 - penin.ha loads lazily

    member = _member(request)
    try:
        body = await member.status()
    except CoordinatorError as exc:
        raise Problem(
            503, "unavailable", f"the coordinator does not answer: {exc}"
        ) from None

    return JSONResponse(body)


@router.post("/switchover")
async def switchover(
    body: SwitchoverRequest, request: Request, key: ApiKey = SwitchoverKey
) -> JSONResponse:
    """Hand the lead to ``to`` once it holds every record; writes pause meanwhile."""
    from penin.ha import CoordinatorError  # noqa: PLC0415
    from penin.ha.elected import ElectedMember, SwitchoverError  # noqa: PLC0415

    member = _member(request)
    if not isinstance(member, ElectedMember):
        raise Problem(
            409,
            "switchover-failed",
            "with coordinator: static the primary is fixed by the configuration: "
            "switch over by hand (docs/ha.md, 'Switchover with coordinator: "
            "static')",
        )
    try:
        result = await member.switch_over(body.to)
    except SwitchoverError as exc:
        raise Problem(409, "switchover-failed", str(exc)) from None
    except CoordinatorError as exc:
        raise Problem(
            503, "switchover-failed", f"the coordinator does not answer: {exc}"
        ) from None

    return JSONResponse(result)
