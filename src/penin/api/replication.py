"""``/v1/replication``: the stream a primary serves its replicas.

Only members of the cluster may read it: every request carries the cluster
token as a bearer token. ``/ledger`` says which log this primary writes;
``/records`` sends the records after a seq, waiting up to ``wait_s`` for
the next commit when there are none yet (penin.ha.feed); ``/snapshot``
sends an online copy of the whole ledger to a new replica; ``/quarantined``
records what a rejoining member moved aside. Each request
confirms the replica's position, from which the primary measures its lag
(penin.ha.lag). A replica answers both with 503 ``not-primary``; a single
node does not have these routes.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from penin.api.problems import Problem
from penin.ha.member import ClusterMember
from penin.ha.peer import MANIFEST_HEADER
from penin.ha.quarantine import QUARANTINED
from penin.ha.stream import Batch, Identity, encode_batch
from penin.ledger.errors import NotPrimaryError
from penin.ledger.ledger import MAX_QUERY_LIMIT, MAX_SQLITE_INT

router = APIRouter(prefix="/v1/replication", tags=["replication"])

MAX_WAIT_S = 10.0
_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="penin-cluster"'}
_MEMBER_NAME = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"


def _primary(request: Request) -> ClusterMember:
    """This node's member, once the request is shown to come from a member and
    this node is the primary."""
    member: ClusterMember | None = request.app.state.node.cluster
    assert member is not None  # the app mounts these routes on members only
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not member.token.matches(token.strip()):
        raise Problem(
            401,
            "unauthorized",
            "send 'Authorization: Bearer <cluster token>', the token every member "
            "of the cluster holds",
            _CHALLENGE,
        )
    if not member.is_primary:
        raise NotPrimaryError(member.ledger.path, member.primary, member.primary_url)

    return member


@router.get("/ledger", response_model=Identity)
async def identity(request: Request) -> Response:
    """The log this primary writes: its origin and checkpoint verifier key."""
    member = _primary(request)
    ledger = member.ledger
    body = Identity(
        primary=member.node.name,
        origin=ledger.origin,
        vkey=ledger.verifier.vkey,
        tree_size=await run_in_threadpool(ledger.count_records),
        term=ledger.term,
    )

    return Response(body.model_dump_json(), media_type="application/json")


@router.get("/snapshot", response_class=FileResponse)
async def snapshot(request: Request) -> FileResponse:
    """An online copy of this primary's ledger, for a new replica: the file as
    ``penin ledger backup`` writes it, its manifest (tree size, root, signed
    checkpoint, SHA-256) in the ``Penin-Snapshot-Manifest`` header. Writes go
    on meanwhile; the replica streams what came after from the copy's size."""
    member = _primary(request)
    scratch = Path(tempfile.mkdtemp(prefix=".snapshot-", dir=member.ledger.path.parent))
    try:
        manifest = await run_in_threadpool(member.ledger.backup, scratch)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    header = json.dumps(manifest.to_dict(), separators=(",", ":"))

    return FileResponse(
        scratch / manifest.file,
        media_type="application/vnd.sqlite3",
        headers={MANIFEST_HEADER: header},
        background=BackgroundTask(shutil.rmtree, scratch, ignore_errors=True),
    )


class QuarantineReport(BaseModel):
    """What a member moved aside when it rejoined (penin.ha.quarantine)."""

    model_config = ConfigDict(extra="ignore")

    node: str = Field(pattern=_MEMBER_NAME)
    moved_at: str = Field(max_length=64)
    tree_size: int = Field(ge=0)
    root: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")
    last_term: int = Field(ge=0)
    reason: str = Field(max_length=2000)


@router.post("/quarantined", status_code=201)
async def quarantined(report: QuarantineReport, request: Request) -> Response:
    """Record in the ledger, as ``ha.quarantined``, what a member moved aside:
    its records the primary never had stay out of the log, but the log says
    that they existed, where, and how many. Idempotent per member and time."""
    member = _primary(request)
    payload = report.model_dump()
    key = f"{QUARANTINED}:{report.node}:{report.moved_at}"
    record = await member.ledger.append_record_async(
        QUARANTINED, payload, idempotency_key=key[:200]
    )

    return Response(record.to_json(), status_code=201, media_type="application/json")


class RecordsQuery(BaseModel):
    """The query of ``GET /v1/replication/records``."""

    model_config = ConfigDict(extra="ignore")

    after_seq: int = Field(
        ge=-1, le=MAX_SQLITE_INT, description="The replica's last seq; -1: none"
    )
    replica: str = Field(
        pattern=_MEMBER_NAME, description="The asking replica's node.name"
    )
    limit: int = Field(MAX_QUERY_LIMIT, ge=1, le=MAX_QUERY_LIMIT)
    wait_s: float = Field(
        0.0, ge=0, le=MAX_WAIT_S, description="How long to wait for news"
    )
    checkpoint_size: int = Field(
        0, ge=0, description="Tree size of the replica's newest checkpoint"
    )


@router.get("/records", response_model=Batch)
async def records(
    request: Request, query: Annotated[RecordsQuery, Query()]
) -> Response:
    """The records after ``after_seq`` as stored, the tree size, the term and the
    newest signed checkpoint. When there is neither a record after
    ``after_seq`` nor a checkpoint beyond ``checkpoint_size``, waits up to
    ``wait_s`` for one.

    Described here; served first by ``RecordsEndpoint``, the same handler
    without FastAPI's routing and parameter resolution.
    """
    return await _records(request, query)


class RecordsEndpoint:
    """``GET /v1/replication/records`` as a bare ASGI app, which the app puts
    before its routes: every replica calls it once per batch, and under sync
    replication each call stands between the primary's writes and their
    acknowledgement. Bad queries get the same 422 problem documents."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        try:
            query = RecordsQuery.model_validate(dict(request.query_params))
        except ValidationError as exc:
            errors = [{**e, "loc": ("query", *e["loc"])} for e in exc.errors()]
            raise RequestValidationError(errors) from None
        response = await _records(request, query)
        await response(scope, receive, send)


async def _records(request: Request, query: RecordsQuery) -> Response:
    member = _primary(request)
    feed = member.feed
    assert feed is not None
    ledger = member.ledger
    after_seq, replica = query.after_seq, query.replica
    if after_seq >= feed.head.size and after_seq >= await feed.size():
        raise Problem(
            409,
            "replica-ahead",
            f"replica {replica} has records up to seq {after_seq}, but this "
            f"primary's log ends before seq {feed.head.size}: the replica holds "
            "records this primary never wrote, and must not follow it as it is",
        )
    member.confirm(replica, after_seq)
    if query.wait_s > 0 and not feed.has_news(after_seq, query.checkpoint_size):
        await _wait_unless_gone(
            request, feed.wait_beyond(after_seq, query.checkpoint_size, query.wait_s)
        )
        if not member.is_primary:  # it stopped leading while the replica waited
            raise NotPrimaryError(ledger.path, member.primary, member.primary_url)
    found = await feed.records_after(after_seq, query.limit)
    size = max(feed.head.size, found[-1].seq + 1 if found else 0)
    body = encode_batch(
        member.node.name, ledger.term, size, found, await feed.checkpoint()
    )

    return Response(body, media_type="application/json")


async def _wait_unless_gone(request: Request, wait: Coroutine[Any, Any, None]) -> None:
    """Run ``wait``, ending it early if the replica hangs up (a replica that
    stops must not hold a request open on its primary until the wait is over)."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    tasks = {asyncio.ensure_future(wait), asyncio.ensure_future(gone())}
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
