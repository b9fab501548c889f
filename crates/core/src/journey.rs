//! The journey aggregate: a booking with its flight segments.
//!
//! All status changes go through [`Journey::apply`], which checks the transition table, mutates
//! the aggregate and bumps its [`JourneyVersion`] by exactly one. A change to the status something
//! already has is a no-op: nothing changes and the version stays.
//!
//! The JSON shape is the original service's (camelCase, `journeys.json`); the version is added as
//! `version` once the journey has changed at least once, so the sample data round-trips unchanged.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{DomainError, Target};
use crate::events::{DomainEvent, EventId, EventKind, EventRaiser};
use crate::ids::{JourneyId, SegmentId};
use crate::input::InvalidInput;
use crate::money::Money;
use crate::status::{JourneyStatus, SegmentStatus, Status, Transition};
use crate::version::JourneyVersion;

/// One flight of a journey.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Segment {
    /// Unique within its journey.
    pub segment_id: SegmentId,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 16, pattern = "\\S")
    )]
    pub origin: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 16, pattern = "\\S")
    )]
    pub destination: String,
    #[serde(deserialize_with = "rfc3339")]
    pub departure_time: DateTime<Utc>,
    /// Not before `departureTime`.
    #[serde(deserialize_with = "rfc3339")]
    pub arrival_time: DateTime<Utc>,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 16, pattern = "\\S")
    )]
    pub flight_number: String,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 100, pattern = "\\S")
    )]
    pub carrier: String,
    pub status: SegmentStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0.0, exclusive_maximum = 1000000000000.0, multiple_of = 0.01, example = 425.25))]
    pub price: Money,
}

/// A passenger's booking: the aggregate root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Journey {
    pub id: JourneyId,
    #[cfg_attr(
        feature = "openapi",
        schema(min_length = 1, max_length = 200, pattern = "\\S")
    )]
    pub passenger_name: String,
    #[cfg_attr(feature = "openapi", schema(max_length = 254, pattern = "@"))]
    pub passenger_email: String,
    #[serde(deserialize_with = "rfc3339")]
    pub booking_date: DateTime<Utc>,
    pub status: JourneyStatus,
    #[cfg_attr(feature = "openapi", schema(value_type = f64, minimum = 0.0, exclusive_maximum = 1000000000000.0, multiple_of = 0.01, example = 850.5))]
    pub total_price: Money,
    /// Redis' cjson encodes an empty list as `{}`; accepting that keeps a journey without
    /// segments readable after the `lua` strategy rewrote it.
    #[serde(deserialize_with = "list_or_empty_object")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub segments: Vec<Segment>,
    /// At most 64 entries.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Assigned by the service: absent until the first change, then one more per change.
    #[serde(default, skip_serializing_if = "JourneyVersion::is_initial")]
    #[cfg_attr(feature = "openapi", schema(read_only, value_type = u64, minimum = 0))]
    pub version: JourneyVersion,
    /// Events raised by [`Journey::apply`] and not yet taken by the store.
    #[serde(skip)]
    pub events: EventRaiser,
}

/// A requested status change: the command both update paths share.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatusChange {
    /// Set one segment's status.
    Segment {
        segment_id: SegmentId,
        status: SegmentStatus,
    },
    /// Set the journey's own status.
    Journey { status: JourneyStatus },
}

impl StatusChange {
    /// The requested status, by name.
    pub fn target_status(&self) -> &'static str {
        match self {
            Self::Segment { status, .. } => status.as_str(),
            Self::Journey { status } => status.as_str(),
        }
    }

    /// The statuses from which the target may be reached, by name: what the in-Redis strategies
    /// pass to their scripts so that the transition table lives in one place.
    pub fn allowed_predecessors(&self) -> Vec<&'static str> {
        match self {
            Self::Segment { status, .. } => status.predecessors().map(Status::as_str).collect(),
            Self::Journey { status } => status.predecessors().map(Status::as_str).collect(),
        }
    }

    /// What is being changed.
    pub fn target(&self) -> Target {
        match self {
            Self::Segment { segment_id, .. } => Target::Segment(segment_id.clone()),
            Self::Journey { .. } => Target::Journey,
        }
    }

    /// Builds the refusal for a change from `from` (a status name read from storage).
    pub fn invalid_from(&self, from: &str) -> DomainError {
        fn canonical<S: Status>(raw: &str) -> &'static str {
            S::parse(raw).map_or("an unknown status", Status::as_str)
        }
        let from = match self {
            Self::Segment { .. } => canonical::<SegmentStatus>(from),
            Self::Journey { .. } => canonical::<JourneyStatus>(from),
        };
        DomainError::InvalidTransition {
            target: self.target(),
            from,
            to: self.target_status(),
        }
    }
}

/// What [`Journey::apply`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The status changed; the journey is now at `version`.
    Changed { version: JourneyVersion },
    /// The status already was the target: nothing changed.
    Unchanged,
}

impl Journey {
    /// Applies a status change at instant `now`: checks the transition table, sets the status,
    /// bumps the version and raises the change's events (see [`crate::events`]). A no-op
    /// raises nothing. On error the journey is left exactly as it was.
    ///
    /// `now` comes from the caller's injected [`crate::Clock`]: it becomes the events'
    /// occurred-at, whenever they are stored or published.
    ///
    /// # Errors
    /// [`DomainError::SegmentNotFound`] when the segment does not exist;
    /// [`DomainError::InvalidTransition`] when the table forbids the change.
    pub fn apply(
        &mut self,
        change: &StatusChange,
        now: DateTime<Utc>,
    ) -> Result<Applied, DomainError> {
        let version = self.version.next();
        let (transition, kind) = match change {
            StatusChange::Segment { segment_id, status } => {
                let segment = self
                    .segments
                    .iter_mut()
                    .find(|s| &s.segment_id == segment_id)
                    .ok_or_else(|| DomainError::SegmentNotFound {
                        journey: self.id.clone(),
                        segment: segment_id.clone(),
                    })?;
                let from = segment.status;
                let transition = set_status(&mut segment.status, *status, change)?;
                let kind = EventKind::SegmentStatusChanged {
                    segment_id: segment_id.clone(),
                    from,
                    to: *status,
                };
                (transition, kind)
            }
            StatusChange::Journey { status } => {
                let from = self.status;
                let transition = set_status(&mut self.status, *status, change)?;
                (
                    transition,
                    EventKind::JourneyStatusChanged { from, to: *status },
                )
            }
        };
        if transition == Transition::NoOp {
            return Ok(Applied::Unchanged);
        }
        self.version = version;
        self.raise(kind, now);
        if self.status == JourneyStatus::Completed && matches!(change, StatusChange::Journey { .. })
        {
            self.raise(
                EventKind::JourneyCompleted {
                    customer_id: self.passenger_email.clone(),
                    total_amount_cents: self.total_price.cents(),
                    completed_at: now,
                },
                now,
            );
        }
        Ok(Applied::Changed { version })
    }

    fn raise(&mut self, kind: EventKind, occurred_at: DateTime<Utc>) {
        self.events.raise(DomainEvent {
            id: EventId::new(),
            journey_id: self.id.clone(),
            version: self.version,
            occurred_at,
            kind,
        });
    }

    /// Hands the raised events to the caller (the store, which writes them to the outbox with
    /// the state), leaving none pending.
    pub fn take_events(&mut self) -> Vec<DomainEvent> {
        self.events.take()
    }

    /// The segment with this id, if any.
    pub fn segment(&self, id: &SegmentId) -> Option<&Segment> {
        self.segments.iter().find(|s| &s.segment_id == id)
    }

    /// Checks the invariants a journey must hold to be created.
    ///
    /// # Errors
    /// [`InvalidInput`] naming the first field that is wrong.
    pub fn validate_new(&self) -> Result<(), InvalidInput> {
        require_text("passengerName", &self.passenger_name, 200)?;
        require_text("passengerEmail", &self.passenger_email, 254)?;
        if !self.passenger_email.contains('@') {
            return Err(InvalidInput::new(
                "passengerEmail",
                "is not an email address",
            ));
        }
        if !self.version.is_initial() {
            return Err(InvalidInput::new("version", "is assigned by the service"));
        }
        if self.segments.len() > MAX_SEGMENTS {
            return Err(InvalidInput::new(
                "segments",
                format!("at most {MAX_SEGMENTS} segments per journey"),
            ));
        }
        let mut seen = HashSet::new();
        for s in &self.segments {
            if !seen.insert(&s.segment_id) {
                return Err(InvalidInput::new(
                    "segments",
                    format!("segment id {} appears twice", s.segment_id),
                ));
            }
            require_text("origin", &s.origin, 16)?;
            require_text("destination", &s.destination, 16)?;
            require_text("flightNumber", &s.flight_number, 16)?;
            require_text("carrier", &s.carrier, 100)?;
            if s.arrival_time < s.departure_time {
                return Err(InvalidInput::new(
                    "arrivalTime",
                    format!("segment {} arrives before it departs", s.segment_id),
                ));
            }
        }
        if self.metadata.len() > 64 {
            return Err(InvalidInput::new("metadata", "at most 64 entries"));
        }
        for (key, value) in &self.metadata {
            if key.chars().count() > MAX_METADATA_KEY_CHARS {
                return Err(InvalidInput::new(
                    "metadata",
                    format!("a key is at most {MAX_METADATA_KEY_CHARS} characters"),
                ));
            }
            if value.chars().count() > MAX_METADATA_VALUE_CHARS {
                return Err(InvalidInput::new(
                    "metadata",
                    format!(
                        "the value of {key:?} is longer than {MAX_METADATA_VALUE_CHARS} characters"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Most segments one journey may have.
pub const MAX_SEGMENTS: usize = 1000;

/// Longest metadata key, in characters.
pub const MAX_METADATA_KEY_CHARS: usize = 64;

/// Longest metadata value, in characters: every update of a document strategy reads and writes
/// the whole journey, so what a client may store in one bounds what each update costs Redis.
pub const MAX_METADATA_VALUE_CHARS: usize = 1024;

fn set_status<S: Status>(
    current: &mut S,
    to: S,
    change: &StatusChange,
) -> Result<Transition, DomainError> {
    let transition = current
        .transition_to(to)
        .map_err(|()| change.invalid_from(current.as_str()))?;
    *current = to;
    Ok(transition)
}

fn require_text(field: &str, value: &str, max: usize) -> Result<(), InvalidInput> {
    if value.trim().is_empty() {
        Err(InvalidInput::new(field, "must not be empty"))
    } else if value.chars().count() > max {
        Err(InvalidInput::new(
            field,
            format!("must be at most {max} characters"),
        ))
    } else {
        Ok(())
    }
}

/// A date-time as RFC 3339 writes it: four-digit years (0000 to 9999, what the original's .NET
/// clients parse), a `T`, and an offset. chrono's own parse also takes extended years
/// (`+99999-01-01T00:00:00Z`), which are refused here.
fn rfc3339<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
    let text = std::borrow::Cow::<str>::deserialize(d)?;
    // `parse_from_rfc3339` takes four-digit years only; chrono's `FromStr`, which serde's
    // derive would use, also takes `+99999`.
    DateTime::parse_from_rfc3339(&text)
        .ok()
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| {
            let shown: String = text.chars().take(40).collect();
            serde::de::Error::custom(format!(
                "{shown:?} is not an RFC 3339 date-time with a four-digit year \
                 (2026-11-21T08:00:00Z)"
            ))
        })
}

fn list_or_empty_object<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Segment>, D::Error> {
    // A visitor rather than an untagged enum: untagged buffering would turn exact numbers into
    // floats-in-disguise under serde_json's arbitrary_precision.
    struct Segments;
    impl<'de> serde::de::Visitor<'de> for Segments {
        type Value = Vec<Segment>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of segments")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(segment) = seq.next_element()? {
                out.push(segment);
            }
            Ok(out)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            match map.next_key::<serde::de::IgnoredAny>()? {
                None => Ok(Vec::new()),
                Some(_) => Err(serde::de::Error::custom("segments must be a list")),
            }
        }
    }
    d.deserialize_any(Segments)
}

/// The sample-data file format: `{"journeys": [...]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JourneyFile {
    pub journeys: Vec<Journey>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journey(booking_date: &str) -> serde_json::Result<Journey> {
        serde_json::from_str(&format!(
            r#"{{"id":"JRN-1","passengerName":"A","passengerEmail":"a@b","bookingDate":"{booking_date}","status":"Confirmed","totalPrice":1.00,"segments":[]}}"#
        ))
    }

    /// RFC 3339, four-digit years: what the contract promises and the original's clients parse.
    #[test]
    fn dates_are_rfc3339_with_four_digit_years() {
        for good in [
            "2026-11-21T08:00:00Z",
            "0001-01-01T00:00:00+02:00",
            "9999-12-31T23:59:59.999Z",
        ] {
            assert!(journey(good).is_ok(), "{good}");
        }
        for bad in [
            "+99999-01-01T00:00:00Z",
            "-0001-01-01T00:00:00Z",
            "2026-11-21",
            "2026-11-21 08:00:00",
            "21/11/2026",
        ] {
            let err = journey(bad).expect_err(bad).to_string();
            assert!(err.contains("RFC 3339"), "{bad}: {err}");
        }
    }

    /// A journey that passes every check: two segments, metadata, version 0.
    fn valid() -> Journey {
        serde_json::from_value(serde_json::json!({
            "id": "JRN-1", "passengerName": "A", "passengerEmail": "a@b",
            "bookingDate": "2026-11-21T08:00:00Z", "status": "Confirmed", "totalPrice": 12.34,
            "segments": [segment("S1"), segment("S2")],
            "metadata": {"channel": "Web"}
        }))
        .expect("test data")
    }

    fn segment(id: &str) -> serde_json::Value {
        serde_json::json!({
            "segmentId": id, "flightNumber": "IB1", "origin": "MAD", "destination": "BCN",
            "departureTime": "2026-12-01T08:00:00Z", "arrivalTime": "2026-12-01T09:00:00Z",
            "status": "Scheduled", "carrier": "Iberia", "price": 6.17
        })
    }

    fn seg(id: &str) -> SegmentId {
        SegmentId::parse(id).expect("test data")
    }

    fn field(result: Result<(), InvalidInput>) -> String {
        result.expect_err("refused").field
    }

    /// What the in-Redis strategies are given: the target's name and exactly the statuses the
    /// table lets reach it.
    #[test]
    fn a_change_names_its_target_and_the_statuses_that_may_reach_it() {
        for to in SegmentStatus::ALL.iter().copied() {
            let change = StatusChange::Segment {
                segment_id: seg("S1"),
                status: to,
            };
            assert_eq!(change.target_status(), to.as_str());
            let allowed = change.allowed_predecessors();
            for from in SegmentStatus::ALL.iter().copied().filter(|f| *f != to) {
                assert_eq!(
                    allowed.contains(&from.as_str()),
                    from.transition_to(to).is_ok(),
                    "{from:?} -> {to:?}"
                );
            }
        }
        let completed = StatusChange::Journey {
            status: JourneyStatus::Completed,
        };
        assert_eq!(completed.target_status(), "Completed");
        assert!(!completed.allowed_predecessors().is_empty());
        let refused = |from: &str| match completed.invalid_from(from) {
            DomainError::InvalidTransition { from, .. } => from,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused("cancelled"), "Cancelled");
        assert_eq!(refused("Landed?"), "an unknown status");
    }

    /// A change touches only its own segment, bumps the version once and raises one event at
    /// that version; the same status again changes and raises nothing.
    #[test]
    fn a_change_applies_to_its_segment_once_and_raises_its_event() {
        let mut journey = valid();
        let now = Utc::now();
        let departed = StatusChange::Segment {
            segment_id: seg("S2"),
            status: SegmentStatus::Boarding,
        };
        let version = JourneyVersion::new(1);
        assert_eq!(
            journey.apply(&departed, now),
            Ok(Applied::Changed { version })
        );
        assert_eq!(journey.version, version);
        assert_eq!(
            journey.segment(&seg("S1")).expect("test data").status,
            SegmentStatus::Scheduled
        );
        assert_eq!(
            journey.segment(&seg("S2")).expect("test data").status,
            SegmentStatus::Boarding
        );
        assert!(journey.segment(&seg("S3")).is_none());
        let events = journey.take_events();
        assert_eq!(events.len(), 1, "{events:?}");
        assert_eq!(events[0].version, version);
        assert_eq!(events[0].kind.name(), "SegmentStatusChanged");
        assert!(journey.take_events().is_empty(), "handed over once");
        assert_eq!(journey.apply(&departed, now), Ok(Applied::Unchanged));
        assert_eq!(journey.version, version);
        assert!(journey.take_events().is_empty());
    }

    /// Completing the journey raises the completion with the exact amount; no other change
    /// does, not even a segment change of a completed journey.
    #[test]
    fn only_completing_the_journey_raises_the_completion() {
        let mut journey = valid();
        let now = Utc::now();
        let to = |status| StatusChange::Journey { status };
        journey
            .apply(&to(JourneyStatus::InProgress), now)
            .expect("test data");
        assert_eq!(journey.take_events().len(), 1);
        journey
            .apply(&to(JourneyStatus::Completed), now)
            .expect("test data");
        let events = journey.take_events();
        let names: Vec<&str> = events.iter().map(|e| e.kind.name()).collect();
        assert_eq!(names, ["JourneyStatusChanged", "JourneyCompleted"]);
        assert!(matches!(
            events[1].kind,
            EventKind::JourneyCompleted {
                total_amount_cents: 1234,
                ..
            }
        ));
        let segment = StatusChange::Segment {
            segment_id: seg("S1"),
            status: SegmentStatus::Boarding,
        };
        journey.apply(&segment, now).expect("test data");
        let names: Vec<&str> = journey
            .take_events()
            .iter()
            .map(|e| e.kind.name())
            .collect();
        assert_eq!(names, ["SegmentStatusChanged"]);
    }

    /// Every rule of a new journey, at its boundary: the limit itself passes, one past it is
    /// refused naming the field.
    #[test]
    fn a_new_journey_is_checked_at_every_boundary() {
        assert_eq!(valid().validate_new(), Ok(()));
        let with = |edit: &dyn Fn(&mut Journey)| {
            let mut journey = valid();
            edit(&mut journey);
            journey.validate_new()
        };
        assert_eq!(
            field(with(&|j| j.passenger_name = " ".into())),
            "passengerName"
        );
        assert_eq!(with(&|j| j.passenger_name = "n".repeat(200)), Ok(()));
        assert_eq!(
            field(with(&|j| j.passenger_name = "n".repeat(201))),
            "passengerName"
        );
        assert_eq!(
            field(with(&|j| j.passenger_email = "ab".into())),
            "passengerEmail"
        );
        assert_eq!(
            field(with(&|j| j.version = JourneyVersion::new(1))),
            "version"
        );
        assert_eq!(
            field(with(&|j| j.segments[1].segment_id = seg("S1"))),
            "segments"
        );
        assert_eq!(
            field(with(&|j| j.segments[0].origin = String::new())),
            "origin"
        );
        assert_eq!(
            field(with(&|j| j.segments[0].carrier = "c".repeat(101))),
            "carrier"
        );
        assert_eq!(
            with(&|j| j.segments[0].arrival_time = j.segments[0].departure_time),
            Ok(())
        );
        assert_eq!(
            field(with(&|j| j.segments[0].arrival_time =
                j.segments[0].departure_time - chrono::Duration::seconds(1))),
            "arrivalTime"
        );
        let segments = |n: usize| {
            move |j: &mut Journey| {
                let template = j.segments[0].clone();
                j.segments = (0..n)
                    .map(|i| Segment {
                        segment_id: seg(&format!("S{i}")),
                        ..template.clone()
                    })
                    .collect();
            }
        };
        assert_eq!(with(&segments(MAX_SEGMENTS)), Ok(()));
        assert_eq!(field(with(&segments(MAX_SEGMENTS + 1))), "segments");
        let entries = |n: usize| {
            move |j: &mut Journey| {
                j.metadata = (0..n).map(|i| (format!("k{i}"), "v".into())).collect();
            }
        };
        assert_eq!(with(&entries(64)), Ok(()));
        assert_eq!(field(with(&entries(65))), "metadata");
        let entry = |key: String, value: String| {
            move |j: &mut Journey| {
                j.metadata = [(key.clone(), value.clone())].into();
            }
        };
        let k = |n| "k".repeat(n);
        assert_eq!(with(&entry(k(MAX_METADATA_KEY_CHARS), "v".into())), Ok(()));
        assert_eq!(
            field(with(&entry(k(MAX_METADATA_KEY_CHARS + 1), "v".into()))),
            "metadata"
        );
        assert_eq!(
            with(&entry("k".into(), "v".repeat(MAX_METADATA_VALUE_CHARS))),
            Ok(())
        );
        assert_eq!(
            field(with(&entry(
                "k".into(),
                "v".repeat(MAX_METADATA_VALUE_CHARS + 1)
            ))),
            "metadata"
        );
    }

    /// `segments` is a list; `{}` (what Lua's cjson makes of an empty list) reads as one, any
    /// other object or type is refused.
    #[test]
    fn segments_are_a_list_or_cjsons_empty_object() {
        let with = |segments: serde_json::Value| {
            let mut json = serde_json::to_value(valid()).expect("test data");
            json["segments"] = segments;
            serde_json::from_value::<Journey>(json).map(|j| j.segments.len())
        };
        assert_eq!(
            with(serde_json::json!([segment("A"), segment("B")])).expect("test data"),
            2
        );
        assert_eq!(with(serde_json::json!({})).expect("test data"), 0);
        let object = with(serde_json::json!({"S1": segment("S1")}))
            .expect_err("refused")
            .to_string();
        assert!(object.contains("must be a list"), "{object}");
        let text = with(serde_json::json!("S1"))
            .expect_err("refused")
            .to_string();
        assert!(text.contains("a list of segments"), "{text}");
    }
}
