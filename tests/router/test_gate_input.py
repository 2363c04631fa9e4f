"""The routing question's canonical text, written by the gate from parts it keeps.

The gate writes the RFC 8785 text of each routing input itself, around the
text of the model's deployments written once, and the engine decides and
digests that text. It must be exactly what ``penin.ledger.jcs`` writes for
the same input, or a decision's input digest could not be checked again.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from penin.ledger import jcs
from penin.policy.config import PolicySettings
from penin.policy.service import Policies
from penin.router.audit import Caller, Outcome
from penin.router.config import RouterConfig
from penin.router.deployments import Group, build_groups
from penin.router.errors import PolicyDeniedError
from penin.router.gate import Gate
from penin.router.prices import PriceTable

PRICED = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
# Names a config may hold: non-ASCII, a quote, a backslash, a control character.
ODD = ["fournisseur-é", 'quo"te\\', "tab\there", "模型-🚀", "line\u2028sep"]


def config(names: list[str]) -> dict[str, Any]:
    """A model per name, each with a deployment of a provider of that name,
    and the first model falling back to all the others."""
    return {
        "providers": [
            {"name": n, "kind": "openai", "base_url": "http://127.0.0.1:9/v1"}
            for n in names
        ],
        "models": [
            {
                "name": f"model {n}",
                "fallbacks": [f"model {m}" for m in names[1:]] if i == 0 else [],
                "deployments": [
                    {"provider": n, "model": f"gpt {n}", **PRICED},
                    {"provider": n, "model": "gpt-4o-mini", **PRICED,
                     "data_classes": ["public", "internal", "pii"]},
                ],
            }
            for i, n in enumerate(names)
        ],
    }  # fmt: skip


async def _build(names: list[str]) -> dict[str, Group]:
    async with aiohttp.ClientSession() as session:
        return build_groups(
            RouterConfig.model_validate(config(names)), session, PriceTable.bundled()
        )


def groups_for(names: list[str]) -> dict[str, Group]:
    return asyncio.run(_build(names))


class Recording:
    """The policies, keeping each question the gate asked and the text it sent."""

    def __init__(self, policies: Policies) -> None:
        self.policies = policies
        self.asked: list[tuple[dict[str, Any], str | None]] = []

    async def decide(
        self, path: str, input: dict[str, Any], text: str | None = None
    ) -> Any:
        self.asked.append((input, text))
        return await self.policies.decide(path, input, text)

    def record(self, decision: Any, input: Any) -> tuple[str, dict[str, Any]]:
        return self.policies.record(decision, input)


@pytest.fixture(scope="module")
def shipped() -> Policies:
    return Policies.load(PolicySettings())


def route(
    gate: Gate,
    group: Group,
    caller: Caller,
    key_id: str = "3f9a1c2b7d4e",
    budget_state: Any = "ok",
) -> tuple[Outcome, PolicyDeniedError | None]:
    """Ask the gate about one request: its outcome, and its refusal if any."""
    outcome = Outcome(
        model=group.name, key_id=key_id, stream=False, request_id="r", caller=caller
    )
    try:
        asyncio.run(gate.route(group, outcome, budget_state))
    except PolicyDeniedError as exc:
        return outcome, exc

    return outcome, None


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- the text is jcs's ------------------------------------------------------------


@pytest.mark.parametrize(
    "names", [["openai"], ODD, ["a", "b", "c", "d"]], ids=["one", "odd", "four"]
)
def test_the_gate_writes_the_text_jcs_writes_for_every_model(
    shipped: Policies, names: list[str]
) -> None:
    groups = groups_for(names)
    policies = Recording(shipped)
    gate = Gate(policies, groups)  # type: ignore[arg-type]

    for group in groups.values():
        caller = Caller(data_class="internal", models=(group.name, "model é"))
        outcome, _ = route(gate, group, caller)
        input, text = policies.asked[-1]
        _, record = outcome.decisions[-1]

        assert text == jcs.dumps(input)
        assert record["input_digest"] == digest(jcs.dumps(input))
        assert record["input_digest"] != ""


@settings(max_examples=150, deadline=None)
@given(
    key_id=st.text(),
    scope=st.text(),
    data_class=st.none() | st.text(),
    models=st.none() | st.lists(st.text(), max_size=3).map(tuple),
    declared=st.none() | st.text(),
    budget_state=st.sampled_from([None, "ok", "soft"]) | st.text(),
)
def test_any_caller_is_written_as_jcs_writes_it(
    shipped: Policies,
    key_id: str,
    scope: str,
    data_class: str | None,
    models: tuple[str, ...] | None,
    declared: str | None,
    budget_state: str | None,
) -> None:
    groups = groups_for(ODD[:2])
    policies = Recording(shipped)
    gate = Gate(policies, groups)  # type: ignore[arg-type]
    caller = Caller(
        scope=scope, data_class=data_class, models=models, declared_class=declared
    )

    route(gate, groups["model fournisseur-é"], caller, key_id, budget_state)
    ((input, text),) = policies.asked

    assert text == jcs.dumps(input)


@pytest.mark.parametrize(
    "value",
    [0.1, 1e-7, 2.5e-5, 5.0, -0.0, 1e21, 123456789.125, 7, True, ["a", 1.5, None]],
)
def test_a_number_where_a_string_belongs_is_written_as_jcs_writes_it(
    shipped: Policies, value: Any
) -> None:
    groups = groups_for(["openai"])
    policies = Recording(shipped)
    gate = Gate(policies, groups)  # type: ignore[arg-type]
    caller = Caller(data_class=value, declared_class=value)

    outcome, _ = route(gate, groups["model openai"], caller, budget_state=value)
    ((input, text),) = policies.asked

    assert text == jcs.dumps(input)
    assert outcome.decisions[0][1]["input_digest"] == digest(jcs.dumps(input))


@pytest.mark.parametrize(
    "value", [object(), 2**60, float("nan")], ids=["object", "wide", "nan"]
)
def test_an_input_that_is_not_json_still_denies_as_an_error(
    shipped: Policies, value: Any
) -> None:
    groups = groups_for(["openai"])
    gate = Gate(shipped, groups)

    outcome, refusal = route(gate, groups["model openai"], Caller(data_class=value))

    assert refusal is not None
    assert refusal.reason == "error"
    _, record = outcome.decisions[0]
    assert (record["allowed"], record["reason"]) == (False, "error")
    assert record["input_digest"] == ""


# -- a reload forgets ---------------------------------------------------------------

CLOSED = """package penin.router

decision := {"allow": false, "reasons": ["closed for maintenance"]}
"""


def test_after_a_reload_a_question_answered_before_is_asked_of_the_new_set(
    tmp_path: Path,
) -> None:
    user = tmp_path / "policies"
    user.mkdir()
    policies = Policies.load(PolicySettings.model_validate({"dir": user}))
    groups = groups_for(["openai"])
    gate = Gate(policies, groups)
    group = groups["model openai"]
    caller = Caller(data_class="internal")
    first, _ = route(gate, group, caller)
    again, _ = route(gate, group, caller)

    (user / "router.rego").write_text(CLOSED)
    assert policies.reload()
    after, refusal = route(gate, group, caller)

    old, remembered, new = (o.decisions[0][1] for o in (first, again, after))
    assert old["allowed"]
    assert remembered["allowed"]
    assert remembered["input_digest"] == old["input_digest"]
    assert refusal is not None
    assert refusal.reasons == ["closed for maintenance"]
    assert new["allowed"] is False
    assert new["policy_digest"] == policies.digest != old["policy_digest"]
    assert new["input_digest"] == old["input_digest"]
