//! The NATS JetStream bus: the relay's publisher and the stream both ends agree on.
//!
//! The stream ([`StreamSettings`], created if absent, never altered if present):
//!
//! | setting | value | why |
//! |---|---|---|
//! | name | `JOURNEY_EVENTS` | |
//! | subjects | `journeys.>` | one subject per journey, `journeys.<journey id>` |
//! | storage | file | survives a restart of the server |
//! | retention | limits, no age or size limit | consumers replay from the start; the operator sets limits to taste |
//! | duplicate window | 2 minutes (JetStream's default) | how long a republished entry is recognised |
//!
//! Each outbox entry (one journey change, an [`Envelope`]) is one message on its journey's
//! subject, the envelope as JSON, with `Nats-Msg-Id` set to the change's first event id: a
//! relay that republishes an entry (it crashed between publishing and acknowledging the outbox)
//! within the duplicate window is answered "duplicate" and the stream keeps one copy. Past the
//! window a copy gets through; the consumer's `processed_events` row is what makes processing
//! idempotent (`crate::events::projection`).
//!
//! The publisher returns only once JetStream acknowledged every message of the batch (stored),
//! in order; the relay acknowledges the outbox entries after that. A batch is published in
//! order, all messages sent before the acknowledgements are awaited, so a batch costs about
//! one round trip.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use flyrtech_core::{Envelope, EventPublisher, PublishError, StoreError};

/// The stream's configuration.
#[derive(Debug, Clone)]
pub struct StreamSettings {
    /// The stream's name.
    pub name: String,
    /// Subjects are `<prefix>.<journey id>`.
    pub subject_prefix: String,
    /// JetStream's duplicate window.
    pub duplicate_window: Duration,
    /// Limits to set on the stream (the relay's retention; JetStream's limits drop the oldest
    /// messages whatever its consumers have read, like the Redis bus's hard cap). `None` leaves
    /// an existing stream's limits as they are (projectors).
    pub limits: Option<StreamLimits>,
}

/// How much of the JetStream stream is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Messages older than this are dropped (`None`: no age limit).
    pub max_age: Option<Duration>,
    /// Messages beyond this count are dropped, oldest first.
    pub max_messages: i64,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            name: "JOURNEY_EVENTS".into(),
            subject_prefix: "journeys".into(),
            duplicate_window: Duration::from_secs(120),
            limits: None,
        }
    }
}

impl StreamSettings {
    /// The subject of one journey's changes.
    pub fn subject(&self, envelope: &Envelope) -> String {
        format!("{}.{}", self.subject_prefix, envelope.journey_id)
    }
}

/// A connection to JetStream with the stream in place.
#[derive(Debug, Clone)]
pub struct JetStream {
    context: jetstream::Context,
    stream: stream::Stream,
    settings: StreamSettings,
}

impl JetStream {
    /// Connects to `url` (`nats://host:port`) and creates the stream if it does not exist.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the server cannot be reached or refuses the stream.
    pub async fn connect(url: &str, settings: StreamSettings) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connect(url);
        let shown = crate::plumbing::secret::redact(url);
        let client = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .map_err(|e| StoreError::unavailable(format!("NATS at {shown} did not answer"), e))?
            .map_err(|e| {
                StoreError::unavailable(format!("cannot connect to NATS at {shown}"), e)
            })?;
        let context = jetstream::new(client);
        let mut config = stream::Config {
            name: settings.name.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        };
        let stream =
            match settings.limits {
                None => context.get_or_create_stream(config).await.map_err(|e| {
                    StoreError::unavailable("cannot create the JetStream stream", e)
                })?,
                Some(limits) => {
                    config.max_age = limits.max_age.unwrap_or_default();
                    config.max_messages = limits.max_messages;
                    context.create_or_update_stream(config).await.map_err(|e| {
                        StoreError::unavailable("cannot create or update the JetStream stream", e)
                    })?;
                    context.get_stream(&settings.name).await.map_err(|e| {
                        StoreError::unavailable("cannot open the JetStream stream", e)
                    })?
                }
            };
        Ok(Self {
            context,
            stream,
            settings,
        })
    }

    /// The stream.
    pub fn stream(&self) -> &stream::Stream {
        &self.stream
    }

    /// The stream's settings.
    pub fn settings(&self) -> &StreamSettings {
        &self.settings
    }

    /// Messages in the stream now.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn messages(&self) -> Result<u64, StoreError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| StoreError::unavailable("cannot read the stream's state", e))?;
        Ok(info.state.messages)
    }
}

/// Publishes outbox entries to JetStream (see the module docs).
#[derive(Debug, Clone)]
pub struct JetStreamPublisher {
    bus: JetStream,
}

impl JetStreamPublisher {
    /// A publisher on `bus`.
    pub fn new(bus: JetStream) -> Self {
        Self { bus }
    }
}

impl EventPublisher for JetStreamPublisher {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        let mut pending = Vec::with_capacity(batch.len());
        for (published, envelope) in batch.iter().enumerate() {
            let payload = serde_json::to_vec(envelope).map_err(|e| PublishError::Rejected {
                published,
                reason: e.to_string(),
            })?;
            let mut headers = async_nats::HeaderMap::new();
            if let Some(first) = envelope.events.first() {
                headers.insert(
                    async_nats::header::NATS_MESSAGE_ID,
                    first.id.to_string().as_str(),
                );
            }
            let sent = self
                .bus
                .context
                .publish_with_headers(self.bus.settings.subject(envelope), headers, payload.into())
                .await;
            match sent {
                Ok(ack) => pending.push(ack),
                // Nothing after a failed send may count as published: report the acknowledged
                // prefix of what was sent before it.
                Err(e) => {
                    let published = settle(pending).await.unwrap_or_else(|(n, _)| n);
                    return Err(PublishError::Unavailable {
                        published,
                        message: e.to_string(),
                    });
                }
            }
        }
        settle(pending)
            .await
            .map(drop)
            .map_err(|(published, message)| PublishError::Unavailable { published, message })
    }
}

/// Awaits the acknowledgements in order: how many there were, or how many came before the
/// first failure and why it failed.
async fn settle(
    pending: Vec<jetstream::context::PublishAckFuture>,
) -> Result<usize, (usize, String)> {
    let mut published = 0;
    for ack in pending {
        ack.await.map_err(|e| (published, e.to_string()))?;
        published += 1;
    }
    Ok(published)
}
