"""HTTP plumbing the provider adapters share: calls, their failures, event streams.

Every failure of a call becomes a ``ProviderError`` here: an HTTP status by
``status_kind``, refined by the adapter's reading of its error document; a
socket or aiohttp failure by ``HttpProvider.transport_error``; a body or event
that does not parse, or has the wrong shape, as ``MALFORMED``. No aiohttp or
json exception leaves an adapter.
"""

from __future__ import annotations

import abc
import contextlib
import email.utils
import json
import math
import re
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping
from datetime import UTC, datetime
from typing import TypeGuard

import aiohttp
import structlog

from penin.router.config import ProviderConfig
from penin.router.errors import ErrorKind, ProviderError
from penin.router.providers.base import Json, Provider, Stream, Usage

log = structlog.get_logger("penin.router.providers")

# What reading or translating a shape that is not the expected one raises.
SHAPE_ERRORS = (AttributeError, IndexError, KeyError, TypeError, ValueError)
MAX_MESSAGE_CHARS = 500
# One line of an event stream; a longer one means the stream is broken.
MAX_LINE_BYTES = 8 * 1024 * 1024
_LINE_END = re.compile(rb"\r\n|\r|\n")


def client_timeout(config: ProviderConfig) -> aiohttp.ClientTimeout:
    """A call's timeouts: ``read_s`` bounds each wait for bytes, headers included."""
    timeouts = config.timeouts

    return aiohttp.ClientTimeout(
        total=timeouts.total_s, connect=timeouts.connect_s, sock_read=timeouts.read_s
    )


def status_kind(status: int) -> ErrorKind:
    """What an HTTP status alone says; adapters refine BAD_REQUEST by the body."""
    if status == 429:
        return ErrorKind.RATE_LIMIT
    if status in {401, 403}:
        return ErrorKind.AUTH
    if 400 <= status < 500:
        return ErrorKind.BAD_REQUEST

    return ErrorKind.SERVER


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait, from ``retry-after-ms`` or ``Retry-After``.

    ``Retry-After`` holds delay-seconds or an HTTP-date (RFC 9110, 10.2.3); a
    date in the past means now, a value that is neither means no advice.
    """
    millis = _seconds(headers.get("retry-after-ms"))
    if millis is not None:
        return millis / 1000
    value = (headers.get("retry-after") or "").strip()
    if not value:
        return None
    seconds = _seconds(value)

    return _seconds_until(value) if seconds is None else seconds


def _seconds(text: str | None) -> float | None:
    try:
        value = float(text or "nan")
    except ValueError:
        return None

    return max(value, 0.0) if math.isfinite(value) else None


def _seconds_until(date: str) -> float | None:
    try:
        when = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)

    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def checked_usage(
    provider: str, prompt: object, completion: object, total: object = None
) -> Usage | None:
    """Usage from the reported counts; None when absent or when they cannot be right."""
    if prompt is None and completion is None:
        return None
    if (
        _is_count(prompt)
        and _is_count(completion)
        and (total is None or total == prompt + completion)
    ):
        return Usage(prompt, completion)
    log.warning(
        "provider.usage_rejected",
        provider=provider,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=total,
    )

    return None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def error_object(payload: object) -> Json:
    """The provider's error object in an error body, or {} when there is none."""
    if not isinstance(payload, dict):
        return {}
    error = payload.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    for name in ("message", "detail"):  # what some OpenAI-compatible servers send
        if isinstance(payload.get(name), str):
            return {"message": payload[name]}

    return {}


class HttpProvider(Provider):
    """A provider spoken to in JSON over HTTP; each adapter supplies its wire."""

    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """The headers of every call, authentication included."""

    @abc.abstractmethod
    def error_kind(self, status: int | None, error: Json) -> ErrorKind:
        """The kind of a failure from its status and the provider's error object.

        ``status`` is None for an error reported inside a 200 body or a stream.
        """

    def retry_delay(self, error: Json) -> float | None:
        """A wait asked for in the error object, used when no header gives one."""
        return None

    async def call(self, method: str, url: str, body: Json | None = None) -> Json:
        """One call answered with a whole JSON object."""
        try:
            async with self.session.request(
                method,
                url,
                json=body,
                headers=self.headers(),
                timeout=client_timeout(self.config),
            ) as response:
                raw = await response.read()
                if response.status >= 300:
                    raise self.rejection(response.status, raw, response.headers)
        except (aiohttp.ClientError, OSError) as exc:
            raise self.transport_error(exc) from exc

        with self.reading("the response body"):
            answer = json.loads(raw)
        if not isinstance(answer, dict):
            raise self.error(ErrorKind.MALFORMED, "the response is not a JSON object")

        return answer

    def error(
        self,
        kind: ErrorKind,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
    ) -> ProviderError:
        """An error of this provider; its API key never reaches the message."""
        if self.api_key:
            message = message.replace(self.api_key, "[redacted]")

        return ProviderError(
            kind,
            message[:MAX_MESSAGE_CHARS],
            provider=self.name,
            status=status,
            retry_after_s=retry_after_s,
        )

    def rejection(
        self, status: int, raw: bytes, headers: Mapping[str, str]
    ) -> ProviderError:
        """The error for an answer with a status other than 2xx."""
        try:
            payload = json.loads(raw)
        except ValueError:
            payload = None
        error = error_object(payload)
        text = raw.decode(errors="replace").strip()
        message = str(error.get("message") or "") or text or f"HTTP {status}"
        wait = retry_after(headers)

        return self.error(
            self.error_kind(status, error),
            message,
            status=status,
            retry_after_s=self.retry_delay(error) if wait is None else wait,
        )

    def in_band(self, error: object) -> ProviderError:
        """The error for an error object inside a 200 body or a stream event."""
        found = error_object({"error": error})
        message = str(found.get("message") or "the provider reported an error")

        return self.error(
            self.error_kind(None, found), message, retry_after_s=self.retry_delay(found)
        )

    def transport_error(self, exc: BaseException) -> ProviderError:
        """The error for a socket or aiohttp failure."""
        # aiohttp's timeouts are connection errors too, so they are checked first.
        if isinstance(exc, TimeoutError):
            timeouts = self.config.timeouts
            return self.error(
                ErrorKind.TIMEOUT,
                f"no answer in time (connect {timeouts.connect_s:g} s, "
                f"read {timeouts.read_s:g} s, total {timeouts.total_s:g} s)",
            )
        if isinstance(exc, aiohttp.ClientResponseError):
            return self.error(
                ErrorKind.MALFORMED, f"the answer is not valid HTTP: {exc.message}"
            )
        detail = str(exc) or "no detail"

        return self.error(ErrorKind.CONNECTION, f"{type(exc).__name__}: {detail}")

    @contextlib.contextmanager
    def reading(self, what: str) -> Iterator[None]:
        """Report what the provider sent, when it does not parse, as MALFORMED."""
        try:
            yield
        except SHAPE_ERRORS as exc:
            raise self.error(
                ErrorKind.MALFORMED, f"{what} is not what the protocol says: {exc!r}"
            ) from exc

    @contextlib.contextmanager
    def translating(self) -> Iterator[None]:
        """Report a request this protocol cannot carry as BAD_REQUEST."""
        try:
            yield
        except SHAPE_ERRORS as exc:
            raise self.error(
                ErrorKind.BAD_REQUEST, f"the request cannot be sent here: {exc!r}"
            ) from exc


class Decoder(abc.ABC):
    """One provider's stream events in, OpenAI chunks out."""

    usage: Usage | None = None
    # Set once the provider's terminator has arrived; a stream whose body ends
    # before it was cut off.
    finished: bool = False

    @abc.abstractmethod
    def feed(self, event: str, data: str) -> list[Json]:
        """The chunks one event makes; raises ProviderError for an error event."""

    def end(self) -> list[Json]:
        """The chunks still owed once the body has ended."""
        return []


class EventStream(Stream):
    """A streaming call over server-sent events, decoded as they arrive."""

    def __init__(
        self, provider: HttpProvider, url: str, body: Json, decoder: Decoder
    ) -> None:
        self._provider = provider
        self._url = url
        self._body = body
        self._decoder = decoder
        self._response: aiohttp.ClientResponse | None = None
        self._reader: AsyncGenerator[Json, None] | None = None
        self._first: Json | None = None
        self._complete = False

    async def start(self) -> None:
        try:
            await self._open()
            self._reader = self._read()
            self._first = await anext(self._reader, None)
        except BaseException:
            await self.close()
            raise

    async def chunks(self) -> AsyncIterator[Json]:
        if self._reader is None:
            raise RuntimeError("Stream.start() was not awaited")
        if self._first is not None:
            first, self._first = self._first, None
            yield first
        async for chunk in self._reader:
            yield chunk

    async def close(self) -> None:
        if self._reader is not None:
            await self._reader.aclose()
        if self._response is not None:
            # Only a body read to its end leaves the connection fit for reuse.
            if self._complete:
                self._response.release()
            else:
                self._response.close()
            self._response = None

    async def _open(self) -> None:
        provider = self._provider
        try:
            self._response = await provider.session.post(
                self._url,
                json=self._body,
                headers=provider.headers(),
                timeout=client_timeout(provider.config),
            )
            if self._response.status >= 300:
                raw = await self._response.read()
                raise provider.rejection(
                    self._response.status, raw, self._response.headers
                )
        except (aiohttp.ClientError, OSError) as exc:
            raise provider.transport_error(exc) from exc

    async def _read(self) -> AsyncGenerator[Json, None]:
        assert self._response is not None
        provider, decoder = self._provider, self._decoder
        events = server_sent_events(self._response.content)
        try:
            async with contextlib.aclosing(events):
                async for event, data in events:
                    chunks = decoder.feed(event, data)
                    self.usage = decoder.usage
                    for chunk in chunks:
                        yield chunk
        except SHAPE_ERRORS as exc:
            raise provider.error(
                ErrorKind.MALFORMED, f"a stream event does not parse: {exc!r}"
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise provider.transport_error(exc) from exc
        if not decoder.finished:
            raise provider.error(
                ErrorKind.CONNECTION, "the stream ended before its last event"
            )

        self._complete = True
        trailing = decoder.end()
        self.usage = decoder.usage
        for chunk in trailing:
            yield chunk


async def server_sent_events(
    content: aiohttp.StreamReader,
) -> AsyncGenerator[tuple[str, str], None]:
    """(event, data) pairs as they arrive, in the WHATWG event-stream format.

    Lines end in CRLF, LF or CR; an event ends at an empty line; one cut off by
    the end of the body is dropped, as the format requires. Raises ValueError
    for a line that is not UTF-8 or longer than ``MAX_LINE_BYTES``.
    """
    name, data, rest = "", list[str](), b""
    async for block in content.iter_any():
        lines, rest = _complete_lines(rest + block)
        for line in lines:
            if line:
                field, _, value = line.decode().partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)
                # Comments (an empty field) and id and retry do not matter here.
                continue
            if data:
                yield name or "message", "\n".join(data)
            name, data = "", []


def _complete_lines(buffer: bytes) -> tuple[list[bytes], bytes]:
    """The complete lines of ``buffer`` and what follows them.

    A final CR waits for the next block, which may start with its CRLF's LF.
    """
    held = buffer.endswith(b"\r")
    *lines, rest = _LINE_END.split(buffer[:-1] if held else buffer)
    if held:
        rest += b"\r"
    if len(rest) > MAX_LINE_BYTES:
        raise ValueError(f"an event-stream line is longer than {MAX_LINE_BYTES} bytes")

    return lines, rest
