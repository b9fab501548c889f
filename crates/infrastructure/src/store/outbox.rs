//! The transactional outbox: every change's events, stored in the same atomic step as the change.
//!
//! The race it closes: publishing an event after the state write (the assessment's buggy
//! interactor) loses the event when the process dies or the bus fails in between, and publishing
//! before the write announces a change that may never be stored. Here each strategy appends one
//! entry to its journey's outbox partition in the same MULTI/EXEC or the same script that writes
//! the state, in the journey's slot (see [`crate::keys`]), so an entry exists if and only if its
//! change was stored. A background relay (`crate::events::relay`) publishes entries later, at least once.
//!
//! # The entry: one stream entry per acknowledged change
//! | field | value |
//! |---|---|
//! | `change` | the change, its parts separated by one space: the version it produced (the per-journey sequence), the status it changed from, the journey id, the target (the segment id, or empty for the journey's own status), the new status, when the domain decided it (RFC 3339, from the injected clock), the status-changed event's id (UUIDv7), and, when the request was traced, the W3C `traceparent` of the update's span ([`crate::telemetry::trace_context`]) |
//! | `done_id`, `customer`, `total` | on completion only: the `JourneyCompleted` event's id, the passenger's identity, the total price as exact decimal text |
//!
//! No part can hold a space: ids are `[A-Za-z0-9._-]`, statuses are names, instants, UUIDs and
//! `traceparent`s have none. One field instead of eight (`journey`, `version`, `at`, `target`,
//! `from`, `to`, `id`, `traceparent`, the entry's first format, which [`decode`] still reads)
//! halves what the update scripts cost Redis to append it (docs/lab.md).
//!
//! The same entry is written by Rust (document strategies, from the aggregate's events) and by
//! the Lua scripts (`lua`, `hash`, from the text Rust passes in, [`Stamp::tail`]); [`decode`]
//! turns either into an [`Envelope`] and computes the total in integer cents exactly. A property
//! test checks that both paths produce the same envelope.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use flyrtech_core::{
    Clock, DomainEvent, Envelope, EventId, EventKind, InvalidInput, JourneyId, JourneyStatus,
    JourneyVersion, Money, SegmentId, SegmentStatus, StatusChange,
};
use rust_decimal::Decimal;

use crate::telemetry::trace_context::TRACEPARENT;

/// The fields of one outbox entry, in order.
pub type Fields = Vec<(&'static str, String)>;

/// Why an outbox entry could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbox entry: {0}")]
pub struct RowError(String);

impl From<InvalidInput> for RowError {
    fn from(e: InvalidInput) -> Self {
        Self(e.to_string())
    }
}

/// What Rust decides before an in-Redis strategy runs its script: the event ids and the instant.
/// The script uses them only if it applies the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stamp {
    pub(crate) at: DateTime<Utc>,
    pub(crate) id: EventId,
    /// Set when the change would complete the journey.
    pub(crate) completion: Option<EventId>,
    /// The update span's `traceparent`, when the request is traced.
    pub(crate) trace: Option<String>,
}

impl Stamp {
    pub(crate) fn new(clock: &dyn Clock, change: &StatusChange) -> Self {
        let completes = matches!(
            change,
            StatusChange::Journey {
                status: JourneyStatus::Completed
            }
        );
        Self {
            at: clock.now(),
            id: EventId::new(),
            completion: completes.then(EventId::new),
            trace: crate::telemetry::trace_context::current(),
        }
    }

    /// The entry's text after the version and the status changed from, for a script to
    /// complete: `<journey> <target> <to> <at> <event id>[ <traceparent>]`.
    pub(crate) fn tail(&self, id: &JourneyId, change: &StatusChange) -> String {
        let target = match change {
            StatusChange::Segment { segment_id, .. } => segment_id.as_str(),
            _ => "",
        };
        change_tail(
            id.as_str(),
            target,
            change.target_status(),
            self.at,
            self.id,
            self.trace.as_deref(),
        )
    }

    /// The completion event's id, or empty.
    pub(crate) fn completion(&self) -> String {
        self.completion.map(|c| c.to_string()).unwrap_or_default()
    }
}

/// `<journey> <target> <to> <at> <event id>[ <traceparent>]`.
fn change_tail(
    journey: &str,
    target: &str,
    to: &str,
    at: DateTime<Utc>,
    event: EventId,
    trace: Option<&str>,
) -> String {
    use std::fmt::Write;
    let mut tail = String::with_capacity(160);
    let _ = write!(
        tail,
        "{journey} {target} {to} {} {event}",
        format_instant(at)
    );
    if let Some(trace) = trace {
        tail.push(' ');
        tail.push_str(trace);
    }
    tail
}

fn format_instant(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The entry for the events one change raised (as [`flyrtech_core::Journey::take_events`]
/// returns them), with the current span's trace context when the request is traced.
///
/// # Errors
/// [`RowError`] when `events` is not the events of one change (none, or no status change).
pub fn encode(events: &[DomainEvent]) -> Result<Fields, RowError> {
    let first = events
        .first()
        .ok_or_else(|| RowError("a change raises at least one event".into()))?;
    let (target, from, to) = match &first.kind {
        EventKind::SegmentStatusChanged {
            segment_id,
            from,
            to,
        } => (segment_id.to_string(), from.to_string(), to.to_string()),
        EventKind::JourneyStatusChanged { from, to } => {
            (String::new(), from.to_string(), to.to_string())
        }
        other => {
            return Err(RowError(format!(
                "a change starts with a status change, not {}",
                other.name()
            )));
        }
    };
    let tail = change_tail(
        first.journey_id.as_str(),
        &target,
        &to,
        first.occurred_at,
        first.id,
        crate::telemetry::trace_context::current().as_deref(),
    );
    let mut fields = vec![(CHANGE, format!("{} {from} {tail}", first.version))];
    for event in &events[1..] {
        match &event.kind {
            EventKind::JourneyCompleted {
                customer_id,
                total_amount_cents,
                ..
            } => fields.extend([
                ("done_id", event.id.to_string()),
                ("customer", customer_id.clone()),
                ("total", Money::from_cents(*total_amount_cents)?.to_string()),
            ]),
            other => return Err(RowError(format!("unexpected {} event", other.name()))),
        }
    }
    Ok(fields)
}

/// Reads an entry back into the envelope of its change.
///
/// # Errors
/// [`RowError`] naming the missing or malformed field.
pub fn decode(fields: &HashMap<String, String>) -> Result<Envelope, RowError> {
    let field = |name: &str| {
        fields
            .get(name)
            .map(String::as_str)
            .ok_or_else(|| RowError(format!("missing field {name}")))
    };
    let change = match fields.get(CHANGE) {
        Some(text) => Change::parse(text)?,
        // The entry's first format: one field per part.
        None => Change {
            version: field("version")?,
            from: field("from")?,
            journey: field("journey")?,
            target: field("target")?,
            to: field("to")?,
            at: field("at")?,
            id: field("id")?,
            trace: fields.get(TRACEPARENT).map(String::as_str),
        },
    };
    let journey_id = JourneyId::parse(change.journey)?;
    let version = JourneyVersion::new(
        change
            .version
            .parse()
            .map_err(|e| RowError(format!("version: {e}")))?,
    );
    let occurred_at = DateTime::parse_from_rfc3339(change.at)
        .map_err(|e| RowError(format!("at: {e}")))?
        .to_utc();
    let event = |id: &str, kind| -> Result<DomainEvent, RowError> {
        Ok(DomainEvent {
            id: EventId::parse(id)?,
            journey_id: journey_id.clone(),
            version,
            occurred_at,
            kind,
        })
    };
    let kind = if change.target.is_empty() {
        EventKind::JourneyStatusChanged {
            from: JourneyStatus::from_str(change.from)?,
            to: JourneyStatus::from_str(change.to)?,
        }
    } else {
        EventKind::SegmentStatusChanged {
            segment_id: SegmentId::parse(change.target)?,
            from: SegmentStatus::from_str(change.from)?,
            to: SegmentStatus::from_str(change.to)?,
        }
    };
    let mut events = vec![event(change.id, kind)?];
    if let Some(done_id) = fields.get("done_id") {
        let text = field("total")?;
        let amount = Decimal::from_str(text)
            .or_else(|_| Decimal::from_scientific(text))
            .map_err(|e| RowError(format!("total {text}: {e}")))?;
        events.push(event(
            done_id,
            EventKind::JourneyCompleted {
                customer_id: field("customer")?.to_owned(),
                total_amount_cents: Money::new(amount)?.cents(),
                completed_at: occurred_at,
            },
        )?);
    }
    Ok(Envelope::new(events)?.traced(change.trace.map(str::to_owned)))
}

/// The field that holds the change.
const CHANGE: &str = "change";

/// The parts of a change, as an entry holds them.
struct Change<'a> {
    version: &'a str,
    from: &'a str,
    journey: &'a str,
    target: &'a str,
    to: &'a str,
    at: &'a str,
    id: &'a str,
    trace: Option<&'a str>,
}

impl<'a> Change<'a> {
    /// `<version> <from> <journey> <target> <to> <at> <id>[ <traceparent>]`, one space apart.
    fn parse(text: &'a str) -> Result<Self, RowError> {
        let mut parts = text.split(' ');
        let mut next = |what: &str| {
            parts
                .next()
                .ok_or_else(|| RowError(format!("change {text:?}: no {what}")))
        };
        let change = Self {
            version: next("version")?,
            from: next("from")?,
            journey: next("journey")?,
            target: next("target")?,
            to: next("to")?,
            at: next("at")?,
            id: next("event id")?,
            trace: None,
        };
        let trace = parts.next();
        if parts.next().is_some() {
            return Err(RowError(format!("change {text:?}: more than 8 parts")));
        }
        Ok(Self { trace, ..change })
    }
}

/// Flattens fields for `XADD`.
pub fn xadd_args(fields: &Fields) -> Vec<&str> {
    fields.iter().flat_map(|(k, v)| [*k, v.as_str()]).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const ID: &str = "0193a5b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b";
    const TRACE: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn the_compact_entry_and_the_first_format_decode_to_one_envelope() {
        let compact = decode(&entry(&[(
            "change",
            &format!("3 Scheduled JRN-1 SEG-1 Delayed 2026-12-05T16:30:00.5Z {ID} {TRACE}"),
        )]))
        .unwrap();
        let first = decode(&entry(&[
            ("journey", "JRN-1"),
            ("version", "3"),
            ("at", "2026-12-05T16:30:00.5Z"),
            ("target", "SEG-1"),
            ("from", "Scheduled"),
            ("to", "Delayed"),
            ("id", ID),
            ("traceparent", TRACE),
        ]))
        .unwrap();
        assert_eq!(compact, first);
        assert_eq!(compact.version, JourneyVersion::new(3));
        assert_eq!(compact.trace.as_deref(), Some(TRACE));
    }

    #[test]
    fn a_journey_status_change_has_an_empty_target() {
        let envelope = decode(&entry(&[(
            "change",
            &format!("1 Confirmed JRN-1  InProgress 2026-12-05T16:30:00Z {ID}"),
        )]))
        .unwrap();
        assert!(matches!(
            envelope.events[0].kind,
            EventKind::JourneyStatusChanged {
                to: JourneyStatus::InProgress,
                ..
            }
        ));
        assert_eq!(envelope.trace, None);
    }

    #[test]
    fn a_change_of_too_few_or_too_many_parts_is_refused() {
        for change in [
            format!("1 Scheduled JRN-1 SEG-1 Delayed {ID}"),
            format!("1 Scheduled JRN-1 SEG-1 Delayed 2026-12-05T16:30:00Z {ID} {TRACE} x"),
        ] {
            assert!(decode(&entry(&[("change", &change)])).is_err(), "{change}");
        }
    }

    #[test]
    fn the_scripts_tail_is_the_entry_after_version_and_old_status() {
        let at = DateTime::parse_from_rfc3339("2026-12-05T16:30:00.5Z")
            .unwrap()
            .to_utc();
        let stamp = Stamp {
            at,
            id: EventId::parse(ID).unwrap(),
            completion: None,
            trace: Some(TRACE.to_owned()),
        };
        let change = StatusChange::Segment {
            segment_id: SegmentId::parse("SEG-1").unwrap(),
            status: SegmentStatus::Delayed,
        };
        let tail = stamp.tail(&JourneyId::parse("JRN-1").unwrap(), &change);
        let decoded = decode(&entry(&[("change", &format!("4 Scheduled {tail}"))])).unwrap();
        assert_eq!(decoded.journey_id.as_str(), "JRN-1");
        assert_eq!(decoded.events[0].occurred_at, at);
        assert_eq!(decoded.trace.as_deref(), Some(TRACE));
    }

    /// The aggregate's events for a change that completes the journey, encoded as the document
    /// strategies append them (`XADD` of [`xadd_args`]), decode to the envelope of those very
    /// events: the completion's id, customer and exact total included.
    #[test]
    fn the_aggregates_events_go_through_the_entry_unchanged() {
        let mut journey = crate::store::fixtures::journey();
        let now = DateTime::parse_from_rfc3339("2026-12-05T16:30:00.5Z")
            .unwrap()
            .to_utc();
        let completes = StatusChange::Journey {
            status: JourneyStatus::Completed,
        };
        let starts = StatusChange::Journey {
            status: JourneyStatus::InProgress,
        };
        journey.apply(&starts, now).unwrap();
        journey.take_events();
        journey.apply(&completes, now).unwrap();
        let events = journey.take_events();
        assert_eq!(events.len(), 2, "{events:?}");
        let fields = encode(&events).unwrap();
        let args = xadd_args(&fields);
        let pairs: HashMap<String, String> = args
            .chunks(2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect();
        assert_eq!(pairs.len() * 2, args.len());
        assert_eq!(decode(&pairs).unwrap(), Envelope::new(events).unwrap());
    }

    /// A stamp for a change that completes the journey carries the completion event's id to the
    /// script; any other change passes an empty one.
    #[test]
    fn only_a_completing_change_stamps_a_completion_id() {
        let clock = flyrtech_core::ManualClock::new(Utc::now());
        let completing = Stamp::new(
            &clock,
            &StatusChange::Journey {
                status: JourneyStatus::Completed,
            },
        );
        let id = completing.completion();
        assert_eq!(EventId::parse(&id).unwrap().to_string(), id);
        assert_ne!(completing.completion, None);
        let other = Stamp::new(
            &clock,
            &StatusChange::Journey {
                status: JourneyStatus::InProgress,
            },
        );
        assert_eq!(other.completion(), "");
    }
}
