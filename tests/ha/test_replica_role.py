"""What a replica answers: reads, never writes (503 naming the primary, with a
Location to follow), and its role on the probes a load balancer asks."""

from __future__ import annotations

from typing import Any

import pytest
from static_cluster import StaticCluster

from harness import assert_problem, bearer, penin, wait_for
from penin.keys import Scope

CATCH_UP_S = 10.0
CHAT = {"model": "fast", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def admin(running_pair: StaticCluster) -> str:
    """An admin key made on the primary, once it has reached the replica."""
    token = running_pair.token_of(Scope.ADMIN)
    running_pair.wait_until_identical("n2")

    return token


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/ledger/records", {"event_type": "app.order", "payload": {"i": 1}}),
        ("/v1/chat/completions", CHAT),
        ("/v1/cache/invalidate", {"key": "0" * 64}),
        ("/v1/ledger/checkpoint", None),
        ("/v1/ledger/verify", None),
        ("/v1/policy/penin/admin/decision?explain=1", {"input": {}}),
    ],
)
def test_a_write_sent_to_a_replica_gets_503_naming_the_primary_with_a_location(
    running_pair: StaticCluster, admin: str, path: str, body: dict[str, Any] | None
) -> None:
    before = running_pair.rows("n2")

    with running_pair.servers["n2"].client(admin) as http:
        response = http.post(path, json=body)

    problem = assert_problem(response, 503, "not-primary")
    assert response.headers["location"] == running_pair.url("n1") + path
    assert problem["primary"] == "n1"
    assert problem["primary_url"] == running_pair.url("n1")
    assert running_pair.url("n1") in problem["detail"]
    assert running_pair.rows("n2") == before


def test_a_write_following_the_location_is_taken_by_the_primary(
    running_pair: StaticCluster, admin: str
) -> None:
    body = {"event_type": "app.order", "payload": {"followed": True}}
    with running_pair.servers["n2"].client(admin) as http:
        refused = http.post("/v1/ledger/records", json=body)
    with running_pair.primary.client(admin) as http:
        taken = http.post(refused.headers["location"], json=body)
    rows = running_pair.wait_until_identical("n2")

    assert taken.status_code == 201, taken.text
    assert rows[-1][0] == taken.json()["seq"]


def test_a_replica_serves_reads_of_what_it_holds(
    running_pair: StaticCluster, admin: str
) -> None:
    rows = running_pair.wait_until_identical("n2")

    with running_pair.servers["n2"].client(admin) as http:
        last = http.get(f"/v1/ledger/records/{len(rows) - 1}")
        proof = http.get("/v1/ledger/proofs/inclusion", params={"seq": 0})

    assert last.status_code == 200, last.text
    assert last.json()["leaf_hash"] == rows[-1][-1].hex()
    assert proof.json()["tree_size"] == len(rows)


def test_the_penin_command_cannot_create_a_key_in_a_replicas_data_directory(
    running_pair: StaticCluster,
) -> None:
    before = running_pair.rows("n2")

    result = penin(
        "keys", "create", "--data-dir", running_pair.data_dir("n2"),
        "--scope", "read", env=running_pair.env,
    )  # fmt: skip

    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "replica of n1" in result.stderr
    assert running_pair.url("n1") in result.stderr
    assert running_pair.rows("n2") == before


def test_only_the_primary_says_it_is_primary_and_only_the_replica_says_replica(
    running_pair: StaticCluster,
) -> None:
    primary, replica = running_pair.primary, running_pair.servers["n2"]
    wait_for(
        lambda: replica.get("/replica").status_code == 200,
        CATCH_UP_S,
        "n2 to be a healthy replica",
    )

    assert primary.get("/primary").status_code == 200
    assert primary.get("/replica").status_code == 503
    assert replica.get("/primary").status_code == 503
    body = replica.get("/replica").json()
    assert (body["role"], body["accepts_writes"], body["healthy"]) == (
        "replica", False, True,
    )  # fmt: skip
    assert body["problem"] is None


def test_health_has_a_replication_check_on_every_member(
    running_pair: StaticCluster,
) -> None:
    for name in ("n1", "n2"):
        health = running_pair.servers[name].get("/health")

        assert health.status_code == 200, health.text
        assert health.json()["checks"]["replication"] is True
        assert health.json()["details"]["replication"]["role"] == (
            "primary" if name == "n1" else "replica"
        )


def test_each_member_exports_its_role(running_pair: StaticCluster) -> None:
    for name, role in (("n1", "primary"), ("n2", "replica")):
        text = running_pair.servers[name].get("/metrics").text

        assert f'penin_ha_role{{role="{role}"}} 1.0' in text
        assert "penin_replication_diverged 0.0" in text


def test_a_replica_keeps_the_primarys_checkpoints_and_signs_none(
    running_pair: StaticCluster, admin: str
) -> None:
    with running_pair.primary.client(admin) as http:
        note = http.post("/v1/ledger/checkpoint").text
    size = int(note.split("\n")[1])
    wait_for(
        lambda: size in running_pair.checkpoint_sizes("n2"),
        CATCH_UP_S,
        "n2 to store the primary's checkpoint",
    )

    with running_pair.servers["n2"].client(admin) as http:
        served = http.get("/v1/ledger/checkpoint")

    assert served.text == note
    # Beside the primary's, only the checkpoint the primary signed into the
    # snapshot n2 started from (penin ledger backup signs the copy's size).
    own = set(running_pair.checkpoint_sizes("n2"))
    extra = own - set(running_pair.checkpoint_sizes("n1"))
    assert extra <= {min(own)}
    if extra:
        events = running_pair.servers["n2"].log_events()
        started = [e for e in events if e.get("event") == "ledger.restored"]
        assert [e["tree_size"] for e in started] == [min(own)]


def test_a_replica_answers_a_key_it_does_not_hold_with_401(
    running_pair: StaticCluster,
) -> None:
    response = running_pair.servers["n2"].get(
        "/v1/ledger/records", headers=bearer("pk_000000000000_" + "x" * 43)
    )

    assert_problem(response, 401, "unauthorized")
