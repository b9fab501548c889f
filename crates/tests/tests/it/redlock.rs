//! Redlock over independent masters, and the fencing that makes it safe.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::{JourneyStore, SegmentStatus, StatusChange, StoreError};
use flyrtech_infrastructure::{
    LocalRedis, LockSettings, LockWaiters, RedisJourneyStore, RetryPolicy, StoreConfig, Strategy,
};
use flyrtech_tests::{
    ApplyNow, TestRedis, Topology, journey, poll_until, segment_id, store_with, unique_id,
};
use rstest::rstest;

fn masters(n: usize) -> Vec<LocalRedis> {
    LocalRedis::independent_masters(n).unwrap_or_else(|e| panic!("cannot start lock masters: {e}"))
}

fn config(lock_masters: &[LocalRedis], ttl: Duration, retry: RetryPolicy) -> StoreConfig {
    StoreConfig {
        retry,
        lock: LockSettings {
            urls: lock_masters.iter().map(LocalRedis::url).collect(),
            ttl,
            ..LockSettings::default()
        },
        ..StoreConfig::new(Strategy::Redlock)
    }
}

/// A store on its own server, locking on `n` independent masters.
async fn redlock_store(
    n: usize,
    ttl: Duration,
    retry: RetryPolicy,
) -> (TestRedis, Vec<LocalRedis>, RedisJourneyStore) {
    let redis = TestRedis::single();
    let lock_masters = masters(n);
    let store = store_with(&redis.connect().await, config(&lock_masters, ttl, retry)).await;
    (redis, lock_masters, store)
}

fn short_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 5,
        deadline: Duration::from_millis(500),
        ..RetryPolicy::default()
    }
}

#[tokio::test]
async fn five_masters_tolerate_two_failures_and_refuse_cleanly_at_three() {
    let (_redis, mut lock_masters, store) =
        redlock_store(5, Duration::from_secs(2), short_retry()).await;
    let id = unique_id("RL");
    store.create(&journey(&id, 3)).await.unwrap();

    for m in &mut lock_masters[..2] {
        m.nodes_mut()[0].stop();
    }
    let o = store
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Departed, None)
        .await
        .unwrap();
    assert!(o.changed, "3 of 5 masters are a quorum");

    lock_masters[2].nodes_mut()[0].stop();
    let before = store.get(&id).await.unwrap();
    let err = store
        .update_segment_status(&id, &segment_id(1), SegmentStatus::Departed, None)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Unavailable { .. }), "{err}");
    assert_eq!(
        store.get(&id).await.unwrap(),
        before,
        "nothing may be written without a quorum"
    );
}

#[tokio::test]
async fn the_lock_excludes_a_second_holder_until_released() {
    let (_redis, _lock_masters, store) =
        redlock_store(3, Duration::from_secs(10), short_retry()).await;
    let lock = store.redlock().unwrap();
    let id = unique_id("RL");
    let first = lock.acquire(&id).await.unwrap();
    assert!(matches!(
        lock.acquire(&id).await,
        Err(StoreError::Conflict { .. })
    ));
    lock.release(first).await;
    let second = lock.acquire(&id).await.unwrap();
    lock.release(second).await;
}

#[tokio::test]
async fn extend_needs_our_token_and_release_never_frees_another_holders_lock() {
    let (_redis, lock_masters, store) =
        redlock_store(3, Duration::from_secs(10), short_retry()).await;
    let lock = store.redlock().unwrap();
    let id = unique_id("RL");
    let mut guard = lock.acquire(&id).await.unwrap();
    lock.extend(&mut guard).await.unwrap();

    // The lock vanishes on every master (as on expiry): extending must now fail.
    let lock_key = flyrtech_infrastructure::keys::journey_lock(&id);
    assert_eq!(count_on_masters(&lock_masters, "DEL", &lock_key).await, 3);
    assert!(matches!(
        lock.extend(&mut guard).await,
        Err(StoreError::Conflict { .. })
    ));

    // Another holder takes it; our stale release must not free their lock.
    let other = lock.acquire(&id).await.unwrap();
    lock.release(guard).await;
    assert_eq!(
        count_on_masters(&lock_masters, "EXISTS", &lock_key).await,
        3
    );
    assert!(matches!(
        lock.acquire(&id).await,
        Err(StoreError::Conflict { .. })
    ));
    lock.release(other).await;
    assert_eq!(
        count_on_masters(&lock_masters, "EXISTS", &lock_key).await,
        0
    );
}

/// Runs `command key` on every master and sums the integer replies.
async fn count_on_masters(lock_masters: &[LocalRedis], command: &str, key: &str) -> i64 {
    let mut total = 0;
    for m in lock_masters {
        let mut conn = redis::Client::open(m.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        total += redis::cmd(command)
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .unwrap();
    }
    total
}

/// A holder pauses past its TTL; a second writer takes the lock and writes; the first wakes up
/// and writes. Without fencing the second writer's update would be lost. With fencing the first
/// write is refused and the second survives.
#[tokio::test]
async fn a_holder_that_pauses_past_its_ttl_is_refused_by_fencing() {
    let ttl = Duration::from_millis(150);
    let (_redis, lock_masters, store) = redlock_store(3, ttl, RetryPolicy::default()).await;
    let lock = store.redlock().unwrap();
    let id = unique_id("FENCE");
    store.create(&journey(&id, 2)).await.unwrap();

    // Holder A: lock, mint, read, modify... and pause.
    let guard_a = lock.acquire(&id).await.unwrap();
    let (token_a, mut state_a) = lock.read_fenced(&id).await.unwrap();
    state_a
        .apply_now(&StatusChange::Segment {
            segment_id: segment_id(0),
            status: SegmentStatus::Departed,
        })
        .unwrap();

    // A's lock expires on every master (poll with a bound, no guessed sleep).
    let lock_key = flyrtech_infrastructure::keys::journey_lock(&id);
    let mut expired = false;
    for _ in 0..500 {
        if count_on_masters(&lock_masters, "EXISTS", &lock_key).await == 0 {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(expired, "A's lock never expired");

    // Writer B takes the lock and writes: acknowledged.
    let b = store
        .update_segment_status(&id, &segment_id(1), SegmentStatus::Departed, None)
        .await
        .unwrap();
    assert!(b.changed);

    // A wakes up and writes with its old token: refused, nothing written.
    let err = lock.write_fenced(token_a, &state_a).await.unwrap_err();
    assert!(
        matches!(err, StoreError::StaleFencingToken { token, newest } if newest > token),
        "{err}"
    );
    lock.release(guard_a).await;
    let state = store.get(&id).await.unwrap();
    assert_eq!(
        state.segments[1].status,
        SegmentStatus::Departed,
        "B's acknowledged update survived"
    );
    assert_eq!(
        state.segments[0].status,
        SegmentStatus::Scheduled,
        "A's stale write was refused"
    );
}

/// The reason fencing compares with the newest token *minted*: B has minted and read, but not
/// yet written, when A (paused, expired) tries to write. A must be refused, or B's write would
/// then overwrite A's acknowledged change.
#[tokio::test]
async fn a_stale_holder_is_refused_even_before_the_new_holder_writes() {
    let (_redis, _lock_masters, store) =
        redlock_store(1, Duration::from_secs(5), short_retry()).await;
    let lock = store.redlock().unwrap();
    let id = unique_id("FENCE");
    store.create(&journey(&id, 2)).await.unwrap();
    let (token_a, mut state_a) = lock.read_fenced(&id).await.unwrap();
    let (token_b, mut state_b) = lock.read_fenced(&id).await.unwrap();
    assert!(token_b > token_a);
    state_a
        .apply_now(&StatusChange::Segment {
            segment_id: segment_id(0),
            status: SegmentStatus::Departed,
        })
        .unwrap();
    state_b
        .apply_now(&StatusChange::Segment {
            segment_id: segment_id(1),
            status: SegmentStatus::Departed,
        })
        .unwrap();
    assert!(matches!(
        lock.write_fenced(token_a, &state_a).await,
        Err(StoreError::StaleFencingToken { .. })
    ));
    lock.write_fenced(token_b, &state_b).await.unwrap();
    let state = store.get(&id).await.unwrap();
    assert_eq!(state.segments[0].status, SegmentStatus::Scheduled);
    assert_eq!(state.segments[1].status, SegmentStatus::Departed);
}

/// Where the lock lives for the wake-up tests.
#[derive(Debug, Clone, Copy)]
enum LockNodes {
    /// The store's own standalone server (classic PUBLISH / SUBSCRIBE).
    OwnServer,
    /// The store's own 3-master cluster (sharded SPUBLISH / SSUBSCRIBE).
    OwnCluster,
    /// Three independent masters (each publishes the release; one wake-up counts).
    ThreeMasters,
}

/// A redlock store whose waiters never poll within a test's lifetime: only a release
/// notification can wake them.
async fn never_polling_store(nodes: LockNodes) -> (TestRedis, Vec<LocalRedis>, RedisJourneyStore) {
    let redis = TestRedis::start(match nodes {
        LockNodes::OwnCluster => Topology::Cluster,
        _ => Topology::Single,
    });
    let lock_masters = match nodes {
        LockNodes::ThreeMasters => masters(3),
        _ => Vec::new(),
    };
    let patient = RetryPolicy {
        deadline: Duration::from_secs(120),
        ..RetryPolicy::default()
    };
    let mut config = config(&lock_masters, Duration::from_secs(30), patient);
    config.lock.wake_fallback = Duration::from_secs(60);
    let store = store_with(&redis.connect().await, config).await;
    (redis, lock_masters, store)
}

/// A waiter whose fallback poll is a minute away gets the lock as soon as the holder releases
/// it: the release notified it.
#[rstest]
#[case::own_server(LockNodes::OwnServer)]
#[case::own_cluster(LockNodes::OwnCluster)]
#[case::three_masters(LockNodes::ThreeMasters)]
#[tokio::test]
async fn a_waiter_is_woken_by_the_release_not_by_its_poll(#[case] nodes: LockNodes) {
    let (_redis, _lock_masters, store) = never_polling_store(nodes).await;
    let store = Arc::new(store);
    let lock = store.redlock().unwrap();
    let id = unique_id("WAKE");
    let held = lock.acquire(&id).await.unwrap();

    let waiter = tokio::spawn({
        let (store, id) = (Arc::clone(&store), id.clone());
        async move {
            let lock = store.redlock().unwrap();
            let guard = lock.acquire(&id).await;
            if let Ok(guard) = guard {
                lock.release(guard).await;
                return Ok(());
            }
            guard.map(drop)
        }
    });
    poll_until(
        Duration::from_secs(10),
        "the waiter to queue up",
        || async {
            lock.waiters(&id)
                == LockWaiters {
                    queued: 1,
                    subscribed: true,
                }
        },
    )
    .await;
    assert!(
        !waiter.is_finished(),
        "the lock is held: the waiter must wait"
    );

    lock.release(held).await;
    let acquired = tokio::time::timeout(Duration::from_secs(20), waiter)
        .await
        .expect("the release did not wake the waiter (its poll is 60 s away)")
        .unwrap();
    acquired.unwrap();
    poll_until(Duration::from_secs(10), "the waiter to leave", || async {
        lock.waiters(&id) == LockWaiters::default()
    })
    .await;
}

/// Waiters of one process get the lock in the order they started waiting, each woken by the
/// previous holder's release; when the last has gone, the channel is unsubscribed.
#[tokio::test]
async fn waiters_of_one_process_take_the_lock_in_arrival_order() {
    let (redis, _lock_masters, store) = never_polling_store(LockNodes::OwnServer).await;
    let store = Arc::new(store);
    let lock = store.redlock().unwrap();
    let id = unique_id("FIFO");
    let held = lock.acquire(&id).await.unwrap();

    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut waiters = Vec::new();
    for n in 0..5usize {
        waiters.push(tokio::spawn({
            let (store, id, order) = (Arc::clone(&store), id.clone(), Arc::clone(&order));
            async move {
                let lock = store.redlock().unwrap();
                let guard = lock.acquire(&id).await.unwrap();
                order.lock().unwrap().push(n);
                lock.release(guard).await;
            }
        }));
        // The next one starts only once this one has queued up.
        poll_until(Duration::from_secs(10), "a waiter to queue up", || async {
            lock.waiters(&id)
                == LockWaiters {
                    queued: n + 1,
                    subscribed: true,
                }
        })
        .await;
    }
    lock.release(held).await;
    for waiter in waiters {
        tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("a waiter was never woken")
            .unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);

    let channel = format!(
        "{}:released",
        flyrtech_infrastructure::keys::journey_lock(&id)
    );
    let mut conn = redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    poll_until(
        Duration::from_secs(10),
        "the channel to be unsubscribed",
        || {
            let mut conn = conn.clone();
            let channel = channel.clone();
            async move {
                let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&channel)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                subscribers == 0
            }
        },
    )
    .await;
    let _: () = redis::cmd("PING").query_async(&mut conn).await.unwrap();
}

/// A holder that dies never publishes its release: the waiter finds the expired lock by its
/// bounded fallback poll.
#[tokio::test]
async fn a_lock_whose_holder_died_is_taken_once_it_expires() {
    let redis = TestRedis::single();
    let mut config = config(&[], Duration::from_millis(300), RetryPolicy::default());
    config.lock.wake_fallback = Duration::from_millis(50);
    let store = store_with(&redis.connect().await, config).await;
    let lock = store.redlock().unwrap();
    let id = unique_id("DIED");
    // The holder "dies": it never releases. Its lock was set after `set`, for 300 ms.
    let set = std::time::Instant::now();
    drop(lock.acquire(&id).await.unwrap());
    let taken = lock.acquire(&id).await.unwrap();
    assert!(
        set.elapsed() >= Duration::from_millis(300),
        "taken {:?} after the dead holder's 300 ms lock was set: before it expired",
        set.elapsed()
    );
    lock.release(taken).await;
    assert_eq!(lock.waiters(&id), LockWaiters::default());
}
