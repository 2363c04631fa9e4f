"""Every Prometheus metric PENIN-Ω exports, defined once here with its meaning.

All names start with ``penin_`` except the two that the deployment guide's
alerts already use: ``penin_errors_total`` (which has the prefix anyway) and
``worm_replication_lag_seconds``. docs/metrics.md lists the same names; a test
keeps the two in step.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

# The *_created series double every counter's output and no alert uses them.
disable_created_metrics()  # type: ignore[no-untyped-call]

REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(namespace="penin", registry=REGISTRY)

ERROR_COMPONENTS = ("http", "checkpoint", "verify")

_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip


class LedgerMetrics:
    """What the ledger's writer and checkpointer report."""

    def __init__(self) -> None:
        self.appends = Counter(
            "penin_ledger_appends_total",
            "Records appended to the ledger.",
            registry=REGISTRY,
        )
        self.batch_size = Histogram(
            "penin_ledger_fsync_batch_records",
            "Records written per transaction and fsync (group commit).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=REGISTRY,
        )
        self.checkpoint_time = Gauge(
            "penin_ledger_checkpoint_timestamp_seconds",
            "Unix time at which the newest checkpoint was signed (0: none yet).",
            registry=REGISTRY,
        )
        self.checkpoint_tree_size = Gauge(
            "penin_ledger_checkpoint_tree_size",
            "Tree size the newest checkpoint signs (0: none yet).",
            registry=REGISTRY,
        )

    def observe_batch(self, records: int) -> None:
        """A committed transaction that appended ``records`` new records."""
        self.appends.inc(records)
        self.batch_size.observe(records)


class NodeMetrics:
    """What the HTTP node reports about itself, its requests and its ledger."""

    def __init__(self) -> None:
        self.requests = Counter(
            "penin_http_requests_total",
            "HTTP requests answered, by route template, method and status.",
            ["route", "method", "status"],
            registry=REGISTRY,
        )
        self.latency = Histogram(
            "penin_http_request_duration_seconds",
            "Time from request start to the last response byte.",
            ["route", "method"],
            buckets=_LATENCY_BUCKETS,
            registry=REGISTRY,
        )
        self.errors = Counter(
            "penin_errors_total",
            "Failed operations: 5xx answers (except the 503s of health and role "
            "probes) and failed background work, by component.",
            ["component"],
            registry=REGISTRY,
        )
        for component in ERROR_COMPONENTS:
            # Present from the start, so that rate() sees the first error.
            self.errors.labels(component)
        self.ledger_records = Gauge(
            "penin_ledger_records",
            "Records in the ledger (its tree size).",
            registry=REGISTRY,
        )
        self.checkpoint_age = Gauge(
            "penin_ledger_checkpoint_age_seconds",
            "Seconds since the newest checkpoint was signed.",
            registry=REGISTRY,
        )
        self.verification_failed = Gauge(
            "penin_ledger_verification_failed",
            "1 when the last full verification of the ledger failed, else 0.",
            registry=REGISTRY,
        )
        self.disk_free = Gauge(
            "penin_data_dir_free_bytes",
            "Free bytes on the file system that holds the data directory.",
            registry=REGISTRY,
        )
        self.disk_size = Gauge(
            "penin_data_dir_size_bytes",
            "Total bytes of the file system that holds the data directory.",
            registry=REGISTRY,
        )
        self.health_check = Gauge(
            "penin_health_check_ok",
            "1 when the named /health check passed at its last run, else 0.",
            ["check"],
            registry=REGISTRY,
        )
        self.replication_lag = Gauge(
            "worm_replication_lag_seconds",
            "Seconds a replica's ledger is behind the primary's (no samples "
            "on a single node).",
            ["replica"],
            registry=REGISTRY,
        )


LEDGER_METRICS = LedgerMetrics()
NODE_METRICS = NodeMetrics()


def render() -> bytes:
    return generate_latest(REGISTRY)
