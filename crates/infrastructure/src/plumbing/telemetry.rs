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
use metrics::{counter, histogram};

/// Records one finished update by the strategy `name` (`takes_lock`: it waits for a lock).
pub(crate) fn update(
    name: &'static str,
    takes_lock: bool,
    result: &Result<UpdateOutcome, StoreError>,
) {
    let (outcome, attempts, conflicts) = match result {
        Ok(o) => {
            if takes_lock {
                histogram!("journey_lock_wait_seconds", "strategy" => name)
                    .record(o.lock_wait.as_secs_f64());
            }
            let outcome = if o.changed { "applied" } else { "unchanged" };
            (outcome, o.attempts, o.attempts.saturating_sub(1))
        }
        Err(StoreError::Conflict { attempts }) => ("conflict", *attempts, *attempts),
        Err(e) => (e.kind(), 1, 0),
    };
    counter!("journey_updates_total", "strategy" => name, "outcome" => outcome).increment(1);
    histogram!("journey_update_attempts", "strategy" => name).record(f64::from(attempts));
    if conflicts > 0 {
        counter!("journey_update_conflicts_total", "strategy" => name)
            .increment(u64::from(conflicts));
    }
}

/// Records one failed Redis call.
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
