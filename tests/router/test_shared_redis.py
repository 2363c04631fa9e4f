"""Two real nodes sharing one Redis: one budget, one L2 cache, and Redis failing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
import yaml
from gateway import CHAT, KEY_ENV, REPLY_TOKENS, chat, deployment, provider
from prometheus_client.parser import text_string_to_metric_families

from fakes.fault import DEFAULT_TEXT
from fakes.openai import FakeOpenAI
from harness import (
    LiveServer,
    assert_problem,
    bearer,
    free_port,
    node_env,
    penin,
    start_server,
    wait_for,
)
from penin.cache import cache_key
from penin.keys import Scope
from penin.keys.keyring import CREATED, KeyRing
from penin.ledger.ledger import open_ledger
from redisd import RedisCluster3, RedisServer

SEAL_KEYS = "k1:" + base64.b64encode(b"\x5a" * 32).decode()
# Input is free and max_tokens is the fake's reply, so a call's worst case,
# reserved before it is sent, is exactly what it is settled to afterwards.
CALL_NUSD = REPLY_TOKENS * 2000
CALL_USD = CALL_NUSD / 1e9
KEYS = {
    "alice": Scope.ROUTE,
    "bob": Scope.ROUTE,
    "reader": Scope.READ,
    "admin": Scope.ADMIN,
}
RECOVERY_S = 15.0


def paid(**extra: Any) -> dict[str, Any]:
    """A request that is not cached (no temperature) and costs CALL_NUSD."""
    return chat(max_tokens=REPLY_TOKENS, **extra)


# -- two nodes ---------------------------------------------------------------


@dataclass
class Pair:
    """Two ``penin serve`` nodes with one config and the same API keys."""

    directory: Path
    config_path: Path
    fake: FakeOpenAI
    tokens: dict[str, str]
    key_ids: dict[str, str]
    nodes: list[LiveServer]

    @property
    def a(self) -> LiveServer:
        return self.nodes[0]

    @property
    def b(self) -> LiveServer:
        return self.nodes[1]

    def post(
        self, node: LiveServer, body: dict[str, Any], key: str = "alice", **headers: str
    ) -> httpx.Response:
        with node.client(self.tokens[key], headers) as http:
            return http.post(CHAT, json=body)

    def records(self, node: LiveServer) -> list[dict[str, Any]]:
        with node.client(self.tokens["reader"]) as http:
            response = http.get(
                "/v1/ledger/records",
                params={"event_type": "router.request", "limit": 1000},
            )
        assert response.status_code == 200, response.text

        return [r["payload"] for r in response.json()["records"]]

    def metric(self, node: LiveServer, name: str, **labels: str) -> float:
        with node.client(self.tokens["reader"]) as http:
            response = http.get("/metrics")
        assert response.status_code == 200, response.text

        return sample(response.text, name, **labels)

    def events(self, node: LiveServer, event: str) -> list[dict[str, Any]]:
        return [e for e in node.log_events() if e.get("event") == event]

    def budget_status(self, key: str = "alice") -> dict[str, Any]:
        """``penin budget status --json`` as an operator runs it, against Redis."""
        result = penin(
            "budget", "status", "--config", self.config_path,
            "--data-dir", self.a.data_dir, "--key-id", self.key_ids[key], "--json",
            env=self.a.env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        status: dict[str, Any] = json.loads(result.stdout)

        return status

    def start(self) -> None:
        """Start both nodes at once; stop the one that started if the other fails."""
        env = node_env(
            **{KEY_ENV: "test-provider-key", "PENIN_CACHE_SEAL_KEYS": SEAL_KEYS}
        )
        with ThreadPoolExecutor(2) as pool:
            futures = [
                pool.submit(
                    start_server,
                    d / "data",
                    d / "node.log",
                    "--config",
                    self.config_path,
                    env=env,
                )
                for d in (self.directory / "a", self.directory / "b")
            ]
        started = [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            for node in started:
                node.stop()
            raise failed[0]
        self.nodes = started

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.nodes = []


@contextlib.contextmanager
def node_pair(directory: Path, **config: Any) -> Iterator[Pair]:
    """Two nodes routing ``fast`` to one fake provider, with ``config`` added."""
    directory.mkdir(parents=True, exist_ok=True)
    with FakeOpenAI() as fake:
        free_input = deployment("fake", input_per_mtok=0.0)
        document = {
            "providers": [provider("fake", fake)],
            "models": [{"name": "fast", "deployments": [free_input]}],
            **config,
        }
        config_path = directory / "penin.yaml"
        config_path.write_text(yaml.safe_dump(document))
        tokens, key_ids = _shared_keys(
            [directory / "a" / "data", directory / "b" / "data"]
        )
        pair = Pair(directory, config_path, fake, tokens, key_ids, [])
        pair.start()
        try:
            yield pair
        finally:
            pair.stop()


def _shared_keys(data_dirs: list[Path]) -> tuple[dict[str, str], dict[str, str]]:
    """The same API keys in every node's ledger: a key is a ledger record."""
    ledgers = []
    for data_dir in data_dirs:
        data_dir.mkdir(parents=True)
        ledgers.append(open_ledger(data_dir).initialize())
    try:
        tokens, key_ids = {}, {}
        for name, scope in KEYS.items():
            tokens[name], key = KeyRing(ledgers[0]).create(scope, name)
            key_ids[name] = key.key_id
            (record,) = ledgers[0].query(
                event_type=CREATED, after_seq=key.created_seq - 1, limit=1
            )
            for ledger in ledgers[1:]:
                ledger.append_record(CREATED, record.payload)
    finally:
        for ledger in ledgers:
            ledger.close()

    return tokens, key_ids


def sample(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and all(
                found.labels.get(k) == v for k, v in labels.items()
            ):
                return float(found.value)

    raise AssertionError(f"no sample {name}{labels} in /metrics")


def today() -> str:
    return datetime.now(UTC).date().isoformat()


def shared_redis_url(server: RedisServer, db: int) -> str:
    return f"{server.url}/{db}"


async def fire(
    pair: Pair, body: dict[str, Any], count: int, key: str, url: str, counter: str
) -> tuple[list[httpx.Response], list[int]]:
    """``count`` requests at once, alternating between the nodes, while a
    watcher reads the budget counter ``counter`` in Redis as fast as it can."""
    async with redis.asyncio.Redis.from_url(url) as watch:
        return await _fire(pair, body, count, key, watch, counter)


async def _fire(
    pair: Pair,
    body: dict[str, Any],
    count: int,
    key: str,
    watch: redis.asyncio.Redis,
    counter: str,
) -> tuple[list[httpx.Response], list[int]]:
    seen: list[int] = []
    done = asyncio.Event()

    async def watcher() -> None:
        while not done.is_set():
            value = await watch.get(counter)
            seen.append(int(value or 0))
            await asyncio.sleep(0)

    limits = httpx.Limits(max_connections=count)
    async with (
        httpx.AsyncClient(
            headers=bearer(pair.tokens[key]), limits=limits, timeout=60
        ) as http,
    ):
        watching = asyncio.create_task(watcher())
        try:
            responses = await asyncio.gather(
                *(
                    http.post(pair.nodes[i % 2].base_url + CHAT, json=body)
                    for i in range(count)
                )
            )
        finally:
            done.set()
            await watching
    seen.append(int(await watch.get(counter) or 0))

    return list(responses), seen


def counter_name(scope: str) -> str:
    return f"penin:budget:{{{today()}}}:{scope}"


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the module; each pair of nodes uses its own database."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        yield server
    finally:
        server.stop()


# -- one budget across two nodes -----------------------------------------------


def test_two_nodes_admit_exactly_what_the_daily_budget_holds_and_never_more(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    admitted, fired = 40, 300
    url = shared_redis_url(shared_redis, 1)
    budget = {"daily_usd": admitted * CALL_USD, "redis_url": url}
    with node_pair(tmp_path, budget=budget) as pair:
        responses, seen = asyncio.run(
            fire(pair, paid(), fired, "alice", url, counter_name("global"))
        )
        per_node = [pair.records(node) for node in pair.nodes]
        status = pair.budget_status()
        upstream = len(pair.fake.requests)

    ok = [r for r in responses if r.status_code == 200]
    refused = [r for r in responses if r.status_code != 200]
    assert len(ok) == admitted
    assert len(refused) == fired - admitted
    for response in refused:
        assert assert_problem(response, 429, "budget-exceeded")["scope"] == "global"
    assert {r.headers["x-penin-deployment"] for r in ok} == {"fake/gpt-4o-mini"}
    assert upstream == admitted
    assert max(seen) <= admitted * CALL_NUSD
    assert seen[-1] == admitted * CALL_NUSD
    # Half the requests went to each node; the limit held for both together.
    assert [len(r) for r in per_node] == [fired // 2, fired // 2]
    records = per_node[0] + per_node[1]
    assert sum(r["cost_nusd"] for r in records) == admitted * CALL_NUSD
    assert sum(r["outcome"] == "ok" for r in records) == admitted
    assert status["global_committed_usd"] == pytest.approx(admitted * CALL_USD)
    assert status["global_remaining_usd"] == pytest.approx(0.0, abs=1e-12)


def test_a_keys_daily_budget_holds_across_both_nodes_and_spares_other_keys(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    admitted, fired = 10, 60
    url = shared_redis_url(shared_redis, 2)
    budget = {"per_key_daily_usd": admitted * CALL_USD, "redis_url": url}
    with node_pair(tmp_path, budget=budget) as pair:
        responses, seen = asyncio.run(
            fire(
                pair,
                paid(),
                fired,
                "alice",
                url,
                counter_name(f"key:{pair.key_ids['alice']}"),
            )
        )
        bob = [pair.post(node, paid(), key="bob") for node in pair.nodes]
        status = pair.budget_status("alice")
        upstream = len(pair.fake.requests)

    refused = [r for r in responses if r.status_code != 200]
    assert sum(r.status_code == 200 for r in responses) == admitted
    for response in refused:
        assert assert_problem(response, 429, "budget-exceeded")["scope"] == "key"
    assert max(seen) <= admitted * CALL_NUSD
    assert [r.status_code for r in bob] == [200, 200]
    assert upstream == admitted + 2
    assert status["key_committed_usd"] == pytest.approx(admitted * CALL_USD)
    assert status["key_remaining_usd"] == pytest.approx(0.0, abs=1e-12)
    assert status["global_committed_usd"] == pytest.approx((admitted + 2) * CALL_USD)


def test_the_days_spend_survives_restarting_both_nodes_without_double_counting(
    tmp_path: Path, shared_redis: RedisServer
) -> None:
    url = shared_redis_url(shared_redis, 3)
    budget = {"daily_usd": 100 * CALL_USD, "per_key_daily_usd": 50 * CALL_USD}
    with node_pair(tmp_path, budget=budget, cache={"redis_url": url}) as pair:
        for node, count in ((pair.a, 4), (pair.b, 3)):
            for _ in range(count):
                assert pair.post(node, paid()).status_code == 200
        assert pair.post(pair.b, paid(), key="bob").status_code == 200

        pair.stop()
        pair.start()  # Redis still holds the day: nothing is added twice
        kept = pair.budget_status()
        after_restart = pair.post(pair.a, paid())

        pair.stop()
        flushed = redis.Redis.from_url(url).flushdb()
        pair.start()  # Redis lost the day: each node adds its own ledger's
        rebuilt = pair.budget_status()
        after_loss = pair.post(pair.b, paid(), key="bob")

    assert kept["global_committed_usd"] == pytest.approx(8 * CALL_USD)
    assert kept["key_committed_usd"] == pytest.approx(7 * CALL_USD)
    assert after_restart.status_code == 200
    remaining = float(after_restart.headers["x-penin-budget-remaining-usd"])
    assert remaining == pytest.approx(
        50 * CALL_USD - 8 * CALL_USD
    )  # alice's is tighter
    assert flushed
    assert rebuilt["global_committed_usd"] == pytest.approx(9 * CALL_USD)
    assert rebuilt["key_committed_usd"] == pytest.approx(8 * CALL_USD)
    assert after_loss.status_code == 200
    remaining = float(after_loss.headers["x-penin-budget-remaining-usd"])
    assert remaining == pytest.approx(50 * CALL_USD - 2 * CALL_USD)  # bob's


# -- the L2 cache across two nodes ---------------------------------------------


@pytest.fixture(scope="module")
def cache_pair(
    tmp_path_factory: pytest.TempPathFactory, shared_redis: RedisServer
) -> Iterator[Pair]:
    """Two nodes with one L2 cache and no budget limit; tests use their own prompts."""
    directory = tmp_path_factory.mktemp("cache-pair")
    with node_pair(
        directory, cache={"redis_url": shared_redis_url(shared_redis, 4)}
    ) as pair:
        yield pair


def deterministic(prompt: str) -> dict[str, Any]:
    return {
        "model": "fast",
        "messages": [{"role": "user", "content": prompt}],
        "temperature": 0,
        "max_tokens": REPLY_TOKENS,
    }


def test_an_answer_one_node_got_is_served_by_the_other_from_l2(
    cache_pair: Pair,
) -> None:
    pair, request = cache_pair, deterministic("shared answer")
    before = len(pair.fake.requests)
    first = pair.post(pair.a, request)
    from_l2 = pair.post(pair.b, request)
    from_l1 = pair.post(pair.b, request)
    records = pair.records(pair.b)

    assert first.status_code == 200
    assert "x-penin-cache" not in first.headers
    assert from_l2.headers["x-penin-cache"] == "hit-l2"
    assert from_l1.headers["x-penin-cache"] == "hit-l1"
    assert from_l2.json() == from_l1.json() == first.json()
    assert len(pair.fake.requests) == before + 1
    served = [r for r in records if r["request_id"] == from_l2.headers["x-request-id"]]
    assert [(r["cache"], r["cost_nusd"], r["deployment"]) for r in served] == [
        ("l2", 0, None)
    ]


def test_only_deterministic_or_opted_in_requests_are_shared(cache_pair: Pair) -> None:
    pair = cache_pair
    sampled = chat(messages=[{"role": "user", "content": "sampled"}], temperature=0.7)
    before = len(pair.fake.requests)
    pair.post(pair.a, sampled)
    not_cached = pair.post(pair.b, sampled)
    pair.post(pair.a, sampled, **{"X-Penin-Cache": "use"})
    opted_in = pair.post(pair.b, sampled, **{"X-Penin-Cache": "use"})
    skipped = pair.post(
        pair.b, deterministic("shared answer"), **{"X-Penin-Cache": "skip"}
    )

    assert "x-penin-cache" not in not_cached.headers
    assert opted_in.headers["x-penin-cache"] == "hit-l2"
    assert "x-penin-cache" not in skipped.headers
    assert len(pair.fake.requests) == before + 4


def forge(sealed: bytes) -> bytes:
    """The sealed value with its body replaced and its header and MAC kept."""
    body_at = 2 + sealed[1] + 32
    message = {"role": "assistant", "content": "FORGED"}
    choice = {"index": 0, "message": message, "finish_reason": "stop"}
    forged = {"id": "forged", "object": "chat.completion", "choices": [choice]}

    return sealed[:body_at] + json.dumps(forged).encode()


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [(lambda sealed: b'{"choices": []}', "malformed"), (forge, "bad_mac")],
    ids=["raw-bytes", "forged-body"],
)
def test_a_tampered_l2_entry_is_a_counted_miss_and_never_served(
    cache_pair: Pair, shared_redis: RedisServer, tamper: Any, reason: str
) -> None:
    pair, request = cache_pair, deterministic(f"tampered {reason}")
    name = f"penin:cache:{cache_key(request)}"
    raw = redis.Redis.from_url(shared_redis_url(shared_redis, 4))
    failures = pair.metric(pair.b, "penin_cache_integrity_failures_total", level="l2")
    before = len(pair.fake.requests)

    assert pair.post(pair.a, request).status_code == 200
    sealed = raw.get(name)
    assert isinstance(sealed, bytes)
    raw.set(name, tamper(sealed), keepttl=True)
    answer = pair.post(pair.b, request)
    after = pair.metric(pair.b, "penin_cache_integrity_failures_total", level="l2")
    resealed = raw.get(name)
    raw.close()

    assert answer.status_code == 200
    assert "x-penin-cache" not in answer.headers
    assert answer.json()["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert len(pair.fake.requests) == before + 2
    assert after == failures + 1
    warned = [
        e
        for e in pair.events(pair.b, "cache.integrity_failed")
        if e["cache_key"] == cache_key(request)
    ]
    assert [(e["reason"], e["kid"]) for e in warned] == [
        (reason, None if reason == "malformed" else "k1")
    ]
    # The fresh answer was sealed again over the tampered value.
    assert resealed != tamper(sealed)


def test_an_invalidation_on_one_node_drops_the_answer_from_both_nodes(
    cache_pair: Pair,
) -> None:
    pair, request = cache_pair, deterministic("invalidated")
    assert pair.post(pair.a, request).status_code == 200
    assert pair.post(pair.b, request).headers["x-penin-cache"] == "hit-l2"
    assert pair.post(pair.b, request).headers["x-penin-cache"] == "hit-l1"
    heard = [
        pair.metric(n, "penin_cache_invalidations_total", kind="key")
        for n in pair.nodes
    ]
    before = len(pair.fake.requests)

    with pair.a.client(pair.tokens["admin"]) as http:
        dropped = http.post("/v1/cache/invalidate", json={"request": request})
    # Each node hears it on Redis, the one that published it included.
    for node, count in zip(pair.nodes, heard, strict=True):
        wait_for(
            lambda node=node, count=count: (
                pair.metric(node, "penin_cache_invalidations_total", kind="key") > count
            ),
            RECOVERY_S,
            f"{node.base_url} to hear the invalidation",
        )
    asked_again = pair.post(pair.b, request)
    refilled = pair.post(pair.a, request)

    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["levels"] == ["l1", "l2"]
    assert "x-penin-cache" not in asked_again.headers
    assert len(pair.fake.requests) == before + 1
    assert refilled.headers["x-penin-cache"] == "hit-l2"  # not A's own dropped L1


# -- Redis failing ---------------------------------------------------------------


def test_with_redis_killed_nodes_serve_from_l1_refuse_paid_calls_and_recover_alone(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    budget = {"daily_usd": 1.0}
    cached = deterministic("cached before the kill")
    with node_pair(
        tmp_path, budget=budget, cache={"redis_url": redis_server.url}
    ) as pair:
        assert pair.post(pair.a, cached).status_code == 200
        assert pair.post(pair.b, paid()).status_code == 200
        gaps = [
            pair.metric(n, "penin_cache_invalidations_total", kind="all")
            for n in pair.nodes
        ]

        redis_server.kill()
        for node in pair.nodes:
            wait_for(
                lambda node=node: pair.metric(node, "penin_cache_l2_up") == 0,
                RECOVERY_S,
                f"{node.base_url} to see Redis gone",
            )
        from_l1 = pair.post(pair.a, cached)
        refused = [pair.post(node, paid()) for node in pair.nodes for _ in range(5)]
        sent_while_down = len(pair.fake.requests)
        warnings = [
            (
                len(pair.events(n, "budget.store_unreachable")),
                len(pair.events(n, "cache.l2_unreachable")),
            )
            for n in pair.nodes
        ]

        redis_server.start()  # the same port, and empty: no persistence
        for node, gap in zip(pair.nodes, gaps, strict=True):
            wait_for(
                lambda node=node, gap=gap: (
                    pair.metric(node, "penin_cache_l2_up") == 1
                    and pair.metric(node, "penin_cache_invalidations_total", kind="all")
                    > gap
                ),
                RECOVERY_S,
                f"{node.base_url} to subscribe again on its own",
            )
        back = [pair.post(node, paid()) for node in pair.nodes]
        recovered = [len(pair.events(n, "cache.l2_recovered")) for n in pair.nodes]

    assert from_l1.status_code == 200
    assert from_l1.headers["x-penin-cache"] == "hit-l1"
    for response in refused:
        problem = assert_problem(response, 503, "budget-unavailable")
        assert "nothing was sent upstream" in problem["detail"]
        assert response.headers["retry-after"] == "1"
        # The store's address is for the operator's log, not for clients.
        assert str(redis_server.port) not in response.text
    assert sent_while_down == 2  # nothing went upstream without a budget check
    assert warnings == [(1, 1), (1, 1)]  # once per interval, not per request
    assert [r.status_code for r in back] == [200, 200]
    # Redis came back empty; the day was seeded again from both ledgers.
    remaining = float(back[-1].headers["x-penin-budget-remaining-usd"])
    assert remaining == pytest.approx(1.0 - 4 * CALL_USD)
    assert all(count >= 1 for count in recovered)


def test_nodes_started_while_redis_is_down_start_and_admit_calls_once_it_is_up(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.kill()
    with node_pair(
        tmp_path, budget={"daily_usd": 1.0, "redis_url": redis_server.url}
    ) as pair:
        refused = pair.post(pair.a, paid())
        redis_server.start()
        answers = [pair.post(node, paid()) for node in pair.nodes]
        status = pair.budget_status()
        first = pair.records(pair.a)[0]

    assert_problem(refused, 503, "budget-unavailable")
    # The refusal is audited like any routed request: nothing was called.
    assert first["outcome"] == "BudgetUnavailableError"
    assert first["deployment"] is None
    assert first["attempts"] == []
    assert [a.status_code for a in answers] == [200, 200]
    assert status["global_committed_usd"] == pytest.approx(2 * CALL_USD)


def test_without_a_budget_limit_a_dead_redis_refuses_nothing(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    with node_pair(tmp_path, cache={"redis_url": redis_server.url}) as pair:
        redis_server.kill()
        answers = [pair.post(node, paid()) for node in pair.nodes]

    assert [a.status_code for a in answers] == [200, 200]
    assert all("x-penin-budget-remaining-usd" not in a.headers for a in answers)


# -- Redis Cluster ----------------------------------------------------------------


def test_on_redis_cluster_two_nodes_share_one_budget_and_one_l2_cache(
    tmp_path: Path, redis_cluster: RedisCluster3
) -> None:
    url = redis_cluster.url.replace("redis://", "redis+cluster://")
    request = deterministic("on the cluster")
    with node_pair(
        tmp_path, budget={"daily_usd": 5 * CALL_USD}, cache={"redis_url": url}
    ) as pair:
        first = pair.post(pair.a, request)
        from_l2 = pair.post(pair.b, request)
        paid_calls = [pair.post(pair.nodes[i % 2], paid()) for i in range(8)]
        heard = pair.metric(pair.b, "penin_cache_invalidations_total", kind="key")
        with pair.a.client(pair.tokens["admin"]) as http:
            dropped = http.post("/v1/cache/invalidate", json={"request": request})
        wait_for(
            lambda: (
                pair.metric(pair.b, "penin_cache_invalidations_total", kind="key")
                > heard
            ),
            RECOVERY_S,
            "node B to hear the invalidation through the cluster",
        )
        upstream = len(pair.fake.requests)

    assert first.status_code == 200
    assert from_l2.headers["x-penin-cache"] == "hit-l2"
    assert [r.status_code for r in paid_calls] == [200] * 4 + [429] * 4
    assert upstream == 5
    assert dropped.json()["levels"] == ["l1", "l2"]


# -- configuration errors ----------------------------------------------------------


@pytest.mark.parametrize(
    ("redis_url", "seal_keys", "says"),
    [
        ("redis://127.0.0.1:1", None, "PENIN_CACHE_SEAL_KEYS is not"),
        ("redis://127.0.0.1:1", "k1:c2hvcnQ=", "at least 32"),
        ("redis://127.0.0.1:1", "no-colon-here", "KEY_ID:BASE64KEY"),
        ("http://user:hunter2@127.0.0.1:1", SEAL_KEYS, "has scheme 'http'"),
    ],
    ids=[
        "seal-keys-missing",
        "seal-key-short",
        "seal-keys-malformed",
        "unknown-scheme",
    ],
)
def test_a_node_whose_l2_cannot_be_used_refuses_to_start_saying_why(
    tmp_path: Path, redis_url: str, seal_keys: str | None, says: str
) -> None:
    config = tmp_path / "penin.yaml"
    nowhere = {"name": "p", "kind": "openai", "base_url": "http://127.0.0.1:1/v1"}
    model = {"name": "fast", "deployments": [{"provider": "p", "model": "gpt-4o-mini"}]}
    document = {
        "providers": [nowhere],
        "models": [model],
        "cache": {"redis_url": redis_url},
    }
    config.write_text(yaml.safe_dump(document))
    extra = {} if seal_keys is None else {"PENIN_CACHE_SEAL_KEYS": seal_keys}
    result = penin(
        "serve", "--data-dir", tmp_path / "data", "--config", config,
        "--port", free_port(), env=node_env(**extra),
    )  # fmt: skip

    assert result.returncode != 0
    assert says in result.stderr
    assert "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr
