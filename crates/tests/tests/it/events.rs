//! Domain events and the idempotent consumer, without Redis: which events a change raises, that
//! their instant comes from the clock, that the outbox entry round-trips, and that the consumer
//! turns any delivery order with duplicates into the in-order history.

use flyrtech_core::consumer::{Consumer, Delivery, Projection, StatusHistory};
use flyrtech_core::{
    Applied, DomainEvent, Envelope, EventId, EventKind, JourneyId, JourneyStatus, JourneyVersion,
    SegmentStatus, StatusChange,
};
use flyrtech_infrastructure::store::outbox;
use flyrtech_tests::{ApplyNow, change_of, journey, segment_id, t0, unique_id};
use proptest::prelude::*;

fn journey_change(status: JourneyStatus) -> StatusChange {
    StatusChange::Journey { status }
}

#[test]
fn a_change_raises_its_event_on_the_aggregate_and_a_no_op_raises_nothing() {
    let id = unique_id("EV");
    let mut j = journey(&id, 2);
    let change = StatusChange::Segment {
        segment_id: segment_id(1),
        status: SegmentStatus::Boarding,
    };
    let later = t0() + chrono::Duration::seconds(5);
    assert_eq!(
        j.apply(&change, later),
        Ok(Applied::Changed {
            version: JourneyVersion::new(1)
        })
    );
    assert_eq!(j.apply(&change, later), Ok(Applied::Unchanged));
    let events = j.take_events();
    assert!(j.take_events().is_empty(), "taken once");
    let [event] = &events[..] else {
        panic!("one event, got {events:?}")
    };
    assert_eq!(event.journey_id, id);
    assert_eq!(event.version, JourneyVersion::new(1));
    assert_eq!(
        event.occurred_at, later,
        "the instant passed in, not the wall clock"
    );
    assert_eq!(
        event.kind,
        EventKind::SegmentStatusChanged {
            segment_id: segment_id(1),
            from: SegmentStatus::Scheduled,
            to: SegmentStatus::Boarding
        }
    );
}

#[test]
fn a_refused_change_raises_nothing_and_changes_nothing() {
    let mut j = journey(&unique_id("EV"), 1);
    let before = j.clone();
    let refused = j.apply_now(&StatusChange::Segment {
        segment_id: segment_id(0),
        status: SegmentStatus::Arrived,
    });
    assert!(refused.is_err());
    assert!(j.events.pending().is_empty());
    assert_eq!(j, before);
}

#[test]
fn completing_a_journey_raises_journey_completed_with_exact_cents() {
    let mut j = journey(&unique_id("EV"), 3);
    j.total_price = flyrtech_core::Money::new("1234.56".parse().unwrap()).unwrap();
    j.apply_now(&journey_change(JourneyStatus::InProgress))
        .unwrap();
    j.take_events();
    j.apply_now(&journey_change(JourneyStatus::Completed))
        .unwrap();
    let events = j.take_events();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].kind,
        EventKind::JourneyCompleted {
            customer_id: j.passenger_email.clone(),
            total_amount_cents: 123_456,
            completed_at: t0(),
        }
    );
    assert!(events.iter().all(|e| e.version == JourneyVersion::new(2)));
    assert!(events[0].id < events[1].id, "UUIDv7 ids grow");
}

#[test]
fn pending_events_are_not_part_of_the_journeys_value() {
    let mut a = journey(&unique_id("EV"), 1);
    let b = a.clone();
    a.events.raise(DomainEvent {
        id: EventId::new(),
        journey_id: a.id.clone(),
        version: JourneyVersion::new(1),
        occurred_at: t0(),
        kind: EventKind::JourneyStatusChanged {
            from: JourneyStatus::Confirmed,
            to: JourneyStatus::InProgress,
        },
    });
    assert_eq!(a, b);
    assert!(!serde_json::to_string(&a).unwrap().contains("events"));
}

/// The assessment's question 3: completed (t=0) then cancelled (t=1), delivered in reverse.
#[test]
fn completed_then_cancelled_delivered_in_reverse_still_ends_cancelled() {
    let id = unique_id("Q3");
    let completed = change_of(&id, 1, JourneyStatus::Completed);
    let cancelled = change_of(&id, 2, JourneyStatus::Cancelled);
    let mut consumer = Consumer::new(StatusHistory::default());
    assert_eq!(consumer.receive(cancelled.clone()), Delivery::Held);
    assert_eq!(consumer.gaps().len(), 1);
    assert_eq!(
        consumer.receive(completed.clone()),
        Delivery::Applied { released: 1 }
    );
    assert!(consumer.gaps().is_empty());
    assert_eq!(consumer.receive(completed), Delivery::Duplicate);
    assert_eq!(consumer.receive(cancelled), Delivery::Duplicate);
    let history = &consumer.projection().journeys[&id];
    assert_eq!(history.last_status[&None], "Cancelled");
    assert_eq!(
        history.versions,
        [JourneyVersion::new(1), JourneyVersion::new(2)]
    );
    assert_eq!(consumer.stats().duplicates, 2);
}

/// A different change for a version already applied (what the naive store produces) is stale.
#[test]
fn a_second_change_for_an_applied_version_is_ignored_as_stale() {
    let id = unique_id("STALE");
    let mut consumer = Consumer::new(StatusHistory::default());
    consumer.receive(change_of(&id, 1, JourneyStatus::Completed));
    assert_eq!(
        consumer.receive(change_of(&id, 1, JourneyStatus::Cancelled)),
        Delivery::Stale
    );
    assert_eq!(
        consumer.projection().journeys[&id].last_status[&None],
        "Completed"
    );
}

/// A projection that records the order envelopes were applied in.
#[derive(Debug, Default)]
struct Order(Vec<(JourneyId, u64)>);

impl Projection for Order {
    fn apply(&mut self, envelope: &Envelope) {
        self.0
            .push((envelope.journey_id.clone(), envelope.version.get()));
    }
}

proptest! {
    /// Any delivery order, with any duplicates, applies every change exactly once and each
    /// journey's changes in version order.
    #[test]
    fn any_delivery_order_with_duplicates_applies_each_change_once_in_order(
        lengths in proptest::collection::vec(1usize..6, 1..5),
        order in proptest::collection::vec(any::<proptest::sample::Index>(), 0..60),
        duplicates in proptest::collection::vec(any::<proptest::sample::Index>(), 0..20),
    ) {
        let ids: Vec<JourneyId> = (0..lengths.len()).map(|_| unique_id("P")).collect();
        let mut envelopes: Vec<Envelope> = ids
            .iter()
            .zip(&lengths)
            .flat_map(|(id, &n)| (1..=n as u64).map(move |v| change_of(id, v, JourneyStatus::Completed)))
            .collect();
        let total = envelopes.len();
        for d in &duplicates {
            let copy = envelopes[d.index(total)].clone();
            envelopes.push(copy);
        }
        for (i, o) in order.iter().enumerate() {
            let len = envelopes.len();
            envelopes.swap(i % len, o.index(len));
        }
        let mut consumer = Consumer::new(Order::default());
        for e in envelopes {
            consumer.receive(e);
        }
        prop_assert_eq!(consumer.stats().applied as usize, total);
        prop_assert_eq!(consumer.stats().duplicates as usize, duplicates.len());
        prop_assert!(consumer.gaps().is_empty());
        for (id, &n) in ids.iter().zip(&lengths) {
            let applied: Vec<u64> = consumer
                .projection()
                .0
                .iter()
                .filter(|(j, _)| j == id)
                .map(|(_, v)| *v)
                .collect();
            prop_assert_eq!(applied, (1..=n as u64).collect::<Vec<_>>());
        }
    }

    /// The outbox entry written by Rust decodes to exactly the events the aggregate raised.
    #[test]
    fn the_outbox_entry_round_trips(
        cents in 0i64..9_999_999_999_999,
        segment in 0usize..3,
        journey_level in any::<bool>(),
        millis in 0i64..10_000_000,
    ) {
        let mut j = journey(&unique_id("RT"), 3);
        j.total_price = flyrtech_core::Money::from_cents(cents).unwrap();
        let at = t0() + chrono::Duration::milliseconds(millis);
        if journey_level {
            j.apply(&journey_change(JourneyStatus::InProgress), at).unwrap();
            j.take_events();
            j.apply(&journey_change(JourneyStatus::Completed), at).unwrap();
        } else {
            j.apply(
                &StatusChange::Segment { segment_id: segment_id(segment), status: SegmentStatus::Delayed },
                at,
            )
            .unwrap();
        }
        let events = j.take_events();
        let fields: std::collections::HashMap<String, String> = outbox::encode(&events)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let decoded = outbox::decode(&fields).unwrap();
        prop_assert_eq!(decoded, Envelope::new(events).unwrap());
    }
}
