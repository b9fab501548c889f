//! The transactional outbox: every change's events, stored in the same atomic step as the change.
//!
//! The race it closes: publishing an event after the state write (the assessment's buggy
//! interactor) loses the event when the process dies or the bus fails in between, and publishing
//! before the write announces a change that may never be stored. Here each strategy appends one
//! entry to its journey's outbox partition in the same MULTI/EXEC or the same script that writes
//! the state, in the journey's slot (see [`crate::plumbing::keys`]), so an entry exists if and only if its
//! change was stored. A background relay (`crate::events::relay`) publishes entries later, at least once.
//!
//! # The entry: one stream entry per acknowledged change
//! | field | value |
//! |---|---|
//! | `journey` | the journey id |
//! | `version` | the version the change produced (the per-journey sequence) |
//! | `at` | when the domain decided the change (RFC 3339, from the injected clock) |
//! | `target` | the segment id, or empty for the journey's own status |
//! | `from`, `to` | the statuses |
//! | `id` | the status-changed event's id (UUIDv7) |
//! | `done_id`, `customer`, `total` | on completion only: the `JourneyCompleted` event's id, the passenger's identity, the total price as exact decimal text |
//! | `traceparent` | when the request was traced only: the W3C trace context of the update's span ([`crate::plumbing::trace_context`]) |
//!
//! The same fields are written by Rust (document strategies, from the aggregate's events) and by
//! the Lua scripts (`lua`, `hash`, from the ids and instant Rust passes in); [`decode`] turns
//! either into an [`Envelope`] and computes the total in integer cents exactly. A property test
//! checks that both paths produce the same envelope.

use std::collections::HashMap;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use flyrtech_core::{
    Clock, DomainEvent, Envelope, EventId, EventKind, InvalidInput, JourneyId, JourneyStatus,
    JourneyVersion, Money, SegmentId, SegmentStatus, StatusChange,
};
use rust_decimal::Decimal;

use crate::plumbing::trace_context::TRACEPARENT;

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
            trace: crate::plumbing::trace_context::current(),
        }
    }

    /// The script arguments: journey id, instant, event id, completion event id (or empty),
    /// `traceparent` (or empty).
    pub(crate) fn args(&self, id: &JourneyId) -> [String; 5] {
        [
            id.to_string(),
            format_instant(self.at),
            self.id.to_string(),
            self.completion.map(|c| c.to_string()).unwrap_or_default(),
            self.trace.clone().unwrap_or_default(),
        ]
    }
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
    let mut fields = vec![
        ("journey", first.journey_id.to_string()),
        ("version", first.version.to_string()),
        ("at", format_instant(first.occurred_at)),
        ("target", target),
        ("from", from),
        ("to", to),
        ("id", first.id.to_string()),
    ];
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
    if let Some(trace) = crate::plumbing::trace_context::current() {
        fields.push((TRACEPARENT, trace));
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
    let journey_id = JourneyId::parse(field("journey")?)?;
    let version = JourneyVersion::new(
        field("version")?
            .parse()
            .map_err(|e| RowError(format!("version: {e}")))?,
    );
    let occurred_at = DateTime::parse_from_rfc3339(field("at")?)
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
    let target = field("target")?;
    let kind = if target.is_empty() {
        EventKind::JourneyStatusChanged {
            from: JourneyStatus::from_str(field("from")?)?,
            to: JourneyStatus::from_str(field("to")?)?,
        }
    } else {
        EventKind::SegmentStatusChanged {
            segment_id: SegmentId::parse(target)?,
            from: SegmentStatus::from_str(field("from")?)?,
            to: SegmentStatus::from_str(field("to")?)?,
        }
    };
    let mut events = vec![event(field("id")?, kind)?];
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
    Ok(Envelope::new(events)?.traced(fields.get(TRACEPARENT).cloned()))
}

/// Flattens fields for `XADD`.
pub fn xadd_args(fields: &Fields) -> Vec<&str> {
    fields.iter().flat_map(|(k, v)| [*k, v.as_str()]).collect()
}
