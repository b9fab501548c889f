//! The default [`EventPublisher`]: a Redis Stream named `events` (on the store's Redis or any
//! other), one stream entry per published change.
//!
//! Bus entry fields: `journey`, `version`, `envelope` (the [`Envelope`] as JSON, events in
//! the order raised). One stream is one ordered log, so a journey's changes appear on it in the
//! order the relay publishes them; the audit can only replay what is retained.
//!
//! # Retention ([`Retention`])
//! Without it every change of every day would stay in Redis memory. At most once a second, after
//! a batch, the publisher trims the stream (`XTRIM … ~`, whole radix-tree nodes, cheap):
//! - to `max_len` entries, when every consumer group registered on the stream has read and
//!   acknowledged all but the newest `max_len` (no pending entry, lag within `max_len`);
//!   otherwise only the entries every group is done with;
//! - entries older than `max_age`, again only those every group is done with;
//! - beyond `hard_cap` entries, down to it whatever the groups have read: a consumer that far
//!   behind would take Redis down with it. What that drops is counted in
//!   `bus_trimmed_over_cap_total` and logged as a warning naming the lagging groups.
//!
//! # Confirmed publishing ([`RedisStreamPublisher::confirmed`])
//! When the deployment confirms writes (`--wait-replicas`, `--wait-aof`), the relay publishes
//! only outbox entries its replicas hold, and then acknowledges them. The bus stream lives on a
//! primary too: an `XADD` a failover discards after the relay acknowledged its outbox entry is
//! a change lost on the way out (on a cluster the stream and the outbox shard are on different
//! primaries, so replication order does not save it). So each batch is appended in one pipeline
//! with a `WAIT` for the same count (`crate::replication`), and a shortfall is a
//! failed publication: the relay keeps the entries and publishes them again.
//!
//! Other buses plug in by implementing [`EventPublisher`]: NATS JetStream is built in
//! ([`super::nats`]), and [`Bus`] is the relay's choice between the two at start-up. A Kafka adapter
//! (none is built) would produce with the journey id as the record key (one partition per journey keeps
//! the order), `acks=all` and `enable.idempotence=true`, and return after the batch's futures
//! complete. Adapters report [`PublishError::Unavailable`] for broker outages and
//! [`PublishError::Rejected`] for a record the broker refuses (too large, not authorised).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;
use crate::replication::{ReplicaWait, Replication};
use flyrtech_core::{BusError, Envelope, EventPublisher, PublishError, StoreError};
use redis::Value;

/// How much of the bus stream is kept: see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries kept once every consumer group is done with the older ones.
    pub max_len: usize,
    /// Entries older than this are trimmed once every consumer group is done with them.
    pub max_age: Option<Duration>,
    /// Entries beyond this are trimmed whatever the consumer groups have read.
    pub hard_cap: usize,
}

impl Default for Retention {
    /// A million entries (about 0.5 GB of envelopes of a few segments), a day, ten million.
    fn default() -> Self {
        Self {
            max_len: 1_000_000,
            max_age: Some(Duration::from_secs(24 * 3600)),
            hard_cap: 10_000_000,
        }
    }
}

/// How often the stream is trimmed at most.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

/// Publishes envelopes to a Redis Stream.
#[derive(Debug, Clone)]
pub struct RedisStreamPublisher {
    redis: Redis,
    stream: String,
    retention: Option<Retention>,
    trimmed_at: Arc<Mutex<Option<Instant>>>,
    /// Each batch's confirmation, when the deployment asks for one (module docs).
    replication: Option<Arc<Replication>>,
}

/// What one consumer group still needs of the stream.
#[derive(Debug)]
struct GroupState {
    name: String,
    /// The oldest entry it has not finished with: its oldest pending one, else the one after
    /// the last delivered.
    needs_from: StreamId,
    /// Entries delivered but not acknowledged.
    pending: u64,
    /// Entries not delivered yet (`None`: Redis cannot tell).
    lag: Option<u64>,
}

/// A stream entry id, `ms-seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct StreamId(u64, u64);

impl StreamId {
    fn parse(raw: &str) -> Option<Self> {
        let (ms, seq) = raw.split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }

    fn next(self) -> Self {
        Self(self.0, self.1.saturating_add(1))
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// A reply map, RESP2 (flat pairs) or RESP3.
fn fields(value: &Value) -> HashMap<String, Value> {
    match value {
        Value::Map(pairs) => pairs
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, v.clone())))
            .collect(),
        Value::Array(flat) => flat
            .chunks(2)
            .filter_map(|pair| match pair {
                [k, v] => Some((text(k)?, v.clone())),
                _ => None,
            })
            .collect(),
        _ => HashMap::new(),
    }
}

impl RedisStreamPublisher {
    /// A publisher to `stream` on `redis`, trimmed by `retention` (kept whole when `None`).
    pub fn new(redis: Redis, stream: impl Into<String>, retention: Option<Retention>) -> Self {
        Self {
            redis,
            stream: stream.into(),
            retention,
            trimmed_at: Arc::new(Mutex::new(None)),
            replication: None,
        }
    }

    /// This publisher, appending each batch with a confirmation by `wait`'s replicas (module
    /// docs, "Confirmed publishing"); `None` leaves it as it is.
    #[must_use]
    pub fn confirmed(mut self, wait: Option<ReplicaWait>) -> Self {
        self.replication =
            wait.map(|wait| Arc::new(Replication::new(Arc::clone(self.redis.nodes()), wait)));
        self
    }

    /// What each consumer group registered on the stream still needs.
    async fn groups(&self) -> Result<Vec<GroupState>, StoreError> {
        let mut conn = self.redis.shared();
        let reply: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await
            .store_err()?;
        let Value::Array(groups) = reply else {
            return Ok(Vec::new());
        };
        let mut states = Vec::with_capacity(groups.len());
        for group in &groups {
            let group = fields(group);
            let name = group.get("name").and_then(text).unwrap_or_default();
            let pending = group.get("pending").and_then(int).unwrap_or(0);
            let delivered = group
                .get("last-delivered-id")
                .and_then(text)
                .and_then(|raw| StreamId::parse(&raw))
                .unwrap_or(StreamId(0, 0));
            let needs_from = if pending > 0 {
                let summary: Value = redis::cmd("XPENDING")
                    .arg(&self.stream)
                    .arg(&name)
                    .query_async(&mut conn)
                    .await
                    .store_err()?;
                match &summary {
                    Value::Array(parts) => parts
                        .get(1)
                        .and_then(text)
                        .and_then(|raw| StreamId::parse(&raw))
                        .unwrap_or(StreamId(0, 0)),
                    _ => StreamId(0, 0),
                }
            } else {
                delivered.next()
            };
            states.push(GroupState {
                lag: group.get("lag").and_then(int),
                name,
                needs_from,
                pending,
            });
        }
        Ok(states)
    }

    /// Trims the stream by the retention: see the module docs. Returns the entries removed.
    ///
    /// # Errors
    /// [`BusError::Unavailable`].
    pub async fn trim(&self) -> Result<u64, BusError> {
        let Some(retention) = self.retention else {
            return Ok(0);
        };
        let mut conn = self.redis.shared();
        let len: u64 = redis::cmd("XLEN")
            .arg(&self.stream)
            .query_async(&mut conn)
            .await
            .store_err()?;
        if len == 0 {
            return Ok(0);
        }
        let groups = self.groups().await?;
        // `LIMIT 0`: an approximate trim otherwise stops after 100 nodes (10,000 entries by
        // default), so above 10,000 changes a second a once-a-second trim would fall behind and
        // the stream would grow without bound (the soak found it). Whole nodes stay cheap.
        let xtrim = |how: &str, threshold: String| {
            let mut cmd = redis::cmd("XTRIM");
            cmd.arg(&self.stream)
                .arg(how)
                .arg("~")
                .arg(threshold)
                .arg("LIMIT")
                .arg(0);
            cmd
        };
        let cap = u64::try_from(retention.hard_cap).unwrap_or(u64::MAX);
        if len > cap {
            let dropped: u64 = xtrim("MAXLEN", cap.to_string())
                .query_async(&mut conn)
                .await
                .store_err()?;
            let lagging: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
            crate::telemetry::bus_trimmed_over_cap(dropped);
            tracing::warn!(
                stream = %self.stream, dropped, hard_cap = cap, groups = ?lagging,
                "the event stream passed its hard cap: entries trimmed whether or not every consumer group had read them"
            );
            return Ok(dropped);
        }
        // The oldest entry some group still needs; none without groups.
        let needed = groups.iter().map(|g| g.needs_from).min();
        let max_len = u64::try_from(retention.max_len).unwrap_or(u64::MAX);
        let mut removed = 0;
        if len > max_len {
            let safe_by_length = groups
                .iter()
                .all(|g| g.pending == 0 && g.lag.is_some_and(|lag| lag <= max_len));
            let trimmed: u64 = if safe_by_length {
                xtrim("MAXLEN", max_len.to_string())
            } else {
                // Some group is behind: only what every group is done with.
                xtrim("MINID", needed.unwrap_or(StreamId(0, 0)).to_string())
            }
            .query_async(&mut conn)
            .await
            .store_err()?;
            removed += trimmed;
        }
        if let Some(max_age) = retention.max_age {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            let cutoff_ms = u64::try_from(now.saturating_sub(max_age).as_millis()).unwrap_or(0);
            let cutoff = needed.map_or(StreamId(cutoff_ms, 0), |n| n.min(StreamId(cutoff_ms, 0)));
            let trimmed: u64 = xtrim("MINID", cutoff.to_string())
                .query_async(&mut conn)
                .await
                .store_err()?;
            removed += trimmed;
        }
        Ok(removed)
    }

    /// Trims when the last trim is older than [`TRIM_INTERVAL`]; a failure is logged, never the
    /// publisher's failure (the batch is published).
    async fn maybe_trim(&self) {
        {
            let mut at = self
                .trimmed_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if at.is_some_and(|t| t.elapsed() < TRIM_INTERVAL) {
                return;
            }
            *at = Some(Instant::now());
        }
        if let Err(e) = self.trim().await {
            tracing::warn!(stream = %self.stream, error = %e, "could not trim the event stream");
        }
    }
}

impl EventPublisher for RedisStreamPublisher {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut appends = Vec::with_capacity(batch.len());
        for envelope in batch {
            let json = serde_json::to_string(envelope).map_err(|e| PublishError::Rejected {
                published: 0,
                reason: e.to_string(),
            })?;
            let mut xadd = redis::cmd("XADD");
            xadd.arg(&self.stream)
                .arg("*")
                .arg("journey")
                .arg(envelope.journey_id.as_str())
                .arg("version")
                .arg(envelope.version.get())
                .arg("envelope")
                .arg(json);
            appends.push(xadd);
        }
        // A pipeline on one connection is applied in order. If it fails part-way we cannot tell
        // how far it got: report none published, and the relay republishes the whole batch
        // (duplicates are absorbed by consumers). The same when the replicas did not confirm it.
        let unavailable = |message: String| PublishError::Unavailable {
            published: 0,
            message,
        };
        match &self.replication {
            None => {
                let mut pipe = redis::pipe();
                for xadd in appends {
                    pipe.add_command(xadd);
                }
                let _: Vec<String> = pipe
                    .query_async(&mut self.redis.shared())
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
            }
            Some(replication) => {
                let replies = replication
                    .write(&self.stream, appends, None)
                    .await
                    .map_err(|e| unavailable(e.to_string()))?;
                if let Some(Value::ServerError(e)) =
                    replies.iter().find(|v| matches!(v, Value::ServerError(_)))
                {
                    return Err(unavailable(e.to_string()));
                }
            }
        }
        self.maybe_trim().await;
        Ok(())
    }

    async fn settle(&self) {
        if self.retention.is_some()
            && let Err(e) = self.trim().await
        {
            tracing::warn!(stream = %self.stream, error = %e, "could not trim the event stream");
        }
    }
}

/// Every envelope on a bus stream, oldest first, with its bus entry id.
///
/// # Errors
/// [`BusError::Unavailable`]; [`BusError::Corrupt`] for an entry that is not an envelope.
pub async fn read_bus(redis: &Redis, stream: &str) -> Result<Vec<(String, Envelope)>, BusError> {
    super::read_stream(redis, stream)
        .await?
        .into_iter()
        .map(|(id, fields)| {
            let json = fields
                .get("envelope")
                .ok_or_else(|| corrupt(stream, format!("entry {id} has no envelope")))?;
            let envelope: Envelope =
                serde_json::from_str(json).map_err(|e| corrupt(stream, format!("{id}: {e}")))?;
            Ok((id, envelope))
        })
        .collect()
}

/// The bus the relay publishes to, chosen at start-up: the Redis stream (the default) or NATS
/// JetStream.
#[derive(Debug, Clone)]
pub enum Bus {
    /// A Redis Stream ([`RedisStreamPublisher`]).
    Redis(RedisStreamPublisher),
    /// A JetStream stream ([`super::nats::JetStreamPublisher`]).
    JetStream(Box<super::nats::JetStreamPublisher>),
}

impl EventPublisher for Bus {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        match self {
            Self::Redis(p) => p.publish(batch).await,
            Self::JetStream(p) => p.publish(batch).await,
        }
    }

    async fn settle(&self) {
        match self {
            Self::Redis(p) => p.settle().await,
            Self::JetStream(p) => p.settle().await,
        }
    }
}
