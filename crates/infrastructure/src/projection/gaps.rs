//! Changes the bus' consumer never delivered, found by the changes held behind them and read
//! from the stream itself.
//!
//! # The race it closes
//! The projection applies a journey's version n only after n - 1, and keeps a later version in
//! `held_events` until its predecessor arrives ([`super`]). That relies on JetStream
//! redelivering every message a projector fetched and did not acknowledge. A replicated
//! consumer does not always: when its leader changes while a delivered, unacknowledged message
//! has no quorum on the consumer's state, the new leader can start past it (nats-server has
//! fixed several such paths over its releases). The message is still in the stream, but the
//! consumer reports nothing pending, so it never comes back. Seen here with nats-server
//! 2.9.10 when one node of three was killed under load. The projection then held every
//! later change of the journey behind a version that never arrived, and stayed behind the
//! store for good.
//!
//! # What it guarantees
//! The consumer is trusted for speed, the stream for completeness. A change held for longer
//! than `gap_after` ([`ProjectorSettings::gap_after`](super::ProjectorSettings::gap_after),
//! a few of the consumer's `ack_wait`, so an ordinary redelivery comes first) makes its
//! projector read the journey's subject from the stream with a short-lived consumer of its
//! own (no acknowledgements, deleted when read). The versions between the journey's position
//! and its first held change are applied by [`apply_batch`], with the rules of every batch: a
//! duplicate is dropped, the held changes are released in order. A version the stream does not
//! hold yet (the relay is behind) is left for the bus to deliver, and the next round looks
//! again. A partitioned projector fills only the journeys of the partitions it leases.
//!
//! A round runs at most once per `gap_after` and reads at most [`JOURNEYS_PER_ROUND`]
//! journeys: those never read first, then the least recently read, so a gap the stream cannot
//! fill (the relay is behind, or the stream's limits dropped the change) costs one read per
//! round in turn and keeps no other journey waiting. Each read is the journey's whole subject,
//! as many messages as the stream keeps of that journey, which the stream's limits bound.
//! While no change is held a round is one query, and what it remembers is only the journeys
//! still held.
//!
//! A round never fails its projector's step: a journey whose subject cannot be read is logged
//! and tried again next round. `projector_gap_fills_total` counts the changes a round applied
//! (not those the consumer had delivered meanwhile, which are duplicates by then): the bus
//! skipped their delivery, or held them back past `gap_after` (a PostgreSQL outage longer than
//! that makes the first round after it read what the consumer would still have redelivered).

use std::collections::{HashMap, HashSet};
use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use flyrtech_core::{BusError, Envelope};
use futures::StreamExt;
use tokio_postgres::Client;

use super::ProjectionError;
use super::apply::{AppliedBatch, apply_batch};
use crate::events::nats::{JetStream, partition_of};

/// The most journeys one round reads from the stream.
pub const JOURNEYS_PER_ROUND: usize = 16;

/// How long reading one journey's subject may take before the round gives up on it.
const READ_LIMIT: Duration = Duration::from_secs(10);

/// The journeys whose oldest held change has waited longer than `gap_after`: each one's id,
/// position and first held version, the longest held first.
const STUCK: &str = "SELECT h.journey_id, COALESCE(max(p.last_version), 0), min(h.version) \
                     FROM held_events h LEFT JOIN journey_positions p USING (journey_id) \
                     GROUP BY h.journey_id \
                     HAVING min(h.held_at) < now() - make_interval(secs => $1) \
                     ORDER BY min(h.held_at)";

/// One projector's gap filling: when its last round ran, and when it last read each journey
/// still held.
#[derive(Debug, Default)]
pub struct Gaps {
    round: Option<Instant>,
    /// The stuck journeys this projector has read, and when. A round reads the ones never read
    /// first, then the least recently read, so that gaps the stream cannot fill (the relay is
    /// behind, or the stream's limits dropped the change) do not keep the others waiting. Only
    /// journeys still stuck are kept.
    read_at: HashMap<String, Instant>,
}

impl Gaps {
    /// At most once per `gap_after`: fills the gaps of the journeys whose held changes have
    /// waited longer than `gap_after`, among those of the partitions `owned` accepts, at most
    /// [`JOURNEYS_PER_ROUND`] of them. The missing versions are read from the journey's subject
    /// on `bus` and applied in one transaction per journey. Answers what was applied.
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL or JetStream fails; what was applied before stays.
    pub async fn fill(
        &mut self,
        bus: &JetStream,
        client: &mut Client,
        owned: impl Fn(u32) -> bool,
        gap_after: Duration,
    ) -> Result<AppliedBatch, ProjectionError> {
        let mut filled = AppliedBatch::default();
        if self.round.is_some_and(|at| at.elapsed() < gap_after) {
            return Ok(filled);
        }
        self.round = Some(Instant::now());
        let mut stuck: Vec<(String, i64, i64)> = client
            .query(STUCK, &[&gap_after.as_secs_f64()])
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1), row.get(2)))
            .filter(|(journey, _, _): &(String, i64, i64)| {
                owned(partition_of(journey, bus.partitions()))
            })
            .collect();
        let still: HashSet<&str> = stuck.iter().map(|(j, _, _)| j.as_str()).collect();
        self.read_at.retain(|j, _| still.contains(j.as_str()));
        // Never read first (None sorts first), then the least recently read; stable, so the
        // longest held first among equals.
        stuck.sort_by_key(|(journey, _, _)| self.read_at.get(journey).copied());
        for (journey, position, first_held) in stuck.into_iter().take(JOURNEYS_PER_ROUND) {
            let (Ok(from), Ok(to)) = (u64::try_from(position + 1), u64::try_from(first_held - 1))
            else {
                continue;
            };
            // Marked read before the read: a journey whose read fails goes to the back too.
            self.read_at.insert(journey.clone(), Instant::now());
            let missing = match read_subject(bus, &journey, from..=to).await {
                Ok(missing) => missing,
                Err(e) => {
                    tracing::warn!(%journey, error = %e, "cannot read the journey's subject; the next round tries again");
                    continue;
                }
            };
            if missing.is_empty() {
                tracing::debug!(%journey, from, to, "held changes wait for versions the stream does not hold yet");
                continue;
            }
            let applied = apply_batch(client, &missing).await?;
            // Only what this applied: a change the consumer had delivered meanwhile is a
            // duplicate here, not a skipped delivery.
            if applied.stats.applied > 0 {
                tracing::warn!(%journey, from, to, applied = applied.stats.applied, "the bus never delivered these changes; read from the stream");
                metrics::counter!("projector_gap_fills_total").increment(applied.stats.applied);
            }
            filled.stats += applied.stats;
            filled.occurred_at.extend(applied.occurred_at);
        }
        Ok(filled)
    }
}

/// The changes of journey `journey` on `bus` whose version is in `wanted`, in stream order: its
/// subject read whole by an ephemeral consumer without acknowledgements, deleted afterwards.
async fn read_subject(
    bus: &JetStream,
    journey: &str,
    wanted: RangeInclusive<u64>,
) -> Result<Vec<Envelope>, ProjectionError> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let unavailable = |what: &'static str| {
        move |e: &dyn std::fmt::Display| {
            ProjectionError::Bus(BusError::unavailable(what, e.to_string()))
        }
    };
    let mut consumer = bus
        .stream()
        .create_consumer(pull::Config {
            filter_subject: bus.journey_subject(journey),
            ack_policy: AckPolicy::None,
            deliver_policy: DeliverPolicy::All,
            // Gone by itself should the delete below not reach the server.
            inactive_threshold: READ_LIMIT * 3,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable("cannot create a consumer to read a journey's subject")(&e))?;
    let name = consumer.cached_info().name.clone();
    let read = async {
        let mut found = Vec::new();
        let mut left = consumer
            .info()
            .await
            .map_err(|e| unavailable("cannot read the consumer's state")(&e))?
            .num_pending;
        while left > 0 {
            let mut messages = consumer
                .fetch()
                .max_messages(512)
                .expires(Duration::from_secs(1))
                .messages()
                .await
                .map_err(|e| unavailable("JetStream fetch failed")(&e))?;
            let mut got = 0;
            while let Some(message) = messages.next().await {
                let message = message.map_err(|e| unavailable("JetStream fetch failed")(&e))?;
                got += 1;
                if let Ok(envelope) = serde_json::from_slice::<Envelope>(&message.payload)
                    && !envelope.events.is_empty()
                    && wanted.contains(&envelope.version.get())
                {
                    found.push(envelope);
                }
            }
            if got == 0 {
                break;
            }
            left = left.saturating_sub(got);
        }
        Ok::<_, ProjectionError>(found)
    };
    let found = tokio::time::timeout(READ_LIMIT, read).await;
    if let Err(e) = bus.stream().delete_consumer(&name).await {
        tracing::debug!(error = %e, consumer = name, "not deleted; it expires when inactive");
    }
    match found {
        Ok(found) => found,
        Err(_) => Err(ProjectionError::Bus(BusError::unavailable(
            "reading a journey's subject",
            format!("not read within {READ_LIMIT:?}"),
        ))),
    }
}
