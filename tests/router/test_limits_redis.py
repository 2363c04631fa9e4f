"""rpm/tpm windows shared through Redis: one limit for all nodes, not one each."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from gateway import chat, deployment, gateway, provider
from structlog.testing import capture_logs

from fakes.openai import FakeOpenAI
from harness import assert_problem
from penin.router.limits import UsageWindow
from penin.router.limits_redis import SharedRates, SharedUsageWindow
from redisd import RedisCluster3, RedisServer

T = TypeVar("T")
NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def run_with(
    url: str,
    scenario: Callable[[list[SharedRates]], Awaitable[T]],
    *,
    nodes: int = 2,
    **options: Any,
) -> T:
    """``scenario`` with ``nodes`` SharedRates on ``url``, closed afterwards."""

    async def main() -> T:
        rates = [SharedRates(url, **options) for _ in range(nodes)]
        try:
            return await scenario(rates)
        finally:
            for each in rates:
                await each.close()

    return asyncio.run(main())


def test_two_nodes_admit_exactly_rpm_requests_between_them(
    redis_server: RedisServer,
) -> None:
    async def scenario(rates: list[SharedRates]) -> list[bool]:
        windows = [r.window("openai/gpt-4o", 10, None) for r in rates]
        return await asyncio.gather(*(windows[i % 2].acquire(1) for i in range(60)))

    admitted = run_with(redis_server.url, scenario)

    assert sum(admitted) == 10
    assert sum(admitted[0::2]) > 0
    assert sum(admitted[1::2]) > 0


def test_tpm_counts_tokens_across_nodes_and_adjusting_gives_room_back(
    redis_server: RedisServer,
) -> None:
    async def scenario(rates: list[SharedRates]) -> list[bool]:
        a, b = (r.window("anthropic/claude", None, 1000) for r in rates)
        outcomes = [await a.acquire(400), await b.acquire(400), await a.acquire(400)]
        await b.adjust(-300)  # the second call used 100 tokens, not 400
        outcomes.append(await a.acquire(400))  # 900 of 1000
        outcomes.append(await b.acquire(101))
        outcomes.append(await b.acquire(100))
        return outcomes

    assert run_with(redis_server.url, scenario) == [
        True,
        True,
        False,
        True,
        False,
        True,
    ]


def test_requests_leave_the_shared_window_60_seconds_later(
    redis_server: RedisServer,
) -> None:
    clock = Clock()

    async def scenario(rates: list[SharedRates]) -> list[bool]:
        window = rates[0].window("openai/gpt-4o", 2, None)
        outcomes = [await window.acquire(1) for _ in range(3)]
        clock.now += 59
        outcomes.append(await window.acquire(1))
        clock.now += 1
        outcomes.append(await window.acquire(1))
        return outcomes

    outcomes = run_with(redis_server.url, scenario, nodes=1, clock=clock)
    fields = redis_server.client().hkeys("penin:rate:{openai/gpt-4o}")

    assert outcomes == [True, True, False, False, True]
    # The seconds that left the window were deleted, not kept forever.
    assert sorted(f.decode() for f in fields) == [
        f"r:{int(NOW) + 60}",
        f"t:{int(NOW) + 60}",
    ]


def test_taking_back_more_tokens_than_counted_stops_at_zero(
    redis_server: RedisServer,
) -> None:
    async def scenario(rates: list[SharedRates]) -> list[bool]:
        window = rates[0].window("gemini/flash", None, 100)
        outcomes = [await window.acquire(60)]
        await window.adjust(-10_000)
        outcomes += [await window.acquire(100), await window.acquire(1)]
        return outcomes

    assert run_with(redis_server.url, scenario, nodes=1) == [True, True, False]


def test_the_last_answer_hints_at_room_and_headroom_for_a_second(
    redis_server: RedisServer,
) -> None:
    async def scenario(rates: list[SharedRates]) -> tuple[bool, bool, float]:
        window = rates[0].window("openai/gpt-4o", 4, None)
        assert isinstance(window, SharedUsageWindow)
        fresh = window.has_room(1)
        for _ in range(4):
            await window.acquire(1)
        return fresh, window.has_room(1), window.headroom()

    fresh, full, headroom = run_with(redis_server.url, scenario, nodes=1)

    assert fresh is True
    assert full is False
    assert headroom == 0.0


def test_a_deployment_without_limits_never_asks_redis(
    redis_server: RedisServer,
) -> None:
    async def scenario(rates: list[SharedRates]) -> bool:
        window = rates[0].window("local/llama3", None, None)
        return isinstance(window, UsageWindow) and await window.acquire(10**9)

    assert run_with(redis_server.url, scenario, nodes=1) is True
    assert redis_server.client().keys("penin:rate:*") == []


def test_without_redis_limits_hold_per_node_and_one_warning_says_so(
    tmp_path: Path,
) -> None:
    server = RedisServer(tmp_path / "redis").start()

    async def scenario(rates: list[SharedRates]) -> list[bool]:
        window = rates[0].window("openai/gpt-4o", 2, None)
        outcomes = [await window.acquire(1)]
        server.kill()
        outcomes += [await window.acquire(1) for _ in range(3)]
        await window.adjust(-1)
        return outcomes

    try:
        with capture_logs() as logs:
            outcomes = run_with(server.url, scenario, nodes=1, timeout_s=0.25)
    finally:
        server.stop()
    warnings = [e for e in logs if e["event"] == "rate_window.store_unreachable"]

    # One request went through Redis; the local window then admits its own two.
    assert outcomes == [True, True, True, False]
    assert len(warnings) == 1
    assert warnings[0]["fallback"] == "limits counted per node"


def test_on_redis_cluster_the_window_lives_in_one_slot(
    redis_cluster: RedisCluster3,
) -> None:
    async def scenario(rates: list[SharedRates]) -> list[bool]:
        windows = [r.window(f"p/m{i}", 3, None) for i, r in enumerate(rates * 2)]
        return [await w.acquire(1) for w in windows for _ in range(4)]

    outcomes = run_with(redis_cluster.url, scenario)

    assert outcomes == [True, True, True, False] * 4


def test_two_gateways_sharing_redis_send_a_deployment_no_more_than_its_rpm(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with FakeOpenAI() as fake:
        config = {
            "providers": [provider("a", fake)],
            "models": [{"name": "fast", "deployments": [deployment("a", rpm=3)]}],
            "budget": {"redis_url": redis_server.url},
            "router": {"retry": {"attempts": 0}},
        }
        with (
            gateway(tmp_path / "n1", **config) as one,
            gateway(tmp_path / "n2", **config) as two,
        ):
            answers = [(one, two)[i % 2].post(chat()) for i in range(5)]
            sent = len(fake.requests)

    assert [a.status_code for a in answers] == [200, 200, 200, 503, 503]
    assert sent == 3
    body = assert_problem(answers[-1], 503, "no-deployment")
    assert "rate_limited" in body["detail"]
