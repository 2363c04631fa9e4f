"""/v1/ledger over HTTP: append, read, page, prove, checkpoint and verify."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from harness import assert_problem, bearer, wait_for
from penin.keys import Scope
from penin.ledger import merkle
from penin.ledger.note import Checkpoint, Verifier, open_checkpoint
from penin.ledger.record import canonical_payload, record_leaf_hash

RECORDS = "/v1/ledger/records"


@pytest.fixture
def admin(mint: Callable[[Scope], str]) -> dict[str, str]:
    return bearer(mint(Scope.ADMIN))


def append(
    client: TestClient,
    headers: dict[str, str],
    event_type: str = "app.event",
    **payload: Any,
) -> dict[str, Any]:
    response = client.post(
        RECORDS, json={"event_type": event_type, "payload": payload}, headers=headers
    )
    assert response.status_code == 201, response.text
    record: dict[str, Any] = response.json()

    return record


def count(client: TestClient, headers: dict[str, str]) -> int:
    return len(list_all(client, headers))


def list_all(
    client: TestClient, headers: dict[str, str], limit: int = 1000, **query: object
) -> list[dict[str, Any]]:
    """Follow next_after_seq from the first page to the last."""
    records: list[dict[str, Any]] = []
    params: dict[str, object] = {**query, "limit": limit}
    for _ in range(10_000):
        page = client.get(RECORDS, params=params, headers=headers)
        assert page.status_code == 200, page.text
        records += page.json()["records"]
        after = page.json()["next_after_seq"]
        if after is None:
            return records
        params["after_seq"] = after

    raise AssertionError("pagination did not end")


def checkpoint(client: TestClient, headers: dict[str, str]) -> Checkpoint:
    """Sign now, then open the newest note with the node's published verifier."""
    assert client.post("/v1/ledger/checkpoint", headers=headers).status_code == 200
    vkey = client.get("/v1/ledger/vkey", headers=headers)
    note = client.get("/v1/ledger/checkpoint", headers=headers)

    assert note.headers["content-type"].startswith("text/plain")
    return open_checkpoint(note.text, Verifier.from_vkey(vkey.text.strip()))


# -- append -----------------------------------------------------------------


def test_append_answers_201_with_the_record_and_its_location(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.post(
        RECORDS,
        json={"event_type": "app.order_placed", "payload": {"id": 7, "b": [1, "x"]}},
        headers=admin,
    )

    assert response.status_code == 201
    record = response.json()
    assert record["event_type"] == "app.order_placed"
    assert record["payload"] == {"id": 7, "b": [1, "x"]}
    assert record["idempotency_key"] is None
    assert response.headers["location"] == f"{RECORDS}/{record['seq']}"
    assert client.get(response.headers["location"], headers=admin).json() == record


def test_the_leaf_hash_returned_is_the_hash_of_the_record_returned(
    client: TestClient, admin: dict[str, str]
) -> None:
    first = append(client, admin, n=1)
    second = append(client, admin, "app.other", text="é✓")

    for record in (first, second):
        leaf = record_leaf_hash(
            record["seq"],
            record["ts"],
            record["event_type"],
            canonical_payload(record["payload"]),
            record["term"],
            bytes.fromhex(record["prev_hash"]),
            record["idempotency_key"],
        )
        assert leaf.hex() == record["leaf_hash"]
    assert second["prev_hash"] == first["leaf_hash"]


def test_an_idempotency_key_appends_once_and_replays_the_record(
    client: TestClient, admin: dict[str, str]
) -> None:
    body = {"event_type": "app.paid", "payload": {"amount": 10}}
    headers = {**admin, "Idempotency-Key": "order-7-paid"}

    first = client.post(RECORDS, json=body, headers=headers)
    size = count(client, admin)
    again = client.post(RECORDS, json=body, headers=headers)
    changed = client.post(
        RECORDS, json={**body, "payload": {"amount": 99}}, headers=headers
    )

    assert first.status_code == 201
    assert "idempotent-replayed" not in first.headers
    assert first.json()["idempotency_key"] == "order-7-paid"
    for replay in (again, changed):
        assert replay.status_code == 200
        assert replay.headers["idempotent-replayed"] == "true"
        assert replay.json() == first.json()
    assert count(client, admin) == size


# -- read and page --------------------------------------------------------------


@pytest.fixture
def filled(client: TestClient, admin: dict[str, str]) -> list[dict[str, Any]]:
    """Every record after 25 appends of two event types (seq 0 is the key)."""
    for n in range(25):
        append(client, admin, "app.even" if n % 2 == 0 else "app.odd", n=n)

    return list_all(client, admin)


@pytest.mark.parametrize("limit", [1, 7, 25, 1000])
def test_pages_cover_every_record_exactly_once(
    client: TestClient,
    admin: dict[str, str],
    filled: list[dict[str, Any]],
    limit: int,
) -> None:
    paged = list_all(client, admin, limit=limit)

    assert [r["seq"] for r in paged] == list(range(len(filled)))
    assert paged == filled


def test_a_page_is_limited_and_points_to_the_next(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    page = client.get(RECORDS, params={"limit": 3, "after_seq": 4}, headers=admin)

    assert [r["seq"] for r in page.json()["records"]] == [5, 6, 7]
    assert page.json()["next_after_seq"] == 7


def test_records_filter_by_event_type(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    odd = list_all(client, admin, limit=4, event_type="app.odd")

    assert [r["seq"] for r in odd] == [
        r["seq"] for r in filled if r["event_type"] == "app.odd"
    ]
    assert list_all(client, admin, event_type="app.none") == []


def test_records_filter_by_time_since_inclusive_until_exclusive(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    middle = filled[len(filled) // 2]["ts"]

    since = list_all(client, admin, since=middle)
    until = list_all(client, admin, until=middle)

    assert since == [r for r in filled if r["ts"] >= middle]
    assert until == [r for r in filled if r["ts"] < middle]
    assert len(since) + len(until) == len(filled)


def test_records_filter_by_after_seq(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    assert list_all(client, admin, after_seq=20) == filled[21:]
    assert list_all(client, admin, after_seq=-1) == filled


def test_get_returns_the_record_at_seq(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    for record in (filled[0], filled[13], filled[-1]):
        response = client.get(f"{RECORDS}/{record['seq']}", headers=admin)
        assert response.json() == record


def test_an_unknown_seq_is_a_404_problem(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    response = client.get(f"{RECORDS}/{len(filled)}", headers=admin)

    problem = assert_problem(response, 404, "not-found")
    assert f"seq {len(filled)}" in problem["detail"]


# -- checkpoints and proofs -------------------------------------------------------


def test_no_checkpoint_yet_is_a_404_problem(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get("/v1/ledger/checkpoint", headers=admin)

    assert_problem(response, 404, "not-found")


def test_inclusion_proofs_verify_against_the_signed_checkpoint(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    signed = checkpoint(client, admin)
    assert signed.tree_size == len(filled)

    for record in filled:
        proof = client.get(
            "/v1/ledger/proofs/inclusion",
            params={"seq": record["seq"], "tree_size": signed.tree_size},
            headers=admin,
        ).json()
        hashes = [bytes.fromhex(h) for h in proof["hashes"]]
        leaf = bytes.fromhex(record["leaf_hash"])

        assert proof["leaf_index"] == record["seq"]
        assert merkle.verify_inclusion(
            leaf, record["seq"], signed.tree_size, hashes, signed.root
        )
        other = bytes.fromhex(filled[record["seq"] - 1]["leaf_hash"])
        assert not merkle.verify_inclusion(
            other, record["seq"], signed.tree_size, hashes, signed.root
        )


def test_a_consistency_proof_links_two_signed_checkpoints(
    client: TestClient, admin: dict[str, str]
) -> None:
    for n in range(5):
        append(client, admin, n=n)
    old = checkpoint(client, admin)
    for n in range(6):
        append(client, admin, n=n)
    new = checkpoint(client, admin)

    proof = client.get(
        "/v1/ledger/proofs/consistency",
        params={"from": old.tree_size, "to": new.tree_size},
        headers=admin,
    ).json()

    assert new.tree_size == old.tree_size + 6
    assert (proof["old_size"], proof["new_size"]) == (old.tree_size, new.tree_size)
    hashes = [bytes.fromhex(h) for h in proof["hashes"]]
    assert merkle.verify_consistency(
        old.tree_size, new.tree_size, old.root, new.root, hashes
    )


@pytest.mark.parametrize(
    "url",
    [
        "/v1/ledger/proofs/inclusion?seq=0&tree_size={past}",
        "/v1/ledger/proofs/inclusion?seq={size}",
        "/v1/ledger/proofs/consistency?from=3&to={past}",
        "/v1/ledger/proofs/consistency?from=9&to=3",
    ],
)
def test_a_tree_size_beyond_the_log_is_a_422_problem(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]], url: str
) -> None:
    size = len(filled)
    response = client.get(url.format(size=size, past=size + 1), headers=admin)

    problem = assert_problem(response, 422, "validation")
    assert "size" in problem["detail"]


# -- verification jobs ------------------------------------------------------------


def test_verify_runs_as_a_job_that_reports_ok(
    client: TestClient, admin: dict[str, str], filled: list[dict[str, Any]]
) -> None:
    started = client.post("/v1/ledger/verify", headers=admin)

    assert started.status_code == 202
    location = started.headers["location"]
    assert location == f"/v1/jobs/{started.json()['job_id']}"

    def finished() -> dict[str, Any] | None:
        job: dict[str, Any] = client.get(location, headers=admin).json()
        return job if job["state"] != "running" else None

    job = wait_for(finished, 15, "the verify job to finish")

    assert job["state"] == "done", job
    assert job["result"]["ok"] is True
    # The admin policy's decision to let the verify run is a record too.
    assert job["result"]["records_checked"] == len(filled) + 1
    assert job["error"] is None


def test_an_unknown_job_is_a_404_problem(
    client: TestClient, admin: dict[str, str]
) -> None:
    response = client.get("/v1/jobs/no-such-job", headers=admin)

    problem = assert_problem(response, 404, "not-found")
    assert "no-such-job" in problem["detail"]


@pytest.mark.parametrize(
    "event_type", ["apikey.created", "policy.decision", "router.request"]
)
def test_an_append_key_cannot_write_the_nodes_own_records(
    client: TestClient, mint: Callable[[Scope], str], event_type: str
) -> None:
    """An apikey.created record is what makes a token a key: one written
    through the API would let an append key mint itself an admin key (and a
    router.request record would spend budget at the next rebuild)."""
    append_key = bearer(mint(Scope.APPEND))
    forged_token = "pk_aaaaaaaaaaaa_" + "A" * 43
    payload = {
        "key_id": "aaaaaaaaaaaa",
        "scope": "admin",
        "token_sha256": hashlib.sha256(forged_token.encode()).hexdigest(),
    }

    response = client.post(
        RECORDS, json={"event_type": event_type, "payload": payload}, headers=append_key
    )

    body = assert_problem(response, 403, "forbidden")
    assert f"event type {event_type!r}" in body["detail"]
    forged = client.get("/v1/ledger/vkey", headers=bearer(forged_token))
    assert_problem(forged, 401, "unauthorized")
    stored = list_all(client, bearer(mint(Scope.READ)), event_type=event_type)
    assert all(r["payload"].get("key_id") != "aaaaaaaaaaaa" for r in stored)
