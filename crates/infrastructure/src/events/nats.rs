//! The NATS JetStream bus: the relay's publisher and the stream both ends agree on.
//!
//! The stream ([`StreamSettings`], created if absent, never altered if present):
//!
//! | setting | value | why |
//! |---|---|---|
//! | name | `JOURNEY_EVENTS` | |
//! | subjects | `journeys.>` | one subject per journey, `journeys.<partition>.<journey id>` |
//! | description | `flyrtech journey changes; partitions=8` | the partition count, recorded once (below) |
//! | storage | file | survives a restart of the server |
//! | retention | limits, no age or size limit | consumers replay from the start; the operator sets limits to taste |
//! | duplicate window | 2 minutes (JetStream's default) | how long a republished entry is recognised |
//!
//! # Partitions
//! A journey's changes go to one of `partitions` subjects, `journeys.<partition>.<journey id>`,
//! the partition being [`partition_of`] its id: FNV-1a (64-bit) of the id's bytes, modulo the
//! count. A journey always maps to the same partition, so its changes stay in one subject, in
//! order, and a projector that owns a partition (`crate::projection`) sees every change
//! of its journeys. The count is written into the stream's description when the stream is
//! created (`--partitions` of whoever creates it, else [`DEFAULT_PARTITIONS`]) and read from it
//! by every relay and projector after: they cannot disagree. Asking for another count on an
//! existing stream is refused, never applied silently; changing it is a migration
//! (docs/outbox/SCHEMA.md, "Partitions"): stop the relays, let the projectors drain the stream,
//! delete it, start the relays with the new count.
//!
//! Each outbox entry (one journey change, an [`Envelope`]) is one message on its journey's
//! subject, the envelope as JSON, with `Nats-Msg-Id` set to the change's first event id: a
//! relay that republishes an entry (it crashed between publishing and acknowledging the outbox)
//! within the duplicate window is answered "duplicate" and the stream keeps one copy. Past the
//! window a copy gets through; the consumer's `processed_events` row is what makes processing
//! idempotent (`crate::projection`).
//!
//! A traced change (one whose outbox entry carries a `traceparent`) is published under a
//! producer span, `journey.publish`, in the change's trace, and its message carries that span's
//! context in a `traceparent` header for the projector's span to join
//! ([`crate::telemetry::trace_context`]).
//!
//! The publisher returns only once JetStream acknowledged every message of the batch (stored),
//! in order; the relay acknowledges the outbox entries after that. A batch is published in
//! order, all messages sent before the acknowledgements are awaited, so a batch costs about
//! one round trip.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use flyrtech_core::{BusError, Envelope, EventPublisher, InvalidInput, PublishError};

use crate::telemetry::trace_context::{self, TRACEPARENT};

/// The partition count of a stream created without `--partitions`.
pub const DEFAULT_PARTITIONS: u32 = 8;
/// The most partitions a stream may have (each is a JetStream consumer of its own).
pub const MAX_PARTITIONS: u32 = 1024;

/// The partition of journey `id` among `partitions`: FNV-1a (64-bit) of the id's UTF-8 bytes,
/// modulo the count. Stable across processes, versions and machines (it is part of the bus'
/// format: docs/outbox/SCHEMA.md).
pub fn partition_of(id: &str, partitions: u32) -> u32 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = id
        .bytes()
        .fold(OFFSET, |h, b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    u32::try_from(hash % u64::from(partitions.max(1))).unwrap_or(0)
}

const DESCRIPTION: &str = "flyrtech journey changes; partitions=";

/// The partition count a stream's description records, if it is one of ours.
fn recorded_partitions(description: Option<&str>) -> Option<u32> {
    description?
        .strip_prefix(DESCRIPTION)?
        .parse()
        .ok()
        .filter(|n| (1..=MAX_PARTITIONS).contains(n))
}

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
    /// The partition count to record if this connection creates the stream; an existing
    /// stream's must be the same. `None`: whatever the stream records ([`DEFAULT_PARTITIONS`]
    /// for a new one).
    pub partitions: Option<u32>,
    /// The stream's replicas on a JetStream cluster (3 survives the loss of a node), set when
    /// this connection creates or updates the stream. `None`: 1 for a new stream, an existing
    /// one's own count otherwise (a projector never changes it).
    pub replicas: Option<usize>,
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
            partitions: None,
            replicas: None,
        }
    }
}

/// A connection to JetStream with the stream in place.
#[derive(Debug, Clone)]
pub struct JetStream {
    context: jetstream::Context,
    stream: stream::Stream,
    settings: StreamSettings,
    partitions: u32,
}

impl JetStream {
    /// Connects to `url` (`nats://host:port`, or a cluster's comma-separated seeds) and creates
    /// the stream if it does not exist,
    /// recording its partition count.
    ///
    /// # Errors
    /// [`BusError::Unavailable`] when the server cannot be reached or refuses the stream;
    /// [`BusError::InvalidInput`] when `settings.partitions` is not 1 to [`MAX_PARTITIONS`],
    /// differs from the count the stream records, or the stream records none (it was made by
    /// another program, or before partitions).
    pub async fn connect(url: &str, settings: StreamSettings) -> Result<Self, BusError> {
        if let Some(n) = settings.partitions
            && !(1..=MAX_PARTITIONS).contains(&n)
        {
            return Err(InvalidInput::new(
                "partitions",
                format!("must be 1 to {MAX_PARTITIONS}, not {n}"),
            )
            .into());
        }
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(2))
            .retry_on_initial_connect()
            .max_reconnects(None)
            // A cluster's seeds, comma-separated, as for Redis: the client finds the rest.
            .connect(url.split(',').map(str::trim).collect::<Vec<_>>());
        let shown = crate::secrets::redact(url);
        let client = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .map_err(|e| BusError::unavailable(format!("NATS at {shown} did not answer"), e))?
            .map_err(|e| BusError::unavailable(format!("cannot connect to NATS at {shown}"), e))?;
        let context = jetstream::new(client);
        let asked = settings.partitions.unwrap_or(DEFAULT_PARTITIONS);
        let mut config = stream::Config {
            name: settings.name.clone(),
            subjects: vec![format!("{}.>", settings.subject_prefix)],
            description: Some(format!("{DESCRIPTION}{asked}")),
            storage: stream::StorageType::File,
            retention: stream::RetentionPolicy::Limits,
            duplicate_window: settings.duplicate_window,
            num_replicas: settings.replicas.unwrap_or(1),
            ..Default::default()
        };
        // Created with our description, or as it is: either way the stream's own record counts.
        let mut stream = context
            .get_or_create_stream(config.clone())
            .await
            .map_err(|e| BusError::unavailable("cannot create the JetStream stream", e))?;
        let description = stream.cached_info().config.description.clone();
        let partitions = recorded_partitions(description.as_deref()).ok_or_else(|| {
            InvalidInput::new(
                "partitions",
                format!(
                    "the JetStream stream {} records no partition count (its description is \
                     {description:?}): it was made by another program or before partitions; \
                     drain it with the projector that wrote it, delete it, and start again \
                     (docs/outbox/SCHEMA.md, \"Partitions\")",
                    settings.name
                ),
            )
        })?;
        if let Some(n) = settings.partitions
            && n != partitions
        {
            return Err(InvalidInput::new(
                "partitions",
                format!(
                    "{n} asked for, but the JetStream stream {} records {partitions}: changing \
                     the count is a migration, never done on the fly (docs/outbox/SCHEMA.md, \
                     \"Partitions\")",
                    settings.name
                ),
            )
            .into());
        }
        if let Some(limits) = settings.limits {
            config.description = description;
            config.num_replicas = settings
                .replicas
                .unwrap_or(stream.cached_info().config.num_replicas);
            config.max_age = limits.max_age.unwrap_or_default();
            config.max_messages = limits.max_messages;
            context.update_stream(config).await.map_err(|e| {
                BusError::unavailable("cannot set the JetStream stream's limits", e)
            })?;
            stream = context
                .get_stream(&settings.name)
                .await
                .map_err(|e| BusError::unavailable("cannot open the JetStream stream", e))?;
        }
        Ok(Self {
            context,
            stream,
            settings,
            partitions,
        })
    }

    /// The partition count the stream records.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// The subject of one journey's changes: `<prefix>.<partition>.<journey id>`.
    pub fn subject(&self, envelope: &Envelope) -> String {
        self.journey_subject(envelope.journey_id.as_str())
    }

    /// The subject of the changes of the journey `id`.
    pub fn journey_subject(&self, id: &str) -> String {
        format!(
            "{}.{}.{id}",
            self.settings.subject_prefix,
            partition_of(id, self.partitions)
        )
    }

    /// The subjects of one partition, as a consumer filters them: `<prefix>.<partition>.>`.
    pub fn partition_subjects(&self, partition: u32) -> String {
        format!("{}.{partition}.>", self.settings.subject_prefix)
    }

    /// The JetStream context, for consumers of the stream.
    pub fn context(&self) -> &jetstream::Context {
        &self.context
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
    /// [`BusError::Unavailable`].
    pub async fn messages(&self) -> Result<u64, BusError> {
        let mut stream = self.stream.clone();
        let info = stream
            .info()
            .await
            .map_err(|e| BusError::unavailable("cannot read the stream's state", e))?;
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

impl JetStreamPublisher {
    /// The `traceparent` header of a traced change's message: its producer span's context
    /// (the span joins the change's trace and is kept in `spans` until the batch is
    /// acknowledged), or the change's own context when the relay itself is not traced, so that
    /// the projector still joins the request's trace.
    fn trace(
        &self,
        envelope: &Envelope,
        subject: &str,
        spans: &mut Vec<tracing::Span>,
    ) -> Option<String> {
        let carried = envelope.trace.as_deref()?;
        let span = tracing::info_span!(
            target: trace_context::SPANS,
            "journey.publish",
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = subject,
            journey = %envelope.journey_id,
            version = envelope.version.get(),
        );
        trace_context::adopt(&span, Some(carried));
        let header = trace_context::of_span(&span).unwrap_or_else(|| carried.to_owned());
        spans.push(span);
        Some(header)
    }
}

impl EventPublisher for JetStreamPublisher {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        let mut pending = Vec::with_capacity(batch.len());
        // One producer span per traced change, open until the batch is acknowledged.
        let mut spans = Vec::new();
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
            let subject = self.bus.subject(envelope);
            if let Some(trace) = self.trace(envelope, &subject, &mut spans) {
                headers.insert(TRACEPARENT, trace.as_str());
            }
            let sent = self
                .bus
                .context
                .publish_with_headers(subject, headers, payload.into())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partition_is_fnv1a_of_the_id() {
        // FNV-1a 64 reference values: "" and "a".
        assert_eq!(
            partition_of("", u32::MAX),
            (0xcbf2_9ce4_8422_2325u64 % u64::from(u32::MAX)) as u32
        );
        assert_eq!(
            partition_of("a", u32::MAX),
            (0xaf63_dc4c_8601_ec8cu64 % u64::from(u32::MAX)) as u32
        );
        for id in ["JRN-001", "JRN-002", "LAB-x-1"] {
            assert!(partition_of(id, 8) < 8);
            assert_eq!(partition_of(id, 1), 0);
        }
        // Spread: 1,000 ids over 8 partitions, none empty, none with more than twice its share.
        let mut counts = [0u32; 8];
        for n in 0..1000 {
            counts[partition_of(&format!("JRN-{n}"), 8) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (1..250).contains(&c)), "{counts:?}");
    }

    #[test]
    fn only_our_description_records_a_count() {
        assert_eq!(
            recorded_partitions(Some("flyrtech journey changes; partitions=8")),
            Some(8)
        );
        assert_eq!(
            recorded_partitions(Some("flyrtech journey changes; partitions=0")),
            None
        );
        assert_eq!(
            recorded_partitions(Some("flyrtech journey changes; partitions=x")),
            None
        );
        assert_eq!(recorded_partitions(Some("another stream")), None);
        assert_eq!(recorded_partitions(None), None);
    }
}
