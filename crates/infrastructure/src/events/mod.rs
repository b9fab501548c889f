//! The events' way out of Redis: the relay that publishes the outbox, the publishers it
//! publishes through (a Redis Stream, NATS JetStream), and the audit that replays what was
//! published against what was stored. The projection the bus feeds is a room of its own,
//! [`crate::projection`].
//!
//! - [`backlog`]: the outbox's backlog watched by the service: gauges, staleness, the cap.
//! - [`relay`]: the background worker that publishes outbox entries, at least once, in order.
//! - [`publisher`]: the Redis Stream bus, its retention, and [`Bus`](publisher::Bus), the
//!   relay's choice of bus.
//! - [`nats`]: the JetStream bus and the stream both ends agree on.
//! - [`audit`]: replays the published events against the stored journeys to find lost updates.
//!
//! # What it may import
//! The core crate, the rooms below the store ([`crate::connection`], [`crate::replication`], [`crate::keys`], [`crate::secrets`], [`crate::telemetry`]) and [`crate::store`] (the outbox entry's format lives
//! with the store that writes it).

pub mod audit;
pub mod backlog;
pub mod nats;
pub mod publisher;
pub mod relay;

use std::collections::HashMap;

use flyrtech_core::StoreError;

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;

/// The consumer group every relay joins.
pub const GROUP: &str = "relay";

/// Every entry of a stream, oldest first, with its fields; read in chunks so that a large stream
/// never needs one huge reply.
///
/// # Errors
/// [`StoreError::Unavailable`].
pub async fn read_stream(
    redis: &Redis,
    key: &str,
) -> Result<Vec<(String, HashMap<String, String>)>, StoreError> {
    const CHUNK: usize = 10_000;
    let mut out = Vec::new();
    let mut start = "-".to_owned();
    loop {
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(key)
            .arg(&start)
            .arg("+")
            .arg("COUNT")
            .arg(CHUNK)
            .query_async(&mut redis.shared())
            .await
            .store_err()?;
        let done = entries.len() < CHUNK;
        if let Some((last, _)) = entries.last() {
            start = format!("({last}");
        }
        out.extend(entries);
        if done {
            return Ok(out);
        }
    }
}
