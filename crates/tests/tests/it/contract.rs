//! The store contract, step by step, for every strategy on a single server and on a cluster:
//! creation never overwrites, reads, both update paths, no-ops, refusals that change nothing,
//! expected versions, and segment and journey updates racing each other.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::{
    DomainError, JourneyStatus, JourneyStore, JourneyVersion, SegmentStatus, StoreError,
};
use flyrtech_infrastructure::Strategy;
use flyrtech_infrastructure::secrets::acl::Role;
use flyrtech_tests::{TestRedis, Topology, journey, segment_id, store, store_delayed, unique_id};
use rstest_reuse::apply;
use tokio::sync::Barrier;

use crate::{every_correct_strategy, every_strategy};

#[apply(every_strategy)]
#[tokio::test]
async fn the_store_contract(
    #[case] strategy: Strategy,
    #[values(Topology::Single, Topology::Cluster)] topology: Topology,
    #[values(false, true)] least_privilege: bool,
) {
    let redis = TestRedis::start(topology);
    // Also as the Redis user `flyrtech redis-acl` describes (docs/security.md): the contract
    // holds with nothing more than its grants, and nothing is denied along the way.
    let conn = if least_privilege {
        redis
            .connect_as(Role::Serve {
                locks: strategy == Strategy::Redlock,
            })
            .await
    } else {
        redis.connect().await
    };
    let store = store(&conn, strategy).await;
    let id = unique_id("JRN");
    let original = journey(&id, 3);

    // Creation never overwrites.
    store.create(&original).await.unwrap();
    let mut changed_copy = original.clone();
    changed_copy.passenger_name = "Somebody Else".into();
    assert!(matches!(
        store.create(&changed_copy).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert_eq!(store.get(&id).await.unwrap(), original);
    assert_eq!(store.list_ids().await.unwrap(), vec![id.clone()]);

    // A segment update bumps the version; repeating it is a no-op.
    let o = store
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Departed, None)
        .await
        .unwrap();
    assert!(o.changed);
    assert_eq!(o.version, JourneyVersion::new(1));
    let o = store
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Departed, None)
        .await
        .unwrap();
    assert!(!o.changed);
    assert_eq!(o.version, JourneyVersion::new(1));
    let after_first = store.get(&id).await.unwrap();
    assert_eq!(after_first.segments[0].status, SegmentStatus::Departed);
    assert_eq!(after_first.version, JourneyVersion::new(1));

    // Refusals change nothing.
    let err = store
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Scheduled, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected(DomainError::InvalidTransition {
                from: "Departed",
                to: "Scheduled",
                ..
            })
        ),
        "{err}"
    );
    let err = store
        .update_segment_status(&id, &segment_id(9), SegmentStatus::Departed, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected(DomainError::SegmentNotFound { .. })
        ),
        "{err}"
    );
    assert_eq!(store.get(&id).await.unwrap(), after_first);

    // The journey's own status.
    let o = store
        .update_journey_status(&id, JourneyStatus::InProgress, None)
        .await
        .unwrap();
    assert_eq!((o.changed, o.version), (true, JourneyVersion::new(2)));
    let err = store
        .update_journey_status(&id, JourneyStatus::Pending, None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Rejected(DomainError::InvalidTransition { .. })
        ),
        "{err}"
    );

    // Expected versions: stale is refused, current is applied.
    let err = store
        .update_segment_status(
            &id,
            &segment_id(1),
            SegmentStatus::Boarding,
            Some(JourneyVersion::new(1)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::VersionMismatch { expected, actual } if expected.get() == 1 && actual.get() == 2),
        "{err}"
    );
    let o = store
        .update_segment_status(
            &id,
            &segment_id(1),
            SegmentStatus::Boarding,
            Some(JourneyVersion::new(2)),
        )
        .await
        .unwrap();
    assert_eq!(o.version, JourneyVersion::new(3));

    // Terminal states accept nothing further.
    store
        .update_segment_status(&id, &segment_id(2), SegmentStatus::Cancelled, None)
        .await
        .unwrap();
    assert!(
        store
            .update_segment_status(&id, &segment_id(2), SegmentStatus::Scheduled, None)
            .await
            .is_err()
    );
    assert_eq!(
        store.get(&id).await.unwrap().version,
        JourneyVersion::new(4)
    );

    // A missing journey is reported and never created by an update.
    let ghost = unique_id("GHOST");
    let err = store
        .update_segment_status(&ghost, &segment_id(0), SegmentStatus::Departed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::JourneyNotFound(_)), "{err}");
    assert!(matches!(
        store.get(&ghost).await,
        Err(StoreError::JourneyNotFound(_))
    ));
    assert_eq!(store.list_ids().await.unwrap(), vec![id]);
    let denied = redis.acl_denials().await;
    assert!(denied.is_empty(), "{strategy}: Redis refused {denied:?}");
}

const SEGMENT_WRITERS: usize = 10;
const JOURNEY_WRITERS: usize = 5;

/// Ten writers each set their own segment to Boarding and five set the journey InProgress, all
/// released at once by a barrier, each read-modify-write held open 5 ms: the stored journey and
/// how many answers said they changed it.
async fn race(strategy: Strategy, topology: Topology) -> (flyrtech_core::Journey, usize) {
    let redis = TestRedis::start(topology);
    let store =
        Arc::new(store_delayed(&redis.connect().await, strategy, Duration::from_millis(5)).await);
    let id = unique_id("RACE");
    store.create(&journey(&id, SEGMENT_WRITERS)).await.unwrap();
    let barrier = Arc::new(Barrier::new(SEGMENT_WRITERS + JOURNEY_WRITERS));
    let mut tasks = Vec::new();
    for i in 0..SEGMENT_WRITERS + JOURNEY_WRITERS {
        let (store, barrier, id) = (Arc::clone(&store), Arc::clone(&barrier), id.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            if i < SEGMENT_WRITERS {
                store
                    .update_segment_status(&id, &segment_id(i), SegmentStatus::Boarding, None)
                    .await
            } else {
                store
                    .update_journey_status(&id, JourneyStatus::InProgress, None)
                    .await
            }
        }));
    }
    let mut changed = 0;
    for t in tasks {
        changed += usize::from(t.await.unwrap().unwrap().changed);
    }
    (store.get(&id).await.unwrap(), changed)
}

/// Whether the race lost nothing: every segment Boarding, the journey InProgress, ten segment
/// changes and exactly one journey change (the other journey writers were no-ops), each at its
/// own version.
fn lost_nothing(state: &flyrtech_core::Journey, changed: usize) -> bool {
    state
        .segments
        .iter()
        .all(|s| s.status == SegmentStatus::Boarding)
        && state.status == JourneyStatus::InProgress
        && changed == SEGMENT_WRITERS + 1
        && state.version.get() == u64::try_from(SEGMENT_WRITERS + 1).unwrap_or(0)
}

#[apply(every_correct_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segment_and_journey_updates_race_without_losses(
    #[case] strategy: Strategy,
    #[values(Topology::Single, Topology::Cluster)] topology: Topology,
) {
    let (state, changed) = race(strategy, topology).await;
    assert!(
        lost_nothing(&state, changed),
        "{changed} changed: {state:?}"
    );
}

/// The control: the same race against the original read-modify-write loses changes, so the
/// barrier and the held window do make the writers overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_race_loses_changes_with_the_original_read_modify_write() {
    let (state, changed) = race(Strategy::Naive, Topology::Single).await;
    assert!(
        !lost_nothing(&state, changed),
        "{changed} changed: {state:?}"
    );
}
