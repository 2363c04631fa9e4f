"""``penin keys``: a token is shown once, stored only as a hash, and revocable."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from harness import LiveServer, bearer, penin, wait_for
from penin.keys import KeyRing, Scope
from penin.ledger.ledger import WORMLedger

REVOKE_WAIT_S = 10


def _secret(token: str) -> str:
    return token.split("_", 2)[2]


def test_create_prints_the_token_once_with_its_id_and_scope(
    live: LiveServer,
) -> None:
    result = penin("keys", "create", "--data-dir", live.data_dir, "--scope", "read")

    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("key id: ")
    assert "scope: read" in lines[0]
    token = lines[1].removeprefix("token:").strip()
    assert token.startswith("pk_")
    assert result.stdout.count(token) == 1
    assert "shown once" in result.stderr
    assert live.get("/v1/ledger/vkey", headers=bearer(token)).status_code == 200


def test_create_json_has_token_key_id_and_scope(live: LiveServer) -> None:
    created = live.create_key(Scope.APPEND, "ci-writer")

    assert created["scope"] == "append"
    assert created["name"] == "ci-writer"
    assert created["revoked"] is False
    assert created["token"].startswith(f"pk_{created['key_id']}_")


def test_list_shows_keys_but_never_their_tokens(live: LiveServer) -> None:
    created = [live.create_key(scope) for scope in (Scope.READ, Scope.ADMIN)]

    text = penin("keys", "list", "--data-dir", live.data_dir)
    as_json = penin("keys", "list", "--data-dir", live.data_dir, "--json")

    assert text.returncode == as_json.returncode == 0
    listed = {k["key_id"]: k for k in json.loads(as_json.stdout)}
    for key in created:
        assert listed[key["key_id"]]["scope"] == key["scope"]
        assert "token" not in listed[key["key_id"]]
        assert key["key_id"] in text.stdout
    for token in live.tokens:
        for output in (text.stdout, as_json.stdout, text.stderr, as_json.stderr):
            assert _secret(token) not in output


def test_revoke_makes_the_running_node_refuse_the_token(live: LiveServer) -> None:
    key = live.create_key(Scope.READ)
    headers = bearer(key["token"])
    assert live.get("/v1/ledger/vkey", headers=headers).status_code == 200

    result = penin("keys", "revoke", "--data-dir", live.data_dir, key["key_id"])

    assert result.returncode == 0, result.stderr
    assert key["key_id"] in result.stdout
    wait_for(
        lambda: live.get("/v1/ledger/vkey", headers=headers).status_code == 401,
        REVOKE_WAIT_S,
        "the node to refuse the revoked token",
    )
    listed = json.loads(
        penin("keys", "list", "--data-dir", live.data_dir, "--json").stdout
    )
    assert [k["revoked"] for k in listed if k["key_id"] == key["key_id"]] == [True]


def test_a_key_created_while_the_node_runs_works_at_once(live: LiveServer) -> None:
    token = live.token(Scope.READ)

    # An unknown key id makes the node re-read the keys before it answers.
    response = live.get("/v1/ledger/vkey", headers=bearer(token))

    assert response.status_code == 200


def test_revoking_an_unknown_key_is_a_usage_error(live: LiveServer) -> None:
    result = penin("keys", "revoke", "--data-dir", live.data_dir, "000000000000")

    assert result.returncode == 2
    assert "no API key with id '000000000000'" in result.stderr
    assert "Traceback" not in result.stderr


def test_keys_need_an_existing_ledger(tmp_path: Path) -> None:
    result = penin("keys", "create", "--data-dir", tmp_path, "--scope", "read")

    assert result.returncode == 2
    assert "penin ledger init" in result.stderr
    assert "Traceback" not in result.stderr


def _files_hold(directory: Path, secret: str) -> list[str]:
    return [
        p.name
        for p in directory.iterdir()
        if p.is_file() and secret.encode() in p.read_bytes()
    ]


def test_only_the_sha256_of_a_token_reaches_the_ledger(
    serve: Callable[..., LiveServer],
) -> None:
    server = serve()
    key = server.create_key(Scope.ADMIN)
    token = key["token"]
    with server.client(token) as http:
        response = http.get(
            "/v1/ledger/records", params={"event_type": "apikey.created"}
        )
    (stored,) = [r["payload"] for r in response.json()["records"]]

    assert stored["token_sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert _files_hold(server.data_dir, stored["token_sha256"]) != []
    assert _files_hold(server.data_dir, _secret(token)) == []
    # Closing folds the write-ahead log into ledger.db: look at that file too.
    assert server.stop() == 0
    assert "ledger.db" in _files_hold(server.data_dir, stored["token_sha256"])
    assert _files_hold(server.data_dir, _secret(token)) == []


def test_a_key_minted_elsewhere_right_after_a_refresh_authenticates_at_once(
    ledger: WORMLedger,
) -> None:
    node_ring = KeyRing(ledger)
    node_ring.refresh()
    other = WORMLedger(ledger.path).initialize()
    try:
        token, key = KeyRing(other).create(Scope.READ)
    finally:
        other.close()

    found = node_ring.authenticate(token)

    assert found is not None
    assert found.key_id == key.key_id


def test_an_unknown_key_id_is_refused_and_a_wrong_secret_too(
    ledger: WORMLedger,
) -> None:
    ring = KeyRing(ledger)
    token, key = ring.create(Scope.ADMIN)

    assert ring.authenticate(f"pk_{key.key_id}_not-the-secret") is None
    assert ring.authenticate("pk_000000000000_whatever") is None
    assert ring.authenticate(token) == key


# -- data class and models ----------------------------------------------------------


def test_a_key_may_be_held_to_a_data_class_and_a_list_of_models(
    live: LiveServer,
) -> None:
    created = penin(
        "keys", "create", "--data-dir", live.data_dir, "--scope", "route",
        "--data-class", "pii", "--models", "fast, gpt-4o-mini,fast", "--json",
    )  # fmt: skip
    plain = live.create_key(Scope.ROUTE)

    assert created.returncode == 0, created.stderr
    key = json.loads(created.stdout)
    live.tokens.append(key["token"])
    assert (key["data_class"], key["models"]) == ("pii", ["fast", "gpt-4o-mini"])
    assert (plain["data_class"], plain["models"]) == (None, None)
    listed = {
        k["key_id"]: k
        for k in json.loads(
            penin("keys", "list", "--data-dir", live.data_dir, "--json").stdout
        )
    }
    assert listed[key["key_id"]]["models"] == ["fast", "gpt-4o-mini"]
    assert listed[plain["key_id"]]["data_class"] is None
    text = penin("keys", "list", "--data-dir", live.data_dir).stdout.splitlines()
    assert f"{key['key_id']}\troute\tactive\t-\tpii\tfast,gpt-4o-mini" in text
    assert f"{plain['key_id']}\troute\tactive\t-\t-\t-" in text


def test_a_key_created_without_them_stores_neither(ledger: WORMLedger) -> None:
    """Records written before keys had a class or models load as they were."""
    _, key = KeyRing(ledger).create(Scope.ROUTE)
    (record,) = ledger.query(event_type="apikey.created")

    assert set(record.payload) == {"key_id", "name", "scope", "token_sha256"}
    assert (key.data_class, key.models) == (None, None)


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--data-class", "PII", "data class 'PII' is not a lowercase identifier"),
        ("--data-class", "pii data", "data class 'pii data' is not a lowercase"),
        ("--models", "fast,Smart", "model 'Smart' is not a logical model name"),
        ("--models", "fast,,smart v2", "model 'smart v2' is not a logical model"),
        ("--models", " , ", "name at least one logical model"),
    ],
    ids=["upper-case-class", "space-in-class", "upper-case-model", "space", "none"],
)
def test_a_bad_data_class_or_model_list_is_a_usage_error_naming_it(
    live: LiveServer, flag: str, value: str, said: str
) -> None:
    before = len(
        json.loads(penin("keys", "list", "--data-dir", live.data_dir, "--json").stdout)
    )

    result = penin(
        "keys", "create", "--data-dir", live.data_dir, "--scope", "route",
        flag, value,
    )  # fmt: skip

    assert result.returncode == 2
    assert f"Invalid value for '{flag}'" in result.stderr
    assert said in result.stderr
    after = json.loads(
        penin("keys", "list", "--data-dir", live.data_dir, "--json").stdout
    )
    assert len(after) == before
