"""``penin route``, ``providers`` and ``budget`` as an operator runs them."""

from __future__ import annotations

import json
import os
import select
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from gateway import COST_NUSD, KEY_ENV, PROMPT, deployment, provider

import redisd
from fakes.anthropic import FakeAnthropic
from fakes.fault import DEFAULT_TEXT, Fault
from fakes.gemini import FakeGemini
from fakes.openai import FakeOpenAI
from fakes.server import FakeServer
from harness import (
    CLI_TIMEOUT_S,
    PENIN,
    LiveServer,
    free_port,
    node_env,
    penin,
    running_server,
)
from penin.keys import Scope

PROVIDER_SECRET = "upstream-secret-0123456789"
REDIS_PASSWORD = "redis-secret-0123456789"
DAILY_USD = 1.0
PER_KEY_USD = 0.5
# The slowest a `providers check` of hung providers may be: well under the
# sum of their timeouts, which is what asking one after the other would take.
HUNG_TIMEOUT_S = 1.5
BUNDLED = json.loads(
    resources.files("penin.router").joinpath("prices.json").read_text()
)["models"]


@dataclass
class Node:
    server: LiveServer
    config: Path
    env: dict[str, str]  # a user's shell: the provider key and a route key
    openai: FakeOpenAI
    anthropic: FakeAnthropic
    gemini: FakeGemini
    flaky: FakeOpenAI  # the provider of model ``flaky``, which tests make fail
    read_token: str

    @property
    def url(self) -> str:
        return self.server.base_url

    def route(self, *args: object, **env: str) -> subprocess.CompletedProcess[str]:
        return penin("route", PROMPT, "--url", self.url, *args, env={**self.env, **env})

    def records(self) -> list[dict[str, Any]]:
        with self.server.client(self.read_token) as http:
            response = http.get(
                "/v1/ledger/records",
                params={"event_type": "router.request", "limit": 1000},
            )
        assert response.status_code == 200, response.text

        return [r["payload"] for r in response.json()["records"]]


def _config(fakes: dict[str, FakeServer], **extra: Any) -> dict[str, Any]:
    """Models ``fast`` (own prices), ``claude`` and ``gem`` (table's), ``flaky``."""
    claude = {"provider": "an", "model": "claude-haiku-4-5"}
    gemini = {"provider": "ge", "model": "gemini-2.5-flash"}

    return {
        "providers": [
            provider("oa", fakes["oa"]),
            provider("an", fakes["an"], kind="anthropic"),
            provider("ge", fakes["ge"], kind="gemini"),
            provider("flaky", fakes["flaky"]),
        ],
        "models": [
            {"name": "fast", "deployments": [deployment("oa")]},
            {"name": "claude", "deployments": [claude]},
            {"name": "gem", "deployments": [gemini]},
            {"name": "flaky", "deployments": [deployment("flaky")]},
        ],
        "budget": {"daily_usd": DAILY_USD, "per_key_daily_usd": PER_KEY_USD},
        # No retries and a breaker that stays closed: each failure a test
        # provokes is one upstream call, and no test leaves the next a circuit.
        "router": {"retry": {"attempts": 0}, "breaker": {"failures": 1000}},
        **extra,
    }


def _write(directory: Path, config: dict[str, Any], name: str = "penin.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(config))

    return path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """A node routing to a fake of each protocol; one shared by the module."""
    directory = tmp_path_factory.mktemp("cli")
    env = node_env(**{KEY_ENV: PROVIDER_SECRET})
    with (
        FakeOpenAI() as oa,
        FakeAnthropic() as an,
        FakeGemini() as ge,
        FakeOpenAI() as flaky,
    ):
        fakes: dict[str, FakeServer] = {"oa": oa, "an": an, "ge": ge, "flaky": flaky}
        config = _write(directory, _config(fakes))
        with running_server(directory, "--config", config, env=env) as server:
            route_env = {**env, "PENIN_API_KEY": server.token(Scope.ROUTE)}
            read = server.token(Scope.READ)
            yield Node(server, config, route_env, oa, an, ge, flaky, read)


@pytest.fixture
def flaky(node: Node) -> Iterator[FakeOpenAI]:
    """The fake behind model ``flaky``, answering normally again after the test."""
    yield node.flaky
    node.flaky.always(Fault.ok())


def assert_one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    """stderr holds one line (click's own ``Error:`` or ours), no traceback."""
    message = result.stderr.strip()

    assert "\n" not in message, result.stderr
    assert "Traceback" not in result.stderr
    assert message.lower().startswith("error:"), message

    return message


def assert_no_secret(node: Node, *results: subprocess.CompletedProcess[str]) -> None:
    secrets = [PROVIDER_SECRET, node.env["PENIN_API_KEY"], node.read_token]
    for result in results:
        for secret in secrets:
            assert secret not in result.stdout + result.stderr


# -- penin route ---------------------------------------------------------------


def test_route_prints_the_answer_and_tells_the_deployment_and_cost_on_stderr(
    node: Node,
) -> None:
    result = node.route("--model", "fast")

    assert result.returncode == 0, result.stderr
    assert result.stdout == DEFAULT_TEXT + "\n"
    facts = result.stderr.strip()
    assert "deployment: oa/gpt-4o-mini" in facts
    assert f"cost: {COST_NUSD / 1e9:.9f} USD" in facts
    assert "budget left: " in facts
    assert node.records()[-1]["cost_nusd"] == COST_NUSD
    assert_no_secret(node, result)


def test_route_stream_prints_the_text_as_it_arrives(node: Node) -> None:
    # 0.15 s between the fake's events: the first word must be on
    # the terminal while the rest of the answer is still on its way.
    node.openai.script(Fault.ok().slowed(gap=0.15))
    args = ["route", PROMPT, "--model", "fast", "--stream", "--url", node.url]
    with subprocess.Popen(
        [str(PENIN), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=node.env,
    ) as process:
        assert process.stdout is not None
        first = _read_some(process.stdout.fileno(), timeout=CLI_TIMEOUT_S)
        still_running = process.poll() is None
        rest, stderr = process.communicate(timeout=CLI_TIMEOUT_S)

    assert first.startswith(b"Hello")
    assert still_running
    assert process.returncode == 0, stderr
    assert (first + rest).decode() == DEFAULT_TEXT + "\n"
    assert f"cost: {COST_NUSD / 1e9:.9f} USD" in stderr.decode()
    assert "deployment: oa/gpt-4o-mini" in stderr.decode()


def _read_some(fd: int, timeout: float) -> bytes:
    ready, _, _ = select.select([fd], [], [], timeout)
    assert ready, f"nothing on stdout within {timeout} s"

    return os.read(fd, 4096)


def test_route_json_prints_the_whole_completion(node: Node) -> None:
    result = node.route("--model", "fast", "--json")

    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"] == DEFAULT_TEXT
    assert answer["usage"]["completion_tokens"] == 5


def test_route_stream_json_prints_one_chunk_per_line(node: Node) -> None:
    result = node.route("--model", "fast", "--stream", "--json")

    assert result.returncode == 0, result.stderr
    chunks = [json.loads(line) for line in result.stdout.splitlines()]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text == DEFAULT_TEXT
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_system_and_max_tokens_reach_the_provider(node: Node) -> None:
    result = node.route(
        "--model", "fast", "--system", "Answer in French.", "--max-tokens", 7
    )
    translated = node.route(
        "--model", "claude", "--system", "Be brief.", "--max-tokens", 9
    )

    assert result.returncode == 0, result.stderr
    sent = node.openai.requests[-1].json
    assert sent["messages"][0] == {"role": "system", "content": "Answer in French."}
    assert sent["messages"][1] == {"role": "user", "content": PROMPT}
    assert sent["max_tokens"] == 7
    assert translated.returncode == 0, translated.stderr
    assert translated.stdout == DEFAULT_TEXT + "\n"
    to_anthropic = node.anthropic.requests[-1].json
    assert (to_anthropic["system"], to_anthropic["max_tokens"]) == ("Be brief.", 9)
    assert "deployment: an/claude-haiku-4-5" in translated.stderr  # fmt: skip


def test_route_without_a_key_is_a_usage_error_naming_the_variable(node: Node) -> None:
    sent = len(node.openai.requests)
    env = {k: v for k, v in node.env.items() if k != "PENIN_API_KEY"}

    result = penin("route", PROMPT, "--model", "fast", "--url", node.url, env=env)

    assert result.returncode == 2
    assert "PENIN_API_KEY" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(node.openai.requests) == sent


def test_route_with_a_key_of_another_scope_says_the_node_refused_it(
    node: Node,
) -> None:
    result = node.route("--model", "fast", PENIN_API_KEY=node.read_token)

    assert result.returncode == 1
    message = assert_one_line_error(result)
    assert "403 forbidden" in message
    assert "needs scope 'route'" in message
    assert result.stdout == ""
    assert_no_secret(node, result)


def test_route_to_an_unknown_model_names_it_and_the_known_ones(node: Node) -> None:
    result = node.route("--model", "no-such-model")

    assert result.returncode == 1
    message = assert_one_line_error(result)
    assert "404 model-not-found" in message
    assert "'no-such-model'" in message
    assert "'fast'" in message


def test_route_to_a_node_that_is_not_running_cannot_reach_it(node: Node) -> None:
    url = f"http://127.0.0.1:{free_port()}"

    result = penin("route", PROMPT, "--model", "fast", "--url", url, env=node.env)

    assert result.returncode == 2
    message = assert_one_line_error(result)
    assert f"cannot reach the node at {url}" in message


def test_route_fails_with_exit_1_when_every_deployment_fails(
    node: Node, flaky: FakeOpenAI
) -> None:
    flaky.always(Fault.server_error(503))

    result = node.route("--model", "flaky")
    streamed = node.route("--model", "flaky", "--stream")

    for failed in (result, streamed):
        assert failed.returncode == 1
        message = assert_one_line_error(failed)
        assert "502 upstream-failed" in message
        assert "server (503)" in message
        assert failed.stdout == ""


def test_a_stream_that_breaks_midway_keeps_its_text_and_exits_1(
    node: Node, flaky: FakeOpenAI
) -> None:
    flaky.script(Fault.truncated(after=3))

    result = node.route("--model", "flaky", "--stream")

    assert result.returncode == 1
    assert result.stdout == "Hello from \n"
    *facts, error = result.stderr.strip().splitlines()
    assert "deployment: flaky/gpt-4o-mini" in facts[0]
    assert error.startswith("error: the stream broke after it started")
    assert "Traceback" not in result.stderr


# -- penin providers list --------------------------------------------------------


def test_providers_list_shows_each_provider_and_the_prices_in_force(
    node: Node,
) -> None:
    result = penin("providers", "list", "--config", node.config, env=node.env)

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (f"oa  openai  {node.openai.base_url}/v1  key ${KEY_ENV} (set)")
    assert lines[1] == "  fast → gpt-4o-mini  in 1 / out 2 USD per Mtok (config)"
    claude = BUNDLED["claude-haiku-4-5"]
    gemini = BUNDLED["gemini/gemini-2.5-flash"]
    assert lines[2].startswith(f"an  anthropic  {node.anthropic.base_url}  ")
    assert lines[3].startswith(
        f"  claude → claude-haiku-4-5  in {claude['input_per_mtok']:g} "
        f"/ out {claude['output_per_mtok']:g} USD per Mtok (price table "
    )
    assert lines[4].startswith(f"ge  gemini  {node.gemini.base_url}  ")
    assert lines[5].startswith(
        f"  gem → gemini-2.5-flash  in {gemini['input_per_mtok']:g} "
        f"/ out {gemini['output_per_mtok']:g} USD per Mtok (price table "
    )
    assert len(lines) == 8
    assert_no_secret(node, result)


def test_providers_list_json_has_every_deployment_and_no_secret(node: Node) -> None:
    result = penin("providers", "list", "--config", node.config, "--json", env=node.env)

    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert list(rows) == ["oa", "an", "ge", "flaky"]
    assert rows["ge"]["kind"] == "gemini"
    assert rows["oa"]["api_key_env"] == KEY_ENV
    assert all(row["api_key_set"] for row in rows.values())
    (claude,) = rows["an"]["deployments"]
    assert claude["model"] == "claude"
    assert claude["deployment"] == "claude-haiku-4-5"
    assert claude["input_per_mtok"] == BUNDLED["claude-haiku-4-5"]["input_per_mtok"]
    assert claude["output_per_mtok"] == BUNDLED["claude-haiku-4-5"]["output_per_mtok"]
    assert rows["oa"]["deployments"][0]["price_source"] == "config"
    assert_no_secret(node, result)


def test_providers_list_says_which_provider_key_is_not_set(node: Node) -> None:
    env = {k: v for k, v in node.env.items() if k != KEY_ENV}

    result = penin("providers", "list", "--config", node.config, env=env)

    assert result.returncode == 0, result.stderr
    assert result.stdout.count(f"key ${KEY_ENV} (NOT SET)") == 4


def test_a_config_naming_an_unknown_provider_is_one_line_and_exit_2(
    node: Node, tmp_path: Path
) -> None:
    config = yaml.safe_load(node.config.read_text())
    config["models"][0]["deployments"][0]["provider"] = "nowhere"
    broken = _write(tmp_path, config)

    for command in ("list", "check"):
        result = penin("providers", command, "--config", broken, env=node.env)

        assert result.returncode == 2
        message = assert_one_line_error(result)
        assert str(broken) in message
        assert "'nowhere'" in message


def test_a_config_file_that_does_not_exist_is_one_line_and_exit_2(
    node: Node, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.yaml"

    result = penin("providers", "list", "--config", missing, env=node.env)

    assert result.returncode == 2
    assert "nope.yaml" in assert_one_line_error(result)


# -- penin providers check ---------------------------------------------------------


def test_providers_check_passes_when_every_provider_lists_its_models(
    node: Node,
) -> None:
    result = penin("providers", "check", "--config", node.config, env=node.env)

    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        "ok   oa",
        "ok   an",
        "ok   ge",
        "ok   flaky",
    ]
    assert all(" 2 models in " in line for line in lines)
    assert node.anthropic.requests[-1].path == "/v1/models"
    assert node.gemini.requests[-1].path == "/v1beta/models"


def test_providers_check_fails_naming_a_provider_that_answers_500(
    node: Node, flaky: FakeOpenAI
) -> None:
    flaky.always(Fault.server_error(500))

    result = penin("providers", "check", "--config", node.config, env=node.env)

    assert result.returncode == 1
    assert "FAIL flaky: server (500): " in result.stdout
    assert result.stdout.count("ok   ") == 3


def test_providers_check_fails_on_a_401_and_on_a_provider_that_is_down(
    node: Node, tmp_path: Path
) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    config = {
        "providers": [
            {**provider("keyless", node.openai), "api_key_env": None},
            {"name": "down", "kind": "anthropic", "base_url": nobody},
            provider("oa", node.openai),
        ]
    }

    result = penin(
        "providers", "check", "--config", _write(tmp_path, config), env=node.env
    )

    assert result.returncode == 1
    keyless, down, healthy = result.stdout.splitlines()
    assert keyless.startswith("FAIL keyless: auth (401): ")
    assert down.startswith("FAIL down: connection: ")
    assert healthy.startswith("ok   oa: ")


def test_providers_check_without_the_key_variable_names_it(node: Node) -> None:
    env = {k: v for k, v in node.env.items() if k != KEY_ENV}

    result = penin("providers", "check", "--config", node.config, env=env)

    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert all(line.startswith("FAIL ") and KEY_ENV in line for line in lines)


def test_providers_check_of_hung_providers_is_bounded_by_its_timeout(
    node: Node, flaky: FakeOpenAI, tmp_path: Path
) -> None:
    flaky.always(Fault.hang())
    hung = [provider(f"hung{n}", flaky) for n in range(3)]
    config = _write(tmp_path, {"providers": hung})

    started = time.monotonic()
    result = penin(
        "providers", "check", "--config", config, "--timeout", HUNG_TIMEOUT_S,
        env=node.env,
    )  # fmt: skip
    elapsed = time.monotonic() - started

    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        f"FAIL hung{n}: no answer within {HUNG_TIMEOUT_S:g} s" for n in range(3)
    ]
    # Asked one after the other, three would take three timeouts.
    assert elapsed < 3 * HUNG_TIMEOUT_S


# -- penin budget status ------------------------------------------------------------


def _budget_status(node: Node, *args: object) -> subprocess.CompletedProcess[str]:
    return penin(
        "budget", "status", "--config", node.config, "--data-dir", node.server.data_dir,
        *args, env=node.env,
    )  # fmt: skip


def test_budget_status_matches_what_the_router_charged(node: Node) -> None:
    key = node.server.create_key(Scope.ROUTE, "budget-test")
    for model in ("fast", "claude"):
        routed = node.route("--model", model, PENIN_API_KEY=key["token"])
        assert routed.returncode == 0, routed.stderr
    records = node.records()
    spent = sum(r["cost_nusd"] for r in records)
    by_key = sum(r["cost_nusd"] for r in records if r["key_id"] == key["key_id"])

    result = _budget_status(node, "--key-id", key["key_id"], "--json")

    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert status["source"] == f"the ledger {node.server.data_dir / 'ledger.db'}"
    assert by_key > COST_NUSD  # both calls were charged to the key
    assert status["global_committed_usd"] == spent / 1e9
    assert status["key_committed_usd"] == by_key / 1e9
    assert status["global_limit_usd"] == DAILY_USD
    assert status["key_limit_usd"] == PER_KEY_USD
    assert status["global_remaining_usd"] == (DAILY_USD * 1e9 - spent) / 1e9
    assert status["key_remaining_usd"] == (PER_KEY_USD * 1e9 - by_key) / 1e9
    assert (status["global_soft"], status["key_soft"]) == (False, False)


def test_budget_status_reads_as_spent_of_limit_and_left(node: Node) -> None:
    key = node.server.create_key(Scope.ROUTE, "idle")
    spent = sum(r["cost_nusd"] for r in node.records())

    overall = _budget_status(node)
    idle_key = _budget_status(node, "--key-id", key["key_id"])

    assert overall.returncode == 0, overall.stderr
    day, total, per_key = overall.stdout.splitlines()
    ledger = node.server.data_dir / "ledger.db"
    assert day.startswith("budget of ")
    assert day.endswith(f"(UTC), from the ledger {ledger}")
    left = DAILY_USD - spent / 1e9
    assert total == (
        f"global: spent {_usd(spent / 1e9)} of {DAILY_USD:g} USD, {_usd(left)} USD left"
    )
    assert per_key.startswith(f"per key: {PER_KEY_USD:g} USD a day")
    assert idle_key.returncode == 0, idle_key.stderr
    assert idle_key.stdout.splitlines()[2] == (
        f"key {key['key_id']}: spent 0 of {PER_KEY_USD:g} USD, {PER_KEY_USD:g} USD left"
    )


def _usd(amount: float) -> str:
    """As an operator reads it: to the nano-USD, no trailing zeros."""
    return f"{amount:.9f}".rstrip("0").rstrip(".")


def test_budget_status_of_a_data_dir_without_a_ledger_is_one_line(
    node: Node, tmp_path: Path
) -> None:
    result = penin(
        "budget", "status", "--config", node.config, "--data-dir", tmp_path / "empty",
        env=node.env,
    )  # fmt: skip

    assert result.returncode != 0
    assert "no ledger at" in assert_one_line_error(result)


def test_budget_status_reads_the_shared_redis_budget_and_says_when_it_is_down(
    node: Node, tmp_path: Path
) -> None:
    redis = redisd.RedisServer(tmp_path / "redis", password=REDIS_PASSWORD).start()
    try:
        shared, routed, down = _shared_budget_status(node, tmp_path, redis)
    finally:
        redis.stop()

    assert routed.returncode == 0, routed.stderr
    assert shared.returncode == 0, shared.stderr
    status = json.loads(shared.stdout)
    assert status["source"] == f"Redis at redis://:***@127.0.0.1:{redis.port}"
    assert status["global_committed_usd"] == COST_NUSD / 1e9
    assert down.returncode == 1
    assert "Traceback" not in down.stderr
    assert "the budget store at" in down.stderr.strip().splitlines()[-1]
    for result in (routed, shared, down):
        assert REDIS_PASSWORD not in result.stdout + result.stderr


def _shared_budget_status(
    node: Node, directory: Path, redis: redisd.RedisServer
) -> tuple[subprocess.CompletedProcess[str], ...]:
    """Route one call through a node on Redis; the status, then with Redis dead."""
    fakes: dict[str, FakeServer] = {
        "oa": node.openai, "an": node.anthropic, "ge": node.gemini, "flaky": node.flaky
    }  # fmt: skip
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{redis.port}"
    budget = {"daily_usd": DAILY_USD, "redis_url": url}
    config = _write(directory, _config(fakes, budget=budget))
    # Not the node's data directory: the figures can only come from Redis.
    status = ("budget", "status", "--config", config, "--data-dir", directory / "x")
    with running_server(directory, "--config", config, env=node.env) as server:
        token = server.token(Scope.ROUTE)
        routed = penin(
            "route", PROMPT, "--model", "fast", "--url", server.base_url,
            env={**node.env, "PENIN_API_KEY": token},
        )  # fmt: skip
    shared = penin(*status, "--json", env=node.env)
    redis.kill()
    down = penin(*status, env=node.env)

    return shared, routed, down
