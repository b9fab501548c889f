//! What the service reports to the `metrics` facade, and the catalog of every metric any
//! `flyrtech` process exports. Recording is free when no recorder is installed (the lab, the
//! tests); `serve` installs a Prometheus recorder and exposes it on `GET /metrics`, as `relay` and
//! `project` do on `--metrics-listen`.
//!
//! [`CATALOG`] is the one list: each metric's name, type, labels, help text and the processes
//! that export it. [`describe`] gives Prometheus the help texts (`promtool check metrics` finds
//! nothing to say about `/metrics`), docs/operations.md prints it, and the suite checks that
//! every family a process exports is in it and that every metric the alert rules
//! (`deploy/prometheus/alerts.yml`) and the dashboard (`deploy/grafana/flyrtech.json`) name is
//! one of them.
//!
//! Also [`trace_context`]: the W3C `traceparent` a change carries from the request to the
//! projection row.
//!
//! # What it may import
//! The core crate only: every other room records through it.

pub mod health;
pub mod trace_context;

use flyrtech_core::{StoreError, UpdateOutcome};
use std::sync::OnceLock;

use metrics::{
    Counter, Histogram, counter, describe_counter, describe_gauge, describe_histogram, gauge,
    histogram,
};

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (name ends in `_total`).
    Counter,
    /// Goes up and down.
    Gauge,
    /// Samples in buckets (`_bucket`, `_sum`, `_count`).
    Histogram,
}

/// One exported metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    /// Its name, the unit in it (`_seconds`, `_entries`).
    pub name: &'static str,
    /// Its type.
    pub kind: Kind,
    /// Its labels, comma-separated; empty for none.
    pub labels: &'static str,
    /// The processes that export it.
    pub exported_by: &'static str,
    /// The help text.
    pub help: &'static str,
}

const fn metric(
    name: &'static str,
    kind: Kind,
    labels: &'static str,
    exported_by: &'static str,
    help: &'static str,
) -> Metric {
    Metric {
        name,
        kind,
        labels,
        exported_by,
        help,
    }
}

/// Every metric a `flyrtech` process exports.
pub const CATALOG: &[Metric] = &[
    metric(
        "http_requests_total",
        Kind::Counter,
        "method, route, status",
        "serve",
        "HTTP requests answered, by method, route template (or unmatched) and status.",
    ),
    metric(
        "http_request_duration_seconds",
        Kind::Histogram,
        "method, route, status",
        "serve",
        "Time from a request's arrival to its response, by method, route template and status.",
    ),
    metric(
        "http_connections_open",
        Kind::Gauge,
        "",
        "serve",
        "HTTP connections open now.",
    ),
    metric(
        "http_connections_refused_total",
        Kind::Counter,
        "",
        "serve",
        "HTTP connections closed at once because the connection limit was reached.",
    ),
    metric(
        "http_connections_refused_per_client_total",
        Kind::Counter,
        "",
        "serve",
        "HTTP connections closed at once because their client address held its share of the limit.",
    ),
    metric(
        "http_rate_limit_overflow_total",
        Kind::Counter,
        "",
        "serve",
        "Requests limited as one shared client because the rate limiter tracked its most clients.",
    ),
    metric(
        "http_quota_refused_total",
        Kind::Counter,
        "quota",
        "serve",
        "Requests refused because a client's quota was spent: journeys, cache or outbox.",
    ),
    metric(
        "journey_updates_total",
        Kind::Counter,
        "strategy, outcome",
        "serve",
        "Journey updates by strategy and outcome: applied, unchanged, or the error kind (conflict, not_replicated, unavailable, ...).",
    ),
    metric(
        "journey_update_attempts",
        Kind::Histogram,
        "strategy",
        "serve",
        "Tries per journey update, the one that succeeded or gave up included.",
    ),
    metric(
        "journey_update_conflicts_total",
        Kind::Counter,
        "strategy",
        "serve",
        "Update tries lost to a concurrent writer: a WATCH abort, a lock held, a fencing refusal.",
    ),
    metric(
        "journey_lock_wait_seconds",
        Kind::Histogram,
        "strategy",
        "serve",
        "Time spent acquiring a journey's lock (redlock, local-lock).",
    ),
    metric(
        "redis_errors_total",
        Kind::Counter,
        "kind",
        "serve, relay",
        "Redis calls that failed: timeout, connection, cluster, reply.",
    ),
    metric(
        "redis_reachable",
        Kind::Gauge,
        "",
        "serve, relay",
        "1 when the last periodic outbox measurement reached every primary, 0 when it failed.",
    ),
    metric(
        "redis_cluster_reconnects_total",
        Kind::Counter,
        "",
        "serve, relay",
        "Times the shared Redis Cluster connection was rebuilt from the seeds because its commands kept timing out (a primary silent, a node at a new address).",
    ),
    metric(
        "dependency_reachable",
        Kind::Gauge,
        "dependency",
        "relay, project",
        "1 while the dependency (redis, nats, postgres) answered its last use, 0 while a worker waits to reach it again.",
    ),
    metric(
        "redis_wait_seconds",
        Kind::Histogram,
        "",
        "serve",
        "Time a write's WAIT or WAITAOF for replicas took (--wait-replicas, --wait-aof).",
    ),
    metric(
        "redis_wait_timeouts_total",
        Kind::Counter,
        "",
        "serve",
        "WAITs that ended with fewer replicas than required: the writes were answered 503.",
    ),
    metric(
        "redis_wait_refusals_total",
        Kind::Counter,
        "",
        "serve",
        "Writes refused without being sent, their primary known to lack replicas.",
    ),
    metric(
        "outbox_backlog_entries",
        Kind::Gauge,
        "",
        "serve, relay",
        "Outbox entries not yet published and acknowledged, all shards.",
    ),
    metric(
        "outbox_backlog_oldest_age_seconds",
        Kind::Gauge,
        "",
        "serve, relay",
        "Age of the oldest outbox entry not yet published; 0 when the outbox is empty.",
    ),
    metric(
        "outbox_backlog_hard_cap_entries",
        Kind::Gauge,
        "",
        "serve",
        "The backlog at which serve refuses writes (--outbox-hard-cap); absent when off.",
    ),
    metric(
        "outbox_backlog_stale_after_seconds",
        Kind::Gauge,
        "",
        "serve",
        "The oldest entry's age beyond which /ready names a relay that is not keeping up.",
    ),
    metric(
        "outbox_published_total",
        Kind::Counter,
        "",
        "relay",
        "Changes the relay published to the bus.",
    ),
    metric(
        "outbox_redelivered_total",
        Kind::Counter,
        "",
        "relay",
        "Changes published again after an earlier delivery (at least once).",
    ),
    metric(
        "outbox_parked_total",
        Kind::Counter,
        "",
        "relay",
        "Poison entries parked after too many deliveries.",
    ),
    metric(
        "outbox_publish_failures_total",
        Kind::Counter,
        "",
        "relay",
        "Batches the bus did not accept.",
    ),
    metric(
        "outbox_unconfirmed_batches_total",
        Kind::Counter,
        "",
        "relay",
        "Batches held because too few replicas confirmed them (--wait-replicas, --wait-aof).",
    ),
    metric(
        "bus_trimmed_over_cap_total",
        Kind::Counter,
        "",
        "relay",
        "Event-stream entries trimmed past the hard cap, read by every consumer group or not.",
    ),
    metric(
        "projector_changes_total",
        Kind::Counter,
        "outcome",
        "project",
        "Changes the projector received, by outcome: applied, held, duplicate, replaced (applied in place of a change at its version), superseded (applied, then undone).",
    ),
    metric(
        "projector_lag_seconds",
        Kind::Histogram,
        "",
        "project",
        "Time from a change's commit in Redis to its commit in PostgreSQL.",
    ),
    metric(
        "projector_gap_fills_total",
        Kind::Counter,
        "",
        "project",
        "Changes the bus' consumer never delivered, read from the stream by the changes held behind them.",
    ),
    metric(
        "projector_owned_partitions",
        Kind::Gauge,
        "",
        "project",
        "Bus partitions this projector holds the lease of.",
    ),
    metric(
        "audit_lost_updates",
        Kind::Gauge,
        "",
        "audit --metrics-file",
        "Lost updates the last audit found.",
    ),
    metric(
        "audit_version_gaps",
        Kind::Gauge,
        "",
        "audit --metrics-file",
        "Version gaps the last audit found.",
    ),
    metric(
        "audit_projection_differences",
        Kind::Gauge,
        "",
        "audit --metrics-file",
        "Differences between the projection and the stored journeys the last projection audit found.",
    ),
    metric(
        "audit_last_run_timestamp_seconds",
        Kind::Gauge,
        "",
        "audit --metrics-file",
        "When the last audit finished (Unix time).",
    ),
];

/// The catalog entry of `name`, a family name or a histogram's series (`_bucket`, `_sum`,
/// `_count`).
pub fn cataloged(name: &str) -> Option<&'static Metric> {
    let base = ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| {
            name.strip_suffix(suffix).filter(|base| {
                CATALOG
                    .iter()
                    .any(|m| m.name == *base && m.kind == Kind::Histogram)
            })
        })
        .unwrap_or(name);
    CATALOG.iter().find(|m| m.name == base)
}

/// Gives the installed recorder every metric's help text.
pub fn describe() {
    for m in CATALOG {
        match m.kind {
            Kind::Counter => describe_counter!(m.name, m.help),
            Kind::Gauge => describe_gauge!(m.name, m.help),
            Kind::Histogram => describe_histogram!(m.name, m.help),
        }
    }
}

/// Records whether the last periodic measurement reached Redis.
pub(crate) fn redis_reachable(reached: bool) {
    gauge!("redis_reachable").set(if reached { 1.0 } else { 0.0 });
}

/// One store's update metrics. The handles of what nearly every update records (its outcome
/// when it applied or changed nothing, its attempts, its lock wait) are made on the store's first
/// update, from the recorder installed by then, and kept: the common update costs two atomic adds
/// and two histogram samples instead of three registry lookups. Rarer outcomes go through the
/// registry as before.
#[derive(Debug)]
pub(crate) struct UpdateTelemetry {
    strategy: &'static str,
    takes_lock: bool,
    hot: OnceLock<Hot>,
}

#[derive(Debug)]
struct Hot {
    applied: Counter,
    unchanged: Counter,
    attempts: Histogram,
    /// For the strategies that take a lock only.
    lock_wait: Option<Histogram>,
}

impl UpdateTelemetry {
    /// The metrics of a store writing with `strategy` (`takes_lock`: it records lock waits).
    pub(crate) fn new(strategy: &'static str, takes_lock: bool) -> Self {
        Self {
            strategy,
            takes_lock,
            hot: OnceLock::new(),
        }
    }

    fn hot(&self) -> &Hot {
        let name = self.strategy;
        let takes_lock = self.takes_lock;
        self.hot.get_or_init(|| Hot {
            applied: counter!("journey_updates_total", "strategy" => name, "outcome" => "applied"),
            unchanged: counter!("journey_updates_total", "strategy" => name, "outcome" => "unchanged"),
            attempts: histogram!("journey_update_attempts", "strategy" => name),
            lock_wait: takes_lock
                .then(|| histogram!("journey_lock_wait_seconds", "strategy" => name)),
        })
    }

    /// Records one update's result.
    pub(crate) fn update(&self, result: &Result<UpdateOutcome, StoreError>) {
        let name = self.strategy;
        let hot = self.hot();
        let (attempts, conflicts) = match result {
            Ok(o) => {
                if let Some(lock_wait) = &hot.lock_wait {
                    lock_wait.record(o.lock_wait.as_secs_f64());
                }
                if o.changed {
                    hot.applied.increment(1);
                } else {
                    hot.unchanged.increment(1);
                }
                (o.attempts, o.attempts.saturating_sub(1))
            }
            Err(e) => {
                let (outcome, attempts, conflicts) = match e {
                    StoreError::Conflict { attempts } => ("conflict", *attempts, *attempts),
                    e => (e.kind(), 1, 0),
                };
                counter!("journey_updates_total", "strategy" => name, "outcome" => outcome)
                    .increment(1);
                (attempts, conflicts)
            }
        };
        hot.attempts.record(f64::from(attempts));
        if conflicts > 0 {
            counter!("journey_update_conflicts_total", "strategy" => name)
                .increment(u64::from(conflicts));
        }
    }
}

pub(crate) fn redis_error(kind: &'static str) {
    counter!("redis_errors_total", "kind" => kind).increment(1);
}

/// Records one `WAIT` for replicas.
pub(crate) fn replica_wait(elapsed: std::time::Duration, satisfied: bool) {
    histogram!("redis_wait_seconds").record(elapsed.as_secs_f64());
    if !satisfied {
        counter!("redis_wait_timeouts_total").increment(1);
    }
}

/// Records one write refused at once: its primary is known to lack replicas.
pub(crate) fn replica_refusal() {
    counter!("redis_wait_refusals_total").increment(1);
}

/// Records entries trimmed from the event stream past its hard cap.
pub(crate) fn bus_trimmed_over_cap(entries: u64) {
    counter!("bus_trimmed_over_cap_total").increment(entries);
}
