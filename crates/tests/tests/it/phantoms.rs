//! Events only for changes that last. A primary acknowledges a write; its replica never gets it
//! (cut off, nothing buffered for it); the primary dies and the replica is promoted. Under
//! `--wait-replicas` the write was answered 503 and the relay never published it: the bus and
//! the projection hold no change the surviving store lacks, and every acknowledged change,
//! the first one after the failover (which gets the discarded change's version) included,
//! reaches both. Without it the change was acknowledged and published: the projection replaces
//! it when the store gives its version to the next change, and ends equal to the store.

use std::time::Duration;

use flyrtech_core::{Envelope, EventKind, JourneyId, JourneyStore, SegmentStatus, StoreError};
use flyrtech_infrastructure::events::audit::audit;
use flyrtech_infrastructure::events::nats::{JetStream, JetStreamPublisher, StreamSettings};
use flyrtech_infrastructure::events::publisher::{Bus, RedisStreamPublisher, read_bus};
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
use flyrtech_infrastructure::projection::{self, Projector, ProjectorSettings, reconcile};
use flyrtech_infrastructure::{
    LocalNats, LocalPostgres, LocalRedis, Redis, RedisJourneyStore, RedisProcess, StoreConfig,
    Strategy, keys,
};
use flyrtech_tests::{
    TestServer, http_client, journey, nats, poll_until, postgres, segment_id, serve_config,
    store_with, unique_id,
};
use rstest_reuse::apply;
use tokio_postgres::Client;

use crate::every_correct_strategy;
use crate::failover::primary_and_replica;
use crate::reliability::{acknowledged, connect, promote, wait_for};

/// Where the relay publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// The Redis stream `events`, on the journeys' own deployment.
    RedisStream,
    /// NATS JetStream, projected into PostgreSQL.
    JetStream,
}

/// Cuts `replica` off `primary` once it holds everything sent so far: it authenticates as a user
/// the primary does not know, so its link drops and every reconnection is refused; nothing
/// written after this reaches it, nor is anything buffered for it to apply later (a paused
/// replica's socket would take the stream in). Returns once the primary counts no replica.
async fn cut(primary: &RedisProcess, replica: &RedisProcess) {
    poll_until(Duration::from_secs(10), "the replica caught up", || async {
        let info = primary.raw_command("INFO replication").unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(str::trim)
                .map(str::to_owned)
        };
        let own = field("master_repl_offset:");
        let theirs = info
            .lines()
            .find(|l| l.starts_with("slave0:"))
            .and_then(|l| l.split(',').find_map(|p| p.strip_prefix("offset=")))
            .map(str::to_owned);
        own.is_some() && own == theirs
    })
    .await;
    for line in [
        "CONFIG SET masteruser flyrtech-cut",
        "CONFIG SET masterauth cut",
        "CLIENT KILL TYPE master",
    ] {
        replica.raw_command(line).unwrap();
    }
    poll_until(
        Duration::from_secs(10),
        "the primary lost its replica",
        || async {
            primary
                .raw_command("INFO replication")
                .is_ok_and(|i| i.contains("connected_slaves:0"))
        },
    )
    .await;
}

/// What the relay publishes to, and what reads it back.
struct Downstream {
    way: Way,
    _nats: Option<LocalNats>,
    _pg: Option<LocalPostgres>,
    jetstream: Option<JetStream>,
    projector: Option<Projector>,
    client: Option<Client>,
}

impl Downstream {
    /// `None` when NATS or PostgreSQL is not installed on a developer's machine.
    async fn start(way: Way) -> Option<Self> {
        if way == Way::RedisStream {
            return Some(Self {
                way,
                _nats: None,
                _pg: None,
                jetstream: None,
                projector: None,
                client: None,
            });
        }
        let (nats, pg) = (nats()?, postgres()?);
        let jetstream = JetStream::connect(&nats.url(), StreamSettings::default())
            .await
            .unwrap();
        let projector = Projector::new(
            &jetstream,
            projection::connect(&pg.url()).await.unwrap(),
            ProjectorSettings::default(),
        )
        .await
        .unwrap();
        let client = projection::connect(&pg.url()).await.unwrap();
        Some(Self {
            way,
            _nats: Some(nats),
            _pg: Some(pg),
            jetstream: Some(jetstream),
            projector: Some(projector),
            client: Some(client),
        })
    }

    /// A relay of `redis`'s outbox into this downstream, confirming what it reads when the
    /// deployment confirms writes (`confirm`).
    async fn relay(&self, redis: &Redis, confirm: bool, name: &str) -> Relay<Bus> {
        let wait = if confirm { wait_for(1) } else { None };
        let bus = match &self.jetstream {
            Some(js) => Bus::JetStream(Box::new(JetStreamPublisher::new(js.clone()))),
            None => Bus::Redis(
                RedisStreamPublisher::new(redis.clone(), keys::EVENTS, None).confirmed(wait),
            ),
        };
        let settings = RelaySettings {
            consumer: name.to_owned(),
            poll_interval: Duration::from_millis(10),
            // A relay on the promoted store takes over what its predecessor left pending.
            claim_idle: Duration::from_millis(200),
            confirm: wait,
            ..RelaySettings::new()
        };
        Relay::new(redis.clone(), bus, settings).await.unwrap()
    }

    /// Projects what the bus holds (JetStream) until the journey's position is `version`.
    async fn projected(&mut self, id: &JourneyId, version: i64) {
        let (Some(projector), Some(client)) = (self.projector.as_mut(), self.client.as_ref())
        else {
            return;
        };
        for _ in 0..200 {
            projector.step().await.unwrap();
            if position(client, id).await == version {
                return;
            }
        }
        panic!(
            "{id} not projected at version {version}: at {}",
            position(client, id).await
        );
    }
}

async fn position(client: &Client, id: &JourneyId) -> i64 {
    client
        .query_one(
            "SELECT COALESCE(max(last_version), 0) FROM journey_positions WHERE journey_id = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0)
}

/// Sweeps `relay` until `done` holds of its totals (bounded).
async fn sweep_until(
    relay: &Relay<Bus>,
    what: &str,
    done: impl Fn(flyrtech_infrastructure::events::relay::RelayStats) -> bool,
) {
    poll_until(Duration::from_secs(20), what, || async {
        let _ = relay.sweep().await;
        done(relay.stats())
    })
    .await;
}

/// The change that sets segment 1 to `to`, if `envelope` is one.
fn sets_segment_1(envelope: &Envelope, to: SegmentStatus) -> bool {
    envelope.events.iter().any(|e| {
        matches!(&e.kind, EventKind::SegmentStatusChanged { segment_id: s, to: t, .. }
            if *s == segment_id(1) && *t == to)
    })
}

/// Where the fault happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topology {
    /// One primary and its replica.
    Primary,
    /// A cluster of three primaries with a replica each; the journey's primary is cut.
    Cluster,
}

/// One run of the reproduction: see the module docs. Without `reuse`, no change follows the
/// failover: the projection is repaired against the store instead (`audit --projection --repair`).
async fn phantom_round(
    strategy: Strategy,
    way: Way,
    confirm: bool,
    topology: Topology,
    reuse: bool,
) {
    let Some(mut downstream) = Downstream::start(way).await else {
        return;
    };
    let deployment = match topology {
        Topology::Primary => LocalRedis::primary_with_replicas(1).unwrap(),
        Topology::Cluster => LocalRedis::cluster_with_replicas(3, 1).unwrap(),
    };
    let url = match topology {
        Topology::Primary => deployment.nodes()[0].url(),
        Topology::Cluster => deployment.url(),
    };
    let redis = connect(&url).await;
    let config = StoreConfig {
        replicas: if confirm { wait_for(1) } else { None },
        ..StoreConfig::new(strategy)
    };
    let store = store_with(&redis, config).await;
    let j = journey(&unique_id("PHANTOM"), 2);
    store.create(&j).await.unwrap();
    let (primary, replica) = match topology {
        Topology::Primary => (&deployment.nodes()[0], &deployment.nodes()[1]),
        Topology::Cluster => {
            primary_and_replica(&deployment, keys::slot(&strategy.layout().key(&j.id)))
        }
    };

    // One healthy change, published (and projected).
    let first = acknowledged(&store, &j.id, 0, SegmentStatus::Delayed).await;
    assert_eq!(first.version.get(), 1);
    let relay = downstream.relay(&redis, confirm, "relay-before").await;
    sweep_until(&relay, "the first change published", |s| s.published >= 1).await;
    downstream.projected(&j.id, 1).await;

    // The replica is cut off; a change reaches the primary alone.
    cut(primary, replica).await;
    let phantom = store
        .update_segment_status(&j.id, &segment_id(1), SegmentStatus::Delayed, None)
        .await;
    if confirm {
        assert!(
            matches!(phantom, Err(StoreError::NotReplicated { .. })),
            "{strategy}: {phantom:?}"
        );
        sweep_until(&relay, "a batch held unconfirmed (or published)", |s| {
            s.unconfirmed >= 1 || s.published >= 2
        })
        .await;
        assert_eq!(
            relay.stats().published,
            1,
            "{strategy} {way:?}: published a change no replica held"
        );
    } else {
        assert_eq!(phantom.unwrap().version.get(), 2, "{strategy}");
        sweep_until(&relay, "the unreplicated change published", |s| {
            s.published >= 2
        })
        .await;
        downstream.projected(&j.id, 2).await;
    }
    // Read without replica confirmation (a confirmed read is refused while the replica is
    // cut): what the primary alone holds.
    let primary_alone = store_with(&redis, StoreConfig::new(strategy)).await;
    assert_eq!(
        primary_alone.get(&j.id).await.unwrap().segments[1].status,
        SegmentStatus::Delayed,
        "{strategy}: the primary holds the change"
    );
    drop(relay);

    // The failover: the primary dies, its replica is promoted.
    primary.signal("KILL").unwrap();
    let survivor = match topology {
        Topology::Primary => promote(&replica.url()).await,
        Topology::Cluster => {
            replica.raw_command("CLUSTER FAILOVER TAKEOVER").unwrap();
            poll_until(Duration::from_secs(20), "the replica promoted", || async {
                replica
                    .raw_command("INFO replication")
                    .is_ok_and(|i| i.contains("role:master"))
            })
            .await;
            connect(&url).await
        }
    };
    // The promoted store has no replica: it serves without waiting, as an operator would run it
    // until one is attached.
    let after = store_with(&survivor, StoreConfig::new(strategy)).await;
    let settled = settled(&after, &j.id).await;
    assert_eq!(
        (settled.version.get(), settled.segments[1].status),
        (1, SegmentStatus::Scheduled),
        "{strategy}: the promoted replica never had the change"
    );
    if !reuse {
        let client = downstream.client.as_mut().unwrap();
        let ahead = reconcile(&after, client, std::slice::from_ref(&j.id))
            .await
            .unwrap();
        assert!(!ahead.is_clean(), "{strategy}: the phantom is projected");
        let repaired = projection::repair_ahead(&after, client, std::slice::from_ref(&j.id))
            .await
            .unwrap();
        assert_eq!(repaired, std::slice::from_ref(&j.id), "{strategy}");
        let report = reconcile(&after, client, std::slice::from_ref(&j.id))
            .await
            .unwrap();
        assert!(report.is_clean(), "{strategy}: {report:?}");
        assert_eq!(outcomes(client, &j.id).await, ["applied", "superseded"]);
        return;
    }
    // The first change after the failover gets the discarded change's version.
    let reused = after
        .update_segment_status(&j.id, &segment_id(1), SegmentStatus::Boarding, None)
        .await
        .unwrap();
    assert_eq!(reused.version.get(), 2, "{strategy}");
    let relay = downstream.relay(&survivor, false, "relay-after").await;
    tokio::time::timeout(Duration::from_secs(30), relay.drain())
        .await
        .expect("the outbox drained")
        .unwrap();
    downstream.projected(&j.id, 2).await;

    // What reached the bus and the projection.
    match downstream.way {
        Way::RedisStream => {
            let published: Vec<Envelope> = read_bus(&survivor, keys::EVENTS)
                .await
                .unwrap()
                .into_iter()
                .map(|(_, e)| e)
                .filter(|e| e.journey_id == j.id)
                .collect();
            assert!(
                !published
                    .iter()
                    .any(|e| sets_segment_1(e, SegmentStatus::Delayed)),
                "{strategy}: a phantom on the bus: {published:?}"
            );
            assert!(
                published
                    .iter()
                    .any(|e| e.version.get() == 2 && sets_segment_1(e, SegmentStatus::Boarding)),
                "{strategy}: the change after the failover is missing: {published:?}"
            );
            let report = audit(
                &after,
                &survivor,
                &survivor,
                keys::EVENTS,
                Some(std::slice::from_ref(&j.id)),
            )
            .await
            .unwrap();
            assert!(report.is_clean(), "{strategy}: {report:?}");
        }
        Way::JetStream => {
            let client = downstream.client.as_ref().unwrap();
            let report = reconcile(&after, client, std::slice::from_ref(&j.id))
                .await
                .unwrap();
            assert!(
                report.is_clean(),
                "{strategy}: the projection differs from the store: {report:?}"
            );
            let outcomes = outcomes(client, &j.id).await;
            let messages = downstream
                .jetstream
                .as_ref()
                .unwrap()
                .messages()
                .await
                .unwrap();
            let delayed_history: i64 = client
                .query_one(
                    "SELECT count(*) FROM status_history WHERE journey_id = $1 \
                     AND segment_id = $2 AND to_status = 'Delayed'",
                    &[&j.id.to_string(), &segment_id(1).to_string()],
                )
                .await
                .unwrap()
                .get(0);
            assert_eq!(
                delayed_history, 0,
                "{strategy}: the phantom's history stayed"
            );
            if confirm {
                assert_eq!(outcomes, ["applied", "applied"], "{strategy}");
                assert_eq!(messages, 2, "{strategy}: the bus holds a phantom");
            } else {
                assert_eq!(
                    outcomes,
                    ["applied", "replaced", "superseded"],
                    "{strategy}"
                );
                assert_eq!(messages, 3, "{strategy}");
            }
        }
    }
}

/// Reads a journey once the promoted primary answers for it (bounded).
async fn settled(store: &RedisJourneyStore, id: &JourneyId) -> flyrtech_core::Journey {
    let mut last = None;
    for _ in 0..100 {
        match store.get(id).await {
            Ok(journey) => return journey,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{id} unreadable after the failover: {last:?}");
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

/// Under `--wait-replicas 1`, for every correct strategy and both buses: no phantom reaches the
/// bus or the projection, and the first change after the failover does.
#[apply(every_correct_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_wait_replicas_no_change_the_survivor_lacks_is_published(
    strategy: Strategy,
    #[values(Way::RedisStream, Way::JetStream)] way: Way,
) {
    phantom_round(strategy, way, true, Topology::Primary, true).await;
}

/// The control: without `--wait-replicas` the change is acknowledged and published before the
/// failover discards it, and the projection, which replaces it with the change that reuses its
/// version, ends equal to the store.
#[apply(every_correct_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_wait_replicas_the_projection_converges_to_the_store(strategy: Strategy) {
    phantom_round(strategy, Way::JetStream, false, Topology::Primary, true).await;
}

/// Without `--wait-replicas`, and no change of the journey after the failover: the projection
/// stays ahead of the store until it is repaired against it (`audit --projection --repair`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phantom_no_later_change_replaces_is_repaired_against_the_store() {
    phantom_round(
        Strategy::Hash,
        Way::JetStream,
        false,
        Topology::Primary,
        false,
    )
    .await;
}

/// On a cluster: a primary of three cut from its replica, killed, and the replica taking over.
#[apply(every_correct_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_no_change_the_survivor_lacks_is_published(strategy: Strategy) {
    phantom_round(strategy, Way::RedisStream, true, Topology::Cluster, true).await;
}

/// `PUT` of segment `segment` of JRN-001 to `status` through `server`: the status and the
/// problem type (empty for a 200).
async fn put(server: &TestServer, segment: usize, status: &str) -> (u16, String, String) {
    let response = http_client()
        .put(server.url(&format!(
            "/api/journeys/JRN-001/segments/SEG-001-{segment}/status"
        )))
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .unwrap();
    let code = response.status().as_u16();
    let problem: serde_json::Value = response.json().await.unwrap_or_default();
    (
        code,
        problem["type"].as_str().unwrap_or_default().to_owned(),
        problem["detail"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The two refusals of `--wait-replicas` say different things. A write sent and not confirmed
/// is 503 `not-replicated` (it is in place on the primary); once the primary is known to lack
/// its replica, a write is refused before it is sent: 503 `replicas-missing`, and nothing of it
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_refused_before_it_was_sent_says_nothing_was_written() {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let url = deployment.nodes()[0].url();
    let config = StoreConfig {
        replicas: wait_for(1),
        ..StoreConfig::new(Strategy::Hash)
    };
    let server = TestServer::start_with(serve_config(&url, config)).await;
    poll_until(Duration::from_secs(20), "a confirmed update", || async {
        put(&server, 1, "Delayed").await.0 == 200
    })
    .await;
    cut(&deployment.nodes()[0], &deployment.nodes()[1]).await;
    let reader = store_with(&connect(&url).await, StoreConfig::new(Strategy::Hash)).await;
    let id = JourneyId::parse("JRN-001").unwrap();

    let (code, kind, detail) = put(&server, 1, "Boarding").await;
    assert_eq!((code, kind.as_str()), (503, "/problems/not-replicated"));
    assert!(detail.contains("may be in place"), "{detail}");
    let sent = reader.get(&id).await.unwrap();
    assert_eq!(
        sent.segments[0].status,
        SegmentStatus::Boarding,
        "it was sent"
    );

    let (code, kind, detail) = put(&server, 1, "Delayed").await;
    assert_eq!((code, kind.as_str()), (503, "/problems/replicas-missing"));
    assert!(
        detail.contains("Nothing of the change is in place"),
        "{detail}"
    );
    let after = reader.get(&id).await.unwrap();
    assert_eq!(
        (after.version, after.segments[0].status),
        (sent.version, SegmentStatus::Boarding),
        "a refusal that wrote nothing"
    );
    server.stop().await;
}

/// A primary that refuses writes itself (`min-replicas-to-write 1`, `NOREPLICAS`): the script
/// never ran, and the answer says nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_primary_refused_with_noreplicas_says_nothing_was_written() {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let primary = &deployment.nodes()[0];
    let url = primary.url();
    let config = StoreConfig {
        replicas: wait_for(1),
        ..StoreConfig::new(Strategy::Lua)
    };
    let server = TestServer::start_with(serve_config(&url, config)).await;
    poll_until(Duration::from_secs(20), "a confirmed update", || async {
        put(&server, 1, "Delayed").await.0 == 200
    })
    .await;
    primary
        .raw_command("CONFIG SET min-replicas-to-write 1")
        .unwrap();
    cut(primary, &deployment.nodes()[1]).await;
    let reader = store_with(&connect(&url).await, StoreConfig::new(Strategy::Lua)).await;
    let id = JourneyId::parse("JRN-001").unwrap();
    let before = reader.get(&id).await.unwrap();

    let (code, kind, _) = put(&server, 1, "Boarding").await;
    assert_eq!((code, kind.as_str()), (503, "/problems/replicas-missing"));
    assert_eq!(
        reader.get(&id).await.unwrap(),
        before,
        "nothing was written"
    );
    server.stop().await;
}
