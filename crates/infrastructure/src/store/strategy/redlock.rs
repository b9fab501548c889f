//! `redlock`: a Redlock-style lock per journey, plus fencing tokens checked by the store.
//!
//! The race it closes: only the holder of the journey's lock reads and writes the journey, so
//! writers are serialised. A lock alone is not enough (Kleppmann, 2016): a holder that pauses
//! past its TTL (GC, scheduler, network) writes after the next holder. So every acquisition
//! mints a fencing token with `INCR journey:{P}:ID:fence` — in the journey's own slot, pipelined
//! with the read — and the write is a script that refuses the token unless it is still the
//! newest one minted. Refusing every token older than the newest *minted* (not merely the newest
//! *written*) matters: the new holder mints before it reads, so once it has minted, no older
//! holder can slip a write in between its read and its write.
//!
//! With fencing, the lock is what keeps writers from wasting work; correctness rests on the
//! token check. The counter also guards against writers that never take the lock: the `lua`
//! update script (which a `hash` instance uses for journeys still in the document layout during
//! a migration) and the migration's conversion bump it whenever it exists, so a holder that read
//! the journey before such a write is refused and reads again. `optimistic` and the controls do
//! not bump it: do not run them beside `redlock` on one dataset. A refused write returns [`StoreError::StaleFencingToken`] from the step API and
//! is retried (lock, read, write again) by [`Redlock::update`].
//!
//! The lock (the Redis docs' "Distributed locks"): `SET key token NX PX ttl` on N independent
//! masters at once, each with a short timeout; acquired with a quorum of N/2+1 while the time
//! left, `ttl - elapsed - drift`, is positive; otherwise released where it may have been taken
//! and tried again when the holder releases it. Release and extension are compare-token
//! scripts; the release also publishes on the lock's channel. With no lock URLs the store's own
//! Redis (or cluster) is the single lock node.
//!
//! Waiting (`crate::connection::wakeup`): a refused acquisition takes a place in this process' queue for
//! the lock, subscribes to the lock's release channel (sharded on a cluster), tries once more,
//! then sleeps until a release wakes it, or until [`LockSettings::wake_fallback`] passes (a lost
//! notification, or a holder that died and whose lock expired). A new acquisition that finds
//! waiters of its own process queued behind them rather than barging in, so a writer that has
//! just released cannot win every round: measured with `flyrtech-lab compare --strategies redlock
//! --scenario same-segment`, p99 fell from 185 ms (jittered polling) to 30–45 ms.
//!
//! The fenced write appends the change's outbox entry in the same script, and refuses if the
//! document is gone (a migration moved the journey to the hash layout while we held the lock).
//!
//! Cost: lock SET on every master, one pipelined INCR+GET, one EVALSHA write (state and outbox), the release on
//! every master: at least four round trips, and the lock is held through the processing window.
//! Each store keeps one subscriber connection per lock master.
//! Failure modes: fewer than a quorum of masters accepting connections gives
//! [`StoreError::Unavailable`] at once, without retrying (nothing written). A master that answers
//! later than [`LockSettings::node_timeout`] is slow, not down (a loaded machine, a long
//! command): its answer is counted as missing for this attempt, and the acquisition tries again
//! within [`LockSettings::slow_budget`] before it answers [`StoreError::Unavailable`].
//! Contention beyond the retry budget gives [`StoreError::Conflict`].

use std::time::{Duration, Instant};

use flyrtech_core::{
    Applied, Journey, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome,
};
use futures::future::join_all;
use rand::RngExt;
use redis::Script;
use tracing::Instrument;

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;
use crate::connection::retry::{Attempts, RetryPolicy};
use crate::connection::settings::RedisSettings;
use crate::connection::wakeup::{self, LockWaiters, Waiter, Wakeups};
use crate::keys;
use crate::replication::script::LuaScript;
use crate::store::document;
use crate::store::write::{WriteContext, absent_here, simulate_processing};

/// Redlock knobs.
#[derive(Debug, Clone)]
pub struct LockSettings {
    /// Independent lock masters; empty means the store's own Redis is the single lock node.
    pub urls: Vec<String>,
    /// Lock lifetime.
    pub ttl: Duration,
    /// How long one master may take to answer before it counts as failed.
    pub node_timeout: Duration,
    /// Longest a waiter sleeps without a release notification before it tries again: the
    /// bound on a lost notification and on noticing a lock that expired (its holder died).
    pub wake_fallback: Duration,
}

impl Default for LockSettings {
    fn default() -> Self {
        Self {
            urls: Vec::new(),
            ttl: Duration::from_secs(2),
            node_timeout: Duration::from_millis(50),
            wake_fallback: Duration::from_millis(50),
        }
    }
}

impl LockSettings {
    /// How long an acquisition keeps retrying masters that answer late before it answers 503:
    /// ten node timeouts, between 250 ms and 1 s, so that with a read that times out after it
    /// the request is still answered within 2 s.
    pub fn slow_budget(&self) -> Duration {
        (self.node_timeout * 10).clamp(Duration::from_millis(250), Duration::from_secs(1))
    }
}

/// A token that grows with every lock acquisition on a journey.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct FencingToken(pub u64);

/// Proof of holding a journey's lock on a quorum of masters, until `valid_until`.
#[derive(Debug)]
pub struct LockGuard {
    key: String,
    token: String,
    /// When the lock may no longer be relied on.
    pub valid_until: Instant,
    /// How long acquisition waited, retries included.
    pub waited: Duration,
}

/// The Redlock writer.
#[derive(Debug)]
pub struct Redlock {
    ctx: WriteContext,
    nodes: Vec<Redis>,
    settings: LockSettings,
    retry: RetryPolicy,
    release_script: Script,
    extend_script: Script,
    write_script: LuaScript,
    wakeups: Wakeups,
}

impl Redlock {
    pub(crate) async fn connect(
        ctx: WriteContext,
        retry: RetryPolicy,
        settings: &LockSettings,
    ) -> Result<Self, StoreError> {
        let mut nodes = Vec::with_capacity(settings.urls.len().max(1));
        for url in &settings.urls {
            let node = RedisSettings {
                response_timeout: settings.node_timeout,
                connect_timeout: settings.node_timeout.max(Duration::from_millis(100)),
                pool_size: 1,
                ..RedisSettings::new(url.clone())
            };
            nodes.push(Redis::connect(&node).await?);
        }
        if nodes.is_empty() {
            nodes.push(ctx.redis.clone());
        }
        let wakeups = Wakeups::start(&nodes).await;
        Ok(Self {
            wakeups,
            ctx,
            nodes,
            settings: settings.clone(),
            retry,
            release_script: Script::new(include_str!("../scripts/lock_release.lua")),
            extend_script: Script::new(include_str!("../scripts/lock_extend.lua")),
            write_script: LuaScript::new(include_str!("../scripts/fenced_write.lua")),
        })
    }

    /// How long a waiter sleeps before trying again without a notification, jittered so that
    /// the waiters of an expired lock do not all poll in step.
    fn fallback(&self) -> Duration {
        let bound = self.settings.wake_fallback;
        rand::rng().random_range(bound / 2..=bound)
    }

    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Acquires the journey's lock on a quorum of masters, retrying within the retry budget.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] as soon as fewer than a quorum of masters accept connections
    /// (no retry: none could win a quorum), or when masters kept answering late through
    /// [`LockSettings::slow_budget`]; [`StoreError::Conflict`] when the lock stayed held by
    /// others through the retry budget.
    pub async fn acquire(&self, id: &JourneyId) -> Result<LockGuard, StoreError> {
        // The lock wait, as a span of the update's trace (docs/operations.md, "Traces").
        let span = tracing::info_span!(target: crate::telemetry::trace_context::SPANS, "lock.acquire", attempts = tracing::field::Empty);
        let mut attempts = Attempts::new(self.retry);
        let acquired = self
            .acquire_within(id, &mut attempts)
            .instrument(span.clone())
            .await;
        span.record("attempts", attempts.made());
        acquired
    }

    async fn acquire_within(
        &self,
        id: &JourneyId,
        attempts: &mut Attempts,
    ) -> Result<LockGuard, StoreError> {
        let key = keys::journey_lock(id);
        let channel = wakeup::channel(&key);
        let ttl_ms = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let began = Instant::now();
        // Our place among this process' waiters for the lock, taken after the first refusal.
        let mut waiter: Option<Waiter> = None;
        if self.wakeups.waiters(&channel).queued > 0 {
            // Others of this process already wait for the lock: queue behind them instead of
            // barging in (a writer that has just released would otherwise win every round and
            // starve the waiters it woke).
            let mut queued = self.wakeups.register(&channel);
            queued.wait(self.fallback()).await;
            waiter = Some(queued);
        }
        loop {
            let token = format!("{:032x}", rand::rng().random::<u128>());
            let started = Instant::now();
            let replies = join_all(self.nodes.iter().map(|node| {
                let mut cmd = redis::cmd("SET");
                cmd.arg(&key).arg(&token).arg("NX").arg("PX").arg(ttl_ms);
                let mut conn = node.shared();
                async move {
                    tokio::time::timeout(
                        self.settings.node_timeout,
                        cmd.query_async::<Option<String>>(&mut conn),
                    )
                    .await
                }
            }))
            .await;
            let won = replies
                .iter()
                .filter(|r| matches!(r, Ok(Ok(Some(_)))))
                .count();
            // Down: the master refused the connection or broke it. A master that answers late
            // is slow, not down: it may answer the next attempt in time.
            let down = replies.iter().filter(|r| matches!(r, Ok(Err(_)))).count();
            let slow = replies.iter().filter(|r| r.is_err()).count();
            // Clock drift allowance, as in the Redlock description: 1% of the TTL plus 2 ms.
            let drift = self.settings.ttl / 100 + Duration::from_millis(2);
            let validity = self.settings.ttl.saturating_sub(started.elapsed() + drift);
            if won >= self.quorum() && !validity.is_zero() {
                return Ok(LockGuard {
                    key,
                    token,
                    valid_until: started + validity,
                    waited: began.elapsed(),
                });
            }
            // Undo what we may hold: every master but those that plainly refused.
            let refused: Vec<bool> = replies.iter().map(|r| matches!(r, Ok(Ok(None)))).collect();
            if refused.iter().any(|r| !r) {
                self.release_token(&key, &token, |node| !refused[node])
                    .await;
            }
            if self.nodes.len() - down < self.quorum() {
                // More masters are down than the lock may lose: no retry can win a quorum until
                // they are back, so say so now instead of waiting out the retry budget.
                return Err(StoreError::unavailable(
                    format!(
                        "{down} of {} lock masters refused the connection; {} must answer",
                        self.nodes.len(),
                        self.quorum()
                    ),
                    "Redlock quorum unreachable",
                ));
            }
            if slow > 0 && began.elapsed() >= self.settings.slow_budget() {
                return Err(StoreError::unavailable(
                    format!(
                        "{slow} of {} lock masters kept answering later than {:?}",
                        self.nodes.len(),
                        self.settings.node_timeout
                    ),
                    "Redlock masters too slow",
                ));
            }
            if let Err(gave_up) = attempts.next() {
                // Out of budget: a conflict only if enough masters answered for the lock to be
                // won; otherwise the masters were the trouble, not other holders.
                return Err(if self.nodes.len() - down - slow < self.quorum() {
                    StoreError::unavailable(
                        format!(
                            "only {} of {} lock masters answered in time; {} needed",
                            self.nodes.len() - down - slow,
                            self.nodes.len(),
                            self.quorum()
                        ),
                        "Redlock quorum unreachable",
                    )
                } else {
                    gave_up
                });
            }
            match waiter.as_mut() {
                // First refusal: queue up and subscribe, then try again at once, since the
                // lock may have been released before the subscription took.
                None => {
                    let mut queued = self.wakeups.register(&channel);
                    queued.subscribed(self.settings.node_timeout).await;
                    waiter = Some(queued);
                }
                Some(queued) => {
                    queued.wait(self.fallback()).await;
                }
            }
        }
    }

    /// This process' waiters for the journey's lock.
    pub fn waiters(&self, id: &JourneyId) -> LockWaiters {
        self.wakeups
            .waiters(&wakeup::channel(&keys::journey_lock(id)))
    }

    /// Releases the lock on every master (best effort: an unreachable master's copy expires),
    /// waking the lock's waiters.
    pub async fn release(&self, guard: LockGuard) {
        self.release_token(&guard.key, &guard.token, |_| true).await;
    }

    async fn release_token(&self, key: &str, token: &str, on: impl Fn(usize) -> bool) {
        let channel = wakeup::channel(key);
        join_all(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(i, _)| on(*i))
                .map(|(i, node)| {
                    let mut conn = node.shared();
                    let mut invocation = self.release_script.key(key);
                    invocation
                        .arg(token)
                        .arg(&channel)
                        .arg(if self.wakeups.sharded(i) { "1" } else { "0" });
                    async move {
                        let released = tokio::time::timeout(
                            self.settings.node_timeout,
                            invocation.invoke_async::<i64>(&mut conn),
                        )
                        .await;
                        if !matches!(released, Ok(Ok(_))) {
                            tracing::debug!(
                                key,
                                "lock release did not reach a master; it will expire"
                            );
                        }
                    }
                }),
        )
        .await;
    }

    /// Extends a held lock to a fresh TTL on a quorum of masters.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when fewer than a quorum still held our token (the lock was
    /// lost).
    pub async fn extend(&self, guard: &mut LockGuard) -> Result<(), StoreError> {
        let ttl_ms = u64::try_from(self.settings.ttl.as_millis()).unwrap_or(u64::MAX);
        let started = Instant::now();
        let replies = join_all(self.nodes.iter().map(|node| {
            let mut conn = node.shared();
            let mut invocation = self.extend_script.key(&guard.key);
            invocation.arg(&guard.token).arg(ttl_ms);
            async move {
                tokio::time::timeout(
                    self.settings.node_timeout,
                    invocation.invoke_async::<i64>(&mut conn),
                )
                .await
            }
        }))
        .await;
        let extended = replies.iter().filter(|r| matches!(r, Ok(Ok(1)))).count();
        if extended >= self.quorum() {
            guard.valid_until = started + self.settings.ttl.saturating_sub(started.elapsed());
            Ok(())
        } else {
            Err(StoreError::Conflict { attempts: 1 })
        }
    }

    /// Mints a fencing token and reads the journey, in one round trip. Call while holding the
    /// lock; the mint happens before the read.
    ///
    /// # Errors
    /// [`StoreError::JourneyNotFound`], [`StoreError::Unavailable`], [`StoreError::Corrupt`].
    pub async fn read_fenced(&self, id: &JourneyId) -> Result<(FencingToken, Journey), StoreError> {
        let (token, raw): (u64, Option<String>) = redis::pipe()
            .incr(keys::journey_fence(id), 1)
            .get(keys::journey_document(id))
            .query_async(&mut self.ctx.redis.shared())
            .await
            .store_err()?;
        let raw = raw.ok_or_else(|| StoreError::JourneyNotFound(id.clone()))?;
        Ok((FencingToken(token), document::decode(id, &raw)?))
    }

    /// Writes the journey, with the outbox entry of the events it has raised, if `token` is
    /// still the newest minted for it.
    ///
    /// # Errors
    /// [`StoreError::StaleFencingToken`] when a newer token exists (nothing written);
    /// [`StoreError::JourneyNotFound`] when the document is gone, moved to the hash layout by
    /// a migration (nothing written); [`StoreError::Unavailable`].
    pub async fn write_fenced(
        &self,
        token: FencingToken,
        journey: &Journey,
    ) -> Result<(), StoreError> {
        let fields = crate::store::outbox::encode(journey.events.pending())
            .map_err(|e| corrupt(&keys::journey_outbox(&journey.id), e))?;
        let keys = [
            keys::journey_document(&journey.id),
            keys::journey_fence(&journey.id),
            keys::journey_outbox(&journey.id),
        ];
        let (written, newest): (i64, u64) = self
            .ctx
            .run(self.write_script.call(
                &keys,
                (
                    token.0,
                    document::encode(journey)?,
                    crate::store::outbox::xadd_args(&fields),
                ),
            ))
            .await?;
        match written {
            1 => Ok(()),
            0 => Err(StoreError::StaleFencingToken {
                token: token.0,
                newest,
            }),
            2 => Err(StoreError::JourneyNotFound(journey.id.clone())),
            _ => Err(corrupt(
                &keys::journey_document(&journey.id),
                "fenced write reply",
            )),
        }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let mut attempts = Attempts::new(self.retry);
        let mut lock_wait = Duration::ZERO;
        loop {
            let guard = self.acquire_within(id, &mut attempts).await?;
            lock_wait += guard.waited;
            let result = absent_here(self.locked_update(id, change, expected).await);
            self.release(guard).await;
            match result {
                Ok(None) => return Ok(None),
                Ok(Some((version, changed))) => {
                    return Ok(Some(UpdateOutcome {
                        version,
                        changed,
                        attempts: attempts.made(),
                        lock_wait,
                    }));
                }
                // Our lock expired while we worked and a newer holder exists: start over.
                Err(StoreError::StaleFencingToken { .. }) => attempts.backoff().await?,
                Err(other) => return Err(other),
            }
        }
    }

    async fn locked_update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<(JourneyVersion, bool), StoreError> {
        let (token, mut journey) = self.read_fenced(id).await?;
        let applied = self.ctx.modify(&mut journey, change, expected)?;
        simulate_processing(self.ctx.delay).await;
        match applied {
            Applied::Changed { .. } => self.write_fenced(token, &journey).await?,
            Applied::Unchanged => self.ctx.confirm(&keys::journey_document(id)).await?,
        }
        Ok((journey.version, matches!(applied, Applied::Changed { .. })))
    }
}
