//! One durable JetStream consumer feeding the projection, a batch per transaction, acknowledged
//! after the commit.

use std::time::Duration;

use chrono::Utc;
use flyrtech_core::{BusError, Envelope};

use crate::telemetry::trace_context::{self, TRACEPARENT};
use serde::Serialize;
use tokio_postgres::Client;

use super::ProjectionError;
use super::apply::{AppliedBatch, BatchStats, apply_batch};
use super::gaps::Gaps;
use super::schema::ensure_schema;
use crate::events::nats::JetStream;

/// How `flyrtech project` consumes the bus.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// The durable JetStream consumer's name: restarts resume where it left off.
    pub consumer: String,
    /// Changes fetched and applied per transaction.
    pub batch: usize,
    /// How long an empty fetch waits for messages.
    pub idle_wait: Duration,
    /// How long an applied but unacknowledged message stays with this projector before
    /// JetStream redelivers it (a projector killed mid-batch).
    pub ack_wait: Duration,
    /// How long a change may wait in `held_events` for its predecessor before the projector
    /// reads the missing versions from the stream itself ([`super::gaps`]): three `ack_wait`s
    /// by default, so that an ordinary redelivery comes first.
    pub gap_after: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            consumer: "projection".into(),
            batch: 512,
            idle_wait: Duration::from_millis(200),
            ack_wait: Duration::from_secs(5),
            gap_after: Duration::from_secs(15),
        }
    }
}

pub(super) type PullConsumer =
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>;

/// [`ensure_schema`], saying so when it applied the schema.
pub(super) async fn prepare_schema(client: &Client) -> Result<(), ProjectionError> {
    if ensure_schema(client).await? {
        tracing::info!("applied docs/outbox/SCHEMA.sql: the projection's tables were missing");
    }
    Ok(())
}

/// The durable pull consumer `name` on `bus` (every subject when `filter` is empty), created if
/// absent: explicit acks, from the stream's start, redelivery after `settings.ack_wait`.
pub(super) async fn durable_consumer(
    bus: &JetStream,
    name: &str,
    filter: String,
    settings: &ProjectorSettings,
) -> Result<PullConsumer, ProjectionError> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let consumer = bus
        .stream()
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: filter,
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: settings.ack_wait,
                max_ack_pending: i64::try_from(settings.batch.saturating_mul(4))
                    .unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| BusError::unavailable("cannot create the JetStream consumer", e))?;
    Ok(consumer)
}

/// Fetches up to `batch` messages from `consumer` (waiting at most `wait` for them), applies the
/// changes among them in one transaction on `client`, and acknowledges them after the commit.
pub(super) async fn fetch_and_apply(
    consumer: &PullConsumer,
    client: &mut Client,
    batch: usize,
    wait: Duration,
    stats: &mut ProjectorStats,
) -> Result<AppliedBatch, ProjectionError> {
    use futures::StreamExt;
    let unavailable = |e: &dyn std::fmt::Display| {
        ProjectionError::Bus(BusError::unavailable(
            "JetStream fetch failed",
            e.to_string(),
        ))
    };
    let mut messages = consumer
        .fetch()
        .max_messages(batch)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| unavailable(&e))?;
    // The messages delivered before a failure (a server of the cluster lost mid-fetch) are
    // applied all the same: each redelivery they would otherwise need is one more chance for a
    // replicated consumer to skip them (`super::gaps`).
    let mut received = Vec::new();
    let mut failed = None;
    while let Some(message) = messages.next().await {
        match message {
            Ok(message) => received.push(message),
            Err(e) => {
                failed = Some(unavailable(&e));
                break;
            }
        }
    }
    if let Some(e) = failed {
        if received.is_empty() {
            return Err(e);
        }
        tracing::debug!(error = %e, kept = received.len(), "the fetch ended early; applying what arrived");
    }
    let mut changes = Vec::with_capacity(received.len());
    let mut keep = Vec::with_capacity(received.len());
    // One consumer span per traced change, open until its batch is committed and acknowledged.
    let mut spans = Vec::new();
    for message in received {
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) if !envelope.events.is_empty() => {
                let envelope = traced(envelope, &message, &mut spans);
                changes.push(envelope);
                keep.push(message);
            }
            other => {
                tracing::warn!(subject = %message.subject, error = ?other.err().map(|e| e.to_string()), "not a change; terminated");
                stats.rejected += 1;
                let _ = message.ack_with(async_nats::jetstream::AckKind::Term).await;
            }
        }
    }
    if changes.is_empty() {
        return Ok(AppliedBatch::default());
    }
    let applied = apply_batch(client, &changes).await?;
    // Committed: now (and only now) the messages may go. A lost ack is a redelivery, which
    // the processed_events rows turn into a no-op.
    for message in &keep {
        if let Err(e) = message.ack().await {
            tracing::debug!(error = %e, "ack not sent; the change will be redelivered as a duplicate");
        }
    }
    stats.changes += applied.stats;
    stats.batches += 1;
    record(&applied);
    Ok(applied)
}

/// The change with the trace context its message carries: the relay's `traceparent` header (its
/// producer span), else the one the outbox entry carried. A traced change is applied under a
/// consumer span, `journey.project`, in that trace; the history row keeps the trace id.
fn traced(
    envelope: Envelope,
    message: &async_nats::jetstream::Message,
    spans: &mut Vec<tracing::Span>,
) -> Envelope {
    let header = message
        .headers
        .as_ref()
        .and_then(|h| h.get(TRACEPARENT))
        .map(|v| v.as_str().to_owned());
    let Some(trace) = header.or_else(|| envelope.trace.clone()) else {
        return envelope;
    };
    let span = tracing::info_span!(
        target: trace_context::SPANS,
        "journey.project",
        otel.kind = "consumer",
        messaging.system = "nats",
        journey = %envelope.journey_id,
        version = envelope.version.get(),
    );
    trace_context::adopt(&span, Some(&trace));
    spans.push(span);
    envelope.traced(Some(trace))
}

/// The projector's metrics for one applied batch: `projector_changes_total` by outcome and
/// `projector_lag_seconds` (commit in Redis to commit in PostgreSQL) of each applied change.
fn record(applied: &AppliedBatch) {
    let s = applied.stats;
    for (outcome, n) in [
        ("applied", s.applied),
        ("duplicate", s.duplicates),
        ("held", s.held),
        ("stale", s.stale),
        ("replaced", s.replaced),
        ("superseded", s.superseded),
    ] {
        if n > 0 {
            metrics::counter!("projector_changes_total", "outcome" => outcome).increment(n);
        }
    }
    let now = Utc::now();
    let lag = metrics::histogram!("projector_lag_seconds");
    for at in &applied.occurred_at {
        lag.record((now - *at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
    }
}

/// Totals of a projector's run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectorStats {
    #[serde(flatten)]
    pub changes: BatchStats,
    /// Messages that are not changes (undecodable, no events): terminated, never redelivered.
    pub rejected: u64,
    /// Transactions committed.
    pub batches: u64,
}

impl std::ops::AddAssign for ProjectorStats {
    fn add_assign(&mut self, o: Self) {
        self.changes += o.changes;
        self.rejected += o.rejected;
        self.batches += o.batches;
    }
}

/// The durable consumer that feeds the projection.
#[derive(Debug)]
pub struct Projector {
    bus: JetStream,
    gaps: Gaps,
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    client: Client,
    settings: ProjectorSettings,
    stats: ProjectorStats,
}

impl Projector {
    /// Creates (or resumes) the durable consumer on `bus` and makes sure the schema exists.
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL fails; [`BusError::Unavailable`] (inside
    /// [`ProjectionError::Bus`]) when JetStream does.
    pub async fn new(
        bus: &JetStream,
        client: Client,
        settings: ProjectorSettings,
    ) -> Result<Self, ProjectionError> {
        prepare_schema(&client).await?;
        let consumer = durable_consumer(bus, &settings.consumer, String::new(), &settings).await?;
        Ok(Self {
            bus: bus.clone(),
            gaps: Gaps::default(),
            consumer,
            client,
            settings,
            stats: ProjectorStats::default(),
        })
    }

    /// Totals so far.
    pub fn stats(&self) -> &ProjectorStats {
        &self.stats
    }

    /// Fetches and applies one batch; answers what it applied (empty when the bus had nothing).
    ///
    /// # Errors
    /// [`ProjectionError`]: nothing of the batch was committed or acknowledged (JetStream
    /// redelivers it).
    pub async fn step(&mut self) -> Result<AppliedBatch, ProjectionError> {
        let mut applied = fetch_and_apply(
            &self.consumer,
            &mut self.client,
            self.settings.batch,
            self.settings.idle_wait,
            &mut self.stats,
        )
        .await?;
        fill_gaps(
            &mut self.gaps,
            &self.bus,
            &mut self.client,
            |_| true,
            self.settings.gap_after,
            &mut self.stats,
            &mut applied,
        )
        .await;
        Ok(applied)
    }

    /// Whether the consumer has delivered everything in the stream and nothing awaits an
    /// acknowledgement.
    ///
    /// # Errors
    /// [`ProjectionError::Bus`] when JetStream cannot say.
    pub async fn caught_up(&mut self) -> Result<bool, ProjectionError> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| BusError::unavailable("cannot read the consumer's state", e))?;
        Ok(info.num_pending == 0 && info.num_ack_pending == 0)
    }
}

/// The gaps of `gaps` due now (module `super::gaps`), among the partitions `owned` accepts,
/// filled; what that applied is added to `stats` and `applied`, and recorded.
pub(super) async fn fill_gaps(
    gaps: &mut Gaps,
    bus: &JetStream,
    client: &mut Client,
    owned: impl Fn(u32) -> bool,
    gap_after: Duration,
    stats: &mut ProjectorStats,
    applied: &mut AppliedBatch,
) {
    // The step's batch is committed and acknowledged by now: a failed round must not make it
    // look failed (nor mark a dependency down). The next round tries again.
    let filled = match gaps.fill(bus, client, owned, gap_after).await {
        Ok(filled) => filled,
        Err(e) => {
            tracing::warn!(error = %e, "filling gaps from the stream failed; the next round tries again");
            return;
        }
    };
    stats.changes += filled.stats;
    record(&filled);
    applied.stats += filled.stats;
    applied.occurred_at.extend(filled.occurred_at);
}
