"""``/v1/cache/invalidate``: drop a cached answer from every node (admin action).

An operator names the entry by its cache key, or by the chat request whose
answer it holds (the node computes the key as the router does). The entry
leaves this node's L1 and Redis, and the invalidation published on Redis
drops it from every other node's L1. The action is a ledger record,
``cache.invalidated``, naming the key and the admin key that asked.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from penin.api.auth import admit
from penin.api.problems import Problem
from penin.cache import cache_key
from penin.keys import ApiKey
from penin.router.router import Router

router = APIRouter(prefix="/v1/cache", tags=["cache"])

InvalidateKey = Depends(admit("invalidate_cache"))

AUDIT_EVENT = "cache.invalidated"
_KEY = re.compile(r"[0-9a-f]{64}")


class Invalidation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str | None = Field(
        None, description="The cache key: 64 lowercase hex digits (SHA-256)."
    )
    request: dict[str, Any] | None = Field(
        None, description="A chat request; its answer's entry is dropped."
    )

    @model_validator(mode="after")
    def _one_of(self) -> Invalidation:
        if (self.key is None) == (self.request is None):
            raise ValueError("give either key or request, not both and not neither")
        if self.key is not None and not _KEY.fullmatch(self.key):
            raise ValueError("key must be 64 lowercase hex digits")

        return self


class InvalidationOut(BaseModel):
    key: str
    levels: list[str] = Field(description="The cache levels it was dropped from.")
    seq: int = Field(description="The seq of the cache.invalidated record.")


@router.post("/invalidate", response_model=InvalidationOut)
async def invalidate(
    body: Invalidation,
    request: Request,
    key: ApiKey = InvalidateKey,
) -> InvalidationOut:
    """Drop one cached answer from this node, Redis and every node's L1."""
    routing: Router | None = request.app.state.node.router
    if routing is None:
        raise Problem(409, "no-cache", "this node has no router, so no cache")
    entry = body.key or cache_key(body.request or {})
    if entry is None:
        raise Problem(
            422,
            "validation",
            "request: cannot be keyed: it needs a string model and JSON values",
            fields=["request"],
        )
    levels = await routing.cache.invalidate(entry)
    record = await routing.ledger.append_record_async(
        AUDIT_EVENT, {"key": entry, "levels": levels, "key_id": key.key_id}
    )
    if routing.cache.l2 is not None and "l2" not in levels:
        raise Problem(
            503,
            "unavailable",
            f"cache entry {entry} was dropped from this node only: Redis did "
            "not answer, so other nodes may still serve it; retry",
            {"Retry-After": "1"},
        )

    return InvalidationOut(key=entry, levels=levels, seq=record.seq)
