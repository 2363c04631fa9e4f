"""The access log of a real node: one JSON event per request, with its id."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from harness import LiveServer, wait_for
from penin.keys import Scope

GENERATED_ID = re.compile(r"[0-9a-f]{12}-[0-9a-f]+")
LOG_WAIT_S = 10


def _line(live: LiveServer, request_id: str) -> dict[str, Any]:
    """The access line of one request; it is written after the response."""
    found = wait_for(
        lambda: live.access_lines(request_id=request_id),
        LOG_WAIT_S,
        f"the access line of request {request_id}",
    )
    assert len(found) == 1, found

    return found[0]


def test_every_request_writes_one_json_access_line(live: LiveServer) -> None:
    key = live.create_key(Scope.READ)
    requests = [
        ("GET", "/livez", None, 200, "/livez"),
        ("GET", "/v1/ledger/records/0", key["token"], 200, "/v1/ledger/records/{seq}"),
        ("GET", "/v1/ledger/records", None, 401, "/v1/ledger/records"),
        ("DELETE", "/health", None, 405, "/health"),
        ("GET", "/nowhere", None, 404, "unmatched"),
    ]

    with live.client() as http:
        for n, (method, url, token, status, _) in enumerate(requests):
            headers = {"X-Request-ID": f"log-test-{n}"}
            if token:
                headers["Authorization"] = f"Bearer {token}"
            assert http.request(method, url, headers=headers).status_code == status

    for n, (method, _, token, status, route) in enumerate(requests):
        line = _line(live, f"log-test-{n}")
        assert line["method"] == method
        assert line["route"] == route
        assert line["status"] == status
        assert line["duration_ms"] >= 0
        assert line["key_id"] == (key["key_id"] if token else None)
        assert line["level"] == "info"
    for text in live.log_text().splitlines():
        assert isinstance(json.loads(text), dict), text
    assert key["token"] not in live.log_text()


def test_a_request_id_sent_comes_back_and_is_logged(live: LiveServer) -> None:
    response = live.get("/livez", headers={"X-Request-ID": "abc-123"})

    assert response.headers["x-request-id"] == "abc-123"
    assert _line(live, "abc-123")["route"] == "/livez"


@pytest.mark.parametrize(
    "sent",
    ["has spaces", "x" * 300, "semi;colon", "ünïcode"],
    ids=["spaces", "300-chars", "semicolon", "non-ascii"],
)
def test_an_invalid_request_id_is_replaced_by_a_generated_one(
    live: LiveServer, sent: str
) -> None:
    response = live.get("/livez", headers={"X-Request-ID": sent.encode()})

    generated = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(generated)
    assert _line(live, generated)["route"] == "/livez"
    assert sent not in live.log_text()


def test_a_request_without_an_id_gets_a_generated_one(live: LiveServer) -> None:
    first = live.get("/livez").headers["x-request-id"]
    second = live.get("/livez").headers["x-request-id"]

    assert GENERATED_ID.fullmatch(first)
    assert first != second
    assert _line(live, second)["status"] == 200
