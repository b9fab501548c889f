//! The transactional outbox, the relay and the audit, on real Redis: every strategy records one
//! entry per acknowledged change and none otherwise; relays publish everything at least once and
//! in per-journey order, also two at a time and on a cluster; poison entries are parked; the
//! audit finds naive's lost updates and nothing for the correct strategies.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::consumer::{Consumer, StatusHistory};
use flyrtech_core::{
    Envelope, EventKind, EventPublisher, JourneyStatus, JourneyStore, JourneyVersion, ManualClock,
    PublishError, SegmentStatus,
};
use flyrtech_infrastructure::events::audit::{GapCause, LostReason, audit};
use flyrtech_infrastructure::events::backlog::depth;
use flyrtech_infrastructure::events::publisher::RedisStreamPublisher;
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
use flyrtech_infrastructure::keys::{self, OutboxShard};
use flyrtech_infrastructure::{Redis, RedisJourneyStore, StoreConfig, Strategy};
use flyrtech_tests::{
    S, TestRedis, Topology, bus, journey, outbox_entries, segment_id, store, store_delayed,
    store_with, t0, unique_id,
};
use rstest::rstest;
use rstest_reuse::apply;
use tokio::sync::Barrier;

use crate::every_strategy;

const WRITERS: usize = 12;

fn settings(consumer: &str) -> RelaySettings {
    RelaySettings {
        consumer: consumer.to_owned(),
        poll_interval: Duration::from_millis(10),
        ..RelaySettings::new()
    }
}

/// A relay reading the outbox on `redis` and publishing to `events` on `bus`.
async fn relay_to(
    redis: &Redis,
    bus: &Redis,
    settings: RelaySettings,
) -> Relay<RedisStreamPublisher> {
    let publisher = RedisStreamPublisher::new(bus.clone(), keys::EVENTS, None);
    Relay::new(redis.clone(), publisher, settings)
        .await
        .unwrap()
}

async fn relay(redis: &Redis, consumer: &str) -> Relay<RedisStreamPublisher> {
    relay_to(redis, redis, settings(consumer)).await
}

/// The audit of one journey, the bus on the same Redis.
async fn audit_one(
    store: &RedisJourneyStore,
    redis: &Redis,
    id: &flyrtech_core::JourneyId,
) -> flyrtech_infrastructure::events::audit::AuditReport {
    audit(
        store,
        redis,
        redis,
        keys::EVENTS,
        Some(std::slice::from_ref(id)),
    )
    .await
    .unwrap()
}

/// Creates a journey with `segments` segments and sets the first `changes` of them to Delayed,
/// one acknowledged change each.
async fn journey_with_changes(
    store: &RedisJourneyStore,
    id: &flyrtech_core::JourneyId,
    segments: usize,
    changes: usize,
) {
    store.create(&journey(id, segments)).await.unwrap();
    for s in 0..changes {
        store
            .update_segment_status(id, &segment_id(s), SegmentStatus::Delayed, None)
            .await
            .unwrap();
    }
}

/// `WRITERS` concurrent segment changes behind a barrier, with a processing delay so that the
/// read-to-write windows overlap; returns the acknowledged versions.
async fn concurrent_changes(
    store: Arc<RedisJourneyStore>,
    id: &flyrtech_core::JourneyId,
) -> Vec<JourneyVersion> {
    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .update_segment_status(&id, &segment_id(i), SegmentStatus::Delayed, None)
                    .await
            })
        })
        .collect();
    let mut versions = Vec::new();
    for t in tasks {
        let outcome = t.await.unwrap().unwrap();
        assert!(outcome.changed);
        versions.push(outcome.version);
    }
    versions
}

#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_change_yields_exactly_one_outbox_entry(
    #[case] strategy: Strategy,
    #[values(Topology::Single, Topology::Cluster)] topology: Topology,
) {
    let redis = TestRedis::start(topology);
    let conn = redis.connect().await;
    let store = Arc::new(store_delayed(&conn, strategy, Duration::from_millis(5)).await);
    let id = unique_id("OUTBOX");
    store.create(&journey(&id, WRITERS)).await.unwrap();
    assert!(
        outbox_entries(&conn, &id).await.is_empty(),
        "creation is not a change"
    );

    let acked = concurrent_changes(Arc::clone(&store), &id).await;
    let entries = outbox_entries(&conn, &id).await;
    assert_eq!(entries.len(), WRITERS, "one entry per acknowledged change");
    let versions: Vec<JourneyVersion> = entries.iter().map(|e| e.version).collect();
    if strategy != S::Naive {
        // Every change has its own version, and the entries are in commit order.
        let expected: Vec<JourneyVersion> = (1..=WRITERS as u64).map(JourneyVersion::new).collect();
        assert_eq!(versions, expected);
        let mut acked = acked;
        acked.sort();
        assert_eq!(acked, expected);
    }
    let changed: BTreeSet<String> = entries
        .iter()
        .map(|e| match &e.events[..] {
            [event] => match &event.kind {
                EventKind::SegmentStatusChanged {
                    segment_id,
                    from: SegmentStatus::Scheduled,
                    to: SegmentStatus::Delayed,
                } => segment_id.to_string(),
                other => panic!("unexpected event {other:?}"),
            },
            other => panic!("one event per segment change, got {other:?}"),
        })
        .collect();
    assert_eq!(changed.len(), WRITERS, "each writer's change has its entry");

    // Rejected, refused and no-op updates record nothing.
    let seg = segment_id(0);
    let refusals = [
        store
            .update_segment_status(&id, &seg, SegmentStatus::Arrived, None)
            .await,
        store
            .update_segment_status(&id, &segment_id(999), SegmentStatus::Delayed, None)
            .await,
        store
            .update_segment_status(
                &id,
                &seg,
                SegmentStatus::Boarding,
                Some(JourneyVersion::new(999)),
            )
            .await,
    ];
    for r in &refusals {
        assert!(r.is_err(), "{r:?}");
    }
    let noop = store
        .update_journey_status(&id, JourneyStatus::Confirmed, None)
        .await
        .unwrap();
    assert!(!noop.changed);
    assert_eq!(outbox_entries(&conn, &id).await.len(), WRITERS);
}

/// Completing a journey records both events in one entry, with the passenger as customer and
/// the total in exact cents, whichever path (Rust aggregate or Lua script) built it.
#[apply(every_strategy)]
#[tokio::test]
async fn completion_records_the_journey_completed_event(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let clock = Arc::new(ManualClock::new(t0()));
    let store = store_with(
        &conn,
        StoreConfig {
            clock: clock.clone(),
            ..StoreConfig::new(strategy)
        },
    )
    .await;
    let id = unique_id("DONE");
    let mut j = journey(&id, 3);
    j.total_price = flyrtech_core::Money::from_cents(12_345_678_901).unwrap();
    store.create(&j).await.unwrap();
    store
        .update_journey_status(&id, JourneyStatus::InProgress, None)
        .await
        .unwrap();
    let done_at = t0() + chrono::Duration::milliseconds(1234);
    clock.set(done_at);
    store
        .update_journey_status(&id, JourneyStatus::Completed, None)
        .await
        .unwrap();
    let entries = outbox_entries(&conn, &id).await;
    assert_eq!(entries.len(), 2);
    let last = &entries[1];
    assert_eq!(last.version, JourneyVersion::new(2));
    let kinds: Vec<&EventKind> = last.events.iter().map(|e| &e.kind).collect();
    assert_eq!(
        kinds,
        [
            &EventKind::JourneyStatusChanged {
                from: JourneyStatus::InProgress,
                to: JourneyStatus::Completed
            },
            &EventKind::JourneyCompleted {
                customer_id: j.passenger_email.clone(),
                total_amount_cents: 12_345_678_901,
                completed_at: done_at,
            }
        ]
    );
    assert!(last.events.iter().all(|e| e.occurred_at == done_at));
    assert_eq!(
        entries[0].events[0].occurred_at,
        t0(),
        "the clock at decision time"
    );
    assert_ne!(last.events[0].id, last.events[1].id);
}

/// Two relays drain one outbox at the same time: every change reaches the bus, each journey's
/// changes in version order, and both relays did part of the work.
#[rstest]
#[case::single(Topology::Single)]
#[case::cluster(Topology::Cluster)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_at_once_lose_nothing_and_keep_per_journey_order(#[case] topology: Topology) {
    let redis = TestRedis::start(topology);
    let conn = redis.connect().await;
    let store = store(&conn, S::Hash).await;
    let (journeys, changes) = (40, 6);
    let ids: Vec<_> = (0..journeys).map(|_| unique_id("TWO")).collect();
    for id in &ids {
        journey_with_changes(&store, id, changes, changes).await;
    }
    let slow = |name: &str| RelaySettings {
        batch: 2,
        parallel: 4,
        publish_delay: Duration::from_millis(15),
        ..settings(name)
    };
    let a = relay_to(&conn, &conn, slow("relay-a")).await;
    let b = relay_to(&conn, &conn, slow("relay-b")).await;
    let (ra, rb) = tokio::join!(a.drain(), b.drain());
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert!(ra.published > 0 && rb.published > 0, "{ra:?} {rb:?}");
    assert_eq!(depth(&conn).await.unwrap().entries, 0);

    let published = bus(&conn, keys::EVENTS).await;
    let mut last: HashMap<_, u64> = HashMap::new();
    let mut consumer = Consumer::new(StatusHistory::default());
    for envelope in &published {
        let v = envelope.version.get();
        let previous = last.insert(envelope.journey_id.clone(), v).unwrap_or(0);
        assert!(
            v > previous,
            "{} v{v} after v{previous}",
            envelope.journey_id
        );
        consumer.receive(envelope.clone());
    }
    assert_eq!(consumer.stats().applied, (journeys * changes) as u64);
    for id in &ids {
        assert_eq!(consumer.applied(id), JourneyVersion::new(changes as u64));
    }
}

/// An entry that cannot be decoded blocks its partition until it has been delivered
/// `max_deliveries` times, then is parked with the reason; the entries behind it are published.
#[tokio::test]
async fn a_poison_entry_is_parked_after_max_deliveries() {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let store = store(&conn, S::Lua).await;
    let id = unique_id("POISON");
    let partition = OutboxShard::of(&id);
    store.create(&journey(&id, 2)).await.unwrap();
    let _: String = redis::cmd("XADD")
        .arg(partition.outbox())
        .arg("*")
        .arg("journey")
        .arg(id.as_str())
        .arg("garbage")
        .arg("1")
        .query_async(&mut conn.shared())
        .await
        .unwrap();
    store
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Delayed, None)
        .await
        .unwrap();
    let relay = relay_to(
        &conn,
        &conn,
        RelaySettings {
            max_deliveries: 3,
            ..settings("poison")
        },
    )
    .await;
    let stats = relay.drain().await.unwrap();
    assert_eq!(stats.parked, 1);
    assert_eq!(stats.published, 1);
    let parked: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(partition.parked())
        .arg("-")
        .arg("+")
        .query_async(&mut conn.shared())
        .await
        .unwrap();
    assert_eq!(parked.len(), 1);
    let fields = &parked[0].1;
    assert_eq!(fields["garbage"], "1");
    assert_eq!(fields["parked_deliveries"], "3");
    assert!(
        fields["parked_reason"].contains("missing field"),
        "{fields:?}"
    );
    assert_eq!(bus(&conn, keys::EVENTS).await.len(), 1);
}

/// A bus that rejects one journey's envelopes: that entry is parked after `max_deliveries`, the
/// others are published, and the audit reports the parked version as a gap.
#[derive(Debug)]
struct Rejecting {
    inner: RedisStreamPublisher,
    reject: flyrtech_core::JourneyId,
}

impl EventPublisher for Rejecting {
    async fn publish(&self, batch: &[Envelope]) -> Result<(), PublishError> {
        match batch.iter().position(|e| e.journey_id == self.reject) {
            None => self.inner.publish(batch).await,
            Some(i) => {
                self.inner.publish(&batch[..i]).await?;
                Err(PublishError::Rejected {
                    published: i,
                    reason: "too large".into(),
                })
            }
        }
    }
}

#[tokio::test]
async fn an_envelope_the_bus_keeps_rejecting_is_parked_and_audited_as_a_gap() {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let store = store(&conn, S::Lua).await;
    let (bad, good) = (unique_id("REJ"), unique_id("OK"));
    for id in [&bad, &good] {
        journey_with_changes(&store, id, 1, 1).await;
    }
    let relay = Relay::new(
        conn.clone(),
        Rejecting {
            inner: RedisStreamPublisher::new(conn.clone(), keys::EVENTS, None),
            reject: bad.clone(),
        },
        RelaySettings {
            max_deliveries: 2,
            ..settings("rejecting")
        },
    )
    .await
    .unwrap();
    let stats = relay.drain().await.unwrap();
    assert_eq!((stats.published, stats.parked), (1, 1));
    let report = audit(
        &store,
        &conn,
        &conn,
        keys::EVENTS,
        Some(&[bad.clone(), good.clone()]),
    )
    .await
    .unwrap();
    assert!(report.lost_updates.is_empty());
    assert_eq!(report.parked, 1);
    assert_eq!(report.version_gaps.len(), 1);
    assert_eq!(report.version_gaps[0].journey, bad);
    assert_eq!(report.version_gaps[0].cause, GapCause::Parked);
}

/// While the bus is down nothing is acknowledged or parked; once it is back everything is
/// published.
#[tokio::test]
async fn a_bus_outage_is_retried_not_parked() {
    let redis = TestRedis::single();
    let mut bus_redis = TestRedis::single();
    let conn = redis.connect().await;
    let bus_conn = bus_redis.connect().await;
    let store = store(&conn, S::Hash).await;
    let id = unique_id("OUTAGE");
    journey_with_changes(&store, &id, 3, 3).await;
    bus_redis.stop();
    let relay = relay_to(
        &conn,
        &bus_conn,
        RelaySettings {
            max_deliveries: 1,
            ..settings("outage")
        },
    )
    .await;
    for _ in 0..3 {
        assert!(
            !relay.sweep().await.unwrap(),
            "nothing can progress while the bus is down"
        );
    }
    assert_eq!(relay.stats().parked, 0);
    assert_eq!(depth(&conn).await.unwrap().entries, 3);
    bus_redis.restart();
    let stats = tokio::time::timeout(Duration::from_secs(30), relay.drain())
        .await
        .expect("drained once the bus is back")
        .unwrap();
    assert_eq!((stats.published, stats.parked), (3, 0));
    assert_eq!(bus(&bus_conn, keys::EVENTS).await.len(), 3);
}

/// The incident's concurrent writers, then the relay, then the audit: naive's lost updates are
/// found one by one; the correct strategies have none, and no version without its event.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_audit_finds_lost_updates_exactly_where_they_happen(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let store = Arc::new(store_delayed(&conn, strategy, Duration::from_millis(10)).await);
    let id = unique_id("AUDIT");
    store.create(&journey(&id, WRITERS)).await.unwrap();
    concurrent_changes(Arc::clone(&store), &id).await;
    let state = store.get(&id).await.unwrap();
    let missing = state
        .segments
        .iter()
        .filter(|s| s.status != SegmentStatus::Delayed)
        .count();

    // Before the relay runs, every version is a gap "not yet published" (or, for naive, the one
    // version all writers claimed).
    let before = audit_one(store.as_ref(), &conn, &id).await;
    assert_eq!(before.unpublished, WRITERS as u64);
    assert!(
        before
            .version_gaps
            .iter()
            .all(|g| g.cause == GapCause::Unpublished)
    );
    assert_eq!(before.version_gaps.len() as u64, state.version.get());

    relay(&conn, "audit").await.drain().await.unwrap();
    let report = audit_one(store.as_ref(), &conn, &id).await;
    assert_eq!(report.changes_published, WRITERS as u64);
    assert_eq!(report.unpublished, 0);
    assert!(report.version_gaps.is_empty(), "{:?}", report.version_gaps);
    if strategy == S::Naive {
        assert!(
            missing > 0,
            "the control lost nothing: the test cannot see the bug"
        );
        assert_eq!(report.lost_updates.len(), missing);
        assert_eq!(
            report.lost_updates.len() as u64,
            WRITERS as u64 - state.version.get()
        );
        for lost in &report.lost_updates {
            let segment = lost.segment.as_deref().unwrap();
            let stored = state
                .segments
                .iter()
                .find(|s| s.segment_id.as_str() == segment)
                .unwrap();
            assert_eq!(stored.status, SegmentStatus::Scheduled, "{lost:?}");
            assert_eq!(lost.reason, LostReason::VersionTaken);
        }
    } else {
        assert_eq!(missing, 0);
        assert!(report.is_clean(), "{report:?}");
    }
}

/// A change whose state was rolled back (here: the journey deleted and re-created, as a failover
/// that lost writes would leave it) is reported as ahead of the state.
#[tokio::test]
async fn the_audit_reports_changes_the_state_no_longer_has() {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let store = store(&conn, S::Lua).await;
    let id = unique_id("ROLLBACK");
    journey_with_changes(&store, &id, 2, 1).await;
    relay(&conn, "rollback").await.drain().await.unwrap();
    let _: i64 = redis::cmd("DEL")
        .arg(keys::journey_document(&id))
        .query_async(&mut conn.shared())
        .await
        .unwrap();
    store.create(&journey(&id, 2)).await.unwrap();
    let report = audit_one(&store, &conn, &id).await;
    assert_eq!(report.lost_updates.len(), 1);
    assert_eq!(
        report.lost_updates[0].reason,
        LostReason::AheadOfState {
            stored_version: JourneyVersion::INITIAL
        }
    );
}
