//! The default [`EventPublisher`]: a Redis Stream named `events` (on the store's Redis or any
//! other), one stream entry per published change.
//!
//! Bus entry fields: `journey`, `version`, `envelope` (the [`Envelope`] as JSON, events in
//! the order raised). One stream is one ordered log, so a journey's changes appear on it in the
//! order the relay publishes them. The stream is capped (`MAXLEN ~`) at a retention the operator
//! chooses; the audit can only replay what is retained.
//!
//! Other buses plug in by implementing [`EventPublisher`]: NATS JetStream is built in
//! ([`super::nats`]), and [`Bus`] is the relay's choice between the two at start-up. A Kafka
//! adapter would produce with the journey id as the record key (one partition per journey keeps
//! the order), `acks=all` and `enable.idempotence=true`, and return after the batch's futures
//! complete. Adapters report [`PublishError::Unavailable`] for broker outages and
//! [`PublishError::Rejected`] for a record the broker refuses (too large, not authorised).

use crate::connection::Redis;
use crate::error::corrupt;
use flyrtech_core::{Envelope, EventPublisher, PublishError, StoreError};

/// Publishes envelopes to a Redis Stream.
#[derive(Debug, Clone)]
pub struct RedisStreamPublisher {
    redis: Redis,
    stream: String,
    retention: Option<usize>,
}

impl RedisStreamPublisher {
    /// A publisher to `stream` on `redis`, keeping about `retention` entries (all when
    /// `None`).
    pub fn new(redis: Redis, stream: impl Into<String>, retention: Option<usize>) -> Self {
        Self {
            redis,
            stream: stream.into(),
            retention,
        }
    }
}

impl EventPublisher for RedisStreamPublisher {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for envelope in batch {
            let json = serde_json::to_string(envelope).map_err(|e| PublishError::Rejected {
                published: 0,
                reason: e.to_string(),
            })?;
            let xadd = pipe.cmd("XADD").arg(&self.stream);
            if let Some(retention) = self.retention {
                xadd.arg("MAXLEN").arg("~").arg(retention);
            }
            xadd.arg("*")
                .arg("journey")
                .arg(envelope.journey_id.as_str())
                .arg("version")
                .arg(envelope.version.get())
                .arg("envelope")
                .arg(json);
        }
        // A pipeline on one connection is applied in order. If it fails part-way we cannot tell
        // how far it got: report none published, and the relay republishes the whole batch
        // (duplicates are absorbed by consumers).
        let _: Vec<String> = pipe
            .query_async(&mut self.redis.shared())
            .await
            .map_err(|e| PublishError::Unavailable {
                published: 0,
                message: e.to_string(),
            })?;
        Ok(())
    }
}

/// Every envelope on a bus stream, oldest first, with its bus entry id.
///
/// # Errors
/// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for an entry that is not an envelope.
pub async fn read_bus(redis: &Redis, stream: &str) -> Result<Vec<(String, Envelope)>, StoreError> {
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
}
