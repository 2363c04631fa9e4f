"""Loopback TCP proxies between a member and etcd, which a test can cut: a
member reaching etcd only through its own can be partitioned from it alone."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterator, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")

# How long a proxy waits for etcd to accept a connection it forwards.
CONNECT_TIMEOUT_S = 2.0


class EtcdLink:
    """A member's own path to etcd: one loopback TCP proxy per etcd member.

    ``cut`` drops every open connection and refuses new ones (each is accepted
    and closed at once), as a partition that a client notices at once would;
    ``heal`` lets connections through again. The proxies run on an event loop
    of their own, in a thread, until ``close``.
    """

    def __init__(self, upstreams: Sequence[str]) -> None:
        self.upstream_ports = [_port(url) for url in upstreams]
        self.endpoints: list[str] = []
        self._cut = False
        self._pipes: set[asyncio.StreamWriter] = set()
        self._servers: list[asyncio.Server] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def start(self) -> EtcdLink:
        self._thread.start()
        for port in self.upstream_ports:
            server = self._call(self._listen(port))
            self._servers.append(server)
            bound = server.sockets[0].getsockname()[1]
            self.endpoints.append(f"http://127.0.0.1:{bound}")

        return self

    def cut(self) -> None:
        self._call(self._set_cut(True))

    def heal(self) -> None:
        self._call(self._set_cut(False))

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shut())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(5)

    async def _listen(self, upstream: int) -> asyncio.Server:
        async def serve(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await self._relay(upstream, reader, writer)

        return await asyncio.start_server(serve, "127.0.0.1", 0)

    async def _set_cut(self, cut: bool) -> None:
        self._cut = cut
        if cut:
            self._sever()

    async def _shut(self) -> None:
        for server in self._servers:
            server.close()
        self._sever()

    def _sever(self) -> None:
        for pipe in list(self._pipes):
            pipe.transport.abort()
        self._pipes.clear()

    async def _relay(
        self, upstream: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", upstream), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError):
            writer.transport.abort()
            return
        self._pipes |= {writer, up_writer}
        pumps = [
            asyncio.ensure_future(_pump(reader, up_writer)),
            asyncio.ensure_future(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for pipe in (writer, up_writer):
                self._pipes.discard(pipe)
                pipe.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()


def _port(url: str) -> int:
    port = urlsplit(url).port
    assert port is not None, url

    return port


@contextlib.contextmanager
def etcd_links(
    names: Sequence[str], upstreams: Sequence[str]
) -> Iterator[dict[str, EtcdLink]]:
    """One started EtcdLink per member name, all closed however the block ends."""
    with contextlib.ExitStack() as stack:
        links = {}
        for name in names:
            link = EtcdLink(upstreams)
            stack.callback(link.close)
            links[name] = link.start()
        yield links
