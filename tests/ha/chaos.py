"""The chaos scenarios' tools: a cluster whose members may reach etcd each
their own way, writers that say who acknowledged what in which term, and the
checks every scenario ends with.

A scenario runs an ``ElectedCluster`` in sync mode under load, injects one
fault and lets the cluster recover. ``settle`` then waits until every running
member holds the primary's log, and the ``check_*`` functions assert what a
client and an auditor rely on: no acknowledged write is lost, one node
acknowledges per term and terms only rise, every ledger verifies and all
their checkpoints are consistent (RFC 9162 consistency proofs).
"""

from __future__ import annotations

import bisect
import itertools
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from elected_cluster import RECOVERY_BOUND_S, Ack, ElectedCluster

from harness import bearer, wait_for
from penin.ledger import merkle
from penin.ledger.ledger import WORMLedger
from penin.ledger.note import Checkpoint, open_checkpoint

# Generous bounds: the machine is shared, so timings are recorded, not judged.
SETTLE_S = 30.0


# -- a cluster whose members reach etcd each their own way --------------------------


class ChaosCluster(ElectedCluster):
    """An ElectedCluster whose members may each have their own etcd endpoints,
    and sign checkpoints often, so that every term leaves some behind."""

    def __init__(
        self,
        root: Path,
        etcd_endpoints: list[str],
        names: tuple[str, ...] = ("n1", "n2", "n3"),
        *,
        endpoints_of: dict[str, list[str]] | None = None,
        checkpoint_interval_s: float = 0.5,
        **cluster: Any,
    ) -> None:
        super().__init__(root, etcd_endpoints, names, **cluster)
        self.endpoints_of = endpoints_of or {}
        self.checkpoint_interval_s = checkpoint_interval_s

    def settings(self, name: str) -> dict[str, Any]:
        endpoints = self.endpoints_of.get(name, self.etcd_endpoints)
        return {
            **super().settings(name),
            "cluster": {**self.cluster_section, "etcd_endpoints": endpoints},
            "ledger": {"checkpoint_interval_s": self.checkpoint_interval_s},
        }

    def ledger_path(self, name: str) -> Path:
        return self.data_dir(name) / "ledger.db"

    def quarantined(self, name: str) -> list[Path]:
        """The ledgers this member moved aside when it rejoined."""
        return sorted((self.data_dir(name) / "quarantine").glob("*/ledger.db"))

    def status(self, name: str, token: str) -> dict[str, Any]:
        """GET /v1/cluster on ``name``."""
        answer = httpx.get(
            f"{self.url(name)}/v1/cluster", headers=bearer(token), timeout=5.0
        )
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()

        return body

    def wait_not_primary(self, name: str, timeout: float = RECOVERY_BOUND_S) -> float:
        """Seconds until ``name`` stops answering /primary with 200."""
        started = time.monotonic()

        def stepped_down() -> bool:
            try:
                answer = httpx.get(f"{self.url(name)}/primary", timeout=1.0)
            except httpx.TransportError:
                return False
            return answer.status_code != 200

        wait_for(stepped_down, timeout, f"{name} to stop answering as the primary")

        return time.monotonic() - started


# -- writers -----------------------------------------------------------------------


# -- what a scenario measures ------------------------------------------------------


def first_ack_after(
    acks: Sequence[Ack], fault_at: float, *, term_above: int = 0
) -> float:
    """Seconds from the fault to the first acknowledgement of a request sent
    after it (in a term above ``term_above``, for a failover)."""
    after = [a.received for a in acks if a.sent >= fault_at and a.term > term_above]
    assert after, f"no write acknowledged after the fault (term > {term_above})"

    return min(after) - fault_at


def longest_pause(acks: Sequence[Ack], since: float) -> float:
    """The longest time without an acknowledgement after ``since``."""
    times = [since, *sorted(a.received for a in acks if a.received >= since)]
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]

    return max(gaps, default=0.0)


def record_times(scenario: str, **figures: float) -> None:
    """Print a scenario's times; append them to $PENIN_CHAOS_TIMES if set."""
    rounded = {name: round(value, 3) for name, value in figures.items()}
    print(f"chaos {scenario}: {rounded}")
    target = os.environ.get("PENIN_CHAOS_TIMES")
    if target:
        with Path(target).open("a") as out:
            out.write(json.dumps({"scenario": scenario, **rounded}) + "\n")


# -- the end of every scenario -------------------------------------------------------


def settle(cluster: ChaosCluster) -> str:
    """Wait until one member leads and every running member holds its log;
    the primary's name."""
    primary = cluster.wait_for_primary(timeout=SETTLE_S)
    replicas = [name for name in cluster.alive() if name != primary]
    cluster.wait_following(*replicas, timeout=SETTLE_S)
    cluster.wait_until_identical(primary, *replicas, timeout=SETTLE_S)

    return primary


def check_none_lost(cluster: ChaosCluster, primary: str, acks: Sequence[Ack]) -> None:
    """Every acknowledged record sits at its seq in the primary's log."""
    held = cluster.leaf_hashes(primary)
    lost = [a for a in acks if a.seq >= len(held) or held[a.seq] != a.leaf_hash]

    assert acks
    assert lost == [], f"{len(lost)} acknowledged writes are not on {primary}"


def check_terms_rise(cluster: ChaosCluster, primary: str) -> None:
    """Along the primary's log, the term of the records never falls."""
    terms = [row[4] for row in cluster.rows(primary)]

    assert terms == sorted(terms)


def check_one_node_per_term(acks: Sequence[Ack]) -> None:
    """Each term's writes were acknowledged by one member, and no request
    was acknowledged in a lower term than one acknowledged before it was sent.

    Replays are left out: they answer with the term of a record written
    earlier, which the new primary may hold from its predecessor.
    """
    fresh = sorted((a for a in acks if not a.replayed), key=lambda a: a.received)
    nodes_of: dict[int, set[str]] = {}
    for ack in fresh:
        nodes_of.setdefault(ack.term, set()).add(ack.node)
    shared = {term: nodes for term, nodes in nodes_of.items() if len(nodes) > 1}
    assert shared == {}, f"terms acknowledged by more than one member: {shared}"

    received = [a.received for a in fresh]
    highest = list(itertools.accumulate((a.term for a in fresh), max))
    for ack in fresh:
        before = bisect.bisect_left(received, ack.sent)
        if before:
            assert ack.term >= highest[before - 1], (
                f"{ack.node} acknowledged seq {ack.seq} in term {ack.term} after "
                f"term {highest[before - 1]} was acknowledged"
            )


@dataclass(frozen=True)
class _Head:
    name: str
    leaves: list[str]
    checkpoint: Checkpoint


def check_ledgers(cluster: ChaosCluster) -> None:
    """With every member stopped: each member's ledger verifies, and for each
    pair, the smaller newest checkpoint's tree is a prefix of the larger's,
    proven by an RFC 9162 consistency proof from the larger ledger."""
    cluster.stop_all()
    heads: dict[str, _Head] = {}
    ledgers: dict[str, WORMLedger] = {}
    try:
        for name in cluster.names:
            ledger = ledgers[name] = WORMLedger(cluster.ledger_path(name)).initialize()
            report = ledger.verify_integrity()
            assert report.ok, f"{name}: {report.to_dict()}"
            for copy in cluster.quarantined(name):
                _check_verifies(copy)
            note = ledger.latest_checkpoint()
            assert note is not None, f"{name} holds no checkpoint"
            heads[name] = _Head(
                name, cluster.leaf_hashes(name), open_checkpoint(note, ledger.verifier)
            )
        for one, other in itertools.combinations(heads.values(), 2):
            small, large = sorted((one, other), key=lambda h: h.checkpoint.tree_size)
            _check_extends(small, large, ledgers[large.name])
    finally:
        for ledger in ledgers.values():
            ledger.close()


def _check_verifies(path: Path) -> None:
    with WORMLedger(path) as ledger:
        report = ledger.verify_integrity()

    assert report.ok, f"{path}: {report.to_dict()}"


def _check_extends(small: _Head, large: _Head, ledger: WORMLedger) -> None:
    old, new = small.checkpoint.tree_size, large.checkpoint.tree_size
    assert small.leaves[:old] == large.leaves[:old], (
        f"{small.name}'s first {old} records differ from {large.name}'s"
    )
    proof = ledger.consistency_proof(old, new)

    assert merkle.verify_consistency(
        old, new, small.checkpoint.root, large.checkpoint.root, proof.hashes
    ), f"{large.name}'s checkpoint at {new} does not extend {small.name}'s at {old}"
