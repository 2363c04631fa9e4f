"""Schemathesis against a live node's own /openapi.json: no input breaks it.

Schemathesis's pytest loader for fixtures (``schemathesis.pytest.from_fixture``)
cannot run under pytest 9.2, which no longer has ``Node._nodeid``; so each test
loads the live schema itself and drives every operation's strategy with
Hypothesis (``APIOperation.as_strategy``), which is the documented way to use
Schemathesis outside its pytest integration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    load_all_checks,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.schemas import BaseSchema

from harness import LiveServer, bearer
from penin.keys import Scope

load_all_checks()

EXAMPLES_PER_OPERATION = 25
# A single node is no replica: /replica answers 503 by contract, whatever is sent.
ALWAYS_503 = frozenset({"GET /replica"})

Check = Callable[..., Any]


@pytest.fixture(scope="module")
def admin(live: LiveServer) -> str:
    return live.token(Scope.ADMIN)


@pytest.fixture(scope="module")
def schema(live: LiveServer, admin: str) -> BaseSchema:
    with live.client(admin) as http:
        # Data for the read routes to find: records, a checkpoint, a job.
        for n in range(5):
            body = {"event_type": "fuzz.seed", "payload": {"n": n}}
            assert http.post("/v1/ledger/records", json=body).status_code == 201
        assert http.post("/v1/ledger/checkpoint").status_code == 200
        assert http.post("/v1/ledger/verify").status_code == 202

    return schemathesis.openapi.from_url(f"{live.base_url}/openapi.json")


def _fuzz(
    schema: BaseSchema,
    token: str,
    mode: GenerationMode,
    checks: list[Check],
    skip: frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Run every operation; the failures found, by operation, with a reproduction."""
    failures: dict[str, str] = {}
    tested: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            derandomize=True,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=bearer(token), checks=checks)

        try:
            run()
        except Unsatisfiable:
            continue  # nothing to make invalid: the operation takes no input
        except (AssertionError, BaseExceptionGroup) as exc:
            failures[operation.label] = str(exc)
        tested.append(operation.label)

    assert "POST /v1/ledger/records" in tested, tested

    return failures


def _report(failures: dict[str, str]) -> str:
    return "\n\n".join(f"== {label}\n{text}" for label, text in failures.items())


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_no_generated_request_gets_a_server_error(
    schema: BaseSchema, admin: str, mode: GenerationMode
) -> None:
    failures = _fuzz(schema, admin, mode, [not_a_server_error], skip=ALWAYS_503)

    assert not failures, _report(failures)


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_documented_responses_match_their_schema(
    schema: BaseSchema, admin: str, mode: GenerationMode
) -> None:
    checks: list[Check] = [response_schema_conformance, response_headers_conformance]
    if mode is GenerationMode.NEGATIVE:
        checks.append(negative_data_rejection)
    failures = _fuzz(schema, admin, mode, checks)

    assert not failures, _report(failures)


def test_every_status_and_media_type_sent_is_documented(
    schema: BaseSchema, admin: str
) -> None:
    checks: list[Check] = [status_code_conformance, content_type_conformance]
    failures = _fuzz(schema, admin, GenerationMode.POSITIVE, checks)

    assert not failures, _report(failures)
