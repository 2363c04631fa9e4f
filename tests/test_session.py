"""The lazily opened client session the etcd, primary and OPA clients share."""

from __future__ import annotations

import asyncio

import aiohttp

from penin._session import LazySession


def test_one_session_is_reused_until_closed_then_a_new_one_opens() -> None:
    async def scenario() -> None:
        lazy = LazySession(aiohttp.ClientTimeout(total=1.5))
        first = lazy.get()

        assert lazy.get() is first
        assert first.timeout.total == 1.5

        await lazy.close()
        assert first.closed

        second = lazy.get()
        assert second is not first
        assert not second.closed
        await lazy.close()

    asyncio.run(scenario())


def test_closing_a_session_never_opened_does_nothing() -> None:
    lazy = LazySession()

    asyncio.run(lazy.close())

    async def opened_later() -> bool:
        session = lazy.get()
        await lazy.close()
        return session.closed

    assert asyncio.run(opened_later())
