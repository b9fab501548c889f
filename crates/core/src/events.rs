//! Domain events: what the journey aggregate says happened, recorded with the change itself.
//!
//! [`Journey::apply`](crate::Journey::apply) raises the events of a change and collects them on
//! the aggregate ([`EventRaiser`]); nothing in the domain publishes. The store takes them with
//! [`Journey::take_events`](crate::Journey::take_events) and writes them to the outbox in the same
//! atomic step as the new state; a relay publishes them later. So an event exists exactly when
//! its change was stored.
//!
//! | event | raised when | carries |
//! |---|---|---|
//! | [`EventKind::SegmentStatusChanged`] | a segment's status changes | segment, from, to |
//! | [`EventKind::JourneyStatusChanged`] | the journey's status changes | from, to |
//! | [`EventKind::JourneyCompleted`] | the journey's status becomes `Completed` | customer, total in cents, completed-at |
//!
//! A no-op (the status already is the target) raises nothing.
//!
//! Every event has an id (UUIDv7), the journey version its change produced, and the instant the
//! domain method ran, read from an injected [`Clock`] by the caller, never the time of
//! persistence: a change that is retried, queued or relayed late still says when it happened.
//!
//! The events of one change travel together as one [`Envelope`]: the version is the
//! per-journey sequence number that consumers order by ([`crate::consumer`]).

use std::fmt;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{JourneyId, SegmentId};
use crate::input::InvalidInput;
use crate::status::{JourneyStatus, SegmentStatus, Status};
use crate::version::JourneyVersion;

/// The source of "now" for domain methods, injected so that tests can fix time and so that the
/// instant is taken when the decision is made.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that says what it is told to: for tests.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock stopped at `at`.
    pub fn new(at: DateTime<Utc>) -> Self {
        Self(Mutex::new(at))
    }

    /// Moves the clock to `at`.
    pub fn set(&self, at: DateTime<Utc>) {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = at;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A domain event's identity: a UUIDv7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh UUIDv7.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The UUID itself (for stores that have a UUID type).
    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    /// Parses the hyphenated form.
    ///
    /// # Errors
    /// [`InvalidInput`] when `raw` is not a UUID.
    pub fn parse(raw: &str) -> Result<Self, InvalidInput> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|e| InvalidInput::new("event id", e.to_string()))
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// One thing that happened to a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DomainEvent {
    /// Unique; consumers deduplicate by it.
    pub id: EventId,
    /// The journey it happened to.
    pub journey_id: JourneyId,
    /// The journey version the change produced: the per-journey sequence number.
    pub version: JourneyVersion,
    /// When the domain method ran (from the injected clock).
    pub occurred_at: DateTime<Utc>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened, with the data consumers need.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all_fields = "camelCase")]
#[non_exhaustive]
pub enum EventKind {
    /// A segment's status changed.
    SegmentStatusChanged {
        segment_id: SegmentId,
        from: SegmentStatus,
        to: SegmentStatus,
    },
    /// The journey's own status changed.
    JourneyStatusChanged {
        from: JourneyStatus,
        to: JourneyStatus,
    },
    /// The journey was completed: the assessment's `OrderCompleted`, for journeys.
    JourneyCompleted {
        /// The passenger's identity (their email address).
        customer_id: String,
        /// The journey's total price in integer cents, exact.
        total_amount_cents: i64,
        /// When it was completed (the change's occurred-at).
        completed_at: DateTime<Utc>,
    },
}

impl EventKind {
    /// The event's type name, as serialized.
    pub fn name(&self) -> &'static str {
        match self {
            Self::SegmentStatusChanged { .. } => "SegmentStatusChanged",
            Self::JourneyStatusChanged { .. } => "JourneyStatusChanged",
            Self::JourneyCompleted { .. } => "JourneyCompleted",
        }
    }
}

/// The events of one change of one journey: the unit the outbox stores, the relay publishes and
/// consumers apply. Its version is the journey's sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    pub journey_id: JourneyId,
    pub version: JourneyVersion,
    /// One or more events, in the order they were raised.
    pub events: Vec<DomainEvent>,
    /// The W3C `traceparent` of the request that made the change, when it was traced: the
    /// relay's and the projector's spans join that trace. Opaque here; absent from the JSON
    /// when absent.
    #[serde(
        default,
        rename = "traceparent",
        skip_serializing_if = "Option::is_none"
    )]
    pub trace: Option<String>,
}

impl Envelope {
    /// Wraps the events of one change.
    ///
    /// # Errors
    /// [`InvalidInput`] when `events` is empty or its events disagree on journey or
    /// version.
    pub fn new(events: Vec<DomainEvent>) -> Result<Self, InvalidInput> {
        let first = events
            .first()
            .ok_or_else(|| InvalidInput::new("events", "a change has at least one event"))?;
        let (journey_id, version) = (first.journey_id.clone(), first.version);
        if events
            .iter()
            .any(|e| e.journey_id != journey_id || e.version != version)
        {
            return Err(InvalidInput::new(
                "events",
                "the events of one change share journey and version",
            ));
        }
        Ok(Self {
            journey_id,
            version,
            events,
            trace: None,
        })
    }

    /// The envelope, carrying the trace context `trace` (a W3C `traceparent`).
    #[must_use]
    pub fn traced(self, trace: Option<String>) -> Self {
        Self { trace, ..self }
    }

    /// The id that identifies the whole change: its first event's.
    pub fn id(&self) -> EventId {
        self.events.first().map_or_else(EventId::new, |e| e.id)
    }

    /// What the change set, and to which status (by name): the journey's own status for a
    /// journey change, the segment's for a segment change.
    pub fn change(&self) -> Option<(Option<&SegmentId>, &'static str)> {
        self.events.iter().find_map(|e| match &e.kind {
            EventKind::SegmentStatusChanged { segment_id, to, .. } => {
                Some((Some(segment_id), to.as_str()))
            }
            EventKind::JourneyStatusChanged { to, .. } => Some((None, to.as_str())),
            EventKind::JourneyCompleted { .. } => None,
        })
    }
}

/// The events an aggregate has raised and not yet handed to its repository.
///
/// Pending events are not part of the aggregate's value: two journeys with the same state are
/// equal whatever they have raised, and events are never serialized with the journey.
#[derive(Debug, Clone, Default)]
pub struct EventRaiser(Vec<DomainEvent>);

impl EventRaiser {
    /// Records an event.
    pub fn raise(&mut self, event: DomainEvent) {
        self.0.push(event);
    }

    /// The pending events, oldest first.
    pub fn pending(&self) -> &[DomainEvent] {
        &self.0
    }

    /// Hands over the pending events, leaving none.
    pub fn take(&mut self) -> Vec<DomainEvent> {
        std::mem::take(&mut self.0)
    }
}

impl PartialEq for EventRaiser {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for EventRaiser {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JourneyStatus, SegmentStatus};

    fn event(version: u64, kind: EventKind) -> DomainEvent {
        DomainEvent {
            id: EventId::new(),
            journey_id: JourneyId::parse("JRN-1").expect("test data"),
            version: JourneyVersion::new(version),
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            kind,
        }
    }

    fn segment_change() -> EventKind {
        EventKind::SegmentStatusChanged {
            segment_id: SegmentId::parse("S1").expect("test data"),
            from: SegmentStatus::Scheduled,
            to: SegmentStatus::Boarding,
        }
    }

    fn completion() -> EventKind {
        EventKind::JourneyCompleted {
            customer_id: "a@b".into(),
            total_amount_cents: 1,
            completed_at: DateTime::<Utc>::UNIX_EPOCH,
        }
    }

    #[test]
    fn an_event_id_round_trips_through_its_text() {
        let id = EventId::new();
        let text = id.to_string();
        assert_eq!(EventId::parse(&text), Ok(id));
        assert_eq!(id.as_uuid().to_string(), text);
        assert_eq!(id.as_uuid().get_version_num(), 7);
        assert!(EventId::parse("not-a-uuid").is_err());
    }

    /// `name` is what the JSON's `type` says, for every kind.
    #[test]
    fn a_kind_is_named_as_it_is_serialized() {
        let journey = EventKind::JourneyStatusChanged {
            from: JourneyStatus::Confirmed,
            to: JourneyStatus::Cancelled,
        };
        for kind in [segment_change(), journey, completion()] {
            let json = serde_json::to_value(event(1, kind.clone())).expect("test data");
            assert_eq!(json["type"], kind.name());
        }
    }

    /// An envelope is named by its first event, carries its trace, and says what it set: the
    /// segment's status, the journey's, or nothing for a completion alone.
    #[test]
    fn an_envelope_says_what_its_change_set() {
        let first = event(2, segment_change());
        let envelope = Envelope::new(vec![first.clone(), event(2, completion())])
            .expect("test data")
            .traced(Some("00-trace".into()));
        assert_eq!(envelope.id(), first.id);
        assert_eq!(envelope.trace.as_deref(), Some("00-trace"));
        let (target, to) = envelope.change().expect("test data");
        assert_eq!(target.map(SegmentId::as_str), Some("S1"));
        assert_eq!(to, "Boarding");
        let journey = Envelope::new(vec![event(
            3,
            EventKind::JourneyStatusChanged {
                from: JourneyStatus::Confirmed,
                to: JourneyStatus::Cancelled,
            },
        )])
        .expect("test data");
        assert_eq!(journey.change(), Some((None, "Cancelled")));
        let alone = Envelope::new(vec![event(4, completion())]).expect("test data");
        assert_eq!(alone.change(), None);
        assert!(Envelope::new(vec![event(1, completion()), event(2, completion())]).is_err());
    }

    /// Raised events wait in order until taken; they are not part of the journey's value.
    #[test]
    fn raised_events_are_handed_over_once_in_order() {
        let mut raiser = EventRaiser::default();
        let (a, b) = (event(1, segment_change()), event(1, completion()));
        raiser.raise(a.clone());
        raiser.raise(b.clone());
        assert_eq!(raiser.pending(), [a.clone(), b.clone()]);
        assert_eq!(
            raiser,
            EventRaiser::default(),
            "pending events are not the value"
        );
        assert_eq!(raiser.take(), vec![a, b]);
        assert!(raiser.pending().is_empty());
    }

    #[test]
    fn a_manual_clock_says_what_it_is_told() {
        let clock = ManualClock::new(DateTime::<Utc>::UNIX_EPOCH);
        let later = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::hours(1);
        clock.set(later);
        assert_eq!(clock.now(), later);
    }
}
