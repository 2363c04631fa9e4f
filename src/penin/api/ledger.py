"""``/v1/ledger``: append, read, prove, checkpoint and verify over HTTP."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Send
from starlette.types import Scope as AsgiScope

from penin.api.auth import admit, authenticate, check_token, require, wrong_scope
from penin.api.node import Node
from penin.api.problems import Problem
from penin.keys import Scope
from penin.ledger.errors import NotPrimaryError
from penin.ledger.ledger import MAX_QUERY_LIMIT, MAX_SQLITE_INT
from penin.ledger.note import open_checkpoint
from penin.ledger.record import MAX_IDEMPOTENCY_KEY_CHARS, Record

router = APIRouter(prefix="/v1/ledger", tags=["ledger"])

ReadKey = Depends(require(Scope.READ))
AppendKey = Depends(require(Scope.APPEND))
# Verifying is an admin action: the admin policy says which scopes may.
VerifyKey = Depends(admit("verify_ledger"))


class NewRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")

    event_type: str = Field(
        description="Dotted lowercase name, e.g. 'app.order_placed'."
    )
    payload: dict[str, Any] = Field(description="Any JSON object, at most 1 MiB.")


class RecordOut(BaseModel):
    seq: int
    ts: str
    event_type: str
    payload: dict[str, Any]
    term: int
    prev_hash: str
    idempotency_key: str | None
    leaf_hash: str


class RecordPage(BaseModel):
    records: list[RecordOut]
    next_after_seq: int | None = Field(
        description="Pass as after_seq for the next page; null on the last page."
    )


class InclusionProofOut(BaseModel):
    leaf_index: int
    tree_size: int
    hashes: list[str]


class ConsistencyProofOut(BaseModel):
    old_size: int
    new_size: int
    hashes: list[str]


def _node(request: Request) -> Node:
    node: Node = request.app.state.node
    return node


# The append route is the node's hot path: it reads its body and header itself
# and checks the key in its own body, because FastAPI's per-request parameter
# and dependency resolution cost a fifth of the route's CPU. The OpenAPI entry
# below says what FastAPI would have said; errors are the same problems.
_APPEND_OPENAPI: dict[str, Any] = {
    "parameters": [
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": MAX_IDEMPOTENCY_KEY_CHARS,
            },
            "description": "A second append with the same key returns the first "
            "record (200) and appends nothing.",
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": NewRecord.model_json_schema()}},
    },
}
APPEND = Scope.APPEND
# Records the node trusts as its own: an API key is a key because of its
# apikey.created record, auditors join requests to their policy.decision
# records, and budgets are rebuilt from router.request records. An append key
# that could write them could mint an admin key or spend another key's budget.
# ha.term_started records say which primary wrote from which seq on.
NODE_NAMESPACES = frozenset({"apikey", "ha", "policy", "router"})


@router.post(
    "/records",
    status_code=201,
    response_model=RecordOut,
    responses={
        200: {"model": RecordOut, "description": "The key was used before"},
        422: {"description": "A field or the Idempotency-Key header is invalid"},
    },
    openapi_extra=_APPEND_OPENAPI,
)
async def append_record(request: Request) -> Response:
    """Append a record; 201 once it is durable, 200 when the key was used before.

    Described here; served by ``AppendEndpoint``, which the app puts first.
    """
    raise AssertionError("POST /v1/ledger/records is served by AppendEndpoint")


class AppendEndpoint:
    """``POST /v1/ledger/records`` as a bare ASGI app: the node's hot path.

    It reads its headers and body from the ASGI messages and sends its answer
    as two messages, without Starlette's request and response objects or
    FastAPI's parameter resolution (together a quarter of the route's CPU).
    Errors are raised as everywhere else and become the same problem
    documents; the FastAPI route above only describes it in the API.
    """

    async def __call__(self, scope: AsgiScope, receive: Receive, send: Send) -> None:
        node: Node = scope["app"].state.node
        key = check_token(node.keyring, _header(scope, b"authorization"))
        if not key.allows(APPEND):
            raise wrong_scope(APPEND, key)
        scope.setdefault("state", {})["key_id"] = key.key_id
        body = _new_record(await _body(receive))
        _refuse_node_namespace(body.event_type)
        idempotency_key = _checked_idempotency_key(_header(scope, b"idempotency-key"))
        ledger = node.ledger
        if idempotency_key is not None and (
            found := ledger.find_idempotent(idempotency_key)
        ):
            # A replay acknowledges the record as much as the first answer
            # would have: a primary whose lease is lapsing, or whose sync set
            # does not hold the record yet, must refuse it the same way.
            if ledger.acknowledger is not None:
                await ledger.acknowledger.acknowledge([found])
            await _send_record(send, found, 200, (b"idempotent-replayed", b"true"))
            return
        record = await ledger.append_record_async(
            body.event_type, body.payload, idempotency_key=idempotency_key
        )
        location = f"/v1/ledger/records/{record.seq}".encode()
        await _send_record(send, record, 201, (b"location", location))


def _header(scope: AsgiScope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            text: str = value.decode("latin-1")
            return text

    return None


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_record(
    send: Send, record: Record, status: int, header: tuple[bytes, bytes]
) -> None:
    """The record as JSON, sent as is: it is already valid, so a response
    model's pass (validate, encode, serialise) would only cost time."""
    body = record.to_json().encode("utf-8")
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        header,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _refuse_node_namespace(event_type: str) -> None:
    namespace = event_type.partition(".")[0]
    if namespace in NODE_NAMESPACES:
        raise Problem(
            403,
            "forbidden",
            f"event type {event_type!r}: {namespace}.* records are written "
            "by the node itself; use a namespace of your own",
        )


def _new_record(raw: bytes) -> NewRecord:
    try:
        return NewRecord.model_validate_json(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors()]
        raise RequestValidationError(errors) from None


def _checked_idempotency_key(key: str | None) -> str | None:
    if key is not None and not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY_CHARS:
        raise RequestValidationError(
            [
                {
                    "type": "string_too_long" if key else "string_too_short",
                    "loc": ("header", "idempotency-key"),
                    "msg": "Idempotency-Key must be 1 to "
                    f"{MAX_IDEMPOTENCY_KEY_CHARS} characters",
                    "input": key,
                }
            ]
        )

    return key


@router.get("/records", response_model=RecordPage, dependencies=[ReadKey])
def list_records(
    request: Request,
    event_type: str | None = None,
    since: Annotated[str | None, Query(description="RFC 3339, inclusive.")] = None,
    until: Annotated[str | None, Query(description="RFC 3339, exclusive.")] = None,
    after_seq: Annotated[int | None, Query(ge=-1, le=MAX_SQLITE_INT)] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_QUERY_LIMIT)] = 100,
) -> dict[str, Any]:
    """Records in seq order, one page at a time."""
    records = _node(request).ledger.query(event_type, since, until, after_seq, limit)
    next_after = records[-1].seq if len(records) == limit else None

    return {"records": [r.to_dict() for r in records], "next_after_seq": next_after}


@router.get("/records/{seq}", response_model=RecordOut, dependencies=[ReadKey])
def get_record(request: Request, seq: int) -> dict[str, Any]:
    return _node(request).ledger.get(seq).to_dict()


@router.get("/checkpoint", response_class=PlainTextResponse, dependencies=[ReadKey])
def get_checkpoint(request: Request) -> str:
    """The newest signed checkpoint (C2SP signed note)."""
    note = _node(request).ledger.latest_checkpoint()
    if note is None:
        raise Problem(404, "not-found", "no checkpoint has been signed yet")

    return note


@router.post("/checkpoint", response_class=PlainTextResponse, dependencies=[AppendKey])
def sign_checkpoint(request: Request) -> str:
    """Sign the current tree head now and return the note. On a cluster's
    primary, the head as far as the replicas that may replace it hold it."""
    node = _node(request)
    size = node.signable_size()
    if size is None:
        member = node.cluster
        assert member is not None  # a single node may always sign
        raise NotPrimaryError(node.ledger.path, member.primary, member.primary_url)
    latest = node.ledger.latest_checkpoint()
    if (
        latest is not None
        and open_checkpoint(latest, node.ledger.verifier).tree_size >= size
    ):
        return latest

    return node.ledger.checkpoint(size)


@router.get("/vkey", response_class=PlainTextResponse, dependencies=[ReadKey])
def get_vkey(request: Request) -> str:
    """The verifier key of the checkpoints (C2SP vkey form)."""
    return _node(request).ledger.verifier.vkey + "\n"


@router.get(
    "/proofs/inclusion", response_model=InclusionProofOut, dependencies=[ReadKey]
)
def inclusion_proof(
    request: Request,
    seq: Annotated[int, Query(ge=0)],
    tree_size: Annotated[int | None, Query(ge=1)] = None,
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of record ``seq`` in the tree of ``tree_size``."""
    return _node(request).ledger.inclusion_proof(seq, tree_size).to_dict()


@router.get(
    "/proofs/consistency", response_model=ConsistencyProofOut, dependencies=[ReadKey]
)
def consistency_proof(
    request: Request,
    old_size: Annotated[int, Query(alias="from", ge=0)],
    new_size: Annotated[int, Query(alias="to", ge=0)],
) -> dict[str, Any]:
    """RFC 9162 consistency proof from tree size ``from`` to ``to``."""
    return _node(request).ledger.consistency_proof(old_size, new_size).to_dict()


@router.post("/verify", status_code=202, dependencies=[VerifyKey])
async def start_verify(request: Request) -> JSONResponse:
    """Start a full verification; poll the job at the Location it returns."""
    job = _node(request).start_verify_job(owner=request.state.key_id)
    location = f"/v1/jobs/{job.job_id}"

    return JSONResponse(job.to_dict(), status_code=202, headers={"Location": location})


jobs_router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


# Polling reads a job's progress: the key that started the job, or any key
# of read scope, may; no admin decision (and so no ledger record) per poll.
@jobs_router.get("/{job_id}")
async def get_job(request: Request, job_id: str) -> dict[str, Any]:
    key = await authenticate(request)
    job = _node(request).jobs.get(job_id)
    if not key.allows(Scope.READ) and (job is None or job.owner != key.key_id):
        raise wrong_scope(Scope.READ, key)
    if job is None:
        raise Problem(404, "not-found", f"no job {job_id!r} (jobs are kept in memory)")

    return job.to_dict()
