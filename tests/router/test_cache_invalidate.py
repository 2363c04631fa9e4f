"""POST /v1/cache/invalidate: an admin drops a cached answer from every node."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway import Gateway, chat, deployment, gateway, provider

from fakes.openai import FakeOpenAI
from harness import assert_problem, wait_for
from penin.cache import cache_key
from penin.keys import Scope
from redisd import RedisServer

INVALIDATE = "/v1/cache/invalidate"
SEAL_KEYS = "k1:" + base64.b64encode(b"\x07" * 32).decode()


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def config(fake: FakeOpenAI, **cache: Any) -> dict[str, Any]:
    return {
        "providers": [provider("a", fake)],
        "models": [{"name": "fast", "deployments": [deployment("a")]}],
        "cache": cache,
    }


def invalidate(gw: Gateway, body: dict[str, Any], scope: Scope = Scope.ADMIN) -> Any:
    token, _ = gw.node.keyring.create(scope)
    auth = {"Authorization": f"Bearer {token}"}

    return gw.client.post(INVALIDATE, json=body, headers=auth)


def test_an_invalidated_answer_is_asked_upstream_again_and_the_act_is_recorded(
    tmp_path: Path, fake: FakeOpenAI
) -> None:
    request = chat(temperature=0)
    with gateway(tmp_path, **config(fake)) as gw:
        gw.post(request)
        cached = gw.post(request)
        dropped = invalidate(gw, {"request": request})
        fresh = gw.post(request)
        (record,) = gw.node.ledger.query(event_type="cache.invalidated")

    assert cached.headers["x-penin-cache"] == "hit-l1"
    assert dropped.status_code == 200
    assert dropped.json()["key"] == cache_key(request)
    assert dropped.json()["levels"] == ["l1"]
    assert "x-penin-cache" not in fresh.headers
    assert len(fake.requests) == 2
    assert record.seq == dropped.json()["seq"]
    assert record.payload["key"] == cache_key(request)
    assert record.payload["key_id"]


def test_an_entry_can_be_named_by_its_key(tmp_path: Path, fake: FakeOpenAI) -> None:
    request = chat(temperature=0)
    with gateway(tmp_path, **config(fake)) as gw:
        gw.post(request)
        dropped = invalidate(gw, {"key": cache_key(request)})
        gw.post(request)

    assert dropped.status_code == 200
    assert len(fake.requests) == 2


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({}, "either key or request"),
        ({"key": "ab" * 32, "request": chat()}, "either key or request"),
        ({"key": "not-a-key"}, "64 lowercase hex digits"),
        ({"key": "AB" * 32}, "64 lowercase hex digits"),
        ({"request": {"messages": []}}, "cannot be keyed"),
        ({"key": "ab" * 32, "extra": 1}, "extra"),
    ],
)
def test_a_bad_invalidation_is_a_problem_naming_what_is_wrong(
    tmp_path: Path, fake: FakeOpenAI, body: dict[str, Any], says: str
) -> None:
    with gateway(tmp_path, **config(fake)) as gw:
        response = invalidate(gw, body)
        records = gw.node.ledger.query(event_type="cache.invalidated")

    problem = assert_problem(response, 422, "validation")
    assert says in problem["detail"]
    assert records == []


def test_only_an_admin_key_may_invalidate(tmp_path: Path, fake: FakeOpenAI) -> None:
    with gateway(tmp_path, **config(fake)) as gw:
        response = invalidate(gw, {"key": "ab" * 32}, Scope.ROUTE)

    assert_problem(response, 403, "forbidden")


def test_a_node_without_a_router_has_no_cache_to_invalidate(tmp_path: Path) -> None:
    with gateway(tmp_path) as gw:
        response = invalidate(gw, {"key": "ab" * 32})

    assert_problem(response, 409, "no-cache")


def test_an_invalidation_reaches_the_l1_of_another_node_through_redis(
    tmp_path: Path,
    fake: FakeOpenAI,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PENIN_CACHE_SEAL_KEYS", SEAL_KEYS)
    request = chat(temperature=0)
    shared = config(fake, redis_url=redis_server.url)
    with (
        gateway(tmp_path / "a", **shared) as one,
        gateway(tmp_path / "b", **shared) as two,
    ):
        one.post(request)
        from_l2 = two.post(request)
        from_l1 = two.post(request)
        dropped = invalidate(one, {"request": request})
        # Node b hears of it on the Redis channel, asynchronously.
        key = cache_key(request)
        assert key is not None
        wait_for(
            lambda: two.node.router.cache.l1.get(key) is None,
            5,
            "node b to drop the entry from its L1",
        )
        again = two.post(request)

    assert from_l2.headers["x-penin-cache"] == "hit-l2"
    assert from_l1.headers["x-penin-cache"] == "hit-l1"
    assert dropped.json()["levels"] == ["l1", "l2"]
    assert "x-penin-cache" not in again.headers
    assert len(fake.requests) == 2


def test_with_redis_down_the_invalidation_says_it_reached_this_node_only(
    tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PENIN_CACHE_SEAL_KEYS", SEAL_KEYS)
    server = RedisServer(tmp_path / "redis").start()
    try:
        with gateway(tmp_path, **config(fake, redis_url=server.url)) as gw:
            server.kill()
            response = invalidate(gw, {"key": "ab" * 32})
            (record,) = gw.node.ledger.query(event_type="cache.invalidated")
    finally:
        server.stop()

    problem = assert_problem(response, 503, "unavailable")
    assert "this node only" in problem["detail"]
    assert record.payload["levels"] == ["l1"]
