//! What the store reports to the `metrics` facade. Recording is free when no recorder is
//! installed (the lab, the tests); `flyrtech serve` installs a Prometheus recorder and exposes
//! these on `GET /metrics`.
//!
//! | metric | type | labels | meaning |
//! |---|---|---|---|
//! | `journey_updates_total` | counter | `strategy`, `outcome` | every update: `applied`, `unchanged`, or the error kind ([`StoreError::kind`]) |
//! | `journey_update_attempts` | histogram | `strategy` | tries per update, including the one that succeeded or gave up |
//! | `journey_update_conflicts_total` | counter | `strategy` | tries lost to a concurrent writer (WATCH abort, lock held, fencing refusal) |
//! | `journey_lock_wait_seconds` | histogram | `strategy` | time spent acquiring the lock (`redlock`, `local-lock`) |
//! | `redis_errors_total` | counter | `kind` | Redis calls that failed: `timeout`, `connection`, `cluster`, `reply` |
//! | `redis_wait_seconds` | histogram | — | how long `WAIT` for replicas took (`--wait-replicas`) |
//! | `redis_wait_timeouts_total` | counter | — | `WAIT`s that ended with fewer replicas than required |
//! | `bus_trimmed_over_cap_total` | counter | — | event-stream entries trimmed past the hard cap, read by every consumer group or not |
//! | `redis_wait_refusals_total` | counter | — | writes refused without sending, their primary known to lack replicas |

use flyrtech_core::{StoreError, UpdateOutcome};
use std::sync::OnceLock;

use metrics::{Counter, Histogram, counter, histogram};

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
