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
use crate::version::JourneyVersion;

/// What a consumer does with an envelope, once it is its turn.
pub trait Projection {
    /// Applies one change. Called exactly once per version of a journey, in version order.
    fn apply(&mut self, envelope: &Envelope);
}

/// What becomes of one delivered change: the rule every consumer of the bus follows, the
/// in-memory [`Consumer`] here and the PostgreSQL projector alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The next version of its journey: apply it now.
    Apply,
    /// Seen before (its id is known): skip it, nothing changes.
    Duplicate,
    /// Beyond the next version: park it until the gap fills.
    Park,
    /// An unseen change for a version already applied or already parked: ignore it (with a
    /// correct store this never happens; with the naive one it is a lost update).
    Stale,
}

/// Decides one delivery of `version` for a journey whose last applied version is `applied`;
/// `seen` when its id was consumed before, `parked` when another change already waits at that
/// version.
pub fn decide(
    seen: bool,
    applied: JourneyVersion,
    version: JourneyVersion,
    parked: bool,
) -> Decision {
    if seen {
        Decision::Duplicate
    } else if version <= applied || parked {
        Decision::Stale
    } else if version == applied.next() {
        Decision::Apply
    } else {
        Decision::Park
    }
}

/// One journey's place in its changes: the last version applied and the changes parked behind a
/// gap. [`Sequence::offer`] applies [`decide`] and releases what an applied change unblocks, so a
/// journey's changes come out exactly once each and in version order.
#[derive(Debug, Clone)]
pub struct Sequence<T> {
    applied: JourneyVersion,
    parked: BTreeMap<JourneyVersion, T>,
}

impl<T> Default for Sequence<T> {
    fn default() -> Self {
        Self::new(JourneyVersion::INITIAL)
    }
}

/// What [`Sequence::offer`] did with a change.
#[derive(Debug, PartialEq, Eq)]
pub enum Offered<T> {
    /// Applied: the change itself, then the parked changes it released, in version order.
    Applied(Vec<T>),
    /// Parked behind a gap.
    Parked,
    /// Ignored as stale; handed back.
    Stale(T),
}

impl<T> Sequence<T> {
    /// A journey whose changes up to `applied` are applied and none is parked.
    pub fn new(applied: JourneyVersion) -> Self {
        Self {
            applied,
            parked: BTreeMap::new(),
        }
    }

    /// Puts back a change parked earlier (read from where a consumer keeps them).
    pub fn restore(&mut self, version: JourneyVersion, item: T) {
        self.parked.insert(version, item);
    }

    /// Offers one unseen change at `version`.
    pub fn offer(&mut self, version: JourneyVersion, item: T) -> Offered<T> {
        match decide(
            false,
            self.applied,
            version,
            self.parked.contains_key(&version),
        ) {
            Decision::Apply => {
                self.applied = version;
                let mut out = vec![item];
                while let Some(next) = self.parked.remove(&self.applied.next()) {
                    self.applied = self.applied.next();
                    out.push(next);
                }
                Offered::Applied(out)
            }
            Decision::Park => {
                self.parked.insert(version, item);
                Offered::Parked
            }
            Decision::Stale | Decision::Duplicate => Offered::Stale(item),
        }
    }

    /// The last version applied.
    pub fn applied(&self) -> JourneyVersion {
        self.applied
    }

    /// Goes back to `to` as the last version applied, keeping what is parked. Undoing the
    /// changes applied after it is the caller's work: the PostgreSQL projection does it when the
    /// store gave a version it had published before to another change (a failover discarded the
    /// first).
    pub fn rewind(&mut self, to: JourneyVersion) {
        self.applied = self.applied.min(to);
    }

    /// Takes the change parked at `version` out, if there is one.
    pub fn unpark(&mut self, version: JourneyVersion) -> Option<T> {
        self.parked.remove(&version)
    }

    /// The parked changes, in version order.
    pub fn parked(&self) -> impl Iterator<Item = (&JourneyVersion, &T)> {
        self.parked.iter()
    }
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

/// Applies envelopes to a [`Projection`] exactly once each, in per-journey version order.
#[derive(Debug)]
pub struct Consumer<P> {
    projection: P,
    journeys: HashMap<JourneyId, Sequence<Envelope>>,
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
        let ids: Vec<EventId> = envelope.events.iter().map(|e| e.id).collect();
        let sequence = self
            .journeys
            .entry(envelope.journey_id.clone())
            .or_default();
        match sequence.offer(envelope.version, envelope) {
            Offered::Stale(_) => {
                self.stats.stale += 1;
                Delivery::Stale
            }
            Offered::Parked => {
                self.seen.extend(ids);
                self.stats.held += 1;
                Delivery::Held
            }
            Offered::Applied(ready) => {
                self.seen.extend(ids);
                for envelope in &ready {
                    self.projection.apply(envelope);
                }
                self.stats.applied += ready.len() as u64;
                Delivery::Applied {
                    released: ready.len() - 1,
                }
            }
        }
    }

    /// The last version applied for a journey (0 when none).
    pub fn applied(&self, journey: &JourneyId) -> JourneyVersion {
        self.journeys
            .get(journey)
            .map_or(JourneyVersion::INITIAL, Sequence::applied)
    }

    /// The envelopes held behind a gap, per journey: (journey, first missing version, held
    /// versions).
    pub fn gaps(&self) -> Vec<(JourneyId, JourneyVersion, Vec<JourneyVersion>)> {
        let mut gaps: Vec<_> = self
            .journeys
            .iter()
            .filter(|(_, s)| s.parked().next().is_some())
            .map(|(id, s)| {
                (
                    id.clone(),
                    s.applied().next(),
                    s.parked().map(|(v, _)| *v).collect(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SegmentStatus;
    use proptest::prelude::*;

    fn v(n: u64) -> JourneyVersion {
        JourneyVersion::new(n)
    }

    #[test]
    fn the_decision_table() {
        assert_eq!(decide(true, v(1), v(2), false), Decision::Duplicate);
        assert_eq!(decide(false, v(1), v(2), false), Decision::Apply);
        assert_eq!(decide(false, v(1), v(4), false), Decision::Park);
        assert_eq!(decide(false, v(1), v(4), true), Decision::Stale);
        assert_eq!(decide(false, v(3), v(3), false), Decision::Stale);
        assert_eq!(decide(false, v(3), v(1), false), Decision::Stale);
    }

    /// Rewound, a sequence takes the version it rewound past as the next one again; what was
    /// parked stays parked until taken out.
    #[test]
    fn a_rewound_sequence_applies_the_version_again() {
        let mut sequence = Sequence::default();
        assert!(matches!(sequence.offer(v(1), "a1"), Offered::Applied(_)));
        assert!(matches!(sequence.offer(v(2), "a2"), Offered::Applied(_)));
        assert_eq!(sequence.offer(v(4), "a4"), Offered::Parked);
        assert_eq!(sequence.offer(v(2), "b2"), Offered::Stale("b2"));
        sequence.rewind(v(1));
        assert_eq!(sequence.applied(), v(1));
        assert_eq!(sequence.offer(v(2), "b2"), Offered::Applied(vec!["b2"]));
        assert_eq!(sequence.unpark(v(4)), Some("a4"));
        assert_eq!(sequence.unpark(v(4)), None);
        assert_eq!(sequence.offer(v(3), "b3"), Offered::Applied(vec!["b3"]));
        sequence.rewind(v(7));
        assert_eq!(sequence.applied(), v(3), "rewinding never moves forward");
    }

    fn envelope(journey: &str, version: u64, segment: &str, to: SegmentStatus) -> Envelope {
        Envelope::new(vec![crate::DomainEvent {
            id: crate::EventId::new(),
            journey_id: JourneyId::parse(journey).expect("test data"),
            version: v(version),
            occurred_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            kind: crate::EventKind::SegmentStatusChanged {
                segment_id: crate::SegmentId::parse(segment).expect("test data"),
                from: SegmentStatus::Scheduled,
                to,
            },
        }])
        .expect("test data")
    }

    /// Every outcome once, counted exactly: a gap held then released, a duplicate, a stale
    /// change; the gaps named while they last; the projection fed in version order.
    #[test]
    fn a_consumer_counts_what_it_received_and_applies_in_order() {
        let mut consumer = Consumer::new(StatusHistory::default());
        let a = JourneyId::parse("JRN-A").expect("test data");
        let (one, two, three) = (
            envelope("JRN-A", 1, "S1", SegmentStatus::Boarding),
            envelope("JRN-A", 2, "S2", SegmentStatus::Delayed),
            envelope("JRN-A", 3, "S1", SegmentStatus::Departed),
        );
        assert_eq!(
            consumer.receive(one.clone()),
            Delivery::Applied { released: 0 }
        );
        assert_eq!(consumer.receive(three.clone()), Delivery::Held);
        assert_eq!(consumer.gaps(), vec![(a.clone(), v(2), vec![v(3)])]);
        assert_eq!(consumer.receive(one), Delivery::Duplicate);
        assert_eq!(consumer.receive(two), Delivery::Applied { released: 1 });
        assert!(consumer.gaps().is_empty());
        let other = envelope("JRN-A", 2, "S2", SegmentStatus::Cancelled);
        assert_eq!(consumer.receive(other), Delivery::Stale);
        assert_eq!(consumer.applied(&a), v(3));
        assert_eq!(
            consumer.applied(&JourneyId::parse("JRN-B").expect("test data")),
            v(0)
        );
        assert_eq!(
            consumer.stats(),
            ConsumerStats {
                delivered: 5,
                applied: 3,
                duplicates: 1,
                stale: 1,
                held: 1
            }
        );
        let history = consumer.into_projection();
        let journey = &history.journeys[&a];
        assert_eq!(journey.versions, vec![v(1), v(2), v(3)]);
        let s1 = crate::SegmentId::parse("S1").expect("test data");
        assert_eq!(journey.last_status[&Some(s1)], "Departed");
        assert!(!journey.completed);
    }

    /// A completion applied marks the journey completed, and stays marked.
    #[test]
    fn a_completion_marks_the_history() {
        let mut history = StatusHistory::default();
        let completed = Envelope::new(vec![crate::DomainEvent {
            id: crate::EventId::new(),
            journey_id: JourneyId::parse("JRN-A").expect("test data"),
            version: v(1),
            occurred_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            kind: crate::EventKind::JourneyCompleted {
                customer_id: "a@b".into(),
                total_amount_cents: 1,
                completed_at: chrono::DateTime::<chrono::Utc>::UNIX_EPOCH,
            },
        }])
        .expect("test data");
        history.apply(&completed);
        history.apply(&envelope("JRN-A", 2, "S1", SegmentStatus::Boarding));
        assert!(history.journeys[&JourneyId::parse("JRN-A").expect("test data")].completed);
    }

    /// A change read back from where a consumer keeps its parked ones is released like one
    /// parked here.
    #[test]
    fn a_restored_change_is_released_when_its_gap_fills() {
        let mut sequence = Sequence::new(v(1));
        sequence.restore(v(3), "c3");
        assert_eq!(
            sequence.parked().map(|(v, _)| *v).collect::<Vec<_>>(),
            vec![v(3)]
        );
        assert_eq!(
            sequence.offer(v(2), "c2"),
            Offered::Applied(vec!["c2", "c3"])
        );
    }

    proptest! {
        /// Versions 1..=n delivered in any order, each any number of times (a repeat is a
        /// duplicate the caller filtered, or a second change at a version, which is stale): the
        /// first delivery of each version comes out exactly once, in version order.
        #[test]
        fn a_sequence_releases_every_version_once_in_order(
            order in (1u64..30).prop_flat_map(|n| {
                proptest::collection::vec(1..=n, (n as usize)..(3 * n as usize))
                    .prop_map(move |mut extra| { extra.extend(1..=n); extra })
                    .prop_shuffle()
                    .prop_map(move |o| (n, o))
            })
        ) {
            let (n, deliveries) = order;
            let mut sequence = Sequence::default();
            let mut out = Vec::new();
            let mut first = std::collections::HashSet::new();
            for (i, version) in deliveries.iter().enumerate() {
                let fresh = first.insert(*version);
                match sequence.offer(v(*version), (*version, i)) {
                    Offered::Applied(ready) => {
                        prop_assert!(fresh, "a repeat of {version} was applied");
                        out.extend(ready);
                    }
                    Offered::Parked => prop_assert!(fresh),
                    Offered::Stale(item) => {
                        prop_assert!(!fresh, "the first {version} was called stale");
                        prop_assert_eq!(item, (*version, i));
                    }
                }
            }
            let versions: Vec<u64> = out.iter().map(|(version, _)| *version).collect();
            prop_assert_eq!(versions, (1..=n).collect::<Vec<_>>());
            prop_assert_eq!(sequence.applied(), v(n));
            prop_assert!(sequence.parked().next().is_none());
        }
    }
}
