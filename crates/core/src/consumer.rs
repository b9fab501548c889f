//! The idempotent consumer: applies each journey's published changes exactly once and in order,
//! whatever order and however many times the bus delivers them.
//!
//! Delivery is at-least-once (the relay republishes what it cannot prove it acknowledged) and a
//! reclaimed entry can overtake newer ones, so a consumer must absorb three things:
//! - **duplicates**: an envelope whose event ids were seen before is dropped;
//! - **early arrivals**: an envelope whose version is beyond the next expected one is held until
//!   the gap fills, then released in order (so completed-then-cancelled delivered in reverse
//!   still ends cancelled);
//! - **stale arrivals**: an unseen envelope for a version already applied is ignored and
//!   counted. With a correct store this never happens; with the naive store it is exactly a lost
//!   update (two changes were committed at the same version), which the audit reports.
//!
//! Versions start at 1 (a journey is created at version 0). The seen-id set grows with the events
//! consumed; a long-lived consumer would keep it in its own store with a retention longer than
//! the bus', as the SQL schema in `docs/outbox/SCHEMA.md` does with a unique key.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::events::{Envelope, EventId};
use crate::ids::JourneyId;
use crate::journey::JourneyVersion;

/// What a consumer does with an envelope, once it is its turn.
pub trait Projection {
    /// Applies one change. Called exactly once per version of a journey, in version order.
    fn apply(&mut self, envelope: &Envelope);
}

/// What became of one delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Applied, together with this many held envelopes it released (0 when none).
    Applied { released: usize },
    /// Beyond the next expected version: held until the gap fills.
    Held,
    /// Seen before (by event id): dropped.
    Duplicate,
    /// An unseen change for a version already applied: ignored.
    Stale,
}

/// Counts of what a consumer has received.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConsumerStats {
    /// Deliveries received.
    pub delivered: u64,
    /// Envelopes applied.
    pub applied: u64,
    /// Deliveries dropped as duplicates.
    pub duplicates: u64,
    /// Deliveries ignored as stale.
    pub stale: u64,
    /// Deliveries that had to wait for an earlier version.
    pub held: u64,
}

#[derive(Debug, Default)]
struct Cursor {
    applied: JourneyVersion,
    held: BTreeMap<JourneyVersion, Envelope>,
}

/// Applies envelopes to a [`Projection`] exactly once each, in per-journey version order.
#[derive(Debug)]
pub struct Consumer<P> {
    projection: P,
    journeys: HashMap<JourneyId, Cursor>,
    seen: HashSet<EventId>,
    stats: ConsumerStats,
}

impl<P: Projection> Consumer<P> {
    /// A consumer that has applied nothing yet.
    pub fn new(projection: P) -> Self {
        Self {
            projection,
            journeys: HashMap::new(),
            seen: HashSet::new(),
            stats: ConsumerStats::default(),
        }
    }

    /// Receives one delivery.
    pub fn receive(&mut self, envelope: Envelope) -> Delivery {
        self.stats.delivered += 1;
        if envelope.events.iter().any(|e| self.seen.contains(&e.id)) {
            self.stats.duplicates += 1;
            return Delivery::Duplicate;
        }
        let cursor = self
            .journeys
            .entry(envelope.journey_id.clone())
            .or_default();
        if envelope.version <= cursor.applied || cursor.held.contains_key(&envelope.version) {
            self.stats.stale += 1;
            return Delivery::Stale;
        }
        self.seen.extend(envelope.events.iter().map(|e| e.id));
        if envelope.version != cursor.applied.next() {
            cursor.held.insert(envelope.version, envelope);
            self.stats.held += 1;
            return Delivery::Held;
        }
        cursor.applied = envelope.version;
        self.projection.apply(&envelope);
        self.stats.applied += 1;
        let mut released = 0;
        while let Some(next) = cursor.held.remove(&cursor.applied.next()) {
            cursor.applied = next.version;
            self.projection.apply(&next);
            self.stats.applied += 1;
            released += 1;
        }
        Delivery::Applied { released }
    }

    /// The last version applied for a journey (0 when none).
    pub fn applied(&self, journey: &JourneyId) -> JourneyVersion {
        self.journeys
            .get(journey)
            .map_or(JourneyVersion::INITIAL, |c| c.applied)
    }

    /// The envelopes held behind a gap, per journey: (journey, first missing version, held
    /// versions).
    pub fn gaps(&self) -> Vec<(JourneyId, JourneyVersion, Vec<JourneyVersion>)> {
        let mut gaps: Vec<_> = self
            .journeys
            .iter()
            .filter(|(_, c)| !c.held.is_empty())
            .map(|(id, c)| {
                (
                    id.clone(),
                    c.applied.next(),
                    c.held.keys().copied().collect(),
                )
            })
            .collect();
        gaps.sort_by(|a, b| a.0.cmp(&b.0));
        gaps
    }

    /// What has been received so far.
    pub fn stats(&self) -> ConsumerStats {
        self.stats
    }

    /// The projection.
    pub fn projection(&self) -> &P {
        &self.projection
    }

    /// Gives back the projection.
    pub fn into_projection(self) -> P {
        self.projection
    }
}

/// A projection that remembers every status each change set, per journey: what the audit and
/// the tests compare with the store.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StatusHistory {
    /// Per journey: the last status set for the journey itself (`None` key) and for each
    /// segment, and the applied envelopes in order.
    pub journeys: BTreeMap<JourneyId, JourneyHistory>,
}

/// The applied history of one journey.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct JourneyHistory {
    /// The last status each target was set to: `None` is the journey itself.
    pub last_status: BTreeMap<Option<crate::SegmentId>, &'static str>,
    /// The versions applied, in the order they were applied.
    pub versions: Vec<JourneyVersion>,
    /// Whether a `JourneyCompleted` event was applied.
    pub completed: bool,
}

impl Projection for StatusHistory {
    fn apply(&mut self, envelope: &Envelope) {
        let history = self
            .journeys
            .entry(envelope.journey_id.clone())
            .or_default();
        history.versions.push(envelope.version);
        if let Some((target, to)) = envelope.change() {
            history.last_status.insert(target.cloned(), to);
        }
        history.completed |= envelope
            .events
            .iter()
            .any(|e| matches!(e.kind, crate::EventKind::JourneyCompleted { .. }));
    }
}
