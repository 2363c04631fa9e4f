"""Every Prometheus metric PENIN-Ω exports, defined once here with its meaning.

docs/metrics.md lists the same names; a test keeps the two in step.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram


class LedgerMetrics:
    """What the ledger's writer and checkpointer report."""

    def __init__(self) -> None:
        self.appends = Counter(
            "penin_ledger_appends_total", "Records appended to the ledger."
        )
        self.batch_size = Histogram(
            "penin_ledger_fsync_batch_records",
            "Records written per transaction and fsync (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
        )
        self.checkpoint_time = Gauge(
            "penin_ledger_checkpoint_timestamp_seconds",
            "Unix time at which the newest checkpoint was signed.",
        )

    def observe_batch(self, records: int) -> None:
        self.appends.inc(records)
        self.batch_size.observe(records)


LEDGER_METRICS = LedgerMetrics()
