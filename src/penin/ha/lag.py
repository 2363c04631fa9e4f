"""How far behind each replica is, measured on the primary.

A replica asks for the records after the last seq it has stored, so each of
its requests confirms that position. From it the primary computes, when
scraped:

- lag in records: records in its ledger after that position;
- lag in seconds: how long the oldest of those has been in its ledger (by the
  record's own ``ts``, written by this primary's clock), 0 when there are none.

A replica that stops asking keeps its last position, so its lag grows for as
long as the primary takes writes: a dead replica shows, as the alert on
``worm_replication_lag_seconds`` expects. Positions live in the primary's
memory; a restarted primary knows each replica again at its next request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from penin.ledger.errors import LedgerError
from penin.ledger.ledger import WORMLedger
from penin.ledger.record import parse_ts
from penin.observability.metrics import REPLICATION_METRICS


@dataclass(frozen=True)
class Position:
    """The last seq a replica confirmed, and when (Unix time)."""

    after_seq: int
    confirmed_at: float


class ReplicaPositions:
    """The positions the replicas of this primary confirmed, and their lag."""

    def __init__(self, ledger: WORMLedger) -> None:
        self._ledger = ledger
        self._positions: dict[str, Position] = {}
        self._lock = threading.Lock()

    def confirm(self, replica: str, after_seq: int) -> None:
        with self._lock:
            known = replica in self._positions
            self._positions[replica] = Position(after_seq, time.time())
        if not known:
            REPLICATION_METRICS.lag_records.labels(replica).set_function(
                lambda: self.lag_records(replica)
            )
            REPLICATION_METRICS.lag_seconds.labels(replica).set_function(
                lambda: self.lag_seconds(replica)
            )

    def confirmed(self) -> dict[str, int]:
        """The last seq each replica confirmed, by name (no lag is computed)."""
        with self._lock:
            return {name: p.after_seq for name, p in self._positions.items()}

    def lag_records(self, replica: str) -> int:
        position = self._positions.get(replica)
        if position is None:
            return 0

        return max(0, self._ledger.count_records() - 1 - position.after_seq)

    def lag_seconds(self, replica: str) -> float:
        position = self._positions.get(replica)
        if position is None:
            return 0.0
        try:
            record = self._ledger.get(position.after_seq + 1)
        except LedgerError:  # nothing after the position: caught up
            return 0.0

        return max(0.0, time.time() - parse_ts(record.ts).timestamp())

    def report(self) -> dict[str, dict[str, Any]]:
        """Every replica's position and lag, by name."""
        with self._lock:
            positions = dict(sorted(self._positions.items()))

        return {
            name: {
                "applied_seq": position.after_seq,
                "confirmed_at": position.confirmed_at,
                "lag_records": self.lag_records(name),
                "lag_seconds": round(self.lag_seconds(name), 3),
            }
            for name, position in positions.items()
        }

    def close(self) -> None:
        """Drop the replicas' series, which read a ledger about to be closed."""
        with self._lock:
            names, self._positions = list(self._positions), {}
        for name in names:
            for gauge in (
                REPLICATION_METRICS.lag_records,
                REPLICATION_METRICS.lag_seconds,
            ):
                gauge.remove(name)
