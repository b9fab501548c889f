//! The events' way out: the relay into NATS JetStream and the PostgreSQL projection, on a
//! private `nats-server -js` and a private PostgreSQL (initdb in a temporary directory).

use std::sync::Arc;

use flyrtech_core::{
    DomainEvent, Envelope, EventId, EventKind, EventPublisher, JourneyId, JourneyStatus,
    JourneyStore, JourneyVersion, SegmentStatus,
};
use flyrtech_infrastructure::LocalPostgres;
use flyrtech_infrastructure::events::nats::{JetStream, JetStreamPublisher, StreamSettings};
use flyrtech_infrastructure::events::publisher::Bus;
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
use flyrtech_infrastructure::projection::{
    self, BatchStats, Projector, ProjectorSettings, apply_batch,
};
use flyrtech_tests::{S, TestRedis, journey, nats, postgres, segment_id, store, t0, unique_id};
use tokio_postgres::Client;

/// A fresh database with the schema.
async fn database(pg: &LocalPostgres) -> Client {
    let client = projection::connect(&pg.url()).await.unwrap();
    assert!(
        projection::ensure_schema(&client).await.unwrap(),
        "an empty database needs the schema"
    );
    assert!(
        !projection::ensure_schema(&client).await.unwrap(),
        "applied once is enough"
    );
    client
}

/// The change `version` of `id`: one event of `kind`.
fn envelope(id: &JourneyId, version: u64, kind: EventKind) -> Envelope {
    Envelope::new(vec![DomainEvent {
        id: EventId::new(),
        journey_id: id.clone(),
        version: JourneyVersion::new(version),
        occurred_at: t0(),
        kind,
    }])
    .unwrap()
}

/// The change `version` of `id`: segment 0 from `from` to `to`.
fn change(id: &JourneyId, version: u64, from: SegmentStatus, to: SegmentStatus) -> Envelope {
    let segment_id = segment_id(0);
    envelope(
        id,
        version,
        EventKind::SegmentStatusChanged {
            segment_id,
            from,
            to,
        },
    )
}

/// The change `version` of `id`: the journey's status from `from` to `to`.
fn journey_change(
    id: &JourneyId,
    version: u64,
    from: JourneyStatus,
    to: JourneyStatus,
) -> Envelope {
    envelope(id, version, EventKind::JourneyStatusChanged { from, to })
}

async fn count(client: &Client, sql: &str, id: &JourneyId) -> i64 {
    client
        .query_one(sql, &[&id.to_string()])
        .await
        .unwrap()
        .get(0)
}

async fn position(client: &Client, id: &JourneyId) -> i64 {
    count(
        client,
        "SELECT COALESCE(max(last_version), 0) FROM journey_positions WHERE journey_id = $1",
        id,
    )
    .await
}

async fn held(client: &Client, id: &JourneyId) -> i64 {
    count(
        client,
        "SELECT count(*) FROM held_events WHERE journey_id = $1",
        id,
    )
    .await
}

async fn segment_status(client: &Client, id: &JourneyId) -> Option<String> {
    client
        .query_opt(
            "SELECT status FROM projected_segments WHERE journey_id = $1 AND segment_id = $2",
            &[&id.to_string(), &segment_id(0).to_string()],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

#[tokio::test]
async fn the_schema_file_runs_twice_on_the_same_database() {
    let Some(pg) = postgres() else { return };
    let client = database(&pg).await;
    client.batch_execute(projection::SCHEMA_SQL).await.unwrap();
    // As an operator runs it: psql, stopping at the first error, twice.
    let schema = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/outbox/SCHEMA.sql");
    for _ in 0..2 {
        let out = std::process::Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args(["-p", &pg.port().to_string(), "-f", schema, "postgres"])
            .output()
            .expect("psql (postgresql-client) is installed");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 7, "outbox plus the six consumer tables");
}

#[tokio::test]
async fn a_redelivered_change_changes_nothing() {
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    let id = unique_id("PRJ");
    let first = change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Delayed);
    // Twice in one batch, then again in a batch of its own.
    let stats = apply_batch(&mut client, &[first.clone(), first.clone()])
        .await
        .unwrap()
        .stats;
    assert_eq!((stats.applied, stats.duplicates), (1, 1));
    let again = apply_batch(&mut client, &[first]).await.unwrap().stats;
    assert_eq!(
        again,
        BatchStats {
            received: 1,
            duplicates: 1,
            ..BatchStats::default()
        }
    );
    assert_eq!(position(&client, &id).await, 1);
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM status_history WHERE journey_id = $1",
            &id
        )
        .await,
        1
    );
    assert_eq!(
        segment_status(&client, &id).await.as_deref(),
        Some("Delayed")
    );
}

/// Delivered 3, 1, 4, 2: each is applied only after its predecessor, in order; the ones that
/// came early wait in held_events. A journey completed then cancelled, delivered in reverse,
/// still ends cancelled.
#[tokio::test]
async fn changes_of_one_journey_are_applied_in_version_order_whatever_the_delivery_order() {
    use SegmentStatus::{Boarding, Delayed, Departed, Scheduled};
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    let id = unique_id("PRJ");
    let v = [
        change(&id, 1, Scheduled, Delayed),
        change(&id, 2, Delayed, Boarding),
        change(&id, 3, Boarding, Departed),
        change(&id, 4, Departed, Delayed),
    ];
    // Delivers change n alone: (applied, newly held, released) by its batch, then the
    // journey's position and its held rows.
    let mut deliver = async |n: usize| {
        let s = apply_batch(&mut client, &[v[n].clone()])
            .await
            .unwrap()
            .stats;
        let now = (position(&client, &id).await, held(&client, &id).await);
        ((s.applied, s.held, s.released), now)
    };
    assert_eq!(deliver(2).await, ((0, 1, 0), (0, 1)));
    assert_eq!(deliver(0).await, ((1, 0, 0), (1, 1)));
    assert_eq!(deliver(3).await, ((0, 1, 0), (1, 2)));
    // 2 arrives: 2, 3 and 4 are applied in that order, in one transaction.
    assert_eq!(deliver(1).await, ((3, 0, 2), (4, 0)));
    assert_eq!(
        segment_status(&client, &id).await.as_deref(),
        Some("Delayed")
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM status_history WHERE journey_id = $1",
            &id
        )
        .await,
        4
    );
    let outcomes: i64 = count(
        &client,
        "SELECT count(*) FROM processed_events WHERE journey_id = $1 AND outcome = 'applied'",
        &id,
    )
    .await;
    assert_eq!(
        outcomes, 4,
        "every held change is recorded as applied once released"
    );

    let trip = unique_id("PRJ");
    let completed = journey_change(
        &trip,
        1,
        JourneyStatus::InProgress,
        JourneyStatus::Completed,
    );
    let cancelled = journey_change(&trip, 2, JourneyStatus::Completed, JourneyStatus::Cancelled);
    apply_batch(&mut client, &[cancelled, completed])
        .await
        .unwrap();
    let status: String = client
        .query_one(
            "SELECT status FROM projected_journeys WHERE journey_id = $1",
            &[&trip.to_string()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "Cancelled");
}

/// Two different changes that claim one version (the naive store's lost update): the first
/// applied is kept, the other is recorded as stale and changes nothing.
#[tokio::test]
async fn a_second_change_at_a_version_already_applied_is_stale() {
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    let id = unique_id("PRJ");
    let kept = change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Delayed);
    let lost = change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Boarding);
    apply_batch(&mut client, &[kept]).await.unwrap();
    let s = apply_batch(&mut client, &[lost]).await.unwrap().stats;
    assert_eq!((s.applied, s.stale), (0, 1));
    assert_eq!(
        segment_status(&client, &id).await.as_deref(),
        Some("Delayed")
    );
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM processed_events WHERE journey_id = $1 AND outcome = 'stale'",
            &id
        )
        .await,
        1
    );
}

/// JetStream drops a republished entry inside its duplicate window (`Nats-Msg-Id`).
#[tokio::test]
async fn jetstream_keeps_one_copy_of_a_republished_change() {
    let Some(bus) = nats() else { return };
    let js = JetStream::connect(&bus.url(), StreamSettings::default())
        .await
        .unwrap();
    let publisher = JetStreamPublisher::new(js.clone());
    let id = unique_id("PRJ");
    let batch = [
        change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Delayed),
        change(&id, 2, SegmentStatus::Delayed, SegmentStatus::Scheduled),
    ];
    publisher.publish(&batch).await.unwrap();
    publisher.publish(&batch).await.unwrap();
    publisher.publish(&batch[1..]).await.unwrap();
    assert_eq!(js.messages().await.unwrap(), 2);
}

/// Every strategy's acknowledged changes, through the outbox, the relay into JetStream and the
/// projector into PostgreSQL: the projection equals the stored journeys, and every change was
/// applied exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_change_reaches_the_projection_once() {
    let (Some(bus), Some(pg)) = (nats(), postgres()) else {
        return;
    };
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let store = Arc::new(store(&conn, S::Lua).await);
    let ids: Vec<JourneyId> = (0..20).map(|_| unique_id("E2E")).collect();
    for id in &ids {
        store.create(&journey(id, 4)).await.unwrap();
    }
    // Four writers per journey, each on its own segment, all at once.
    let barrier = Arc::new(tokio::sync::Barrier::new(ids.len() * 4));
    let mut writers = Vec::new();
    for id in &ids {
        for s in 0..4 {
            let (store, id, barrier) = (Arc::clone(&store), id.clone(), Arc::clone(&barrier));
            writers.push(tokio::spawn(async move {
                barrier.wait().await;
                store
                    .update_segment_status(&id, &segment_id(s), SegmentStatus::Delayed, None)
                    .await
                    .unwrap();
            }));
        }
    }
    for w in writers {
        w.await.unwrap();
    }
    let js = JetStream::connect(&bus.url(), StreamSettings::default())
        .await
        .unwrap();
    let relay = Relay::new(
        conn.clone(),
        Bus::JetStream(Box::new(JetStreamPublisher::new(js.clone()))),
        RelaySettings::new(),
    )
    .await
    .unwrap();
    assert_eq!(relay.drain().await.unwrap().published, 80);
    assert_eq!(js.messages().await.unwrap(), 80);

    let client = projection::connect(&pg.url()).await.unwrap();
    let mut projector = Projector::new(&js, client, ProjectorSettings::default())
        .await
        .unwrap();
    loop {
        let applied = projector.step().await.unwrap();
        if applied.stats.received == 0 && projector.caught_up().await.unwrap() {
            break;
        }
    }
    assert_eq!(projector.stats().changes.applied, 80);
    let check = projection::connect(&pg.url()).await.unwrap();
    let report = projection::reconcile(store.as_ref(), &check, &ids)
        .await
        .unwrap();
    assert!(report.is_clean(), "{:?}", report.differences);
    assert_eq!(report.changes_projected, 80);

    // A projection that disagrees is reported.
    check
        .execute(
            "UPDATE projected_segments SET status = 'Cancelled' WHERE journey_id = $1",
            &[&ids[0].to_string()],
        )
        .await
        .unwrap();
    let report = projection::reconcile(store.as_ref(), &check, &ids)
        .await
        .unwrap();
    assert_eq!(report.differences.len(), 4, "{:?}", report.differences);
}

/// The relay's retention reaches JetStream as the stream's limits, on an existing stream too;
/// a projector's connection leaves them as the relay set them.
#[tokio::test]
async fn the_relay_sets_the_jetstream_limits_and_projectors_keep_them() {
    let Some(bus) = nats() else { return };
    JetStream::connect(&bus.url(), StreamSettings::default())
        .await
        .unwrap();
    let limits = flyrtech_infrastructure::events::nats::StreamLimits {
        max_age: Some(std::time::Duration::from_secs(3600)),
        max_messages: 5000,
    };
    let relay = StreamSettings {
        limits: Some(limits),
        ..StreamSettings::default()
    };
    JetStream::connect(&bus.url(), relay).await.unwrap();
    let projector = JetStream::connect(&bus.url(), StreamSettings::default())
        .await
        .unwrap();
    let config = &projector.stream().cached_info().config;
    assert_eq!(config.max_messages, 5000);
    assert_eq!(config.max_age, std::time::Duration::from_secs(3600));
}
