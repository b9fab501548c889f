//! The interchangeable concurrency strategies and the store that forwards to the chosen one.
//!
//! | name | module | closes the lost update? |
//! |---|---|---|
//! | `naive` | [`naive`] | no: the original read-modify-write, kept as the control |
//! | `local-lock` | [`local_lock`] | only inside one process: the tempting wrong fix |
//! | `optimistic` | [`optimistic`] | yes: WATCH/MULTI/EXEC with bounded, jittered retries |
//! | `redlock` | [`redlock`] | yes: a Redlock lock per journey plus fencing tokens |
//! | `lua` | [`lua`] | yes: the read-modify-write runs inside Redis as one script |
//! | `hash` | [`hash`] | yes: per-segment hash fields, changed by an O(1) script |
//!
//! Every strategy covers both update paths (segment status and journey status) through
//! [`flyrtech_core::StatusChange`]; the document strategies share [`crate::document`] for
//! reads, creation and listing, and `hash` keeps its own layout.
//!
//! Adding a strategy: a module with an `update` method, a variant in [`Strategy`] and in
//! `Writer`, one arm in each `match` below; the test suite's strategy list gets one more line.

pub mod hash;
pub mod local_lock;
pub mod lua;
pub mod naive;
pub mod optimistic;
pub mod redlock;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::{
    Applied, Clock, Journey, JourneyId, JourneyStore, JourneyVersion, StatusChange, StoreError,
    SystemClock, UpdateOutcome,
};

use crate::connection::Redis;
use crate::document;
use crate::retry::RetryPolicy;
use crate::script_reply::ScriptCall;

pub use redlock::{FencingToken, LockGuard, LockSettings};

/// A concurrency strategy, chosen by name at start-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Strategy {
    /// The original read-modify-write. Loses updates under concurrency, on purpose.
    Naive,
    /// A per-process mutex around the read-modify-write. Loses updates across processes.
    LocalLock,
    /// WATCH/MULTI/EXEC with bounded retries.
    Optimistic,
    /// A Redlock lock per journey with fencing tokens.
    Redlock,
    /// The read-modify-write inside one Lua script.
    Lua,
    /// Per-segment hash fields.
    Hash,
}

impl Strategy {
    /// Every strategy, controls first.
    pub const ALL: [Self; 6] = [
        Self::Naive,
        Self::LocalLock,
        Self::Optimistic,
        Self::Redlock,
        Self::Lua,
        Self::Hash,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Naive => "naive",
            Self::LocalLock => "local-lock",
            Self::Optimistic => "optimistic",
            Self::Redlock => "redlock",
            Self::Lua => "lua",
            Self::Hash => "hash",
        }
    }

    /// Whether the strategy serializes writers with a lock (and so reports lock wait).
    pub fn takes_lock(self) -> bool {
        matches!(self, Self::LocalLock | Self::Redlock)
    }

    /// Whether the strategy loses no acknowledged update however many service instances run.
    pub fn is_correct_across_instances(self) -> bool {
        !matches!(self, Self::Naive | Self::LocalLock)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name that is not one of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown strategy {given:?}; valid strategies: naive, local-lock, optimistic, redlock, lua, hash"
)]
pub struct UnknownStrategy {
    /// What was given.
    pub given: String,
}

impl FromStr for Strategy {
    type Err = UnknownStrategy;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownStrategy {
                given: s.to_owned(),
            })
    }
}

/// How a store behaves: the strategy and its knobs.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Which strategy writes.
    pub strategy: Strategy,
    /// Simulated work between reading a journey and writing it back (the original's test used
    /// 10 ms). Strategies that decide inside Redis spend it before their atomic call instead.
    pub processing_delay: Duration,
    /// Retry budget for optimistic conflicts, lock contention and fencing refusals.
    pub retry: RetryPolicy,
    /// Redlock settings (used by `redlock` only).
    pub lock: LockSettings,
    /// Where the domain's "now" comes from: the occurred-at of every event.
    pub clock: Arc<dyn Clock>,
}

impl StoreConfig {
    /// Defaults for `strategy`.
    pub fn new(strategy: Strategy) -> Self {
        Self {
            strategy,
            processing_delay: Duration::ZERO,
            retry: RetryPolicy::default(),
            lock: LockSettings::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

enum Writer {
    Naive(naive::Naive),
    LocalLock(local_lock::LocalLock),
    Optimistic(optimistic::Optimistic),
    Redlock(redlock::Redlock),
    Lua(lua::Lua),
    Hash(hash::Hash),
}

/// The journey store on Redis, writing with the configured strategy.
pub struct RedisJourneyStore {
    redis: Redis,
    strategy: Strategy,
    writer: Writer,
}

impl fmt::Debug for RedisJourneyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisJourneyStore")
            .field("strategy", &self.strategy)
            .field("redis", &self.redis)
            .finish_non_exhaustive()
    }
}

/// What seeding did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedReport {
    /// Journeys created.
    pub created: usize,
    /// Journeys that already existed and were left untouched.
    pub kept: usize,
}

impl RedisJourneyStore {
    /// Builds the store for `config.strategy` on `redis`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the lock masters of `redlock` cannot be reached, and
    /// [`StoreError::InvalidInput`] when their URLs are malformed.
    pub async fn new(redis: Redis, config: &StoreConfig) -> Result<Self, StoreError> {
        let base = Base {
            redis: redis.clone(),
            delay: config.processing_delay,
            clock: Arc::clone(&config.clock),
        };
        let writer = match config.strategy {
            Strategy::Naive => Writer::Naive(naive::Naive::new(base)),
            Strategy::LocalLock => Writer::LocalLock(local_lock::LocalLock::new(base)),
            Strategy::Optimistic => {
                Writer::Optimistic(optimistic::Optimistic::new(base, config.retry))
            }
            Strategy::Redlock => {
                Writer::Redlock(redlock::Redlock::connect(base, config.retry, &config.lock).await?)
            }
            Strategy::Lua => Writer::Lua(lua::Lua::new(base)),
            Strategy::Hash => Writer::Hash(hash::Hash::new(base)),
        };
        Ok(Self {
            redis,
            strategy: config.strategy,
            writer,
        })
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The Redis handle (for readiness checks and round-trip counts).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The Redlock writer, for tests that drive the lock and fencing step by step.
    pub fn redlock(&self) -> Option<&redlock::Redlock> {
        match &self.writer {
            Writer::Redlock(r) => Some(r),
            _ => None,
        }
    }

    /// The exact script call an update of `id` sends, for the strategies that update with one
    /// script (`lua`, `hash`); `None` for the others. The lab replays it with redis-benchmark.
    pub fn script_call(&self, id: &JourneyId, change: &StatusChange) -> Option<ScriptCall> {
        match &self.writer {
            Writer::Lua(w) => Some(w.call(id, change)),
            Writer::Hash(w) => Some(w.call(id, change)),
            _ => None,
        }
    }

    /// Creates each journey that does not exist yet; existing ones are never overwritten.
    ///
    /// # Errors
    /// The first error other than [`StoreError::AlreadyExists`].
    pub async fn seed(&self, journeys: &[Journey]) -> Result<SeedReport, StoreError> {
        let mut report = SeedReport::default();
        for journey in journeys {
            match self.create(journey).await {
                Ok(()) => report.created += 1,
                Err(StoreError::AlreadyExists(_)) => report.kept += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(report)
    }
}

impl JourneyStore for RedisJourneyStore {
    async fn get(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        match &self.writer {
            Writer::Hash(h) => h.read(id).await,
            _ => document::read(&mut self.redis.shared(), id).await,
        }
    }

    async fn list_ids(&self) -> Result<Vec<JourneyId>, StoreError> {
        document::list_ids(&self.redis).await
    }

    async fn create(&self, journey: &Journey) -> Result<(), StoreError> {
        match &self.writer {
            Writer::Hash(h) => h.create(journey).await,
            _ => document::create(&self.redis, journey).await,
        }
    }

    async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        let result = match &self.writer {
            Writer::Naive(w) => w.update(id, change, expected).await,
            Writer::LocalLock(w) => w.update(id, change, expected).await,
            Writer::Optimistic(w) => w.update(id, change, expected).await,
            Writer::Redlock(w) => w.update(id, change, expected).await,
            Writer::Lua(w) => w.update(id, change, expected).await,
            Writer::Hash(w) => w.update(id, change, expected).await,
        };
        crate::telemetry::update(self.strategy, &result);
        result
    }
}

/// What every writer needs: the Redis handle, the modelled processing delay and the clock.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) redis: Redis,
    pub(crate) delay: Duration,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Base {
    /// The "modify" of read-modify-write, done in Rust by the aggregate: checks the caller's
    /// expected version, then applies the change at the clock's "now", which raises its events
    /// on the journey.
    pub(crate) fn modify(
        &self,
        journey: &mut Journey,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Applied, StoreError> {
        if let Some(expected) = expected
            && expected != journey.version
        {
            return Err(StoreError::VersionMismatch {
                expected,
                actual: journey.version,
            });
        }
        Ok(journey.apply(change, self.clock.now())?)
    }
}

/// The outcome of a single-attempt, lock-free update.
pub(crate) fn outcome(journey: &Journey, applied: Applied) -> UpdateOutcome {
    UpdateOutcome {
        version: journey.version,
        changed: matches!(applied, Applied::Changed { .. }),
        attempts: 1,
        lock_wait: Duration::ZERO,
    }
}

/// Simulated processing between read and write.
pub(crate) async fn process(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
