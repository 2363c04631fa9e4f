"""Every error is an RFC 9457 problem document that names what was wrong."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx
import pytest
from fastapi.testclient import TestClient

from harness import LiveServer, assert_problem, bearer, node_env, running_server
from penin.keys import Scope

RECORDS = "/v1/ledger/records"
BODY_LIMIT = 4096


@pytest.fixture
def admin(mint: Callable[[Scope], str]) -> dict[str, str]:
    return bearer(mint(Scope.ADMIN))


def _post(client: TestClient, headers: dict[str, str], raw: str) -> httpx.Response:
    return client.post(
        RECORDS,
        content=raw,
        headers={**headers, "Content-Type": "application/json"},
    )


# -- the body ------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    ['{"event_type": "app.x", "payload": {', "not json", '{"a": 1,}', "\x00"],
    ids=["truncated", "prose", "trailing-comma", "nul"],
)
def test_malformed_json_is_400_invalid_json(
    client: TestClient, admin: dict[str, str], raw: str
) -> None:
    response = _post(client, admin, raw)

    body = assert_problem(response, 400, "invalid-json")
    assert body["instance"] == RECORDS


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"payload": {}}, "event_type"),
        ({"event_type": "app.x"}, "payload"),
        ({"event_type": "app.x", "payload": [1, 2]}, "payload"),
        ({"event_type": "app.x", "payload": "text"}, "payload"),
        ({"event_type": 7, "payload": {}}, "event_type"),
        ({"event_type": "app.x", "payload": {}, "extra": 1}, "extra"),
    ],
    ids=["no-event-type", "no-payload", "list", "string", "number", "unknown-field"],
)
def test_a_missing_or_invalid_field_is_422_naming_it(
    client: TestClient, admin: dict[str, str], body: object, field: str
) -> None:
    response = client.post(RECORDS, json=body, headers=admin)

    problem = assert_problem(response, 422, "validation")
    assert problem["detail"].startswith(f"{field}:")
    assert field in problem["fields"]


def test_a_body_that_is_no_object_is_422_saying_what_to_send(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(RECORDS, json=[1, 2], headers=admin)

    problem = assert_problem(response, 422, "validation")
    assert problem["detail"].startswith("body:")
    assert "JSON object" in problem["detail"]


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ('{"event_type": "Not Dotted", "payload": {}}', "event type 'Not Dotted'"),
        ('{"event_type": "nodot", "payload": {}}', "event type 'nodot'"),
        ('{"event_type": "app.x", "payload": {"v": NaN}}', "nan is not"),
        ('{"event_type": "app.x", "payload": {"v": Infinity}}', "inf is not"),
        ('{"event_type": "app.x", "payload": {"v": 1e400}}', "inf is not"),
        ('{"event_type": "app.x", "payload": {"v": 12345678901234567890}}', "safe"),
    ],
    ids=["spaces", "no-dot", "nan", "infinity", "overflow", "big-integer"],
)
def test_a_record_the_ledger_refuses_is_422_naming_the_problem(
    client: TestClient, admin: dict[str, str], raw: str, words: str
) -> None:
    before = client.get(RECORDS, headers=admin).json()["records"]

    response = _post(client, admin, raw)

    problem = assert_problem(response, 422, "validation")
    assert words in problem["detail"]
    assert client.get(RECORDS, headers=admin).json()["records"] == before


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "query.limit"),
        ("limit=1001", "query.limit"),
        ("limit=many", "query.limit"),
        ("after_seq=-2", "query.after_seq"),
    ],
)
def test_an_invalid_query_parameter_is_422_naming_it(
    client: TestClient, admin: dict[str, str], query: str, field: str
) -> None:
    response = client.get(f"{RECORDS}?{query}", headers=admin)

    problem = assert_problem(response, 422, "validation")
    assert problem["fields"] == [field]


def test_an_unparsable_time_is_422_with_an_example(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get(f"{RECORDS}?since=yesterday", headers=admin)

    problem = assert_problem(response, 422, "validation")
    assert "'yesterday' is not RFC 3339" in problem["detail"]


def test_an_overlong_idempotency_key_is_422_naming_the_header(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {"event_type": "app.x", "payload": {}}

    response = client.post(
        RECORDS, json=body, headers={**admin, "Idempotency-Key": "k" * 256}
    )

    problem = assert_problem(response, 422, "validation")
    assert problem["fields"] == ["header.idempotency-key"]


# -- values past what the store can hold ------------------------------------------


@pytest.mark.parametrize(
    ("url", "kinds"),
    [
        (f"{RECORDS}/99999999999999999999", {404: "not-found", 422: "validation"}),
        (f"{RECORDS}?after_seq=99999999999999999999", {422: "validation"}),
        (f"{RECORDS}?since=0001-01-01T00:00:00%2B01:00", {422: "validation"}),
        (f"{RECORDS}?until=9999-12-31T23:59:59-01:00", {422: "validation"}),
    ],
    ids=["seq", "after-seq", "since-year-1", "until-year-9999"],
)
def test_an_out_of_range_number_or_time_is_a_client_error(
    client: TestClient, admin: dict[str, str], url: str, kinds: dict[int, str]
) -> None:
    """Past SQLite's 64-bit integers, or past year 1..9999 once in UTC."""
    response = client.get(url, headers=admin)

    assert response.status_code in kinds, response.text
    assert_problem(response, response.status_code, kinds[response.status_code])


# -- routes and methods ------------------------------------------------------------


@pytest.mark.parametrize("url", ["/nope", "/v1/ledger/nope", "/v2/ledger/records"])
def test_an_unknown_route_is_a_404_problem(client: TestClient, url: str) -> None:
    problem = assert_problem(client.get(url), 404, "not-found")

    assert problem["instance"] == url


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("DELETE", RECORDS),
        ("PUT", f"{RECORDS}/0"),
        ("PATCH", "/v1/ledger/checkpoint"),
        ("POST", "/health"),
        ("DELETE", "/livez"),
    ],
)
def test_a_wrong_method_is_a_405_problem_with_allow(
    client: TestClient, method: str, url: str
) -> None:
    response = client.request(method, url)

    assert_problem(response, 405, "method-not-allowed")
    assert response.headers["allow"]
    assert method not in response.headers["allow"]


# -- body size, on a real server ------------------------------------------------


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A real node that takes bodies of at most 4 KiB."""
    env = node_env(PENIN_SERVER__MAX_BODY_BYTES=str(BODY_LIMIT))
    with running_server(tmp_path_factory.mktemp("small"), env=env) as server:
        yield server


def _big_body() -> bytes:
    return b'{"event_type": "app.x", "payload": {"v": "%s"}}' % (b"x" * BODY_LIMIT)


def test_a_body_over_the_limit_with_content_length_is_413(small: LiveServer) -> None:
    token = small.token(Scope.APPEND)
    with small.client(token) as http:
        response = http.post(
            RECORDS, content=_big_body(), headers={"Content-Type": "application/json"}
        )

        problem = assert_problem(response, 413, "payload-too-large")
        assert str(BODY_LIMIT) in problem["detail"]
        assert http.get("/livez").status_code == 200


def test_a_chunked_body_over_the_limit_is_413(small: LiveServer) -> None:
    token = small.token(Scope.APPEND)
    body = _big_body()

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 512):
            yield body[start : start + 512]

    with small.client(token) as http:
        response = http.post(
            RECORDS, content=chunks(), headers={"Content-Type": "application/json"}
        )

        assert response.request.headers["transfer-encoding"] == "chunked"
        assert "content-length" not in response.request.headers
        assert_problem(response, 413, "payload-too-large")
        assert http.get("/livez").status_code == 200


def test_a_body_under_the_limit_is_appended(small: LiveServer) -> None:
    token = small.token(Scope.APPEND)
    body = {"event_type": "app.x", "payload": {"v": "x" * (BODY_LIMIT // 2)}}

    with small.client(token) as http:
        response = http.post(RECORDS, json=body)

    assert response.status_code == 201, response.text
