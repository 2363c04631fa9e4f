"""The policy.decision ledger record: digests always, the input only if configured."""

from __future__ import annotations

import copy
from pathlib import Path

from bundles import write_bundle

from penin.ledger import jcs
from penin.ledger.ledger import WORMLedger
from penin.policy.decisions import POLICY_DECISION, decision_record
from penin.policy.engine import Decision, EmbeddedEngine
from penin.policy.policyset import load_bundle

INPUT = {
    "key": {"id": "k1", "token": "sk-secret", "scope": "route"},
    "request": {"model": "fast", "messages": [{"role": "user", "token": "t-2"}]},
}


def decide(tmp_path: Path) -> tuple[EmbeddedEngine, Decision]:
    root = write_bundle(
        tmp_path / "b", {"p.rego": 'package p\n\nallow := input.key.scope == "route"\n'}
    )
    engine = EmbeddedEngine(load_bundle(root))

    return engine, engine.evaluate("p/allow", INPUT)


def test_a_record_names_the_decision_by_its_digests_without_the_input(
    tmp_path: Path,
) -> None:
    engine, decision = decide(tmp_path)

    event_type, payload = decision_record(decision, INPUT)

    assert event_type == POLICY_DECISION == "policy.decision"
    assert payload == {
        "decision_id": decision.decision_id,
        "path": "p/allow",
        "policy_digest": engine.digest,
        "input_digest": decision.input_digest,
        "allowed": True,
        "reason": None,
        "result": True,
        "duration_ms": payload["duration_ms"],
    }
    assert 0 < payload["duration_ms"] < 1000
    assert "sk-secret" not in jcs.dumps(payload)


def test_the_logged_input_has_named_fields_masked_at_any_depth(tmp_path: Path) -> None:
    _, decision = decide(tmp_path)
    original = copy.deepcopy(INPUT)

    _, payload = decision_record(
        decision,
        INPUT,
        log_input=True,
        mask_fields=["token"],
    )

    assert payload["input"] == {
        "key": {"id": "k1", "token": "***", "scope": "route"},
        "request": {"model": "fast", "messages": [{"role": "user", "token": "***"}]},
    }
    assert original == INPUT


def test_the_ledger_stores_the_record_as_built(
    tmp_path: Path, ledger: WORMLedger
) -> None:
    _, decision = decide(tmp_path)
    event_type, payload = decision_record(
        decision, INPUT, log_input=True, mask_fields=["token"]
    )

    (stored,) = ledger.append_many([(event_type, payload)])

    assert ledger.get(stored.seq).event_type == "policy.decision"
    assert ledger.get(stored.seq).payload == payload
