"""An aiohttp client session made on first use, for a client that may be
built outside the event loop that will run its calls."""

from __future__ import annotations

import aiohttp


class LazySession:
    """One ``aiohttp.ClientSession``, opened by the first call and reopened
    after ``close``; ``timeout`` applies to every request it makes."""

    def __init__(self, timeout: aiohttp.ClientTimeout | None = None) -> None:
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def get(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)

        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
