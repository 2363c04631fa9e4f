"""Replication between real nodes: what the primary writes, every replica holds,
byte for byte, after a crash and from an empty data directory too."""

from __future__ import annotations

import json
import threading
from typing import Any

import httpx
from static_cluster import StaticCluster

from harness import assert_problem, bearer, penin, wait_for
from penin.keys import Scope
from penin.ledger.verify import verify_file

CATCH_UP_S = 10.0


def append(cluster: StaticCluster, token: str, count: int, start: int = 0) -> None:
    with cluster.primary.client(token) as http:
        for i in range(start, start + count):
            headers = {"Idempotency-Key": f"order-{i}"} if i % 3 == 0 else {}
            response = http.post(
                "/v1/ledger/records",
                json={"event_type": "app.order", "payload": {"i": i, "name": "ü"}},
                headers=headers,
            )
            assert response.status_code == 201, response.text


def metric(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample in Prometheus text, or None if it is absent."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = f"{name}{{{wanted}}}" if labels else name
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])

    return None


def test_records_appended_on_the_primary_reach_both_replicas_byte_for_byte(
    trio: StaticCluster,
) -> None:
    trio.start_all()
    token = trio.token_of(Scope.ADMIN)

    append(trio, token, 40)
    with trio.primary.client(token) as http:
        assert http.post("/v1/ledger/checkpoint").status_code == 200
    rows = trio.wait_until_identical("n2", "n3")
    # A replica's first checkpoint may be the one of the snapshot it started from.
    wait_for(
        lambda: all(trio.checkpoint_sizes(n)[-1:] == [len(rows)] for n in ("n2", "n3")),
        CATCH_UP_S,
        "the replicas to store the primary's checkpoint",
    )

    assert len(rows) == 42  # the term's first record, the key, 40 appends
    assert {row[4] for row in rows} == {1}  # every record of the primary's term
    assert trio.root_of("n2") == trio.root_of("n3") == trio.root_of("n1")
    for name in ("n2", "n3"):
        result = penin(
            "ledger", "verify", "--data-dir", trio.data_dir(name), env=trio.env
        )
        assert result.returncode == 0, result.stdout + result.stderr
        checkpoints = len(trio.checkpoint_sizes(name))
        assert f"42 records, {checkpoints} checkpoints verified" in result.stdout


def test_the_primary_reports_how_far_each_replica_is_behind(
    pair: StaticCluster,
) -> None:
    pair.start_all()
    token = pair.token_of(Scope.APPEND)
    pair.wait_until_identical("n2")

    def caught_up() -> bool:
        text = pair.primary.get("/metrics").text
        return metric(text, "penin_replication_lag_records", replica="n2") == 0

    wait_for(caught_up, CATCH_UP_S, "the primary to see n2 caught up")
    pair.kill("n2")
    append(pair, token, 5)
    text = pair.primary.get("/metrics").text
    primary = pair.primary.get("/primary").json()

    assert metric(text, "penin_replication_lag_records", replica="n2") == 5
    lag_s = metric(text, "worm_replication_lag_seconds", replica="n2")
    assert lag_s is not None
    assert lag_s > 0
    assert metric(text, "penin_ha_role", role="primary") == 1
    assert primary["replicas"]["n2"]["lag_records"] == 5


def test_a_replica_killed_and_restarted_catches_up_from_its_last_seq(
    pair: StaticCluster,
) -> None:
    pair.start_all()
    token = pair.token_of(Scope.APPEND)
    append(pair, token, 10)
    before = pair.wait_until_identical("n2")

    pair.kill("n2")
    append(pair, token, 20, start=10)
    pair.start("n2")
    rows = pair.wait_until_identical("n2")

    assert len(rows) == len(before) + 20
    following = [
        e for e in pair.servers["n2"].log_events()
        if e.get("event") == "replication.following"
    ]  # fmt: skip
    assert following[-1]["applied_seq"] == len(before) - 1
    assert verify_file(pair.data_dir("n2") / "ledger.db").ok


def test_a_replica_started_late_bootstraps_from_an_empty_data_directory(
    pair: StaticCluster,
) -> None:
    pair.start("n1")
    append(pair, pair.token_of(Scope.APPEND), 30)

    pair.start("n2")
    rows = pair.wait_until_identical("n2")

    assert len(rows) == 32
    replica = wait_for(
        lambda: (r := pair.servers["n2"].get("/replica")).status_code == 200 and r,
        CATCH_UP_S,
        "n2 to say it is a healthy replica",
    )
    body: dict[str, Any] = replica.json()
    assert (body["role"], body["status"], body["applied_seq"]) == (
        "replica", "following", 31,
    )  # fmt: skip
    assert body["primary_url"] == pair.url("n1")


def test_a_new_replica_starts_from_the_primarys_snapshot_while_writes_go_on(
    pair: StaticCluster,
) -> None:
    pair.start("n1")
    token = pair.token_of(Scope.APPEND)
    append(pair, token, 200)
    # Appends one at a time while n2 starts, copies and catches up.
    writer = threading.Thread(target=append, args=(pair, token, 300, 1000))
    writer.start()

    pair.start("n2")
    writer.join(60)
    rows = pair.wait_until_identical("n2")

    assert not writer.is_alive()
    assert len(rows) == 502
    [restored] = [
        e for e in pair.servers["n2"].log_events()
        if e.get("event") == "replication.bootstrapped_from_snapshot"
    ]  # fmt: skip
    assert restored["tree_size"] >= 202
    assert not list(pair.data_dir("n2").glob("bootstrap-snapshot*"))
    unauthenticated = httpx.get(f"{pair.url('n1')}/v1/replication/snapshot")
    assert unauthenticated.status_code == 401


def test_a_key_created_on_the_primary_works_on_a_replica_and_stops_when_revoked(
    pair: StaticCluster,
) -> None:
    pair.start_all()
    created = pair.primary.create_key(Scope.READ, "auditor")
    pair.wait_until_identical("n2")
    replica = pair.servers["n2"]

    allowed = replica.get("/v1/ledger/records", headers=bearer(created["token"]))
    pair.primary.revoke_key(created["key_id"])
    pair.wait_until_identical("n2")

    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["records"][1]["event_type"] == "apikey.created"
    # A node re-reads known keys once a second (penin.keys.keyring).
    wait_for(
        lambda: (
            replica.get(
                "/v1/ledger/records", headers=bearer(created["token"])
            ).status_code
            == 401
        ),
        CATCH_UP_S,
        "the replica to refuse the revoked key",
    )


def test_the_cluster_token_never_reaches_a_log(pair: StaticCluster) -> None:
    pair.start_all()
    append(pair, pair.token_of(Scope.APPEND), 3)
    pair.wait_until_identical("n2")
    pair.stop_all()

    for server in pair.servers.values():
        events = server.log_events()
        assert any(e.get("event", "").startswith("cluster.") for e in events)
        assert pair.token not in server.log_text()


def test_a_replica_with_another_signing_key_refuses_to_start_naming_both(
    pair: StaticCluster,
) -> None:
    pair.start("n1")
    data = pair.data_dir("n2")
    result = penin("ledger", "init", "--data-dir", data, env=pair.env)
    assert result.returncode == 0, result.stderr
    (data / "ledger.db").unlink()  # a key of its own, and no ledger yet
    ours = pair.key_path.read_text().split("+")[2:4]
    theirs = (data / "ledger.key").read_text().split("+")[2:4]

    result = penin(
        "serve", "--config", pair.config("n2"), "--data-dir", data,
        "--port", pair.ports["n2"], env=pair.env,
    )  # fmt: skip

    assert result.returncode == 2
    line = result.stderr.strip().splitlines()[-1]
    assert "cannot join the cluster" in line
    assert "+".join(ours) in line
    assert "+".join(theirs) in line
    assert not (data / "ledger.db").exists()


def test_the_replication_stream_answers_only_members_of_the_cluster(
    pair: StaticCluster,
) -> None:
    pair.start_all()
    records = "/v1/replication/records?after_seq=-1&replica=n9"

    with httpx.Client(base_url=pair.url("n1")) as http:
        anonymous = http.get(records)
        wrong = http.get(records, headers=bearer("x" * 48))
        member = http.get(records, headers=bearer(pair.token))
    with httpx.Client(base_url=pair.url("n2")) as http:
        replica = http.get(records, headers=bearer(pair.token))

    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert member.status_code == 200
    batch = json.loads(member.content)
    assert batch["primary"] == "n1"
    assert batch["records"][0]["event_type"] == "ha.term_started"
    assert isinstance(batch["records"][0]["payload_json"], str)
    assert replica.status_code == 503
    assert replica.headers["location"] == pair.url("n1") + records


def test_a_bad_records_query_gets_a_problem_naming_the_parameter(
    running_pair: StaticCluster,
) -> None:
    queries = {
        "after_seq=-2&replica=n2": "query.after_seq",
        "after_seq=x&replica=n2": "query.after_seq",
        "after_seq=0": "query.replica",
        "after_seq=0&replica=Not_A_Name": "query.replica",
        "after_seq=0&replica=n2&wait_s=60": "query.wait_s",
    }
    with httpx.Client(
        base_url=running_pair.url("n1"), headers=bearer(running_pair.token)
    ) as http:
        answers = {
            field: http.get(f"/v1/replication/records?{query}")
            for query, field in queries.items()
        }
        good = http.get("/v1/replication/records?after_seq=-1&replica=n2")

    for field, answer in answers.items():
        problem = assert_problem(answer, 422, "validation")
        assert problem["fields"] == [field], problem
        assert problem["detail"].startswith(f"{field}: "), problem
    assert good.status_code == 200
    assert json.loads(good.content)["records"][0]["seq"] == 0
