"""The router benchmark's upstream: a zero-latency OpenAI-compatible server.

A raw ASGI app, served by uvicorn in its own process. ``POST
/v1/chat/completions`` answers a fixed ``chat.completion``, or with ``stream:
true`` a few SSE chunks (and a usage chunk when ``stream_options.include_usage``
asks for it). A stream for a model whose name ends in ``-hold`` sends its
first chunk at once and, while a hold is armed (``POST /hold``), waits for
``POST /release`` (or HOLD_LIMIT_S) before the rest: that is how the benchmark
holds a thousand streams open at the same moment without betting on timing.
``GET /v1/models`` and ``GET /health`` answer too, for readiness checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

Json = dict[str, Any]
Send = Callable[[Json], Awaitable[None]]

HOLD_SUFFIX = "-hold"
HOLD_LIMIT_S = 240.0  # a held stream that is never released ends by itself
COMPLETION = (  # the shape of an OpenAI chat.completion, 23 completion tokens
    b'{"id":"chatcmpl-bench-0000000000000001","object":"chat.completion",'
    b'"created":1767225600,"model":"bench-upstream-1","system_fingerprint":'
    b'"fp_bench_upstream","choices":[{"index":0,"message":{"role":"assistant",'
    b'"content":"Hello! This is the fixed reply of the benchmark upstream, about '
    b'as long as a short answer from a model."},"logprobs":null,"finish_reason":'
    b'"stop"}],"usage":{"prompt_tokens":24,"completion_tokens":23,'
    b'"total_tokens":47}}'
)
PIECES = ("Hello!", " This is the streamed reply", " of the benchmark upstream.")
USAGE = {"prompt_tokens": 24, "completion_tokens": 9, "total_tokens": 33}
JSON_HEADERS = [(b"content-type", b"application/json")]
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


class _Holds:
    """The event that ends the current hold; set (nothing held) until armed."""

    def __init__(self) -> None:
        self.released = asyncio.Event()
        self.released.set()

    def arm(self) -> None:
        self.released = asyncio.Event()

    def release(self) -> None:
        self.released.set()


_HOLDS = _Holds()


def _chunk(model: str, delta: Json, finish: str | None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _event({**_chunk_head(model), "choices": [choice]})


def _chunk_head(model: str) -> Json:
    return {
        "id": "chatcmpl-bench-stream",
        "object": "chat.completion.chunk",
        "created": 1767225600,
        "model": model,
    }


def _event(payload: Json) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


async def _stream(request: Json, send: Send) -> None:
    model = str(request.get("model", ""))
    include_usage = bool((request.get("stream_options") or {}).get("include_usage"))
    released = _HOLDS.released  # this stream's hold: /hold replaces it

    await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
    first = {"role": "assistant", "content": PIECES[0]}
    await _body(send, _chunk(model, first, None))
    if model.endswith(HOLD_SUFFIX):
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(released.wait(), HOLD_LIMIT_S)
    for piece in PIECES[1:]:
        await _body(send, _chunk(model, {"content": piece}, None))
    await _body(send, _chunk(model, {}, "stop"))
    if include_usage:
        await _body(send, _event({**_chunk_head(model), "choices": [], "usage": USAGE}))
    await _body(send, b"data: [DONE]\n\n", more=False)


async def _body(send: Send, data: bytes, *, more: bool = True) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [*JSON_HEADERS, (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def app(scope: Json, receive: Callable[[], Awaitable[Json]], send: Send) -> None:
    """The ASGI entry point; 404 for anything but the routes above."""
    raw = b""
    while True:
        message = await receive()
        raw += message.get("body", b"")
        if not message.get("more_body"):
            break
    route = (scope["method"], scope["path"])

    if route == ("POST", "/v1/chat/completions"):
        request = json.loads(raw)
        if request.get("stream") is True:
            await _stream(request, send)
            return
        await _answer(send, 200, COMPLETION)
    elif route == ("POST", "/hold"):
        _HOLDS.arm()
        await _answer(send, 200, b"{}")
    elif route == ("POST", "/release"):
        _HOLDS.release()
        await _answer(send, 200, b"{}")
    elif route in (("GET", "/v1/models"), ("GET", "/health")):
        await _answer(send, 200, b'{"object":"list","data":[]}')
    else:
        await _answer(send, 404, b'{"error":"not found"}')
