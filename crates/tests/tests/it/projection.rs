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

/// Two different changes that claim one version (a failover that discarded the first after it
/// was published, or the naive store's lost update): the later one is what the store holds, so
/// it replaces the first, whether they arrive in one batch or two.
#[tokio::test]
async fn a_second_change_at_a_version_already_applied_replaces_it() {
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    for together in [false, true] {
        let id = unique_id("PRJ");
        let first = change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Delayed);
        let later = change(&id, 1, SegmentStatus::Scheduled, SegmentStatus::Boarding);
        let s = if together {
            apply_batch(&mut client, &[first.clone(), later.clone()])
                .await
                .unwrap()
                .stats
        } else {
            apply_batch(&mut client, std::slice::from_ref(&first))
                .await
                .unwrap();
            apply_batch(&mut client, std::slice::from_ref(&later))
                .await
                .unwrap()
                .stats
        };
        assert_eq!(
            (s.replaced, s.superseded, s.stale),
            (1, 1, 0),
            "together: {together}"
        );
        assert_eq!(
            segment_status(&client, &id).await.as_deref(),
            Some("Boarding")
        );
        assert_eq!(position(&client, &id).await, 1);
        assert_eq!(outcomes(&client, &id).await, ["replaced", "superseded"]);
        // The history holds the later change only; the first, delivered again, is a duplicate.
        assert_eq!(
            history(&client, &id).await,
            [(1, Some("Boarding".to_owned()))]
        );
        let again = apply_batch(&mut client, &[first]).await.unwrap().stats;
        assert_eq!((again.duplicates, again.applied), (1, 0));
        assert_eq!(
            segment_status(&client, &id).await.as_deref(),
            Some("Boarding")
        );
    }
}

/// A failover discarded versions 2 and 3 after they were projected; the store gave version 2 to
/// another change. Both are undone, each status goes back to what the remaining history set (a
/// segment nothing else touched loses its row; a completion is forgotten), and the store's own
/// changes follow from there.
#[tokio::test]
async fn a_reused_version_undoes_every_change_from_it_on() {
    use SegmentStatus::{Boarding, Delayed, Scheduled};
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    let id = unique_id("PRJ");
    let segment = |n: usize, from, to| EventKind::SegmentStatusChanged {
        segment_id: segment_id(n),
        from,
        to,
    };
    let journey_status = |from, to| EventKind::JourneyStatusChanged { from, to };
    let change = |version: u64, kinds: Vec<EventKind>| {
        Envelope::new(
            kinds
                .into_iter()
                .map(|kind| DomainEvent {
                    id: EventId::new(),
                    journey_id: id.clone(),
                    version: JourneyVersion::new(version),
                    occurred_at: t0(),
                    kind,
                })
                .collect(),
        )
        .unwrap()
    };
    let kept = change(
        1,
        vec![
            journey_status(JourneyStatus::Confirmed, JourneyStatus::InProgress),
            segment(0, Scheduled, Delayed),
        ],
    );
    let phantom_2 = change(2, vec![segment(0, Delayed, Boarding)]);
    let phantom_3 = change(
        3,
        vec![
            journey_status(JourneyStatus::InProgress, JourneyStatus::Completed),
            EventKind::JourneyCompleted {
                customer_id: "someone@example.com".into(),
                total_amount_cents: 85050,
                completed_at: t0(),
            },
            segment(1, Scheduled, Delayed),
        ],
    );
    apply_batch(&mut client, &[kept, phantom_2]).await.unwrap();
    apply_batch(&mut client, &[phantom_3]).await.unwrap();
    assert_eq!(position(&client, &id).await, 3);
    let journey_row = async |client: &Client| {
        let id = id.to_string();
        client
            .query_one(
                "SELECT status, version, completed_at IS NOT NULL FROM projected_journeys \
                 WHERE journey_id = $1",
                &[&id],
            )
            .await
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, i64>(1),
                    r.get::<_, bool>(2),
                )
            })
            .ok()
    };
    assert_eq!(
        journey_row(&client).await,
        Some(("Completed".to_owned(), 3, true))
    );

    // The store's version 2, then 3.
    let reused = change(2, vec![segment(1, Scheduled, Boarding)]);
    let next = change(3, vec![segment(0, Delayed, Scheduled)]);
    let s = apply_batch(&mut client, &[reused]).await.unwrap().stats;
    assert_eq!((s.applied, s.replaced, s.superseded), (1, 1, 2));
    assert_eq!(position(&client, &id).await, 2);
    let segments = async |client: &Client| {
        let id = id.to_string();
        client
            .query(
                "SELECT segment_id, status, version FROM projected_segments \
                 WHERE journey_id = $1 ORDER BY segment_id",
                &[&id],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r.get::<_, String>(0),
                    r.get::<_, String>(1),
                    r.get::<_, i64>(2),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        segments(&client).await,
        [
            (segment_id(0).to_string(), "Delayed".to_owned(), 1),
            (segment_id(1).to_string(), "Boarding".to_owned(), 2),
        ]
    );
    assert_eq!(
        journey_row(&client).await,
        Some(("InProgress".to_owned(), 1, false)),
        "back to what version 1 set, the completion forgotten"
    );
    apply_batch(&mut client, &[next]).await.unwrap();
    assert_eq!(position(&client, &id).await, 3);
    assert_eq!(
        segments(&client).await[0],
        (segment_id(0).to_string(), "Scheduled".to_owned(), 3)
    );
    assert_eq!(
        history(&client, &id).await,
        [
            (1, Some("InProgress".to_owned())),
            (1, Some("Delayed".to_owned())),
            (2, Some("Boarding".to_owned())),
            (3, Some("Scheduled".to_owned()))
        ]
    );
    assert_eq!(
        outcomes(&client, &id).await,
        ["applied", "applied", "replaced", "superseded", "superseded"]
    );
}

/// A database made by the schema before replacements (its outcomes' check knew only applied,
/// held and stale, and it carries no mark) is brought up to date at start-up, and then takes a
/// replacement.
#[tokio::test]
async fn a_database_of_the_earlier_schema_is_upgraded_at_start_up() {
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    client
        .batch_execute(
            "ALTER TABLE processed_events DROP CONSTRAINT processed_events_outcome_check; \
             ALTER TABLE processed_events ADD CONSTRAINT processed_events_outcome_check \
               CHECK (outcome IN ('applied', 'held', 'stale')); \
             COMMENT ON TABLE processed_events IS NULL;",
        )
        .await
        .unwrap();
    assert!(
        projection::ensure_schema(&client).await.unwrap(),
        "upgraded"
    );
    assert!(!projection::ensure_schema(&client).await.unwrap(), "once");
    let id = unique_id("PRJ");
    apply_batch(
        &mut client,
        &[change(
            &id,
            1,
            SegmentStatus::Scheduled,
            SegmentStatus::Delayed,
        )],
    )
    .await
    .unwrap();
    let s = apply_batch(
        &mut client,
        &[change(
            &id,
            1,
            SegmentStatus::Scheduled,
            SegmentStatus::Boarding,
        )],
    )
    .await
    .unwrap()
    .stats;
    assert_eq!((s.replaced, s.superseded), (1, 1));
}

/// A change held behind a gap at a version that another change then claims: the later one
/// takes its place, and is applied once the gap fills.
#[tokio::test]
async fn a_held_change_is_replaced_by_a_later_one_at_its_version() {
    use SegmentStatus::{Boarding, Delayed, Scheduled};
    let Some(pg) = postgres() else { return };
    let mut client = database(&pg).await;
    let id = unique_id("PRJ");
    let first = change(&id, 1, Scheduled, Delayed);
    let held_first = change(&id, 2, Delayed, Scheduled);
    let held_later = change(&id, 2, Delayed, Boarding);
    apply_batch(&mut client, &[held_first]).await.unwrap();
    let s = apply_batch(&mut client, &[held_later]).await.unwrap().stats;
    assert_eq!((s.replaced, s.superseded, s.held), (1, 1, 1));
    assert_eq!(held(&client, &id).await, 1);
    apply_batch(&mut client, &[first]).await.unwrap();
    assert_eq!(position(&client, &id).await, 2);
    assert_eq!(
        segment_status(&client, &id).await.as_deref(),
        Some("Boarding")
    );
}

/// The `processed_events` outcomes of `id`, sorted.
async fn outcomes(client: &Client, id: &JourneyId) -> Vec<String> {
    let mut all: Vec<String> = client
        .query(
            "SELECT outcome FROM processed_events WHERE journey_id = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    all.sort();
    all
}

/// `(version, to_status)` of every history row of `id`, in version order.
async fn history(client: &Client, id: &JourneyId) -> Vec<(i64, Option<String>)> {
    client
        .query(
            "SELECT version, to_status FROM status_history WHERE journey_id = $1 \
             ORDER BY version, position",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
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

/// A projector whose gaps are looked for in the stream after 300 ms, on a fresh stream and
/// database, with a second session to read the projection.
struct GapRig {
    js: JetStream,
    projector: Projector,
    check: Client,
    consumer: String,
}

impl GapRig {
    async fn new(bus: &flyrtech_infrastructure::LocalNats, pg: &LocalPostgres) -> Self {
        let js = JetStream::connect(&bus.url(), StreamSettings::default())
            .await
            .unwrap();
        let settings = ProjectorSettings {
            gap_after: std::time::Duration::from_millis(300),
            ..ProjectorSettings::default()
        };
        let client = projection::connect(&pg.url()).await.unwrap();
        let projector = Projector::new(&js, client, settings.clone()).await.unwrap();
        let check = projection::connect(&pg.url()).await.unwrap();
        Self {
            js,
            projector,
            check,
            consumer: settings.consumer,
        }
    }

    async fn publish(&self, changes: &[Envelope]) {
        JetStreamPublisher::new(self.js.clone())
            .publish(changes)
            .await
            .unwrap();
    }

    /// The consumer's next message leaves it without reaching the projector (acknowledged
    /// unseen), as a replicated consumer whose leader changed can skip one.
    async fn skip_next(&self) {
        use futures::StreamExt;
        let consumer = self
            .js
            .stream()
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&self.consumer)
            .await
            .unwrap();
        let mut skipped = consumer.fetch().max_messages(1).messages().await.unwrap();
        let message = skipped.next().await.unwrap().unwrap();
        message.double_ack().await.unwrap();
    }

    /// Steps the projector until `id` is projected at `version`, for at most 30 s.
    async fn project_until(&mut self, id: &JourneyId, version: i64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while position(&self.check, id).await < version {
            assert!(
                std::time::Instant::now() < deadline,
                "still at {} with {} held",
                position(&self.check, id).await,
                held(&self.check, id).await
            );
            self.projector.step().await.unwrap();
        }
    }
}

/// A change the durable consumer never delivers: the later changes wait in held_events only
/// until they have waited `gap_after`; then the projector reads the missing version from the
/// stream itself and releases them. Without that the projection stays behind for good: the
/// consumer reports nothing pending.
#[tokio::test]
async fn a_change_the_consumer_skipped_is_read_from_the_stream() {
    let (Some(bus), Some(pg)) = (nats(), postgres()) else {
        return;
    };
    let mut rig = GapRig::new(&bus, &pg).await;
    let id = unique_id("GAP");
    let (a, b) = (SegmentStatus::Scheduled, SegmentStatus::Delayed);
    let changes: Vec<Envelope> = (1..=4)
        .map(|v| {
            if v % 2 == 1 {
                change(&id, v, a, b)
            } else {
                change(&id, v, b, a)
            }
        })
        .collect();
    rig.publish(&changes).await;
    rig.skip_next().await;

    rig.projector.step().await.unwrap();
    assert_eq!(
        (position(&rig.check, &id).await, held(&rig.check, &id).await),
        (0, 3)
    );
    assert!(
        rig.projector.caught_up().await.unwrap(),
        "the bus has nothing more to give"
    );

    rig.project_until(&id, 4).await;
    assert_eq!(held(&rig.check, &id).await, 0);
    assert_eq!(
        segment_status(&rig.check, &id).await.as_deref(),
        Some("Scheduled")
    );
    let stats = &rig.projector.stats().changes;
    assert_eq!((stats.applied, stats.released), (4, 3), "{stats:?}");
}

/// Gaps the stream cannot fill (their first version was never published) keep no other gap
/// waiting: more of them than a round reads are held longest, and the one journey whose
/// skipped change is on the stream is filled all the same, within a round or two.
#[tokio::test]
async fn gaps_the_stream_cannot_fill_do_not_keep_the_others_waiting() {
    let (Some(bus), Some(pg)) = (nats(), postgres()) else {
        return;
    };
    let mut rig = GapRig::new(&bus, &pg).await;
    let (a, b) = (SegmentStatus::Scheduled, SegmentStatus::Delayed);

    // More journeys than a round reads, each held behind a version 1 that was never published.
    let orphans: Vec<JourneyId> = (0..projection::JOURNEYS_PER_ROUND + 4)
        .map(|_| unique_id("ORPHAN"))
        .collect();
    for id in &orphans {
        rig.publish(&[change(id, 2, b, a)]).await;
    }
    while !rig.projector.caught_up().await.unwrap() {
        rig.projector.step().await.unwrap();
    }
    // Then a journey whose version 1 is on the stream, but skipped by the consumer.
    let id = unique_id("GAP");
    rig.publish(&[change(&id, 1, a, b), change(&id, 2, b, a)])
        .await;
    rig.skip_next().await;

    rig.project_until(&id, 2).await;
    assert_eq!(held(&rig.check, &id).await, 0);
    for orphan in &orphans {
        assert_eq!(
            (
                position(&rig.check, orphan).await,
                held(&rig.check, orphan).await
            ),
            (0, 1)
        );
    }
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
