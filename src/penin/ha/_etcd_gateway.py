"""A small client of etcd v3's JSON gateway: ranges, transactions and leases.

etcd serves its gRPC API as JSON over HTTP (``POST /v3/kv/range`` and so on):
keys and values travel base64-encoded, 64-bit numbers as decimal strings, and
fields equal to zero are left out. Every call has one deadline shared by the
endpoints it tries: an endpoint that refuses, times out or answers 5xx (etcd
has no leader, or no quorum) hands the rest of the time to the next one.
A 4xx answer is etcd's verdict on the request and is not tried elsewhere.
A call that timed out may still have been applied, so a call tried again must
be harmless twice: reads, puts, keepalives, and transactions guarded by a
compare (the coordinator checks whose lease a key it meant to create holds).
Every failure leaves as a ``CoordinatorError``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import structlog

from penin._session import LazySession
from penin.ha.coordinator import CoordinatorError

log = structlog.get_logger("penin.ha")

Json = dict[str, Any]
# gRPC status codes etcd reports in its error documents.
NOT_FOUND = 5
# Unknown, DeadlineExceeded, Unavailable: this member could not serve the call
# (no leader, no quorum, shutting down); another member may.
_TRY_ELSEWHERE = frozenset({2, 4, 14})
_MAX_REASON_CHARS = 300


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def prefix_end(prefix: bytes) -> bytes:
    """The first key after every key that starts with ``prefix``."""
    return prefix[:-1] + bytes([prefix[-1] + 1])


@dataclass(frozen=True)
class KeyValue:
    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int


def key_values(answer: Json) -> list[KeyValue]:
    """The keys of a range answer (a missing ``kvs`` field means none)."""
    return [
        KeyValue(
            key=base64.b64decode(kv["key"]),
            value=base64.b64decode(kv.get("value", "")),
            create_revision=int(kv.get("create_revision", 0)),
            mod_revision=int(kv.get("mod_revision", 0)),
            lease=int(kv.get("lease", 0)),
        )
        for kv in answer.get("kvs", [])
    ]


class _UnansweredError(Exception):
    """One endpoint gave no usable answer; the next may."""


class EtcdGateway:
    """Calls to the JSON gateway of a set of etcd members, with failover."""

    def __init__(self, endpoints: Sequence[str], timeout_s: float) -> None:
        self.endpoints = tuple(endpoints)
        self.timeout_s = timeout_s
        self._preferred = 0
        # Made on first use, inside the event loop that will run the calls.
        self._session = LazySession()

    async def call(self, operation: str, path: str, body: Json) -> Json:
        """POST ``body`` to ``path`` on the first endpoint that answers in time."""
        deadline = time.monotonic() + self.timeout_s
        failures: list[str] = []
        count = len(self.endpoints)
        for attempt in range(count):
            index = (self._preferred + attempt) % count
            endpoint = self.endpoints[index]
            # An endpoint that hangs must leave time for the ones after it.
            budget = (deadline - time.monotonic()) / (count - attempt)
            if budget <= 0:
                failures.append(f"{endpoint}: no time left")
                continue
            try:
                answer = await self._post(operation, endpoint, path, body, budget)
            except _UnansweredError as exc:
                failures.append(f"{endpoint}: {exc}")
                log.debug(
                    "coordinator.endpoint_failed",
                    endpoint=endpoint,
                    operation=operation,
                    reason=str(exc),
                )
                continue
            self._preferred = index

            return answer

        raise CoordinatorError(
            operation,
            self.endpoints,
            "no endpoint answered (" + "; ".join(failures) + ")",
        )

    async def _post(
        self, operation: str, endpoint: str, path: str, body: Json, timeout_s: float
    ) -> Json:
        try:
            async with self._session.get().post(
                endpoint + path,
                json=body,
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as response:
                raw = await response.read()
                status = response.status
        except TimeoutError:
            raise _UnansweredError(f"no answer within {timeout_s:.2f} s") from None
        except aiohttp.ClientConnectorError as exc:
            reason = os.strerror(exc.os_error.errno) if exc.os_error.errno else str(exc)
            raise _UnansweredError(f"cannot connect: {reason.lower()}") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _UnansweredError(str(exc) or type(exc).__name__) from None

        answer = _first_document(raw)
        if answer is None:
            raise _UnansweredError(
                f"HTTP {status} with a body that is not JSON: {raw[:100]!r}"
            )
        code, message = _error_of(answer)
        if status >= 500 or code in _TRY_ELSEWHERE:
            raise _UnansweredError(message or f"HTTP {status}")
        if status >= 400 or message:
            raise CoordinatorError(
                operation, [endpoint], message or f"HTTP {status}", code=code
            )

        return answer

    @contextlib.contextmanager
    def reading(self, operation: str) -> Iterator[None]:
        """Turn an answer of an unexpected shape into a CoordinatorError."""
        try:
            yield
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise CoordinatorError(
                operation,
                self.endpoints,
                f"etcd's answer has an unexpected shape ({type(exc).__name__}: {exc})",
            ) from None

    async def close(self) -> None:
        await self._session.close()

    # -- the calls the coordinator makes ------------------------------------

    async def get(self, operation: str, key: bytes) -> KeyValue | None:
        answer = await self.call(operation, "/v3/kv/range", {"key": b64(key)})
        with self.reading(operation):
            found = key_values(answer)

        return found[0] if found else None

    async def get_prefix(self, operation: str, prefix: bytes) -> list[KeyValue]:
        body = {"key": b64(prefix), "range_end": b64(prefix_end(prefix))}

        answer = await self.call(operation, "/v3/kv/range", body)
        with self.reading(operation):
            return key_values(answer)

    async def put(
        self, operation: str, key: bytes, value: bytes, lease: int = 0
    ) -> None:
        body = {"key": b64(key), "value": b64(value), "lease": str(lease)}
        await self.call(operation, "/v3/kv/put", body)

    async def txn(self, operation: str, body: Json) -> Json:
        return await self.call(operation, "/v3/kv/txn", body)

    async def grant(self, operation: str, ttl_s: int) -> tuple[int, int]:
        """A new lease: its id and the TTL etcd granted (it may raise a short one)."""
        answer = await self.call(operation, "/v3/lease/grant", {"TTL": str(ttl_s)})
        with self.reading(operation):
            return int(answer["ID"]), int(answer["TTL"])

    async def keepalive(self, operation: str, lease: int) -> int:
        """Renew a lease: its TTL from now, or 0 when it has already lapsed."""
        answer = await self.call(operation, "/v3/lease/keepalive", {"ID": str(lease)})
        with self.reading(operation):
            return int(answer.get("result", {}).get("TTL", 0))

    async def revoke(self, operation: str, lease: int) -> bool:
        """Revoke a lease and delete its keys; False when it had already lapsed."""
        try:
            await self.call(operation, "/v3/lease/revoke", {"ID": str(lease)})
        except CoordinatorError as exc:
            if exc.code == NOT_FOUND:
                return False
            raise

        return True


def _first_document(raw: bytes) -> Json | None:
    """The answer's JSON object; a stream (keepalive) sends one per line."""
    line = raw.strip().split(b"\n", 1)[0]
    try:
        answer = json.loads(line)
    except ValueError:
        return None

    return answer if isinstance(answer, dict) else None


def _error_of(answer: Json) -> tuple[int | None, str | None]:
    """etcd's error code and message: top-level in an answer, under ``error`` in
    a stream (where the code is ``grpc_code``); (None, None) when it succeeded."""
    error = answer.get("error")
    if isinstance(error, dict):
        answer = error
    elif "code" not in answer and error is None:
        return None, None
    code = answer.get("code", answer.get("grpc_code"))
    message = str(answer.get("message") or error or "an error without a message")

    return (code if isinstance(code, int) else None), message[:_MAX_REASON_CHARS]
