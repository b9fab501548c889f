//! The incident, reproduced and closed: 20 concurrent writers, each setting a different segment
//! of one journey, with the original's 10 ms of processing between read and write. A barrier
//! releases all writers at once so that their read-to-write windows overlap.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::{JourneyStore, SegmentStatus};
use flyrtech_infrastructure::{RedisJourneyStore, Strategy};
use flyrtech_tests::{S, TestRedis, Topology, journey, segment_id, store_delayed, unique_id};
use rstest_reuse::apply;

use crate::every_strategy;
use tokio::sync::Barrier;

const WRITERS: usize = 20;
const PROCESSING: Duration = Duration::from_millis(10);

/// Runs the incident through `stores` (writer `i` uses store `i % stores.len()`), and returns how
/// many of the acknowledged updates are missing from the final state.
async fn run_incident(stores: Vec<Arc<RedisJourneyStore>>) -> usize {
    let id = unique_id("INC");
    stores[0].create(&journey(&id, WRITERS)).await.unwrap();
    let barrier = Arc::new(Barrier::new(WRITERS));
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (store, barrier, id) = (
                Arc::clone(&stores[i % stores.len()]),
                Arc::clone(&barrier),
                id.clone(),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                store
                    .update_segment_status(&id, &segment_id(i), SegmentStatus::Departed, None)
                    .await
            })
        })
        .collect();
    for w in writers {
        let outcome = w.await.unwrap().unwrap();
        assert!(outcome.changed);
    }
    let state = stores[0].get(&id).await.unwrap();
    state
        .segments
        .iter()
        .filter(|s| s.status != SegmentStatus::Departed)
        .count()
}

async fn stores(
    redis: &TestRedis,
    strategy: Strategy,
    instances: usize,
) -> Vec<Arc<RedisJourneyStore>> {
    let mut out = Vec::new();
    for _ in 0..instances {
        // Each instance has its own connections, pool and (for local-lock) lock table.
        out.push(Arc::new(
            store_delayed(&redis.connect().await, strategy, PROCESSING).await,
        ));
    }
    out
}

#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_updates_on_one_instance(
    #[case] strategy: Strategy,
    #[values(Topology::Single, Topology::Cluster)] topology: Topology,
) {
    let redis = TestRedis::start(topology);
    let lost = run_incident(stores(&redis, strategy, 1).await).await;
    if strategy == S::Naive {
        assert!(
            lost > 0,
            "the control lost nothing: the test cannot see the bug"
        );
    } else {
        assert_eq!(
            lost, 0,
            "{strategy} lost {lost} of {WRITERS} acknowledged updates"
        );
    }
}

#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn twenty_concurrent_updates_across_two_instances(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let lost = run_incident(stores(&redis, strategy, 2).await).await;
    if strategy.is_correct_across_instances() {
        assert_eq!(
            lost, 0,
            "{strategy} lost {lost} of {WRITERS} acknowledged updates"
        );
    } else {
        assert!(lost > 0, "{strategy} lost nothing across two instances");
    }
}

#[apply(every_strategy)]
#[tokio::test]
async fn sequential_updates_are_never_lost(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let store = store_delayed(&redis.connect().await, strategy, Duration::from_millis(1)).await;
    let id = unique_id("SEQ");
    store.create(&journey(&id, WRITERS)).await.unwrap();
    for i in 0..WRITERS {
        store
            .update_segment_status(&id, &segment_id(i), SegmentStatus::Departed, None)
            .await
            .unwrap();
    }
    let state = store.get(&id).await.unwrap();
    assert!(
        state
            .segments
            .iter()
            .all(|s| s.status == SegmentStatus::Departed)
    );
    assert_eq!(state.version.get(), u64::try_from(WRITERS).unwrap());
}
