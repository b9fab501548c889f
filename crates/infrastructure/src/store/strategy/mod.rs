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
//! [`flyrtech_core::StatusChange`]; the document strategies share [`crate::store::document`], and
//! `hash` keeps its own layout ([`crate::store::layout`]).
//!
//! # Two layouts, one live copy
//! Each writer works on its own layout and answers `None` when the journey is not there. The
//! store then applies the change with the *other* layout's update script, which is atomic and
//! sees both keys: it applies the change where the journey is, says `moved` if a migration has
//! just moved it back, or `not_found` when the journey exists in neither layout. So while a
//! migration runs, instances of both layouts serve the same journeys side by side and every
//! change lands on the one live copy; a journey is never answered 404 because it is being
//! moved. Reads fall back the same way, with one atomic read of both keys.
//!
//! Adding a strategy: a module with an `update` method, a variant in [`Strategy`] and in
//! `ChosenStrategy`, one arm in each `match` below; the test suite's strategy list gets one more line.

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

use tracing::Instrument;

use flyrtech_core::{
    Clock, Journey, JourneyId, JourneyStore, JourneyVersion, StatusChange, StoreError, SystemClock,
    UpdateOutcome,
};

use crate::connection::handle::Redis;
use crate::connection::retry::RetryPolicy;
use crate::keys;
pub use crate::replication::ReplicaWait;
use crate::replication::{Replication, Shortfall};
use crate::store::document;
use crate::store::layout::{Copies, Layout};
use crate::store::render::Rendered;
use crate::store::update_script::{ScriptCall, UpdateScript};
use crate::store::write::{WriteContext, absent_here};

pub use crate::connection::wakeup::LockWaiters;
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

    /// The layout the strategy writes.
    pub fn layout(self) -> Layout {
        match self {
            Self::Hash => Layout::Hash,
            _ => Layout::Document,
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

impl Strategy {
    /// Every strategy's name, comma-separated, for messages and help.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    /// The strategies that write `layout`, comma-separated, for messages.
    pub fn writing(layout: Layout) -> String {
        Self::ALL
            .into_iter()
            .filter(|s| s.layout() == layout)
            .map(Self::name)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A strategy name that is not one of [`Strategy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown strategy {given:?}; valid strategies: {}", Strategy::names())]
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
    /// The set that lists the store's journeys: [`keys::JOURNEY_INDEX`], the service's dataset,
    /// unless a scratch user (the lab) keeps its journeys out of the service's listing.
    pub index: String,
    /// Replicas that must confirm each acknowledged update (`--wait-replicas`); none by default.
    pub replicas: Option<ReplicaWait>,
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
            index: keys::JOURNEY_INDEX.to_owned(),
            replicas: None,
        }
    }
}

enum ChosenStrategy {
    Naive(naive::Naive),
    LocalLock(local_lock::LocalLock),
    Optimistic(optimistic::Optimistic),
    // Boxed: its lock-master handles make it several times the size of the others.
    Redlock(Box<redlock::Redlock>),
    Lua(lua::Lua),
    Hash(hash::Hash),
}

/// The journey store on Redis, writing with the configured strategy.
pub struct RedisJourneyStore {
    redis: Redis,
    strategy: Strategy,
    writer: ChosenStrategy,
    /// The other layout's update script, for journeys a migration has moved.
    other_layout: UpdateScript,
    ctx: WriteContext,
    index: String,
    telemetry: crate::telemetry::UpdateTelemetry,
    memo: crate::store::render::RenderMemo,
    /// The form new hashes are written in.
    write_form: crate::store::hash_fields::WriteForm,
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
        let ctx = WriteContext {
            redis: redis.clone(),
            delay: config.processing_delay,
            clock: Arc::clone(&config.clock),
            replication: config
                .replicas
                .map(|wait| Arc::new(Replication::new(Arc::clone(redis.nodes()), wait))),
        };
        let base_for_other_layout = ctx.clone();
        let writer = match config.strategy {
            Strategy::Naive => ChosenStrategy::Naive(naive::Naive::new(ctx)),
            Strategy::LocalLock => ChosenStrategy::LocalLock(local_lock::LocalLock::new(ctx)),
            Strategy::Optimistic => {
                ChosenStrategy::Optimistic(optimistic::Optimistic::new(ctx, config.retry))
            }
            Strategy::Redlock => ChosenStrategy::Redlock(Box::new(
                redlock::Redlock::connect(ctx, config.retry, &config.lock).await?,
            )),
            Strategy::Lua => ChosenStrategy::Lua(lua::Lua::new(ctx)),
            Strategy::Hash => ChosenStrategy::Hash(hash::Hash::new(ctx)),
        };
        Ok(Self {
            redis,
            strategy: config.strategy,
            writer,
            other_layout: UpdateScript::of(config.strategy.layout().other()),
            ctx: WriteContext {
                delay: Duration::ZERO,
                ..base_for_other_layout
            },
            index: config.index.clone(),
            telemetry: crate::telemetry::UpdateTelemetry::new(
                config.strategy.name(),
                config.strategy.takes_lock(),
            ),
            memo: crate::store::render::RenderMemo::default(),
            write_form: crate::store::hash_fields::WriteForm::default(),
        })
    }

    /// The layout this store writes.
    pub fn layout(&self) -> Layout {
        self.strategy.layout()
    }

    /// The set that lists this store's journeys.
    pub fn index(&self) -> &str {
        &self.index
    }

    /// A page of the journeys this store lists (see [`super::index::page`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a listed id that is not valid.
    pub async fn list_page(
        &self,
        cursor: Option<super::index::PageCursor>,
        limit: usize,
    ) -> Result<super::index::Page, StoreError> {
        super::index::page(&self.redis, &self.index, cursor, limit).await
    }

    /// The strategy in use.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// The Redis handle (for readiness checks and round-trip counts).
    pub fn redis(&self) -> &Redis {
        &self.redis
    }

    /// The primaries known to lack the replicas `--wait-replicas` requires, whose writes are
    /// refused at once until a probe finds them again; empty without `--wait-replicas`.
    pub fn replica_shortfalls(&self) -> Vec<Shortfall> {
        self.ctx
            .replication
            .as_ref()
            .map(|r| r.shortfalls())
            .unwrap_or_default()
    }

    /// The Redlock writer, for tests that drive the lock and fencing step by step.
    pub fn redlock(&self) -> Option<&redlock::Redlock> {
        match &self.writer {
            ChosenStrategy::Redlock(r) => Some(r),
            _ => None,
        }
    }

    /// The exact script call an update of `id` sends, for the strategies that update with one
    /// script (`lua`, `hash`); `None` for the others. The lab replays it with redis-benchmark.
    pub fn script_call(&self, id: &JourneyId, change: &StatusChange) -> Option<ScriptCall> {
        match &self.writer {
            ChosenStrategy::Lua(w) => Some(w.call(id, change)),
            ChosenStrategy::Hash(w) => Some(w.call(id, change)),
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
            // With `--wait-replicas`, a replica that misses one wait (a loaded machine) makes
            // its primary refuse writes until the probe sees it confirm again: start-up waits
            // that out, bounded, rather than failing. A creation that was applied but not
            // confirmed is found existing on the retry, whose confirmation covers it.
            let mut unconfirmed = false;
            let mut tries = 0;
            loop {
                match self.create(journey).await {
                    Ok(()) => report.created += 1,
                    Err(StoreError::AlreadyExists(_)) if unconfirmed => report.created += 1,
                    Err(StoreError::AlreadyExists(_)) => report.kept += 1,
                    Err(
                        e @ (StoreError::NotReplicated { .. } | StoreError::ReplicasMissing { .. }),
                    ) if tries < SEED_TRIES => {
                        // Only a write that was sent may be in place.
                        unconfirmed |= matches!(e, StoreError::NotReplicated { .. });
                        tries += 1;
                        tokio::time::sleep(crate::replication::PROBE_INTERVAL).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
                break;
            }
        }
        Ok(report)
    }
}

/// How often seeding retries a creation its replicas did not confirm (one probe interval apart).
const SEED_TRIES: u32 = 50;

/// How often a change may find its journey moved away and back before it gives up with 503.
/// Only a migration and its reverse running at the same time move a journey more than once.
const LAYOUT_HOPS: usize = 4;

impl RedisJourneyStore {
    /// One try with the strategy's own writer, on its own layout.
    async fn update_here(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        // The strategies whose futures are kilobytes (a WATCH transaction, a lock's quorum,
        // a read, a processing delay and a write) are boxed: inline, every future above this
        // one would carry the largest, and moving them cost every update of every strategy
        // (docs/lab.md, "What the service adds to each request"). The scripts' are small.
        match &self.writer {
            ChosenStrategy::Naive(w) => Box::pin(w.update(id, change, expected)).await,
            ChosenStrategy::LocalLock(w) => Box::pin(w.update(id, change, expected)).await,
            ChosenStrategy::Optimistic(w) => Box::pin(w.update(id, change, expected)).await,
            ChosenStrategy::Redlock(w) => Box::pin(w.update(id, change, expected)).await,
            ChosenStrategy::Lua(w) => w.update(id, change, expected).await,
            ChosenStrategy::Hash(w) => w.update(id, change, expected).await,
        }
    }

    async fn update_anywhere(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        // A success is confirmed by its own write (or, for a no-op, by `WriteContext::confirm`);
        // a refusal that shows the journey's state is confirmed here.
        match self.update_any_layout(id, change, expected).await {
            Ok(done) => Ok(done),
            Err(refused) => self.settled(id, Err(refused)).await,
        }
    }

    async fn update_any_layout(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        for _ in 0..LAYOUT_HOPS {
            if let Some(done) = self.update_here(id, change, expected).await? {
                return Ok(done);
            }
            // Not in our layout: the other layout's script applies it there, atomically, or
            // says it is in neither (404), or that it has just moved back to ours (try again).
            // Boxed: only a migration takes this path.
            if let Some(done) =
                Box::pin(self.other_layout.apply(&self.ctx, id, change, expected)).await?
            {
                return Ok(done);
            }
        }
        Err(StoreError::unavailable(
            "the journey is being moved between layouts; retry",
            format!("journey {id} changed layout {LAYOUT_HOPS} times during one update"),
        ))
    }
}

impl RedisJourneyStore {
    /// `answer`, given only once the replicas required hold what it shows.
    ///
    /// A read runs on the shared connection, beside writes whose `WAIT` is still pending: it can
    /// see a change that no replica holds yet. Answered at once, a failover right after would
    /// lose that change, and the journey would go back in time for whoever read it (a reader saw
    /// version 74, the next one sees 73). So with `--wait-replicas`, an answer that shows the
    /// journey's state (the journey, a 404, a refusal naming its version or its rule) waits
    /// for a confirmation of the journey's slot sent after the read: the replication stream is
    /// in order, so replicas that acknowledged it hold everything the read saw. If that
    /// confirmation fails, the answer is its error (the read's outcome is not known to last).
    /// Without replicas required, `answer` is returned as it is.
    async fn settled<T>(
        &self,
        id: &JourneyId,
        answer: Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let shows_state = matches!(
            answer,
            Ok(_)
                | Err(StoreError::JourneyNotFound(_)
                    | StoreError::VersionMismatch { .. }
                    | StoreError::Rejected(_)
                    | StoreError::AlreadyExists(_))
        );
        if shows_state {
            self.ctx.confirm(&keys::journey_document(id)).await?;
        }
        answer
    }

    /// The journey as JSON text, with its version: what encoding [`JourneyStore::get`]'s
    /// journey gives, from the same one read, decoded and encoded only when the read returned
    /// bytes not rendered before (see [`crate::store::render`]).
    ///
    /// # Errors
    /// As [`JourneyStore::get`].
    pub async fn get_json(&self, id: &JourneyId) -> Result<Rendered, StoreError> {
        let read = self.read_json(id).await;
        self.settled(id, read).await
    }

    async fn read(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        let mut conn = self.redis.shared();
        let here = match &self.writer {
            ChosenStrategy::Hash(h) => h.read(id).await,
            _ => document::read(&mut conn, id).await,
        };
        match absent_here(here)? {
            Some(journey) => Ok(journey),
            // Not in our layout: one atomic read of both finds it wherever it is now.
            None => Copies::read(&mut conn, id).await?.journey(id),
        }
    }

    async fn read_json(&self, id: &JourneyId) -> Result<Rendered, StoreError> {
        use crate::store::render::Raw;
        let raw = match &self.writer {
            ChosenStrategy::Hash(h) => {
                // A journey rendered before: its fields by name, half the reply; anything
                // else (a missing field, a decoding needing one not asked for) reads it whole.
                if let Some(names) = self.memo.names(id)
                    && let Some(values) = h.read_selected(&names).await?
                {
                    let selected = Raw::Selected { names, values };
                    if let Ok(rendered) = self.memo.render(id, selected, |raw| decode(id, raw)) {
                        return Ok(rendered);
                    }
                }
                h.read_raw(id).await.map(Raw::Fields)
            }
            _ => document::read_raw(&mut self.redis.shared(), id)
                .await
                .map(Raw::Document),
        };
        match absent_here(raw)? {
            Some(raw) => self.memo.render(id, raw, |raw| decode(id, raw)),
            // Not in our layout: one atomic read of both finds it wherever it is now.
            None => Rendered::of(
                &Copies::read(&mut self.redis.shared(), id)
                    .await?
                    .journey(id)?,
            ),
        }
    }
}

/// The journey a read of it holds, whichever read it was.
fn decode(id: &JourneyId, raw: &crate::store::render::Raw) -> Result<Journey, StoreError> {
    use crate::store::render::Raw;
    match raw {
        Raw::Fields(fields) => hash::Hash::decode_raw(id, fields),
        Raw::Selected { names, values } => hash::Hash::decode_selected(id, names, values),
        Raw::Document(text) => document::decode(id, text),
    }
}

impl RedisJourneyStore {
    /// [`JourneyStore::update`] as the span `journey.update`: its attempts, lock wait and
    /// replicas' confirmation are its children or its fields.
    async fn traced_update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        let span = tracing::info_span!(
            target: crate::telemetry::trace_context::SPANS,
            "journey.update",
            strategy = self.strategy().name(),
            journey = %id,
            attempts = tracing::field::Empty,
            changed = tracing::field::Empty,
            version = tracing::field::Empty,
            error = tracing::field::Empty,
        );
        let result = self
            .update_anywhere(id, change, expected)
            .instrument(span.clone())
            .await;
        self.telemetry.update(&result);
        match &result {
            Ok(done) => {
                span.record("attempts", done.attempts);
                span.record("changed", done.changed);
                span.record("version", done.version.get());
            }
            Err(e) => {
                span.record("error", e.kind());
            }
        }
        result
    }
}

impl JourneyStore for RedisJourneyStore {
    async fn get(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        let read = self.read(id).await;
        self.settled(id, read).await
    }

    async fn list_ids(&self) -> Result<Vec<JourneyId>, StoreError> {
        super::index::list_ids(&self.redis, &self.index).await
    }

    async fn create(&self, journey: &Journey) -> Result<(), StoreError> {
        let (ctx, index) = (&self.ctx, &self.index);
        match crate::store::layout::create(ctx, index, journey, self.layout(), &self.write_form)
            .await
        {
            Ok(()) => Ok(()),
            Err(refused) => self.settled(&journey.id, Err(refused)).await,
        }
    }

    async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        // With traces on, the update is a span of the request's trace (`traced_update`), boxed
        // so that the plain path's future carries none of it: off, it costs one cached check.
        if crate::telemetry::trace_context::on() {
            return Box::pin(self.traced_update(id, change, expected)).await;
        }
        let result = self.update_anywhere(id, change, expected).await;
        self.telemetry.update(&result);
        result
    }
}
