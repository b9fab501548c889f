//! One dataset, any strategy: the layout recorded in Redis, the start-up guard, the online
//! migration both ways, and the rolling switch where instances of both layouts serve while
//! `migrate` runs. All on real Redis, single server and 3-master cluster.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use flyrtech_core::{Journey, JourneyId, JourneyStore, SegmentStatus, StatusChange, StoreError};
use flyrtech_infrastructure::dataset::{self, DatasetState, MigrationSettings};
use flyrtech_infrastructure::{
    DatasetError, Layout, Redis, RedisJourneyStore, StoreConfig, Strategy, keys,
};
use flyrtech_tests::{
    S, TestRedis, TestServer, Topology, journey, outbox_entries, segment_id, serve_config, store,
    unique_id,
};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use redis::AsyncCommands;
use rstest::rstest;
use rstest_reuse::apply;
use tokio::sync::Notify;

use crate::every_strategy;

/// Which layouts hold the journey right now: (document, hash).
async fn copies(redis: &Redis, id: &JourneyId) -> (bool, bool) {
    let mut conn = redis.shared();
    let document: bool = conn.exists(keys::journey_document(id)).await.unwrap();
    let hash: bool = conn.exists(keys::journey_hash(id)).await.unwrap();
    (document, hash)
}

fn in_layout(layout: Layout) -> (bool, bool) {
    (layout == Layout::Document, layout == Layout::Hash)
}

fn quiet() -> impl Fn(u64, u64) + Sync {
    |_, _| {}
}

/// A journey created through a store of `strategy`, listed in the service's index.
async fn created(store: &RedisJourneyStore, segments: usize) -> Journey {
    let j = journey(&unique_id("MIG"), segments);
    store.create(&j).await.unwrap();
    j
}

#[apply(every_strategy)]
#[tokio::test]
async fn a_fresh_redis_takes_the_first_strategys_layout_and_refuses_the_other(strategy: Strategy) {
    let server = TestRedis::single();
    let redis = server.connect().await;
    assert_eq!(
        dataset::state(&redis).await.unwrap(),
        DatasetState::default()
    );

    let admitted = dataset::admit(&redis, strategy).await.unwrap();
    assert_eq!(admitted.layout, Some(strategy.layout()));

    let other = Strategy::ALL
        .into_iter()
        .find(|s| s.layout() != strategy.layout())
        .unwrap();
    let err = dataset::admit(&redis, other).await.unwrap_err();
    assert!(matches!(err, DatasetError::WrongLayout { .. }), "{err:?}");
    let message = err.to_string();
    for needle in [
        format!("`{}` layout", strategy.layout()),
        format!("`{}` layout", other.layout()),
        format!("flyrtech migrate --to {}", other.layout()),
    ] {
        assert!(
            message.contains(&needle),
            "{needle:?} missing from: {message}"
        );
    }
    // The same strategy, and every strategy of its layout, is still admitted.
    for same in Strategy::ALL
        .into_iter()
        .filter(|s| s.layout() == strategy.layout())
    {
        dataset::admit(&redis, same).await.unwrap();
    }
}

#[tokio::test]
async fn serve_refuses_a_strategy_of_the_other_layout_before_writing_anything() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let lua = TestServer::start(&server.url(), S::Lua).await;
    assert_eq!(lua.seeded.created, 3);
    lua.stop().await;

    let err = flyrtech_api::http::Application::build(
        serve_config(&server.url(), StoreConfig::new(S::Hash)),
        &server.url(),
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("flyrtech migrate --to hash"),
        "{err}"
    );
    // No second copy was seeded.
    for id in ["JRN-001", "JRN-002", "JRN-003"] {
        let id = JourneyId::parse(id).unwrap();
        assert_eq!(copies(&redis, &id).await, in_layout(Layout::Document));
    }
}

#[tokio::test]
async fn an_unrecorded_dataset_is_recognised_by_its_journeys() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    // Journeys written before layouts were recorded, all in the hash layout.
    let hash = store(&redis, S::Hash).await;
    created(&hash, 2).await;
    created(&hash, 2).await;
    assert_eq!(dataset::state(&redis).await.unwrap().layout, None);

    let err = dataset::admit(&redis, S::Lua).await.unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::WrongLayout {
                dataset: Layout::Hash,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        dataset::state(&redis).await.unwrap().layout,
        Some(Layout::Hash)
    );

    // Now a document journey too: a mix no migration recorded is refused until migrated.
    let mixed = TestRedis::single();
    let redis = mixed.connect().await;
    created(&store(&redis, S::Hash).await, 1).await;
    created(&store(&redis, S::Lua).await, 1).await;
    let err = dataset::admit(&redis, S::Lua).await.unwrap_err();
    assert!(matches!(err, DatasetError::Mixed { .. }), "{err:?}");
    assert!(
        err.to_string().contains("flyrtech migrate --to document"),
        "{err}"
    );
    let report = dataset::migrate(
        &redis,
        Layout::Document,
        MigrationSettings::default(),
        &quiet(),
    )
    .await
    .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!((report.converted, report.already_there), (1, 1));
    dataset::admit(&redis, S::Lua).await.unwrap();
}

#[apply(every_strategy)]
#[tokio::test]
async fn creating_never_makes_a_second_copy(strategy: Strategy) {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let mine = store(&redis, strategy).await;
    let other_strategy = if strategy.layout() == Layout::Hash {
        S::Lua
    } else {
        S::Hash
    };
    let other = store(&redis, other_strategy).await;
    let j = created(&other, 2).await;
    assert!(matches!(
        mine.create(&j).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(
        copies(&redis, &j.id).await,
        in_layout(other_strategy.layout())
    );
    // And every strategy reads and updates the one copy, wherever it is.
    assert_eq!(mine.get(&j.id).await.unwrap(), j);
    let outcome = mine
        .update_segment_status(&j.id, &segment_id(1), SegmentStatus::Delayed, None)
        .await
        .unwrap();
    assert!(outcome.changed);
    assert_eq!(
        copies(&redis, &j.id).await,
        in_layout(other_strategy.layout())
    );
    let stored = other.get(&j.id).await.unwrap();
    assert_eq!(stored.segments[1].status, SegmentStatus::Delayed);
    assert_eq!(stored.version.get(), 1);
    assert_eq!(outbox_entries(&redis, &j.id).await.len(), 1);
    // A journey in neither layout is still a plain 404 for every strategy.
    let missing = unique_id("NOPE");
    assert!(matches!(
        mine.get(&missing).await,
        Err(StoreError::JourneyNotFound(_))
    ));
    assert!(matches!(
        mine.update_segment_status(&missing, &segment_id(0), SegmentStatus::Delayed, None)
            .await,
        Err(StoreError::JourneyNotFound(_))
    ));
}

/// document → hash → document keeps every field and the version exactly, and neither writes an
/// outbox entry.
#[test]
fn migrating_there_and_back_is_the_identity() {
    let server = TestRedis::single();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let redis = runtime.block_on(server.connect());
    let lua = runtime.block_on(store(&redis, S::Lua));
    let mut runner = TestRunner::new(Config {
        cases: 24,
        ..Config::default()
    });
    runner
        .run(&crate::properties::arbitrary_journey(), |mut j| {
            runtime.block_on(async {
                j.id = unique_id("RT");
                lua.create(&j).await.unwrap();
                // A few changes, so the version is not 0 and the outbox is not empty.
                for (i, status) in [SegmentStatus::Delayed, SegmentStatus::Boarding]
                    .into_iter()
                    .enumerate()
                    .take(j.segments.len())
                {
                    let _ = lua
                        .update_segment_status(&j.id, &j.segments[i].segment_id, status, None)
                        .await;
                }
                let before = lua.get(&j.id).await.unwrap();
                let outbox = outbox_entries(&redis, &j.id).await;
                for to in [
                    Layout::Hash,
                    Layout::Document,
                    Layout::Hash,
                    Layout::Document,
                ] {
                    let report =
                        dataset::migrate(&redis, to, MigrationSettings::default(), &quiet())
                            .await
                            .unwrap();
                    if !report.is_complete() {
                        return Err(TestCaseError::fail(format!("{report:?}")));
                    }
                    if copies(&redis, &j.id).await != in_layout(to) {
                        return Err(TestCaseError::fail(format!("{} not in {to}", j.id)));
                    }
                    let now = lua.get(&j.id).await.unwrap();
                    if now != before {
                        return Err(TestCaseError::fail(format!(
                            "in {to}: {now:?}\n!= {before:?}"
                        )));
                    }
                }
                if outbox_entries(&redis, &j.id).await != outbox {
                    return Err(TestCaseError::fail("the migration touched the outbox"));
                }
                Ok(())
            })
        })
        .unwrap();
}

#[rstest]
#[case::single(Topology::Single)]
#[case::cluster(Topology::Cluster)]
#[tokio::test]
async fn an_interrupted_migration_resumes_and_a_second_run_does_nothing(
    #[case] topology: Topology,
) {
    let server = TestRedis::start(topology);
    let redis = server.connect().await;
    dataset::admit(&redis, S::Lua).await.unwrap();
    let lua = store(&redis, S::Lua).await;
    let mut journeys = Vec::new();
    for _ in 0..600 {
        journeys.push(created(&lua, 2).await);
    }
    // Stop the migration as soon as its first batch is done: the future is dropped there, as
    // ctrl-c drops it in `flyrtech migrate`.
    let settings = MigrationSettings {
        concurrency: 16,
        batch: 50,
        ..MigrationSettings::default()
    };
    let first_batch = Notify::new();
    let on_progress = |done, _| {
        if done > 0 {
            first_batch.notify_one();
        }
    };
    let migration = dataset::migrate(&redis, Layout::Hash, settings, &on_progress);
    tokio::select! {
        report = migration => panic!("the migration finished before it was interrupted: {report:?}"),
        () = first_batch.notified() => {}
    }
    let state = dataset::state(&redis).await.unwrap();
    assert_eq!(state.migrating_to, Some(Layout::Hash), "{state:?}");
    let mut in_hash = 0;
    for j in &journeys {
        let (document, hash) = copies(&redis, &j.id).await;
        assert!(
            document != hash,
            "{} is in both layouts or in neither",
            j.id
        );
        in_hash += usize::from(hash);
    }
    assert!(
        0 < in_hash && in_hash < journeys.len(),
        "{in_hash} converted"
    );
    // Both layouts are admitted while it is under way.
    dataset::admit(&redis, S::Hash).await.unwrap();
    dataset::admit(&redis, S::Lua).await.unwrap();

    let resumed = dataset::migrate(&redis, Layout::Hash, settings, &quiet())
        .await
        .unwrap();
    assert!(resumed.is_complete(), "{resumed:?}");
    assert_eq!(resumed.converted as usize, journeys.len() - in_hash);
    assert_eq!(resumed.already_there as usize, in_hash);
    let hash = store(&redis, S::Hash).await;
    for j in &journeys {
        assert_eq!(copies(&redis, &j.id).await, in_layout(Layout::Hash));
        assert_eq!(&hash.get(&j.id).await.unwrap(), j);
    }
    assert_eq!(
        dataset::state(&redis).await.unwrap(),
        DatasetState {
            layout: Some(Layout::Hash),
            migrating_to: None
        }
    );
    assert!(matches!(
        dataset::admit(&redis, S::Lua).await,
        Err(DatasetError::WrongLayout { .. })
    ));

    let again = dataset::migrate(&redis, Layout::Hash, settings, &quiet())
        .await
        .unwrap();
    assert!(again.is_complete(), "{again:?}");
    assert_eq!((again.converted, again.swept), (0, 0), "{again:?}");
    assert_eq!(again.already_there as usize, journeys.len());
}

/// The answer one writer got for one change.
#[derive(Debug, Clone)]
struct Acked {
    journey: usize,
    segment: usize,
    status: SegmentStatus,
    changed: bool,
}

/// The rolling switch: writers through instances of both layouts, while `migrate` converts
/// every journey underneath them. Each (journey, segment) has one writer, so its last
/// acknowledged status is what the state must hold; the versions must count every
/// acknowledged change; and the audit, from the outbox, must agree.
#[rstest]
#[case::lua_to_hash_single(Topology::Single, S::Lua, S::Hash)]
#[case::optimistic_to_hash_single(Topology::Single, S::Optimistic, S::Hash)]
#[case::redlock_to_hash_single(Topology::Single, S::Redlock, S::Hash)]
#[case::naive_to_hash_single(Topology::Single, S::Naive, S::Hash)]
#[case::hash_back_to_lua_single(Topology::Single, S::Hash, S::Lua)]
#[case::lua_to_hash_cluster(Topology::Cluster, S::Lua, S::Hash)]
#[case::hash_back_to_optimistic_cluster(Topology::Cluster, S::Hash, S::Optimistic)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_switch_loses_no_acknowledged_update(
    #[case] topology: Topology,
    #[case] old: Strategy,
    #[case] new: Strategy,
) {
    const JOURNEYS: usize = 1000;
    const SEGMENTS: usize = 4;
    const WRITERS: usize = 8;
    let server = TestRedis::start(topology);
    let redis = server.connect().await;
    dataset::admit(&redis, old).await.unwrap();
    let setup = store(&redis, old).await;
    let mut ids = Vec::with_capacity(JOURNEYS);
    for _ in 0..JOURNEYS {
        ids.push(created(&setup, SEGMENTS).await.id);
    }
    let ids = Arc::new(ids);
    // Two instances of each layout, each with connections of its own.
    let mut instances = Vec::new();
    for strategy in [old, new, old, new] {
        instances.push(Arc::new(store(&server.connect().await, strategy).await));
    }
    let started = Arc::new(tokio::sync::Barrier::new(WRITERS + 1));
    let migrated = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (ids, instances) = (Arc::clone(&ids), instances.clone());
        let (started, migrated) = (Arc::clone(&started), Arc::clone(&migrated));
        writers.push(tokio::spawn(async move {
            // Writer w owns segment w % SEGMENTS of the journeys j with j % 2 == w / SEGMENTS.
            let segment = w % SEGMENTS;
            let mine: Vec<usize> = (0..ids.len()).filter(|j| j % 2 == w / SEGMENTS).collect();
            let mut acked = Vec::new();
            let mut round = 0usize;
            started.wait().await;
            // Until the migration is over, then one more full round through both layouts.
            let mut extra_rounds = 1;
            loop {
                let status = if round.is_multiple_of(2) {
                    SegmentStatus::Delayed
                } else {
                    SegmentStatus::Scheduled
                };
                for (n, &j) in mine.iter().enumerate() {
                    let instance = &instances[(w + n + round) % instances.len()];
                    match instance
                        .update_segment_status(&ids[j], &segment_id(segment), status, None)
                        .await
                    {
                        Ok(outcome) => acked.push(Acked {
                            journey: j,
                            segment,
                            status,
                            changed: outcome.changed,
                        }),
                        Err(e) => panic!("writer {w}: {} answered {e}", instance.strategy()),
                    }
                }
                round += 1;
                if migrated.load(Ordering::SeqCst) {
                    if extra_rounds == 0 {
                        return acked;
                    }
                    extra_rounds -= 1;
                }
            }
        }));
    }
    started.wait().await;
    let report = dataset::migrate(&redis, new.layout(), MigrationSettings::default(), &quiet())
        .await
        .unwrap();
    migrated.store(true, Ordering::SeqCst);
    assert!(report.is_complete(), "{report:?}");
    assert!(
        report.converted as usize >= JOURNEYS / 2,
        "the writers were meant to overlap the migration: {report:?}"
    );
    let mut history: Vec<Acked> = Vec::new();
    for writer in writers {
        history.extend(writer.await.unwrap());
    }

    // Every journey in the new layout only, holding every last acknowledged status; its
    // version counts every acknowledged change.
    let reader = store(&redis, new).await;
    let mut last: BTreeMap<(usize, usize), SegmentStatus> = BTreeMap::new();
    let mut changes: HashMap<usize, u64> = HashMap::new();
    for a in &history {
        last.insert((a.journey, a.segment), a.status);
        *changes.entry(a.journey).or_default() += u64::from(a.changed);
    }
    for (j, id) in ids.iter().enumerate() {
        assert_eq!(copies(&redis, id).await, in_layout(new.layout()), "{id}");
        let stored = reader.get(id).await.unwrap();
        // naive overwrites other writers' changes of the same journey by design (its own race,
        // not the migration's): for it, one live copy per journey is what the switch keeps.
        if !old.is_correct_across_instances() {
            continue;
        }
        for s in 0..SEGMENTS {
            if let Some(status) = last.get(&(j, s)) {
                assert_eq!(stored.segments[s].status, *status, "{id} segment {s}");
            }
        }
        assert_eq!(stored.version.get(), changes[&j], "{id}");
    }
    if old.is_correct_across_instances() {
        let published = flyrtech_tests::assert_audit_clean(&server.url(), new, &ids).await;
        assert_eq!(published, changes.values().sum::<u64>());
    }
}

#[tokio::test]
async fn an_old_instance_after_the_migration_keeps_updates_correct_and_is_not_ready() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let old = TestServer::start(&server.url(), S::Lua).await;
    let client = flyrtech_tests::http_client();
    let report = dataset::migrate(&redis, Layout::Hash, MigrationSettings::default(), &quiet())
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.converted, 3);

    let ready = client.get(old.url("/ready")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(ready.headers().contains_key("retry-after"));
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["type"], "/problems/wrong-layout");
    assert!(body["detail"].as_str().unwrap().contains("hash"), "{body}");

    let put = client
        .put(old.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&serde_json::json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200, "{}", put.text().await.unwrap());
    let id = JourneyId::parse("JRN-001").unwrap();
    assert_eq!(copies(&redis, &id).await, in_layout(Layout::Hash));
    let stored = store(&redis, S::Hash).await.get(&id).await.unwrap();
    assert_eq!(stored.segments[0].status, SegmentStatus::Departed);

    let mut new_journey = journey(&unique_id("LATE"), 1);
    new_journey.version = flyrtech_core::JourneyVersion::INITIAL;
    let post = client
        .post(old.url("/api/journeys"))
        .json(&new_journey)
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 503);
    assert_eq!(copies(&redis, &new_journey.id).await, (false, false));
    old.stop().await;
}

#[tokio::test]
async fn a_change_in_flight_never_lands_in_a_retired_copy() {
    // naive reads the document, "processes" for 300 ms, then writes the whole document back:
    // the migration converts the journey in between. The write must land on the hash copy and
    // never resurrect the document.
    let server = TestRedis::single();
    let redis = server.connect().await;
    let mut config = StoreConfig::new(S::Naive);
    config.processing_delay = Duration::from_millis(300);
    let slow = flyrtech_tests::store_with(&redis, config).await;
    let j = created(&store(&redis, S::Lua).await, 2).await;
    let change = StatusChange::Segment {
        segment_id: segment_id(0),
        status: SegmentStatus::Boarding,
    };
    let id = j.id.clone();
    let write = tokio::spawn(async move { slow.update(&id, &change, None).await });
    // The write has read the document once it is processing; convert underneath it.
    flyrtech_tests::poll_until(Duration::from_secs(5), "the slow write to read", || async {
        redis::cmd("INFO")
            .arg("commandstats")
            .query_async::<String>(&mut redis.shared())
            .await
            .unwrap()
            .contains("cmdstat_get:")
    })
    .await;
    let report = dataset::migrate(&redis, Layout::Hash, MigrationSettings::default(), &quiet())
        .await
        .unwrap();
    assert_eq!(report.converted, 1, "{report:?}");
    let outcome = write.await.unwrap().unwrap();
    assert!(outcome.changed);
    assert_eq!(copies(&redis, &j.id).await, in_layout(Layout::Hash));
    let stored = store(&redis, S::Hash).await.get(&j.id).await.unwrap();
    assert_eq!(stored.segments[0].status, SegmentStatus::Boarding);
    assert_eq!(stored.version.get(), 1);
    assert_eq!(outbox_entries(&redis, &j.id).await.len(), 1);
}

/// Which form journey `id`'s hash is in: `(compact, split)` (its `journey` field, its `header`).
async fn hash_form(redis: &Redis, id: &JourneyId) -> (bool, bool) {
    let mut conn = redis.shared();
    let key = keys::journey_hash(id);
    let compact: bool = conn.hexists(&key, "journey").await.unwrap();
    let split: bool = conn.hexists(&key, "header").await.unwrap();
    (compact, split)
}

/// A dataset recorded before the hash layout's compact form (its record has a layout and no
/// `hash_form`) keeps getting split hashes (`header`, `segments`, a field per segment), so that
/// instances of earlier builds can read every journey while a deploy rolls; they are read,
/// changed, completed and served over HTTP as before, in their form. `migrate --to hash` then
/// records the compact form, rewrites them compact (nothing a reader sees changes, no event is
/// raised; the service's memo, still holding the split form's field names, reads them whole
/// again), and journeys created after it are compact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hash_in_the_split_form_is_served_and_the_migration_compacts_it() {
    use flyrtech_core::JourneyStatus;

    let server = TestRedis::single();
    let redis = server.connect().await;
    let () = redis
        .shared()
        .hset(keys::DATASET, "layout", "hash")
        .await
        .unwrap();
    let hash = store(&redis, S::Hash).await;
    let j = created(&hash, 2).await;
    assert_eq!(hash_form(&redis, &j.id).await, (false, true));
    assert_eq!(hash.get(&j.id).await.unwrap(), j);

    let http = TestServer::start(&server.url(), S::Hash).await;
    let client = reqwest::Client::new();
    let url = http.url(&format!("/api/journeys/{}", j.id));
    let body = || async {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.text().await.unwrap()
    };
    let json = |j: &Journey| serde_json::to_string(j).unwrap();
    assert_eq!(body().await, json(&j));
    assert_eq!(
        body().await,
        json(&j),
        "read again by the split form's names"
    );

    hash.update_segment_status(&j.id, &segment_id(1), SegmentStatus::Departed, None)
        .await
        .unwrap();
    for status in [JourneyStatus::InProgress, JourneyStatus::Completed] {
        hash.update_journey_status(&j.id, status, None)
            .await
            .unwrap();
    }
    assert_eq!(hash_form(&redis, &j.id).await, (false, true), "still split");
    let now = hash.get(&j.id).await.unwrap();
    assert_eq!(now.version.get(), 3);
    assert_eq!(now.status, JourneyStatus::Completed);
    assert_eq!(now.segments[1].status, SegmentStatus::Departed);
    assert_eq!(body().await, json(&now));
    let entries = outbox_entries(&redis, &j.id).await;
    assert_eq!(entries.len(), 3);
    assert!(
        entries[2].events.iter().any(|e| matches!(&e.kind,
            flyrtech_core::EventKind::JourneyCompleted { customer_id, .. }
                if *customer_id == j.passenger_email)),
        "completing reads the passenger from the split form's header: {:?}",
        entries[2]
    );

    let report = dataset::migrate(&redis, Layout::Hash, MigrationSettings::default(), &quiet())
        .await
        .unwrap();
    assert!(report.is_complete(), "{report:?}");
    // Every hash: the server's seeded journeys were written split too.
    assert_eq!(
        (report.compacted, report.converted, report.already_there),
        (report.listed, 0, 0),
        "{report:?}"
    );
    assert!(report.listed > 1, "{report:?}");
    assert_eq!(hash_form(&redis, &j.id).await, (true, false));
    assert_eq!(hash.get(&j.id).await.unwrap(), now);
    assert_eq!(body().await, json(&now));
    assert_eq!(outbox_entries(&redis, &j.id).await.len(), 3);
    // Changed again, compact now; a second run finds it there.
    hash.update_segment_status(&j.id, &segment_id(0), SegmentStatus::Delayed, None)
        .await
        .unwrap();
    assert_eq!(
        hash.get(&j.id).await.unwrap().segments[0].status,
        SegmentStatus::Delayed
    );
    let again = dataset::migrate(&redis, Layout::Hash, MigrationSettings::default(), &quiet())
        .await
        .unwrap();
    assert_eq!((again.compacted, again.already_there), (0, again.listed));
    let later = created(&hash, 1).await;
    assert_eq!(hash_form(&redis, &later.id).await, (true, false));
    assert_eq!(hash.get(&later.id).await.unwrap(), later);
}

/// A `hash_form` this build does not know (a later build's) is refused, by a creation and by the
/// migration, and nothing is written.
#[tokio::test]
async fn a_hash_form_this_build_does_not_know_writes_nothing() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let () = redis
        .shared()
        .hset_multiple(keys::DATASET, &[("layout", "hash"), ("hash_form", "v9")])
        .await
        .unwrap();
    let hash = store(&redis, S::Hash).await;
    let j = journey(&unique_id("MIG"), 1);
    let err = hash.create(&j).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Corrupt { .. }) && err.to_string().contains("\"v9\""),
        "{err}"
    );
    assert_eq!(copies(&redis, &j.id).await, (false, false));
    let err = dataset::migrate(&redis, Layout::Hash, MigrationSettings::default(), &quiet())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("\"v9\""), "{err}");
}
