"""The serving policies: settings, user overrides, atomic reload, the watcher."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from pathlib import Path
from typing import Any

import pytest
from bundles import allow_module, sample, wait_until, write_bundle
from pydantic import ValidationError
from structlog.testing import capture_logs

from penin.policy.config import PolicySettings
from penin.policy.engine import Decision, EmbeddedEngine
from penin.policy.errors import PolicyLoadError
from penin.policy.remote import RemoteEngine
from penin.policy.service import Policies

ADMIN = "penin/admin/decision"
OPS_SWITCHOVER = {"key": {"id": "k1", "scope": "ops"}, "action": "switchover"}
# The user's admin policy: the ops scope may also switch over.
OPS_ADMIN = """package penin.admin

default allowed := false

allowed if input.key.scope in {"admin", "ops"}

decision := {"allow": allowed, "action": input.action, "reasons": []}
"""
GATE = "acme/gate/allow"
WATCH_TIMEOUT_S = 10.0


def reloads(outcome: str) -> float:
    return sample("penin_policy_reloads_total", outcome=outcome)


def settings(directory: Path, **more: object) -> PolicySettings:
    return PolicySettings.model_validate(
        {"dir": directory, "watch_interval_s": 0, **more}
    )


# -- settings -----------------------------------------------------------------------


def test_settings_default_to_the_embedded_engine_without_logging_inputs() -> None:
    policy = PolicySettings()

    assert (policy.mode, policy.dir, policy.log_input) == ("embedded", None, False)
    assert policy.timeout_s == 0.5
    assert policy.watch_interval_s == 2.0


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ({"mode": "remote"}, "policy.mode remote needs policy.opa_url"),
        ({"mode": "remote", "opa_url": "opa:8181"}, "must start with http://"),
        ({"timeout_s": 0}, "greater than 0"),
        ({"watch_interval_s": -1}, "greater than or equal to 0"),
        ({"mask_fields": ["token", ""]}, "empty field name"),
        ({"modes": "remote"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_settings_are_refused_naming_the_problem(
    given: dict[str, object], problem: str
) -> None:
    with pytest.raises(ValidationError, match=problem):
        PolicySettings.model_validate(given)


# -- loading and overriding ------------------------------------------------------------


def test_a_user_override_changes_decisions_after_reload(
    tmp_path: Path, events: list[dict[str, Any]]
) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    policies = Policies.load(settings(user))
    shipped_digest = policies.digest
    before = asyncio.run(policies.decide(ADMIN, OPS_SWITCHOVER))
    loaded = reloads("loaded")

    write_bundle(user, {"penin/admin/admin.rego": OPS_ADMIN})
    assert policies.reload()
    after = asyncio.run(policies.decide(ADMIN, OPS_SWITCHOVER))

    assert not before.allowed
    assert before.policy_digest == shipped_digest
    assert after.allowed
    assert after.policy_digest == policies.digest != shipped_digest
    assert reloads("loaded") == loaded + 1
    (event,) = [e for e in events if e["event"] == "policy.reloaded"]
    assert event["digest"] == policies.digest
    assert event["previous"] == shipped_digest
    admin = {info.package: info for info in policies.packages()}["penin.admin"]
    assert admin.origin == "user"
    assert admin.modules == (str(user / "penin/admin/admin.rego"),)


def test_a_broken_set_is_refused_at_reload_and_the_old_one_keeps_serving(
    tmp_path: Path,
) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    policies = Policies.load(settings(user))
    serving = policies.digest
    refused = reloads("refused")

    write_bundle(user, {"acme.rego": "package acme.gate\n\nallow {\n\ttrue\n}\n"})
    with capture_logs() as logs:
        assert not policies.reload()
    decision = asyncio.run(policies.decide(GATE, {}))

    assert policies.digest == serving
    assert decision.allowed
    assert decision.policy_digest == serving
    assert reloads("refused") == refused + 1
    (event,) = logs
    assert event["event"] == "policy.reload_refused"
    assert event["log_level"] == "error"
    assert event["file"] == str(user / "acme.rego")
    assert event["line"] == 3
    assert "`if` keyword is required" in event["error"]
    assert event["serving"] == serving


def test_a_broken_set_at_start_up_is_an_error_naming_file_and_line(
    tmp_path: Path,
) -> None:
    user = write_bundle(
        tmp_path / "policies",
        {"gate.rego": "package acme.gate\n\nallow if time.now_ns() > 0\n"},
    )

    with pytest.raises(PolicyLoadError) as refused:
        Policies.load(settings(user))

    assert str(refused.value).startswith(f"{user / 'gate.rego'}:3: calls time.now_ns")


def test_the_record_logs_the_input_only_as_configured(tmp_path: Path) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    quiet = Policies.load(settings(user))
    verbose = Policies.load(settings(user, log_input=True, mask_fields=["token"]))
    given = {"key": {"id": "k1", "token": "sk-1"}}
    decision = asyncio.run(quiet.decide(GATE, given))

    _, without = quiet.record(decision, given)
    _, masked = verbose.record(decision, given)

    assert "input" not in without
    assert masked["input"] == {"key": {"id": "k1", "token": "***"}}


def test_remote_mode_decides_remotely_and_has_nothing_to_reload() -> None:
    policies = Policies.load(
        PolicySettings(mode="remote", opa_url="http://127.0.0.1:1", timeout_s=0.2)
    )

    async def run() -> Decision:
        try:
            assert policies.start_watching() is None
            return await policies.decide(GATE, {})
        finally:
            await policies.close()

    decision = asyncio.run(run())

    assert isinstance(policies.engine, RemoteEngine)
    assert not policies.reload()
    assert decision.reason == "unavailable"
    assert policies.packages() == []


# -- reload under load -----------------------------------------------------------------


def test_decisions_during_many_reloads_each_come_whole_from_one_set(
    tmp_path: Path,
) -> None:
    user = tmp_path / "policies"
    versions = {
        True: allow_module("acme.gate", "true"),
        False: allow_module("acme.gate", "false"),
    }
    write_bundle(user, {"acme.rego": versions[True]})
    policies = Policies.load(settings(user))
    allows_in: dict[str, bool] = {policies.digest: True}
    stop = threading.Event()
    from_threads: list[Decision] = []
    thread_errors: list[BaseException] = []

    def decide_in_a_thread() -> None:
        try:
            while not stop.is_set():
                engine = policies.engine
                assert isinstance(engine, EmbeddedEngine)
                from_threads.append(engine.evaluate(GATE, {"n": len(from_threads)}))
        except BaseException as exc:  # a panic of regorus is a BaseException
            thread_errors.append(exc)

    async def decide_on_the_loop() -> list[Decision]:
        made = []
        while not stop.is_set():
            made.append(await policies.decide(GATE, {"n": len(made)}))
            await asyncio.sleep(0)
        return made

    async def run() -> list[Decision]:
        deciders = [asyncio.create_task(decide_on_the_loop()) for _ in range(8)]
        for n in range(20):
            write_bundle(user, {"acme.rego": versions[n % 2 == 1]})
            assert policies.reload()
            allows_in[policies.digest] = n % 2 == 1
            await asyncio.sleep(0.002)
        stop.set()
        return [d for made in await asyncio.gather(*deciders) for d in made]

    threads = [threading.Thread(target=decide_in_a_thread)]
    for thread in threads:
        thread.start()
    try:
        on_the_loop = asyncio.run(run())
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert thread_errors == []
    assert len(allows_in) == 2
    everything = on_the_loop + from_threads
    assert {d.policy_digest for d in on_the_loop} == set(allows_in)
    for decision in everything:
        assert decision.reason in (None, "denied"), decision
        assert decision.allowed == allows_in[decision.policy_digest]


# -- watching the directory ----------------------------------------------------


def test_the_watcher_reloads_on_change_and_refuses_a_broken_edit(
    tmp_path: Path,
) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    policies = Policies.load(settings(user, watch_interval_s=0.02))
    first = policies.digest

    async def run() -> tuple[str, Decision]:
        watcher = policies.start_watching()
        assert watcher is not None
        assert policies.start_watching() is watcher
        try:
            write_bundle(user, {"acme.rego": allow_module("acme.gate", "false")})
            await wait_until(
                lambda: policies.digest != first, WATCH_TIMEOUT_S, "a reload"
            )
            second = policies.digest
            refused = reloads("refused")
            write_bundle(user, {"acme.rego": "package acme.gate\n\nallow :=\n"})
            await wait_until(
                lambda: reloads("refused") > refused, WATCH_TIMEOUT_S, "a refusal"
            )
            return second, await policies.decide(GATE, {})
        finally:
            await policies.close()
            assert watcher.done()

    second, decision = asyncio.run(run())

    assert second != first
    assert policies.digest == second
    assert not decision.allowed
    assert decision.reason == "denied"


def test_no_watcher_runs_when_watching_is_off(tmp_path: Path) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    policies = Policies.load(settings(user, watch_interval_s=0))

    async def run() -> None:
        assert policies.start_watching() is None
        await policies.close()

    asyncio.run(run())


def test_sighup_reloads_the_policies(tmp_path: Path) -> None:
    user = write_bundle(tmp_path / "policies", {"acme.rego": allow_module("acme.gate")})
    policies = Policies.load(settings(user))
    first = policies.digest

    async def run() -> Decision:
        policies.reload_on_sighup()
        try:
            write_bundle(user, {"acme.rego": allow_module("acme.gate", "false")})
            os.kill(os.getpid(), signal.SIGHUP)
            await wait_until(
                lambda: policies.digest != first, WATCH_TIMEOUT_S, "SIGHUP"
            )
            return await policies.decide(GATE, {})
        finally:
            await policies.close()

    decision = asyncio.run(run())

    assert decision.reason == "denied"
    assert decision.policy_digest == policies.digest != first
