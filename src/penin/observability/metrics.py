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

ERROR_COMPONENTS = ("http", "checkpoint", "verify", "router", "cache")

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


class ReplicationMetrics:
    """What the members of a cluster report about their role and replication.

    The lag gauges are measured on the primary, from the position each replica
    last asked from (docs/metrics.md says exactly how).
    """

    def __init__(self) -> None:
        self.lag_seconds = Gauge(
            "worm_replication_lag_seconds",
            "On the primary: how long the oldest record a replica has not yet "
            "confirmed has been in the primary's ledger; 0 when it has them all.",
            ["replica"],
            registry=REGISTRY,
        )
        self.lag_records = Gauge(
            "penin_replication_lag_records",
            "On the primary: records in its ledger that a replica has not yet "
            "confirmed.",
            ["replica"],
            registry=REGISTRY,
        )
        self.diverged = Gauge(
            "penin_replication_diverged",
            "1 while this replica has stopped applying because what the primary "
            "sent does not verify, else 0.",
            registry=REGISTRY,
        )
        self.role = Gauge(
            "penin_ha_role",
            "1 for this member's current role (primary or replica), 0 for the "
            "other; no samples on a single node.",
            ["role"],
            registry=REGISTRY,
        )

        self.term = Gauge(
            "penin_ha_term",
            "The leader term this member last knew: the primary's own while it "
            "leads, the term of the records it applies on a replica.",
            registry=REGISTRY,
        )
        self.failovers = Counter(
            "penin_failovers_total",
            "Times this member took the lead in a new term (automatic failover "
            "or switchover).",
            ["reason"],
            registry=REGISTRY,
        )
        self.sync_replicas = Gauge(
            "penin_sync_replicas",
            "On the primary in sync mode: replicas in the published sync set, "
            "each of which stores every record before it is acknowledged.",
            registry=REGISTRY,
        )
        self.sync_degraded = Gauge(
            "penin_sync_degraded",
            "On the primary with sync_fallback: async: 1 while no synchronous "
            "replica is left and writes are acknowledged without one.",
            registry=REGISTRY,
        )
        self.lease_renew = Histogram(
            "penin_ha_lease_renew_seconds",
            "Time to renew the leader lease at the coordinator, on the primary.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=REGISTRY,
        )

    def set_role(self, role: str) -> None:
        for name in ("primary", "replica"):
            self.role.labels(name).set(1 if name == role else 0)


class RouterMetrics:
    """What the router reports about upstream calls, budgets and breakers."""

    def __init__(self) -> None:
        self.requests = Counter(
            "penin_router_requests_total",
            "Upstream calls, by provider, provider model and outcome (ok or the "
            "error kind).",
            ["provider", "model", "outcome"],
            registry=REGISTRY,
        )
        self.latency = Histogram(
            "penin_router_upstream_duration_seconds",
            "Time of a whole upstream call, by provider and provider model.",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=REGISTRY,
        )
        self.ttft = Histogram(
            "penin_router_time_to_first_token_seconds",
            "Time from sending a streaming call to its first chunk.",
            ["provider", "model"],
            buckets=_LATENCY_BUCKETS,
            registry=REGISTRY,
        )
        self.overhead = Histogram(
            "penin_router_overhead_seconds",
            "Time the node adds to a routed request: its whole time minus the "
            "upstream call's.",
            buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                     0.05, 0.1),
            registry=REGISTRY,
        )  # fmt: skip
        self.cost = Counter(
            "penin_router_cost_usd_total",
            "USD spent upstream, by provider model; estimated costs included.",
            ["provider", "model"],
            registry=REGISTRY,
        )
        self.budget_remaining = Gauge(
            "penin_budget_remaining_usd",
            "USD left today (UTC) under the daily budget (scope global), after "
            "reservations in flight.",
            ["scope"],
            registry=REGISTRY,
        )
        self.budget_soft = Counter(
            "penin_budget_soft_limit_total",
            "Requests routed to the cheapest deployment because a budget passed "
            "its soft limit.",
            ["scope"],
            registry=REGISTRY,
        )
        self.budget_refused = Counter(
            "penin_budget_refused_total",
            "Requests refused with 429 because a hard budget limit was reached.",
            ["scope"],
            registry=REGISTRY,
        )
        self.circuit_state = Gauge(
            "penin_router_circuit_state",
            "Circuit breaker of a deployment: 0 closed, 1 half-open, 2 open.",
            ["deployment"],
            registry=REGISTRY,
        )
        # From start-up at 0, so that increase() sees the first one.
        for scope in ("global", "key"):
            self.budget_soft.labels(scope)
            self.budget_refused.labels(scope)


class CacheMetrics:
    """What the response cache reports, by level (l1 in process, l2 Redis)."""

    def __init__(self) -> None:
        self.hits = Counter(
            "penin_cache_hits_total",
            "Responses served from the cache, by level.",
            ["level"],
            registry=REGISTRY,
        )
        self.misses = Counter(
            "penin_cache_misses_total",
            "Cache look-ups that found nothing servable, by level.",
            ["level"],
            registry=REGISTRY,
        )
        self.integrity_failures = Counter(
            "penin_cache_integrity_failures_total",
            "Cached values whose HMAC seal did not verify; each was a miss.",
            ["level"],
            registry=REGISTRY,
        )
        self.invalidations = Counter(
            "penin_cache_invalidations_total",
            "Invalidations heard on Redis and applied to this node's L1, by kind.",
            ["kind"],
            registry=REGISTRY,
        )
        self.l2_up = Gauge(
            "penin_cache_l2_up",
            "1 while the L2 cache (Redis) answers, 0 while it does not.",
            registry=REGISTRY,
        )
        for kind in ("key", "all"):
            self.invalidations.labels(kind)
        for level in ("l1", "l2"):
            self.hits.labels(level)
            self.misses.labels(level)
            self.integrity_failures.labels(level)


# Distinct policy paths that get series of their own; later ones are "other".
POLICY_PATH_SERIES = 64


class PolicyMetrics:
    """What the policy engine reports about its decisions and reloads."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.decisions = Counter(
            "penin_policy_decisions_total",
            "Policy decisions, by policy path and outcome (allow or deny).",
            ["path", "outcome"],
            registry=registry,
        )
        self.failures = Counter(
            "penin_policy_failures_total",
            "Policy evaluations that failed and so denied, by path and reason.",
            ["path", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "penin_policy_evaluation_seconds",
            "Time of one policy decision, input canonicalisation included.",
            ["path"],
            buckets=(0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001,
                     0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )  # fmt: skip
        self.reloads = Counter(
            "penin_policy_reloads_total",
            "Policy set reloads, by outcome: loaded, or refused (the old set "
            "kept serving).",
            ["outcome"],
            registry=registry,
        )
        for outcome in ("loaded", "refused"):
            self.reloads.labels(outcome)
        self._by_path: dict[str, tuple[Counter, Counter, Histogram]] = {}

    def path_label(self, path: str) -> str:
        """``path`` as a label, or "other" once POLICY_PATH_SERIES paths have
        series: an admin may ask any path, and must not mint series by it."""
        if path in self._by_path or len(self._by_path) < POLICY_PATH_SERIES:
            return path

        return "other"

    def decided(self, path: str, allowed: bool, seconds: float) -> None:
        """One decision at ``path``; its series are looked up once per path."""
        path = self.path_label(path)
        series = self._by_path.get(path)
        if series is None:
            series = (
                self.decisions.labels(path, "allow"),
                self.decisions.labels(path, "deny"),
                self.duration.labels(path),
            )
            self._by_path[path] = series
        (series[0] if allowed else series[1]).inc()
        series[2].observe(seconds)


LEDGER_METRICS = LedgerMetrics()
NODE_METRICS = NodeMetrics()
REPLICATION_METRICS = ReplicationMetrics()
ROUTER_METRICS = RouterMetrics()
CACHE_METRICS = CacheMetrics()
POLICY_METRICS = PolicyMetrics()


def render() -> bytes:
    return generate_latest(REGISTRY)
