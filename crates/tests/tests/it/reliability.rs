//! Faults on real processes. The faults under load are judged by every answer the clients were
//! given (`verify`'s clients and the history checker, shared with the nemeses), not by a final
//! state, and each has a control that loses and must fail the same check. Bounded everywhere:
//! polls, not sleeps; loops with limits.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use flyrtech_core::{JourneyId, JourneyStore, SegmentStatus, StoreError};
use flyrtech_infrastructure::{
    Fsync, LocalRedis, Redis, RedisJourneyStore, RedisSettings, ReplicaWait, StoreConfig, Strategy,
    keys,
};
use flyrtech_lab::history::Verdict;
use flyrtech_tests::{
    S, TestServer, http_client, journey, poll_until, segment_id, serve_config, store_with,
    unique_id,
};
use rstest_reuse::apply;
use serde_json::{Value, json};

use crate::every_strategy;
use crate::nemesis::{after, assert_linearizable, record_during};

pub(crate) fn wait_for(replicas: u32) -> Option<ReplicaWait> {
    Some(ReplicaWait {
        replicas,
        timeout: Duration::from_millis(900),
        confirmation: flyrtech_infrastructure::Confirmation::Received,
    })
}

/// Sets a segment's status and retries while the replicas have not confirmed it, as a client
/// told `NotReplicated` should (bounded, after a pause like Retry-After's): on a loaded machine a
/// healthy replica can miss one wait, and its primary's writes are then refused until the probe
/// sees the replica confirm again.
pub(crate) async fn acknowledged(
    store: &RedisJourneyStore,
    id: &JourneyId,
    segment: usize,
    status: SegmentStatus,
) -> flyrtech_core::UpdateOutcome {
    let mut last = None;
    for _ in 0..200 {
        match store
            .update_segment_status(id, &segment_id(segment), status, None)
            .await
        {
            Ok(outcome) => return outcome,
            Err(e @ (StoreError::NotReplicated { .. } | StoreError::ReplicasMissing { .. })) => {
                last = Some(e);
            }
            Err(e) => panic!("{id}: {e}"),
        }
        tokio::time::sleep(flyrtech_infrastructure::replication::PROBE_INTERVAL / 2).await;
    }
    panic!("{id}: never confirmed: {last:?}");
}

/// Promotes the replica at `url` (`REPLICAOF NO ONE`), as an operator or a sentinel would.
pub(crate) async fn promote(url: &str) -> Redis {
    let promoted = connect(url).await;
    let () = redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut promoted.shared())
        .await
        .unwrap();
    promoted
}

pub(crate) async fn connect(url: &str) -> Redis {
    let mut last = None;
    for _ in 0..100 {
        match Redis::connect(&RedisSettings::new(url)).await {
            Ok(redis) => return redis,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("cannot connect to {url}: {last:?}");
}

/// With `--wait-replicas 1`, an update is acknowledged only once the replica confirmed it; with
/// the replica paused it is answered `NotReplicated` (applied on the primary, not acknowledged),
/// and once the replica is back the retry is acknowledged.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_is_acknowledged_only_once_a_replica_confirmed_it(strategy: Strategy) {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let redis = connect(&deployment.nodes()[0].url()).await;
    let store = store_with(
        &redis,
        StoreConfig {
            replicas: wait_for(1),
            ..StoreConfig::new(strategy)
        },
    )
    .await;
    let j = journey(&unique_id("WAIT"), 2);
    store.create(&j).await.unwrap();
    let confirmed = acknowledged(&store, &j.id, 0, SegmentStatus::Delayed).await;
    assert!(confirmed.version.get() == 1);

    deployment.nodes()[1].signal("STOP").unwrap();
    let unconfirmed = store
        .update_segment_status(&j.id, &segment_id(1), SegmentStatus::Boarding, None)
        .await;
    // No read shows it while no replica holds it: a failover now would lose it, and the
    // journey would go back in time for whoever read it.
    let read = store.get(&j.id).await;
    deployment.nodes()[1].signal("CONT").unwrap();
    assert!(
        matches!(
            read,
            Err(StoreError::ReplicasMissing { .. } | StoreError::NotReplicated { .. })
        ),
        "{strategy}: a read showed a write no replica held: {read:?}"
    );
    // Never acknowledged: refused as not replicated once WAIT gave up, or, on a machine so loaded
    // that the connection's own deadline passed before WAIT answered, refused with the outcome
    // unknown. Either is a "may have been applied"; an acknowledgement is the failure.
    let refused = match &unconfirmed {
        Err(StoreError::NotReplicated {
            confirmed: 0,
            required: 1,
        }) => true,
        Err(StoreError::Unavailable { message, .. }) => message.contains("outcome is unknown"),
        _ => false,
    };
    assert!(refused, "{strategy}: {unconfirmed:?}");
    // Applied on the primary all the same ("may have been applied"): read once the replica,
    // back, holds it.
    poll_until(Duration::from_secs(20), "a confirmed read", || async {
        store.get(&j.id).await.is_ok()
    })
    .await;
    let stored = store.get(&j.id).await.unwrap();
    assert_eq!(stored.segments[1].status, SegmentStatus::Boarding);
    // The replica is back: the retry is a no-op and is acknowledged.
    let retried = acknowledged(&store, &j.id, 1, SegmentStatus::Boarding).await;
    assert!(!retried.changed, "{retried:?}");
}

/// Over HTTP: 503 with the not-replicated problem and Retry-After, never 200, while the replica
/// cannot confirm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_replicated_is_a_503_that_says_retrying_is_safe() {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let store = StoreConfig {
        replicas: wait_for(1),
        ..StoreConfig::new(S::Lua)
    };
    let server = TestServer::start_with(serve_config(&deployment.nodes()[0].url(), store)).await;
    let client = http_client();
    let put = |status: &'static str| {
        client
            .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
            .json(&json!({ "status": status }))
            .send()
    };
    poll_until(Duration::from_secs(20), "a confirmed update", || async {
        put("Delayed").await.is_ok_and(|r| r.status() == 200)
    })
    .await;
    deployment.nodes()[1].signal("STOP").unwrap();
    let refused = put("Boarding").await.unwrap();
    deployment.nodes()[1].signal("CONT").unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/not-replicated", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("retrying the same change is safe")),
        "{problem}"
    );
}

/// On a cluster with replicas, each write waits on its own slot's primary (not on every
/// primary): journeys in every partition are acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_each_write_waits_on_its_own_primary() {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let redis = connect(&cluster.url()).await;
    let store = store_with(
        &redis,
        StoreConfig {
            replicas: wait_for(1),
            ..StoreConfig::new(S::Hash)
        },
    )
    .await;
    let mut slots = std::collections::BTreeSet::new();
    for _ in 0..24 {
        let j = journey(&unique_id("SLOT"), 1);
        slots.insert(keys::slot(&keys::journey_hash(&j.id)) / 5462);
        store.create(&j).await.unwrap();
        assert!(
            acknowledged(&store, &j.id, 0, SegmentStatus::Delayed)
                .await
                .changed
        );
    }
    assert_eq!(slots.len(), 3, "the journeys covered every master's slots");
}

/// Seeds `n` journeys of `segments` segments through `store`.
pub(crate) async fn seed(
    store: &RedisJourneyStore,
    n: usize,
    segments: usize,
) -> Arc<Vec<JourneyId>> {
    let mut ids = Vec::new();
    for _ in 0..n {
        let j = journey(&unique_id("FAULT"), segments);
        store.create(&j).await.unwrap();
        ids.push(j.id);
    }
    Arc::new(ids)
}

/// redis-server SIGKILLed under load and restarted from its AOF with `appendfsync always`: the
/// same API instance recovers by itself, and every answer the clients were given is explained by
/// one order (a write acknowledged and then lost at the restart would leave a read, or a version,
/// that no order explains). The control switches the AOF off mid-run, so the restart loads a file
/// that stops before the last acknowledged writes: the same check must fail.
#[rstest::rstest]
#[case::aof_always(true)]
#[case::control_aof_switched_off(false)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_killed_under_load_restarts_from_its_aof_losing_nothing_acknowledged(
    #[case] keep_aof: bool,
) {
    let data = tempfile::tempdir().unwrap();
    let deployment = LocalRedis::persistent(data.path(), Fsync::Always).unwrap();
    let server = TestServer::start(&deployment.url(), S::Lua).await;
    let recorded = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&recorded);
    let checked = record_during(
        "aof-always",
        S::Lua,
        vec![server.base.clone()],
        6,
        recorded,
        deployment,
        |mut deployment| async move {
            after(&progress, 300, "operations before the fault").await;
            if !keep_aof {
                deployment.nodes()[0]
                    .raw_command("CONFIG SET appendonly no")
                    .unwrap();
                after(&progress, 300, "operations the AOF will not hold").await;
            }
            deployment.nodes()[0].signal("KILL").unwrap();
            deployment.nodes_mut()[0].restart().unwrap();
            after(&progress, 300, "operations after the restart").await;
            deployment
        },
    )
    .await;
    if keep_aof {
        assert_linearizable(&checked);
    } else {
        assert_eq!(
            checked.report.verdict,
            Verdict::NotLinearizable,
            "the control lost acknowledged writes at the restart: {:?}",
            checked.report
        );
    }
}

/// A replica paused, its primary killed, the replica promoted: without `--wait-replicas` updates
/// were acknowledged while no replica could confirm them (the documented risk); with
/// `--wait-replicas 1` none was, and nothing acknowledged is missing after the promotion.
#[rstest::rstest]
#[case::without_wait(None)]
#[case::with_wait_replicas_1(wait_for(1))]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_promoted_after_its_primary_dies(#[case] replicas: Option<ReplicaWait>) {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let primary = deployment.nodes()[0].url();
    let replica = deployment.nodes()[1].url();
    let config = StoreConfig {
        replicas,
        ..StoreConfig::new(S::Lua)
    };
    let store = store_with(&connect(&primary).await, config.clone()).await;
    let ids = seed(&store, 10, 1).await;
    let mut before = Vec::new();
    for id in ids.iter() {
        acknowledged(&store, id, 0, SegmentStatus::Delayed).await;
        before.push(id.clone());
    }
    // Those updates have reached the replica (without WAIT nothing else makes sure of it) ...
    let offset = |node: &flyrtech_infrastructure::RedisProcess, field: &str| {
        let info = node.raw_command("INFO replication").unwrap_or_default();
        info.lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    poll_until(
        Duration::from_secs(10),
        "the replica to catch up",
        || async {
            let primary = offset(&deployment.nodes()[0], "master_repl_offset:");
            primary.is_some() && primary == offset(&deployment.nodes()[1], "slave_repl_offset:")
        },
    )
    .await;
    // ... then it stops confirming; every update now is at risk until it does.
    deployment.nodes()[1].signal("STOP").unwrap();
    let mut at_risk = 0;
    for id in ids.iter() {
        if store
            .update_segment_status(id, &segment_id(0), SegmentStatus::Boarding, None)
            .await
            .is_ok()
        {
            at_risk += 1;
        }
    }
    deployment.nodes()[0].signal("KILL").unwrap();
    deployment.nodes()[1].signal("CONT").unwrap();
    let promoted = promote(&replica).await;
    eprintln!(
        "fault: replica paused, primary killed, wait={:?}: {at_risk} of {} updates acknowledged \
         while no replica could confirm them",
        replicas.map(|r| r.replicas),
        ids.len()
    );
    if replicas.is_some() {
        assert_eq!(at_risk, 0, "acknowledged while no replica could confirm");
    } else {
        assert_eq!(
            at_risk,
            ids.len(),
            "without WAIT every update was acknowledged with no replica confirming it"
        );
    }
    // Whatever was acknowledged with a replica's confirmation is on the promoted replica.
    let after = store_with(&promoted, StoreConfig::new(S::Lua)).await;
    for id in &before {
        let status = after.get(id).await.unwrap().segments[0].status;
        assert!(
            matches!(status, SegmentStatus::Delayed | SegmentStatus::Boarding),
            "{id}: {status}"
        );
    }
}

/// A cluster primary SIGKILLed under load with `--wait-replicas 1`: its replica is promoted, the
/// same API instances serve its slots again without a restart, and every answer the clients
/// were given is explained by one order. Every acknowledged update was on the replica before it
/// was acknowledged, so the promotion loses none; after it, that shard has no replica left to
/// confirm a write, and its writes are refused (replicas missing) rather than acknowledged
/// unconfirmed. Without the wait, an update acknowledged in the instant before the kill may
/// not have reached the replica: the Valkey pass once saw a version answered, then unseen,
/// which is exactly the loss asynchronous replication allows. The control, the original
/// read-modify-write through the same two instances, must fail the same check.
#[rstest::rstest]
#[case::lua(S::Lua)]
#[case::control_naive(S::Naive)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_primary_killed_under_load_fails_over_losing_nothing_acknowledged(
    #[case] strategy: Strategy,
) {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let url = cluster.url();
    let mut store = StoreConfig::new(strategy);
    store.processing_delay = Duration::from_millis(2);
    store.replicas = wait_for(1);
    let servers = [
        TestServer::start_with(serve_config(&url, store.clone())).await,
        TestServer::start_with(serve_config(&url, store)).await,
    ];
    let recorded = Arc::new(AtomicU64::new(0));
    let progress = Arc::clone(&recorded);
    let checked = record_during(
        "cluster-primary-killed",
        strategy,
        servers.iter().map(|s| s.base.clone()).collect(),
        8,
        recorded,
        cluster,
        |cluster| async move {
            after(&progress, 300, "operations before the kill").await;
            let victim = flyrtech_tests::primary_holding(cluster.nodes(), "*VFY-*");
            victim.signal("KILL").unwrap();
            after(&progress, 300, "operations after the kill").await;
            cluster
        },
    )
    .await;
    if strategy == S::Naive {
        assert_eq!(
            checked.report.verdict,
            Verdict::NotLinearizable,
            "the control loses updates through two instances: {:?}",
            checked.report
        );
    } else {
        assert_linearizable(&checked);
    }
    for server in servers {
        server.stop().await;
    }
}
