"""The base of every fake provider: a loopback server in a thread that runs a script."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections import deque
from types import TracebackType
from typing import Any, Self

from fakes.fault import ERROR_KINDS, Fault, Kind
from fakes.wire import LAST_CHUNK, Reply, Request, chunk, head, read_request

HOST = "127.0.0.1"
START_TIMEOUT_S = 5.0
STOP_TIMEOUT_S = 5.0
CLOSE_TIMEOUT_S = 2.0  # each of the two waits inside a stop, within STOP_TIMEOUT_S
# A hung exchange ends when the client leaves or the fake stops; this bounds a
# client that does neither, so no test can wait forever on a fake.
HANG_LIMIT_S = 60.0


class FakeServer:
    """A provider's fake: each request takes the next scripted fault, else the default.

    Subclasses speak one provider's protocol through `check`, `failure` and
    `answer`; this class owns the socket, the script and the wire faults.
    """

    name = "fake"
    kinds: frozenset[Kind] = frozenset(Kind) - {Kind.TOOL_CALL}

    def __init__(self) -> None:
        self.port = 0
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._default = Fault.ok()
        self._requests: list[Request] = []
        self._errors: list[BaseException] = []
        self._handlers: set[asyncio.Task[Any]] = set()
        self._conversations: set[asyncio.Task[None]] = set()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None

    # -- what a test uses -----------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def requests(self) -> list[Request]:
        """Every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def pending(self) -> int:
        """How many scripted faults no request has taken yet."""
        with self._lock:
            return len(self._script)

    def script(self, *faults: Fault) -> None:
        """Queue faults; the next requests take them in order, one each."""
        for fault in faults:
            self._check_supported(fault)
        with self._lock:
            self._script.extend(faults)

    def always(self, fault: Fault) -> None:
        """What a request gets once the script is used up (initially `Fault.ok`)."""
        self._check_supported(fault)
        with self._lock:
            self._default = fault

    def start(self) -> Self:
        ready = threading.Event()
        # A daemon, so that a fake which failed to stop cannot keep pytest alive.
        self._thread = threading.Thread(
            target=self._run, args=(ready,), name=f"fake-{self.name}", daemon=True
        )
        self._thread.start()
        if not ready.wait(START_TIMEOUT_S) or not self.port:
            self.stop()
            raise RuntimeError(f"fake {self.name} did not start: {self._errors}")

        return self

    def stop(self) -> None:
        """Stop serving, ending any exchange still open; raise if it would not stop."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop may have ended already
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(STOP_TIMEOUT_S)
        if self._thread.is_alive():
            raise RuntimeError(f"fake {self.name} did not stop in {STOP_TIMEOUT_S} s")
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        # A bug in the fake must fail the test, but not hide the test's own error.
        if exc is None and self._errors:
            raise AssertionError(f"fake {self.name} failed: {self._errors!r}")

    # -- the provider's protocol ------------------------------------------------

    def check(self, request: Request) -> Reply | None:
        """The provider's answer to a bad route, key or body; None when it is good."""
        raise NotImplementedError

    def failure(self, request: Request, fault: Fault) -> Reply:
        """The provider's answer for a fault in `ERROR_KINDS`."""
        raise NotImplementedError

    def answer(self, request: Request, fault: Fault) -> Reply:
        """The provider's successful answer, shaped by a content fault if any."""
        raise NotImplementedError

    def reply(self, request: Request, fault: Fault) -> Reply:
        problem = self.check(request)
        if problem is not None:
            return problem
        if fault.kind in ERROR_KINDS:
            return self.failure(request, fault)

        return self.answer(request, fault)

    # -- the server thread --------------------------------------------------------

    def _check_supported(self, fault: Fault) -> None:
        if fault.kind not in self.kinds:
            raise ValueError(f"the {self.name} fake cannot script {fault.kind.value}")

    def _take(self) -> Fault:
        with self._lock:
            return self._script.popleft() if self._script else self._default

    def _run(self, ready: threading.Event) -> None:
        try:
            asyncio.run(self._main(ready))
        except Exception as exc:  # kept, and raised by __exit__, so no test misses it
            self._errors.append(exc)
        finally:
            ready.set()

    async def _main(self, ready: threading.Event) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = asyncio.Event()
        try:
            server = await asyncio.start_server(self._serve_connection, HOST, 0)
        except OSError as exc:
            self._errors.append(exc)
            return
        self.port = server.sockets[0].getsockname()[1]
        ready.set()

        await self._stopping.wait()
        server.close()
        for conversation in list(self._conversations):
            conversation.cancel()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=CLOSE_TIMEOUT_S)
        await asyncio.wait_for(server.wait_closed(), CLOSE_TIMEOUT_S)

    async def _serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Python 3.11's stream server fails on a cancelled handler task, so stop
        # cancels this inner task instead and the handler ends normally.
        handler = asyncio.current_task()
        assert handler is not None
        conversation = asyncio.create_task(self._converse(reader, writer))
        self._handlers.add(handler)
        self._conversations.add(conversation)
        try:
            with contextlib.suppress(asyncio.CancelledError):
                await conversation
        finally:
            self._conversations.discard(conversation)
            self._handlers.discard(handler)

    async def _converse(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while (request := await read_request(reader)) is not None:
                with self._lock:
                    self._requests.append(request)
                if not await self._exchange(request, reader, writer):
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client left mid-exchange, which clients are free to do
        except Exception as exc:  # a bug in the fake: kept, and raised by __exit__
            self._errors.append(exc)
        finally:
            writer.close()

    async def _exchange(
        self,
        request: Request,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> bool:
        """Answer one request; True when the connection may carry another."""
        fault = self._take()
        await asyncio.sleep(fault.delay)
        if fault.kind is Kind.HANG:
            await _wait_for_client_to_leave(reader)
            return False
        if fault.kind is Kind.RESET:
            _reset(writer)
            return False
        if fault.kind is Kind.DISCONNECT:
            return False

        reply = self.reply(request, fault)
        if reply.events is None:
            return await _send_body(writer, reply, fault)

        return await _send_stream(reader, writer, reply, fault)


async def _send_body(writer: asyncio.StreamWriter, reply: Reply, fault: Fault) -> bool:
    body = reply.body
    half = body[: len(body) // 2]
    if fault.kind is Kind.MALFORMED_JSON:
        body = half
    headers = {**reply.headers, "content-length": str(len(body))}
    if fault.kind is Kind.TRUNCATED:
        writer.write(head(reply.status, headers) + half)
        await writer.drain()
        return False

    writer.write(head(reply.status, headers) + body)
    await writer.drain()

    return True


async def _send_stream(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    reply: Reply,
    fault: Fault,
) -> bool:
    assert reply.events is not None
    writer.write(head(reply.status, {**reply.headers, "transfer-encoding": "chunked"}))
    for index, whole in enumerate(reply.events):
        if index == fault.after and fault.kind in {Kind.TRUNCATED, Kind.STALL}:
            await writer.drain()
            if fault.kind is Kind.STALL:
                await _wait_for_client_to_leave(reader)
            return False
        if index and fault.gap:
            await writer.drain()
            await asyncio.sleep(fault.gap)
        broken = index == fault.after and fault.kind is Kind.MALFORMED_JSON
        writer.write(chunk(_without_last_brace(whole) if broken else whole))
    writer.write(LAST_CHUNK)
    await writer.drain()

    return True


async def _wait_for_client_to_leave(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(TimeoutError, ConnectionError):
        await asyncio.wait_for(reader.read(), HANG_LIMIT_S)


def _reset(writer: asyncio.StreamWriter) -> None:
    # Linger on with a zero timeout makes close() send RST instead of FIN.
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _without_last_brace(event: bytes) -> bytes:
    cut = event.rindex(b"}")

    return event[:cut] + event[cut + 1 :]
