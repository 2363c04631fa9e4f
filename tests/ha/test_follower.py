"""The follower against a primary that lies: a real HTTP server on loopback serves
a real ledger's stream with one thing changed, and the follower must stop at it,
say exactly what differs, and keep what it had verified before."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from aiohttp import web
from coordinators import eventually
from structlog.testing import capture_logs

from helpers import ORIGIN, append_n, assert_intact
from penin.ha.follower import MAX_LAG_S, Follower
from penin.ha.peer import PrimaryClient
from penin.ha.stream import encode_batch, note_tree_size
from penin.ha.token import ClusterToken
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import Checkpoint, Signer
from penin.ledger.record import record_leaf_hash
from penin.observability.metrics import REGISTRY

TOKEN = "t" * 40
SETTLE_S = 10.0
Body = dict[str, Any]


class FakePrimary:
    """Serves ``source`` as a primary's replication stream, through ``tamper``.

    ``refuse_first`` answers the first requests 503, as a primary that is
    still starting does. Counts the requests of each kind.
    """

    def __init__(
        self,
        source: WORMLedger,
        *,
        tamper: Callable[[Body], Body] = lambda body: body,
        identity: Callable[[Body], Body] = lambda body: body,
        refuse_first: int = 0,
        status: int = 200,
    ) -> None:
        self.source = source
        self.tamper = tamper
        self.identity = identity
        self.refuse_first = refuse_first
        self.status = status
        self.requests = {"ledger": 0, "records": 0}
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakePrimary:
        app = web.Application()
        app.router.add_get("/v1/replication/ledger", self._ledger)
        app.router.add_get("/v1/replication/records", self._records)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"

        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()

    def _authorised(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {TOKEN}"

    async def _ledger(self, request: web.Request) -> web.Response:
        assert self._authorised(request)
        self.requests["ledger"] += 1
        if self.refuse_first > 0:
            self.refuse_first -= 1
            return web.json_response({"detail": "starting"}, status=503)
        body = {
            "primary": "n1",
            "origin": self.source.origin,
            "vkey": self.source.verifier.vkey,
            "tree_size": self.source.count_records(),
            "term": 1,
        }

        return web.json_response(self.identity(body))

    async def _records(self, request: web.Request) -> web.Response:
        assert self._authorised(request)
        self.requests["records"] += 1
        if self.status != 200:
            return web.json_response({"detail": "refused"}, status=self.status)
        after = int(request.query["after_seq"])
        found = self.source.query(after_seq=after, limit=int(request.query["limit"]))
        if not found:  # a long poll on a primary that takes no more writes
            await asyncio.sleep(float(request.query["wait_s"]))
        note = self.source.latest_checkpoint()
        checkpoint = (
            None
            if note is None
            else (note, note_tree_size(note), "2026-01-01T00:00:00.000000Z")
        )
        raw = encode_batch("n1", 1, self.source.count_records(), found, checkpoint)

        return web.json_response(self.tamper(json.loads(raw)))


@pytest.fixture
def source(tmp_path: Path) -> Iterator[WORMLedger]:
    """The primary's ledger: 8 records of term 1, and a checkpoint of them all."""
    led = WORMLedger(tmp_path / "primary" / "ledger.db", term=1)
    led.path.parent.mkdir()
    led.initialize(ORIGIN)
    append_n(led, 8)
    led.checkpoint()
    yield led
    led.close()


@pytest.fixture
def replica(tmp_path: Path, source: WORMLedger) -> Iterator[WORMLedger]:
    """A replica's ledger holding the primary's key and first 3 records."""
    directory = tmp_path / "replica"
    directory.mkdir()
    shutil.copy(source.key_path, directory / "ledger.key")
    led = WORMLedger(directory / "ledger.db").initialize(ORIGIN)
    led.follow("n1", "http://n1.test")
    led.apply(source.query(limit=3))
    yield led
    led.close()


async def follow(
    replica: WORMLedger, primary: FakePrimary, until: Callable[[Follower], bool]
) -> Follower:
    """Run a follower against ``primary`` until ``until`` holds, then stop it."""
    client = PrimaryClient(primary.url, ClusterToken(TOKEN), "n2")
    follower = Follower(replica, client, wait_s=0.2)
    task = asyncio.create_task(follower.run())

    async def reached() -> bool:
        return until(follower) or task.done()

    try:
        await eventually(reached, SETTLE_S, "the follower to settle")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    return follower


def diverged(follower: Follower) -> bool:
    return follower.state.status in {"diverged", "refused"}


def run_against(
    replica: WORMLedger, until: Callable[[Follower], bool], **fake: Any
) -> tuple[Follower, FakePrimary, list[dict[str, Any]]]:
    async def scenario() -> tuple[Follower, FakePrimary]:
        async with FakePrimary(fake.pop("source"), **fake) as primary:
            return await follow(replica, primary, until), primary

    # Every level, info included: the suite's default keeps warnings only.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(0))
    with capture_logs() as logs:
        follower, primary = asyncio.run(scenario())

    return follower, primary, logs


def event(logs: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [entry for entry in logs if entry["event"] == name]
    assert found, f"no {name} event in {[e['event'] for e in logs]}"

    return found[-1]


def diverged_metric() -> float | None:
    return REGISTRY.get_sample_value("penin_replication_diverged")


# -- what a faithful primary gets ------------------------------------------------------


def test_a_follower_takes_every_record_and_the_checkpoint_and_is_healthy(
    source: WORMLedger, replica: WORMLedger
) -> None:
    follower, _, logs = run_against(
        replica, lambda f: f.state.checkpoint_tree_size == 8, source=source
    )

    assert replica.query(limit=100) == source.query(limit=100)
    assert replica.latest_checkpoint() == source.latest_checkpoint()
    assert follower.state.status == "following"
    assert follower.healthy()
    caught_up = follower.state.caught_up_at
    assert caught_up is not None
    assert not follower.healthy(now=caught_up + MAX_LAG_S + 1)
    assert event(logs, "replication.caught_up")["seq"] == 7
    assert_intact(replica.path, 8)


def test_a_primary_not_answering_yet_is_retried_until_it_does(
    source: WORMLedger, replica: WORMLedger
) -> None:
    follower, primary, logs = run_against(
        replica, lambda f: f.state.applied_seq == 7, source=source, refuse_first=2
    )

    failures = [e for e in logs if e["event"] == "replication.fetch_failed"]
    assert [e["attempt"] for e in failures] == [1, 2]
    assert failures[0]["status"] == 503
    assert primary.requests["ledger"] == 3
    assert follower.state.last_error is None
    assert replica.count_records() == 8


# -- what a lying primary gets ------------------------------------------------------


def spoil_record(index: int, **fields: Any) -> Callable[[Body], Body]:
    def tamper(body: Body) -> Body:
        body["records"][index].update(fields)
        return body

    return tamper


def test_a_record_with_a_wrong_leaf_hash_stops_the_follower_saying_what_differs(
    source: WORMLedger, replica: WORMLedger
) -> None:
    true_leaf = source.get(5).leaf_hash
    follower, primary, logs = run_against(
        replica, diverged, source=source, tamper=spoil_record(2, leaf_hash="0" * 64)
    )

    problem = follower.state.problem
    assert follower.state.status == "diverged"
    assert problem is not None
    assert (problem["seq"], problem["field"]) == (5, "leaf_hash")
    assert (problem["expected"], problem["received"]) == (true_leaf, "0" * 64)
    logged = event(logs, "replication.diverged")
    assert logged["log_level"] == "error"
    assert (logged["seq"], logged["expected"], logged["received"]) == (
        5, true_leaf, "0" * 64,
    )  # fmt: skip
    assert primary.requests["records"] == 1  # never asked again
    assert not follower.healthy()
    assert diverged_metric() == 1
    assert replica.count_records() == 3
    assert_intact(replica.path, 3)


def test_a_record_whose_payload_was_changed_is_refused(
    source: WORMLedger, replica: WORMLedger
) -> None:
    follower, _, _ = run_against(
        replica, diverged, source=source, tamper=spoil_record(0, payload_json='{"n":9}')
    )

    assert follower.state.problem is not None
    assert follower.state.problem["field"] == "leaf_hash"
    assert follower.state.problem["received"] == source.get(3).leaf_hash
    assert replica.count_records() == 3


def test_a_record_of_an_older_term_is_fenced(
    source: WORMLedger, replica: WORMLedger
) -> None:
    def stale_term(body: Body) -> Body:
        record = body["records"][0]
        fields = (
            record["seq"], record["ts"], record["event_type"], record["payload_json"],
            0, bytes.fromhex(record["prev_hash"]), record["idempotency_key"],
        )  # fmt: skip
        record.update(term=0, leaf_hash=record_leaf_hash(*fields).hex())
        body["records"] = [record]
        return body

    replica.apply(source.query(after_seq=2, limit=1))  # seq 3, of term 1
    follower, _, _ = run_against(replica, diverged, source=source, tamper=stale_term)

    problem = follower.state.problem
    assert problem is not None
    assert (problem["seq"], problem["field"]) == (4, "term")
    assert (problem["expected"], problem["received"]) == ("1", "0")
    assert replica.count_records() == 4


def forged_checkpoint(signer: Signer, size: int, root: bytes) -> Callable[[Body], Body]:
    note = signer.sign_note(Checkpoint(ORIGIN, size, root).body())

    def tamper(body: Body) -> Body:
        body["checkpoint"]["note"] = note
        return body

    return tamper


def test_a_checkpoint_with_a_wrong_root_stops_the_follower_naming_both_roots(
    source: WORMLedger, replica: WORMLedger
) -> None:
    wrong = b"\x07" * 32
    follower, _, logs = run_against(
        replica, diverged, source=source,
        tamper=forged_checkpoint(source.signer(), 8, wrong),
    )  # fmt: skip

    problem = follower.state.problem
    assert problem is not None
    assert (problem["field"], problem["tree_size"]) == ("checkpoint_root", 8)
    assert problem["received"] == wrong.hex()
    assert problem["expected"] == source.root(8).hex()
    assert event(logs, "replication.diverged")["tree_size"] == 8
    assert replica.count_records() == 8  # the records verified; the note did not
    assert replica.latest_checkpoint() is None


def test_a_checkpoint_signed_by_another_key_stops_the_follower(
    source: WORMLedger, replica: WORMLedger
) -> None:
    stranger = Signer.generate(source.signer().name)
    follower, _, _ = run_against(
        replica, diverged, source=source,
        tamper=forged_checkpoint(stranger, 8, source.root(8)),
    )  # fmt: skip

    problem = follower.state.problem
    assert problem is not None
    assert problem["field"] == "checkpoint_signature"
    assert replica.latest_checkpoint() is None


def test_a_primary_with_another_signing_key_is_not_followed(
    source: WORMLedger, replica: WORMLedger
) -> None:
    stranger = Signer.generate("elsewhere.example/log").verifier

    def other_key(body: Body) -> Body:
        return {**body, "vkey": stranger.vkey}

    follower, primary, logs = run_against(
        replica, diverged, source=source, identity=other_key
    )

    own = replica.verifier
    problem = follower.state.problem
    assert follower.state.status == "refused"
    assert problem is not None
    assert problem["own_key"] == f"{own.name}+{own.key_id.hex()}"
    assert problem["primary_key"] == f"elsewhere.example/log+{stranger.key_id.hex()}"
    assert event(logs, "replication.refused")["primary_key"] == problem["primary_key"]
    assert primary.requests["records"] == 0
    assert replica.count_records() == 3


def test_a_replica_holding_records_its_primary_lacks_stops(
    source: WORMLedger, replica: WORMLedger
) -> None:
    follower, primary, _ = run_against(replica, diverged, source=source, status=409)

    assert follower.state.status == "diverged"
    assert follower.state.problem is not None
    assert "409" in follower.state.problem["reason"]
    assert primary.requests["records"] == 1


def test_an_answer_of_the_wrong_shape_is_retried_not_applied(
    source: WORMLedger, replica: WORMLedger
) -> None:
    def wrong_shape(body: Body) -> Body:
        body["records"][0]["seq"] = "three"
        return body

    follower, primary, logs = run_against(
        replica, lambda f: f.state.failures >= 2, source=source, tamper=wrong_shape
    )

    failure = event(logs, "replication.fetch_failed")
    assert "records.0.seq" in failure["error"]
    assert follower.state.status == "following"
    assert primary.requests["records"] >= 2
    assert replica.count_records() == 3
