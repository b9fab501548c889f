//! The outbox's backlog, watched by whoever writes it: how many entries wait for the relay, how
//! old the oldest is, and whether the backlog has reached the cap beyond which writes stop.
//!
//! # The gap it closes
//! The outbox grows by one entry per acknowledged change and shrinks only when a relay publishes
//! it. With no relay running it grows silently (a million entries a minute at full rate) until
//! Redis' `maxmemory` refuses every write, journeys included, or the host runs out. A
//! [`BacklogWatch`] measures the backlog every [`BacklogLimits::every`] on a task of its own (two
//! pipelines per primary, off the request path), publishes it as the relay does (the
//! `outbox_backlog_entries` and `outbox_backlog_oldest_age_seconds` gauges), and answers two
//! questions from memory, at no cost to a request:
//! - [`BacklogWatch::stale`]: is the oldest entry older than [`BacklogLimits::stale_after`]? Then
//!   no relay is keeping up (`/ready` names it; it does not fail readiness, since every instance
//!   would fail at once and a relay outage would become a write outage);
//! - [`BacklogWatch::full`]: has the backlog reached [`BacklogLimits::hard_cap`]? Then the
//!   service refuses writes (503) rather than fill Redis: an acknowledged write is never lost,
//!   and a refused one can be retried once a relay has caught up.
//!
//! The answers are as old as the last measurement: between two, at most `every` × the write
//! rate entries can pass the cap. A failed measurement keeps the previous answer and is logged.
//!
//! [`depth`] is the one measurement of the backlog: the watch, the relay (which shards to sweep),
//! `backlog` and `soak` all read it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flyrtech_core::StoreError;

use futures::StreamExt;
use metrics::gauge;
use redis::Value;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;
use crate::keys::{OUTBOX_SHARDS, OutboxShard};

/// When a backlog is worth naming, and when writes stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BacklogLimits {
    /// An oldest entry older than this means no relay is keeping up.
    pub stale_after: Duration,
    /// Entries beyond which writes are refused; `None` never refuses.
    pub hard_cap: Option<u64>,
    /// How often the backlog is measured.
    pub every: Duration,
}

impl BacklogLimits {
    /// The default cap: 5,000,000 entries, about 1 GB of Redis memory (docs/reliability.md,
    /// "Resources"), several minutes at full write rate and days at a normal one.
    pub const DEFAULT_HARD_CAP: u64 = 5_000_000;
}

impl Default for BacklogLimits {
    /// One minute, [`Self::DEFAULT_HARD_CAP`], measured every second.
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(60),
            hard_cap: Some(Self::DEFAULT_HARD_CAP),
            every: Duration::from_secs(1),
        }
    }
}

/// The last measurement of the backlog, kept up to date by a task that stops when the watch is
/// dropped.
#[derive(Debug)]
pub struct BacklogWatch {
    limits: BacklogLimits,
    last: Arc<Last>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for BacklogWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What [`BacklogWatch::full`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full {
    /// Entries waiting at the last measurement.
    pub entries: u64,
    /// The cap.
    pub cap: u64,
}

impl BacklogWatch {
    /// Starts measuring `redis`' outbox every `limits.every`; the first measurement is taken
    /// before this returns, so a service never starts blind.
    pub async fn start(redis: Redis, limits: BacklogLimits) -> Self {
        // The limits, beside the measurements, for the alert rules to compare them with.
        if let Some(cap) = limits.hard_cap {
            #[allow(clippy::cast_precision_loss)]
            gauge!("outbox_backlog_hard_cap_entries").set(cap as f64);
        }
        gauge!("outbox_backlog_stale_after_seconds").set(limits.stale_after.as_secs_f64());
        let last = Arc::new(Last::default());
        last.take(&redis).await;
        let task = {
            let last = Arc::clone(&last);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(limits.every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    last.take(&redis).await;
                }
            })
        };
        Self { limits, last, task }
    }

    /// Entries waiting at the last measurement.
    pub fn entries(&self) -> u64 {
        self.last.entries.load(Ordering::Relaxed)
    }

    /// The oldest entry's age at the last measurement, when it is older than
    /// [`BacklogLimits::stale_after`].
    pub fn stale(&self) -> Option<Duration> {
        let oldest = self.last.oldest_ms.load(Ordering::Relaxed);
        let age = Duration::from_millis(oldest);
        (oldest != EMPTY && age > self.limits.stale_after).then_some(age)
    }

    /// The oldest entry's age at the last measurement; `None` when the outbox was empty.
    pub fn oldest_age(&self) -> Option<Duration> {
        let oldest = self.last.oldest_ms.load(Ordering::Relaxed);
        (oldest != EMPTY).then(|| Duration::from_millis(oldest))
    }

    /// Whether the backlog has reached the cap.
    pub fn full(&self) -> Option<Full> {
        let cap = self.limits.hard_cap?;
        let entries = self.entries();
        (entries >= cap).then_some(Full { entries, cap })
    }

    /// The limits.
    pub fn limits(&self) -> BacklogLimits {
        self.limits
    }
}

/// Longest one measurement may take: a primary that does not answer (a failover) must not
/// stall the watch, whose next tick then retries.
const MEASURE_TIMEOUT: Duration = Duration::from_secs(2);

/// `oldest_ms` of an empty outbox.
const EMPTY: u64 = u64::MAX;

/// The last successful measurement.
#[derive(Debug)]
struct Last {
    entries: AtomicU64,
    oldest_ms: AtomicU64,
}

impl Default for Last {
    fn default() -> Self {
        Self {
            entries: AtomicU64::new(0),
            oldest_ms: AtomicU64::new(EMPTY),
        }
    }
}

impl Last {
    /// Measures (which also sets the gauges), within [`MEASURE_TIMEOUT`]; on failure keeps the
    /// previous measurement.
    async fn take(&self, redis: &Redis) {
        let measured = tokio::time::timeout(MEASURE_TIMEOUT, depth(redis))
            .await
            .unwrap_or_else(|_| {
                crate::telemetry::redis_reachable(false);
                Err(StoreError::unavailable(
                    "the backlog measurement timed out",
                    "timeout",
                ))
            });
        match measured {
            Ok(depth) => {
                self.entries.store(depth.entries, Ordering::Relaxed);
                let oldest = depth
                    .oldest_age
                    .map_or(EMPTY, |a| u64::try_from(a.as_millis()).unwrap_or(EMPTY - 1));
                self.oldest_ms.store(oldest, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot measure the outbox backlog; keeping the last measurement"
            ),
        }
    }
}

/// The outbox's backlog right now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Depth {
    /// Entries not yet published and acknowledged.
    pub entries: u64,
    /// Shards holding at least one.
    pub shards: Vec<OutboxShard>,
    /// Age of the oldest entry, if any.
    pub oldest_age: Option<Duration>,
}

/// Runs one command per shard, many in flight at once on the multiplexed connection (the
/// client pipelines them), results in shard order. Not a Redis pipeline: on a cluster, a
/// pipeline may not cross slots, and each shard is its own slot.
async fn per_shard<T: redis::FromRedisValue>(
    redis: &Redis,
    shards: &[OutboxShard],
    command: impl Fn(OutboxShard) -> redis::Cmd,
) -> Result<Vec<T>, StoreError> {
    // Collected first: a stream over a mapping closure makes the caller's future not provably
    // `Send` (rust-lang/rust#102211), and the backlog watch runs on a spawned task.
    let calls: Vec<_> = shards
        .iter()
        .map(|&p| {
            let cmd = command(p);
            let mut conn = redis.shared();
            async move { cmd.query_async::<T>(&mut conn).await.store_err() }
        })
        .collect();
    futures::stream::iter(calls)
        .buffered(64)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

/// The outbox's backlog: `XLEN` of every shard, then the first entry of each non-empty
/// one. Also sets the depth and age gauges, and `redis_reachable` (1 when every primary
/// answered).
///
/// # Errors
/// [`StoreError::Unavailable`].
pub async fn depth(redis: &Redis) -> Result<Depth, StoreError> {
    let measured = measure(redis).await;
    crate::telemetry::redis_reachable(measured.is_ok());
    measured
}

async fn measure(redis: &Redis) -> Result<Depth, StoreError> {
    let all: Vec<OutboxShard> = OutboxShard::all().collect();
    let lengths: Vec<u64> = per_shard(redis, &all, |p| {
        let mut cmd = redis::cmd("XLEN");
        cmd.arg(p.outbox());
        cmd
    })
    .await?;
    let shards: Vec<OutboxShard> = all
        .iter()
        .zip(&lengths)
        .filter(|(_, n)| **n > 0)
        .map(|(p, _)| *p)
        .collect();
    let firsts: Vec<Vec<(String, Value)>> = per_shard(redis, &shards, |p| {
        let mut cmd = redis::cmd("XRANGE");
        cmd.arg(p.outbox()).arg("-").arg("+").arg("COUNT").arg(1);
        cmd
    })
    .await?;
    let oldest_ms: Option<u64> = firsts
        .iter()
        .flatten()
        .filter_map(|(id, _)| id.split('-').next()?.parse().ok())
        .min();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let oldest_age = oldest_ms.map(|ms| Duration::from_millis(now_ms.saturating_sub(ms)));
    let entries = lengths.iter().sum();
    #[allow(clippy::cast_precision_loss)]
    gauge!("outbox_backlog_entries").set(entries as f64);
    gauge!("outbox_backlog_oldest_age_seconds").set(oldest_age.map_or(0.0, |a| a.as_secs_f64()));
    debug_assert_eq!(lengths.len(), OUTBOX_SHARDS);
    Ok(Depth {
        entries,
        shards,
        oldest_age,
    })
}
