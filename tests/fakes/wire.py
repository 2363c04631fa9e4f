"""HTTP/1.1 over asyncio streams, small enough that a fake controls every byte."""

from __future__ import annotations

import asyncio
import http
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

LAST_CHUNK = b"0\r\n\r\n"


@dataclass(frozen=True)
class Request:
    """A request as the fake received it; header names are lowercase."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or None when it is not JSON."""
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


@dataclass(frozen=True)
class Reply:
    """A response: a whole body, or server-sent events when ``events`` is set."""

    status: int
    body: bytes = b""
    events: tuple[bytes, ...] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(
    status: int, payload: Any, headers: dict[str, str] | None = None
) -> Reply:
    return Reply(
        status,
        body=json.dumps(payload).encode(),
        headers={"content-type": "application/json", **(headers or {})},
    )


def sse_reply(events: Iterable[bytes], headers: dict[str, str] | None = None) -> Reply:
    return Reply(
        200,
        events=tuple(events),
        headers={
            "content-type": "text/event-stream; charset=utf-8",
            "cache-control": "no-cache",
            **(headers or {}),
        },
    )


def sse(data: Any, event: str | None = None, end: bytes = b"\n") -> bytes:
    """One server-sent event; ``end`` is the line ending, LF or CRLF."""
    lines = [] if event is None else [f"event: {event}".encode()]
    lines.append(b"data: " + json.dumps(data).encode())

    return end.join([*lines, b"", b""])


def head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"  # 529, Anthropic's "overloaded", has no standard phrase
    lines = [f"HTTP/1.1 {status} {phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]

    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


async def read_request(reader: asyncio.StreamReader) -> Request | None:
    """The next request on the connection, or None once the client has closed it."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None
    request_line, *header_lines = raw.decode("latin-1").split("\r\n")
    method, target, _version = request_line.split(" ", 2)
    headers: dict[str, str] = {}
    for line in filter(None, header_lines):
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(target)
    body = await _read_body(reader, headers)

    return Request(method, unquote(url.path), dict(parse_qsl(url.query)), headers, body)


async def _read_body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return await _read_chunked(reader)

    return await reader.readexactly(int(headers.get("content-length", "0")))


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while size := int((await reader.readline()).split(b";")[0], 16):
        body += (await reader.readexactly(size + 2))[:-2]
    # Trailer fields, if any, end at the first empty line (RFC 9112 section 7.1).
    while (await reader.readline()).strip():
        pass

    return bytes(body)
