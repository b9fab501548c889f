//! The relay: the background worker that publishes outbox entries, at least once, in order.
//!
//! # What it guarantees
//! - **At least once.** An entry is read through the consumer group `relay`, published, and only
//!   then acknowledged and deleted (`XACK` + `XDEL` in one MULTI). A relay that dies between
//!   publishing and acknowledging leaves the entry pending; once it has been idle for
//!   `claim_idle`, any relay claims it (`XAUTOCLAIM`) and publishes it again. Consumers absorb the
//!   duplicate by event id ([`flyrtech_core::consumer`]).
//! - **Per-journey order on the bus.** A journey lives in one shard and a shard's
//!   entries are in commit order. A relay publishes a shard only while it holds the
//!   shard's lease (`SET NX PX`), so two relays never publish one shard at once; it
//!   drains its own pending entries before reading new ones; and it skips a shard while
//!   another consumer holds pending entries there that are not yet idle enough to claim. A
//!   relay that stalls for longer than `claim_idle` can still publish late (a duplicate, possibly
//!   behind newer changes); consumers hold or drop such deliveries by version.
//! - **Poison entries are parked.** An entry that cannot be decoded, or that the bus rejects,
//!   stays pending and blocks its shard (order) until it has been delivered
//!   `max_deliveries` times; then it is moved to `outbox:{P}:parked` with the reason, in one
//!   MULTI with its acknowledgement. The journey's later changes are published after it, and
//!   the audit reports the version gap. A bus outage is not counted against entries: the relay
//!   backs off and retries.
//! - **Trimmed.** Published entries are deleted, so a shard's length is its backlog.
//! - **Only what lasts** ([`RelaySettings::confirm`]). When the deployment confirms writes
//!   (`--wait-replicas N`, `--wait-aof N`), an entry the primary holds may still be discarded by
//!   a failover: the write that made it was answered 503 while its replicas never got it. A
//!   relay that published it would put a change on the bus that the surviving store never
//!   made, a phantom every consumer keeps. So each batch is read on the primary's own
//!   connection, in one pipeline with a write of the relay's own after the read and a
//!   `WAIT`/`WAITAOF` for the same count (`crate::replication`, which also serves
//!   the store's writes): the confirmation covers everything the read returned. Only then is
//!   the batch published and acknowledged. A shortfall holds the batch: nothing is published
//!   or acknowledged, the entries stay pending for this relay and are read and confirmed again
//!   on the next sweep (`outbox_unconfirmed_batches_total`). A primary known to lack its
//!   replicas is not read at all until a probe finds them back.
//!
//! # Limits
//! - Exactly-once is not offered (see docs/outbox/ANSWERS.md, Q1): consumers deduplicate.
//! - A relay that restarts under a new consumer name leaves its old name in each shard's
//!   group (with no pending entries once they were claimed). It costs a few bytes per shard;
//!   `XGROUP DELCONSUMER` removes it, which is not automated.
//! - The lease does not fence: a relay stalled past both its lease and `claim_idle` may publish
//!   a batch another relay already published. Consumers drop the duplicates by event id and the
//!   out-of-order ones by version.
//!
//! # Throughput
//! Each shard batch costs a fixed number of round trips whatever its size (lease, claim,
//! pending check, read, one publish pipeline, one acknowledging MULTI, release: about eight), and
//! up to `parallel` shards are processed at once. The drain rate of a
//! 1,000,000-entry backlog is measured by `flyrtech-lab backlog` (docs/results/backlog.json).
//!
//! # Metrics
//! | metric | type | meaning |
//! |---|---|---|
//! | `outbox_backlog_entries` | gauge | entries not yet published and acknowledged, all shards |
//! | `outbox_backlog_oldest_age_seconds` | gauge | age of the oldest such entry (0 when none) |
//! | `outbox_published_total` | counter | envelopes published |
//! | `outbox_redelivered_total` | counter | envelopes published again after a previous delivery |
//! | `outbox_parked_total` | counter | entries parked |
//! | `outbox_publish_failures_total` | counter | batches the bus did not accept |
//! | `outbox_unconfirmed_batches_total` | counter | batches held because too few replicas confirmed what was read |

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flyrtech_core::{Envelope, EventPublisher, PublishError, StoreError};
use futures::StreamExt;
use metrics::counter;
use rand::RngExt;
use redis::{Script, Value};

use super::GROUP;
use super::backlog::depth;
use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;
use crate::keys::OutboxShard;
use crate::replication::{ReplicaWait, Replication};
use crate::store::outbox::decode;
use crate::telemetry::health::{Backoff, Dependencies, Dependency};

/// How a relay behaves.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// This relay's consumer name in the group; unique per running relay.
    pub consumer: String,
    /// Entries read and published per shard batch.
    pub batch: usize,
    /// Shards processed at once.
    pub parallel: usize,
    /// How long an entry must have been pending before another relay may claim it. Must exceed
    /// the longest time a batch takes to publish.
    pub claim_idle: Duration,
    /// How long a shard lease lasts; one batch must fit in it.
    pub lease: Duration,
    /// Deliveries after which an entry that keeps failing is parked.
    pub max_deliveries: u64,
    /// Pause between sweeps that found nothing to do.
    pub poll_interval: Duration,
    /// Modelled bus latency between publishing a batch and acknowledging it (0 in production;
    /// the tests use it to kill a relay in the middle of a batch).
    pub publish_delay: Duration,
    /// What each batch must be confirmed by before it is published: the deployment's
    /// `--wait-replicas`/`--wait-aof`, as the store's writes are (module docs, "Only what
    /// lasts"). `None`: published as soon as it is read.
    pub confirm: Option<ReplicaWait>,
}

impl RelaySettings {
    /// Defaults, with a fresh consumer name.
    pub fn new() -> Self {
        Self {
            consumer: format!(
                "relay-{}-{:06x}",
                std::process::id(),
                rand::rng().random::<u32>() & 0xff_ffff
            ),
            batch: 256,
            parallel: 8,
            claim_idle: Duration::from_secs(30),
            lease: Duration::from_secs(15),
            max_deliveries: 5,
            poll_interval: Duration::from_millis(100),
            publish_delay: Duration::ZERO,
            confirm: None,
        }
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self::new()
    }
}

/// Totals since the relay started (`relay --drain --json` writes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RelayStats {
    /// Envelopes published.
    pub published: u64,
    /// Of which published again after an earlier delivery.
    pub redelivered: u64,
    /// Entries parked.
    pub parked: u64,
    /// OutboxShard batches processed.
    pub batches: u64,
    /// Batches read but held because too few replicas confirmed them (retried).
    pub unconfirmed: u64,
}

#[derive(Debug, Default)]
struct Counters {
    published: AtomicU64,
    redelivered: AtomicU64,
    parked: AtomicU64,
    batches: AtomicU64,
    unconfirmed: AtomicU64,
}

/// What one shard batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct BatchReport {
    published: u64,
    redelivered: u64,
    parked: u64,
    acknowledged: u64,
}

impl BatchReport {
    fn progressed(self) -> bool {
        self.acknowledged > 0 || self.parked > 0
    }
}

/// The outbox relay.
#[derive(Debug)]
pub struct Relay<P> {
    redis: Redis,
    publisher: P,
    settings: RelaySettings,
    release: Script,
    counters: Counters,
    /// The confirmed reads, when [`RelaySettings::confirm`] asks for them.
    replication: Option<Replication>,
    /// Where it reports whether Redis and the bus answer.
    health: Dependencies,
    /// Which dependency the bus is.
    bus: Dependency,
}

/// One delivered entry: its id, its fields (`None` when it was deleted while pending), and how
/// many times it has been delivered.
type Delivered = (String, Option<HashMap<String, String>>, u64);

/// A stream entry as `XREADGROUP` returns it: id and fields (`None` when deleted).
type StreamEntry = (String, Option<HashMap<String, String>>);

impl<P: EventPublisher> Relay<P> {
    /// A relay reading the outbox on `redis` and publishing through `publisher`. Creates the
    /// consumer group on every shard if it does not exist yet.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn new(
        redis: Redis,
        publisher: P,
        settings: RelaySettings,
    ) -> Result<Self, StoreError> {
        let replication = settings
            .confirm
            .map(|wait| Replication::new(std::sync::Arc::clone(redis.nodes()), wait));
        let relay = Self {
            redis,
            publisher,
            settings,
            release: Script::new(include_str!("../store/scripts/lock_release.lua")),
            counters: Counters::default(),
            replication,
            health: Dependencies::default(),
            bus: Dependency::Redis,
        };
        ensure_groups(&relay.redis).await?;
        Ok(relay)
    }

    /// Reports on `health` whether Redis and `bus` (the dependency the publisher reaches)
    /// answer, as `/ready` and `dependency_reachable` show them.
    #[must_use]
    pub fn watched(mut self, health: Dependencies, bus: Dependency) -> Self {
        self.health = health;
        self.bus = bus;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &RelaySettings {
        &self.settings
    }

    /// Totals so far.
    pub fn stats(&self) -> RelayStats {
        let c = &self.counters;
        RelayStats {
            published: c.published.load(Ordering::Relaxed),
            redelivered: c.redelivered.load(Ordering::Relaxed),
            parked: c.parked.load(Ordering::Relaxed),
            batches: c.batches.load(Ordering::Relaxed),
            unconfirmed: c.unconfirmed.load(Ordering::Relaxed),
        }
    }

    /// Publishes until the outbox is empty, then returns the totals. A shard blocked by
    /// another relay's pending entries waits until they can be claimed.
    ///
    /// # Errors
    /// [`StoreError`] when the outbox's Redis fails; bus failures are retried.
    pub async fn drain(&self) -> Result<RelayStats, StoreError> {
        loop {
            let depth = depth(&self.redis).await?;
            if depth.entries == 0 {
                self.publisher.settle().await;
                return Ok(self.stats());
            }
            if !self.sweep_shards(&depth.shards).await? {
                tokio::time::sleep(self.settings.poll_interval).await;
            }
        }
    }

    /// Publishes until `shutdown` resolves, finishing the sweep in progress first. A Redis
    /// error never ends it: it is logged, Redis is marked unreachable, and the sweep is tried
    /// again after a [`Backoff`] (a bus error leaves the entries pending for the next sweep).
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) -> RelayStats {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut backoff = Backoff::default();
        loop {
            let swept = self.sweep().await;
            let pause = match swept {
                Ok(busy) => {
                    self.health.up(Dependency::Redis);
                    backoff.reset();
                    if busy {
                        Duration::ZERO
                    } else {
                        self.settings.poll_interval
                    }
                }
                Err(e) => {
                    self.health.down(Dependency::Redis, &e);
                    let pause = backoff.next_delay();
                    tracing::warn!(error = %e, retry_in = ?pause, "relay sweep failed; retrying");
                    pause
                }
            };
            tokio::select! {
                biased;
                () = &mut shutdown => {
                    self.publisher.settle().await;
                    return self.stats();
                }
                () = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// One pass over the shards that hold entries. True when something was published,
    /// parked or acknowledged.
    ///
    /// # Errors
    /// [`StoreError`] when the outbox's Redis fails.
    pub async fn sweep(&self) -> Result<bool, StoreError> {
        let depth = depth(&self.redis).await?;
        self.sweep_shards(&depth.shards).await
    }

    async fn sweep_shards(&self, shards: &[OutboxShard]) -> Result<bool, StoreError> {
        let results: Vec<Result<BatchReport, StoreError>> =
            futures::stream::iter(shards.iter().copied())
                .map(|p| self.shard(p))
                .buffer_unordered(self.settings.parallel.max(1))
                .collect()
                .await;
        let mut progressed = false;
        for result in results {
            let report = result?;
            progressed |= report.progressed();
        }
        Ok(progressed)
    }

    /// Processes one batch of a shard under its lease.
    async fn shard(&self, p: OutboxShard) -> Result<BatchReport, StoreError> {
        let lease_ms = u64::try_from(self.settings.lease.as_millis()).unwrap_or(u64::MAX);
        let mut conn = self.redis.shared();
        let leased: Option<String> = redis::cmd("SET")
            .arg(p.lease())
            .arg(&self.settings.consumer)
            .arg("NX")
            .arg("PX")
            .arg(lease_ms)
            .query_async(&mut conn)
            .await
            .store_err()?;
        if leased.is_none() {
            return Ok(BatchReport::default());
        }
        let result = self.leased(p).await;
        let mut release = self.release.key(p.lease());
        release.arg(&self.settings.consumer);
        let released: Result<i64, _> = release.invoke_async(&mut conn).await;
        if let Err(e) = released {
            tracing::debug!(shard = %p, error = %e, "lease release failed; it will expire");
        }
        let report = result?;
        if report.progressed() {
            self.counters.batches.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }

    async fn leased(&self, p: OutboxShard) -> Result<BatchReport, StoreError> {
        let Some(delivered) = self.deliver(p).await? else {
            return Ok(BatchReport::default());
        };
        let mut report = BatchReport::default();
        // The decodable entries up to the first that is not, and their envelopes, in order.
        let mut entries: Vec<Delivered> = Vec::new();
        let mut envelopes: Vec<Envelope> = Vec::new();
        let mut gone = Vec::new();
        let mut poison = None;
        for (id, fields, deliveries) in delivered {
            let Some(fields) = fields else {
                gone.push(id);
                continue;
            };
            match decode(&fields) {
                Ok(envelope) => {
                    envelopes.push(envelope);
                    entries.push((id, Some(fields), deliveries));
                }
                Err(e) => {
                    poison = Some(((id, Some(fields), deliveries), e.to_string()));
                    break;
                }
            }
        }
        let outcome = self.publisher.publish(&envelopes).await;
        match &outcome {
            Ok(()) | Err(PublishError::Rejected { .. }) => self.health.up(self.bus),
            Err(e) => self.health.down(self.bus, e),
        }
        let published = match &outcome {
            Ok(()) => entries.len(),
            Err(e) => e.published().min(entries.len()),
        };
        if !self.settings.publish_delay.is_zero() {
            tokio::time::sleep(self.settings.publish_delay).await;
        }
        let mut ack: Vec<String> = gone;
        for (id, _, deliveries) in &entries[..published] {
            ack.push(id.clone());
            report.published += 1;
            if *deliveries > 1 {
                report.redelivered += 1;
            }
        }
        self.acknowledge(p, &ack).await?;
        report.acknowledged = ack.len() as u64;
        // The entry that stopped the batch: parked once it has been delivered often enough.
        let failed = match outcome {
            Ok(()) => poison,
            Err(PublishError::Rejected { reason, .. }) => {
                counter!("outbox_publish_failures_total").increment(1);
                tracing::warn!(shard = %p, %reason, "the bus rejected an envelope");
                entries
                    .into_iter()
                    .nth(published)
                    .map(|entry| (entry, reason))
            }
            Err(e) => {
                counter!("outbox_publish_failures_total").increment(1);
                tracing::warn!(shard = %p, error = %e, "publishing failed; will retry");
                None
            }
        };
        if let Some(((id, Some(fields), deliveries), reason)) = failed
            && deliveries >= self.settings.max_deliveries
        {
            self.park(p, &id, &fields, deliveries, &reason).await?;
            report.parked += 1;
        }
        self.counters
            .published
            .fetch_add(report.published, Ordering::Relaxed);
        self.counters
            .redelivered
            .fetch_add(report.redelivered, Ordering::Relaxed);
        self.counters
            .parked
            .fetch_add(report.parked, Ordering::Relaxed);
        counter!("outbox_published_total").increment(report.published);
        counter!("outbox_redelivered_total").increment(report.redelivered);
        counter!("outbox_parked_total").increment(report.parked);
        Ok(report)
    }

    /// The next batch for this relay, in stream order: entries claimed from stalled relays and
    /// its own pending entries first, new entries only when none are pending. `None` when the
    /// shard must wait for another relay's pending entries.
    async fn deliver(&self, p: OutboxShard) -> Result<Option<Vec<Delivered>>, StoreError> {
        let key = p.outbox();
        let me = &self.settings.consumer;
        let mut conn = self.redis.shared();
        let idle_ms = u64::try_from(self.settings.claim_idle.as_millis()).unwrap_or(u64::MAX);
        let mut cursor = "0-0".to_owned();
        loop {
            // JUSTID: the claim itself does not count as a delivery; reading it below does.
            let (next, _claimed, _deleted): (String, Vec<String>, Vec<String>) =
                redis::cmd("XAUTOCLAIM")
                    .arg(&key)
                    .arg(GROUP)
                    .arg(me)
                    .arg(idle_ms)
                    .arg(&cursor)
                    .arg("COUNT")
                    .arg(self.settings.batch)
                    .arg("JUSTID")
                    .query_async(&mut conn)
                    .await
                    .store_err()?;
            if next == "0-0" {
                break;
            }
            cursor = next;
        }
        let summary: Value = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .query_async(&mut conn)
            .await
            .store_err()?;
        let pending = pending_by_consumer(&key, summary)?;
        if pending.iter().any(|(c, n)| c != me && *n > 0) {
            return Ok(None);
        }
        let mine = pending.iter().any(|(c, n)| c == me && *n > 0);
        let start = if mine { "0" } else { ">" };
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg(GROUP)
            .arg(me)
            .arg("COUNT")
            .arg(self.settings.batch)
            .arg("STREAMS")
            .arg(&key)
            .arg(start);
        let Some(reply) = self.read(&key, read).await? else {
            return Ok(None);
        };
        let reply: Option<Vec<(String, Vec<StreamEntry>)>> = reply;
        let entries = reply
            .into_iter()
            .flatten()
            .flat_map(|(_, entries)| entries)
            .collect::<Vec<_>>();
        if !mine {
            return Ok(Some(
                entries.into_iter().map(|(id, f)| (id, f, 1)).collect(),
            ));
        }
        let details: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(&key)
            .arg(GROUP)
            .arg("-")
            .arg("+")
            .arg(self.settings.batch)
            .arg(me)
            .query_async(&mut conn)
            .await
            .store_err()?;
        let counts: HashMap<String, u64> = details
            .into_iter()
            .map(|(id, _, _, count)| (id, count))
            .collect();
        Ok(Some(
            entries
                .into_iter()
                .map(|(id, f)| {
                    let n = counts.get(&id).copied().unwrap_or(1);
                    (id, f, n)
                })
                .collect(),
        ))
    }

    /// The batch `read` returns: on the shared connection, or, when batches must be confirmed,
    /// on the primary's own connection followed by a write of ours and the `WAIT` (module docs,
    /// "Only what lasts"). `None` when the replicas did not confirm it: the batch is held (what
    /// `XREADGROUP` handed to this consumer stays pending for it and is read again next time).
    async fn read<T: redis::FromRedisValue>(
        &self,
        key: &str,
        read: redis::Cmd,
    ) -> Result<Option<T>, StoreError> {
        let Some(replication) = &self.replication else {
            return read
                .query_async(&mut self.redis.shared())
                .await
                .store_err()
                .map(Some);
        };
        match replication.write(key, vec![read], None).await {
            Ok(mut values) => {
                let value = values.pop().unwrap_or(Value::Nil);
                redis::from_redis_value(value)
                    .map(Some)
                    .map_err(|e| corrupt(key, format!("unexpected XREADGROUP reply: {e}")))
            }
            Err(e @ (StoreError::NotReplicated { .. } | StoreError::ReplicasMissing { .. })) => {
                self.counters.unconfirmed.fetch_add(1, Ordering::Relaxed);
                counter!("outbox_unconfirmed_batches_total").increment(1);
                tracing::warn!(outbox = key, error = %e, "batch held: its replicas did not confirm it");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    async fn acknowledge(&self, p: OutboxShard, ids: &[String]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = p.outbox();
        let _: (u64, u64) = redis::pipe()
            .atomic()
            .cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(ids)
            .cmd("XDEL")
            .arg(&key)
            .arg(ids)
            .query_async(&mut self.redis.shared())
            .await
            .store_err()?;
        Ok(())
    }

    async fn park(
        &self,
        p: OutboxShard,
        id: &str,
        fields: &HashMap<String, String>,
        deliveries: u64,
        reason: &str,
    ) -> Result<(), StoreError> {
        tracing::error!(shard = %p, entry = id, deliveries, reason, "outbox entry parked");
        let key = p.outbox();
        let mut pipe = redis::pipe();
        let xadd = pipe.atomic().cmd("XADD").arg(p.parked()).arg("*");
        for (k, v) in fields {
            xadd.arg(k).arg(v);
        }
        xadd.arg("parked_entry")
            .arg(id)
            .arg("parked_reason")
            .arg(reason)
            .arg("parked_deliveries")
            .arg(deliveries);
        pipe.cmd("XACK")
            .arg(&key)
            .arg(GROUP)
            .arg(id)
            .cmd("XDEL")
            .arg(&key)
            .arg(id);
        let _: (String, u64, u64) = pipe
            .query_async(&mut self.redis.shared())
            .await
            .store_err()?;
        Ok(())
    }
}

/// Creates the consumer group on every shard that lacks it (reading from the start).
async fn ensure_groups(redis: &Redis) -> Result<(), StoreError> {
    let results: Vec<Result<(), StoreError>> = futures::stream::iter(OutboxShard::all())
        .map(|p| async move {
            let created: redis::RedisResult<String> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(p.outbox())
                .arg(GROUP)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(&mut redis.shared())
                .await;
            match created {
                Ok(_) => Ok(()),
                Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
                Err(e) => Err(crate::connection::error::from_redis(e)),
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// `XPENDING key group` (summary form) → pending count per consumer.
fn pending_by_consumer(key: &str, summary: Value) -> Result<Vec<(String, u64)>, StoreError> {
    let bad = || corrupt(key, "unexpected XPENDING reply");
    let Value::Array(parts) = summary else {
        return Err(bad());
    };
    match parts.get(3) {
        None | Some(Value::Nil) => Ok(Vec::new()),
        Some(consumers) => {
            let list: Vec<(String, String)> =
                redis::from_redis_value_ref(consumers).map_err(|_| bad())?;
            list.into_iter()
                .map(|(c, n)| Ok((c, n.parse().map_err(|_| bad())?)))
                .collect()
        }
    }
}
