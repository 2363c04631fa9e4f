"""Moving a ledger aside that holds records the primary never had.

A former primary can hold records it wrote but never acknowledged (its
lease ran out, or the replicas never confirmed them). They are not merged
into the new primary's log and not deleted: the whole file moves to
``<data dir>/quarantine/<UTC time>/`` with a ``quarantine.json`` that says
what it held and why it was moved, and the node rebuilds its ledger from the
primary. An operator can read the quarantined copy with every ``penin
ledger`` command (``--data-dir`` pointing at it), and compare it with the
primary's log. Once the member follows a primary again, it reports each
quarantine to it (``POST /v1/replication/quarantined``), and the primary
records it in the log as ``ha.quarantined``: node, time, tree size, root,
last term and reason.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import structlog

from penin.ledger.backup import fsync_path
from penin.ledger.ledger import WORMLedger

log = structlog.get_logger("penin.ha")

MANIFEST = "quarantine.json"
# Beside the manifest once the primary has recorded the quarantine.
REPORTED = "reported"
# The record the primary appends for each quarantine a member reports.
QUARANTINED = "ha.quarantined"
_SUFFIXES = ("", "-wal", "-shm")


def quarantine(ledger: WORMLedger, reason: dict[str, Any]) -> dict[str, Any]:
    """Close ``ledger``, move its files aside with a manifest; the manifest.

    The key file stays where it is: it is the cluster's, and the rebuilt
    ledger needs it.
    """
    count = ledger.count_records()
    manifest: dict[str, Any] = {
        "moved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "origin": ledger.origin,
        "tree_size": count,
        "root": ledger.root(count).hex() if count else None,
        "last_term": ledger.last_term,
        "reason": reason,
    }
    ledger.close()
    destination = _fresh_directory(ledger.path.parent / "quarantine")
    for suffix in _SUFFIXES:
        source = Path(f"{ledger.path}{suffix}")
        if source.exists():
            source.replace(destination / source.name)
    manifest["directory"] = str(destination)
    path = destination / MANIFEST
    with path.open("w") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    fsync_path(ledger.path.parent)
    log.warning(
        "replication.quarantined",
        directory=str(destination),
        tree_size=count,
        last_term=manifest["last_term"],
        reason=reason.get("reason"),
    )

    return manifest


def _fresh_directory(parent: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    for attempt in range(100):
        candidate = parent / (stamp if attempt == 0 else f"{stamp}-{attempt}")
        try:
            candidate.mkdir(parents=True)
        except FileExistsError:
            continue
        return candidate
    raise FileExistsError(f"no free quarantine directory under {parent}")


def unreported(data_dir: Path) -> list[Path]:
    """The quarantine directories under ``data_dir`` no primary has recorded yet."""
    found = sorted((data_dir / "quarantine").glob(f"*/{MANIFEST}"))
    return [path.parent for path in found if not (path.parent / REPORTED).exists()]


def report_of(directory: Path, node: str) -> dict[str, Any]:
    """What the primary records of the quarantine in ``directory``."""
    manifest = json.loads((directory / MANIFEST).read_text())
    reason = manifest.get("reason") or {}
    return {
        "node": node,
        "moved_at": manifest["moved_at"],
        "tree_size": manifest["tree_size"],
        "root": manifest.get("root"),
        "last_term": manifest["last_term"],
        "reason": str(reason.get("reason", reason))[:2000],
    }


def mark_reported(directory: Path) -> None:
    (directory / REPORTED).touch()
