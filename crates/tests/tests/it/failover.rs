//! Replica-confirmed writes under connection loss and failover: a write whose connection dies
//! before its `WAIT` is never acknowledged, a fresh connection's `WAIT` confirms nothing, and
//! every promise `--wait-replicas` made survives a failover.

use crate::every_strategy;
use crate::reliability::{acknowledged, connect, seed, wait_for};
use flyrtech_core::{JourneyId, JourneyStore, SegmentStatus, StoreError};
use flyrtech_infrastructure::{
    LocalRedis, RedisJourneyStore, ReplicaWait, StoreConfig, Strategy, keys,
};
use flyrtech_tests::{
    TestServer, http_client, journey, poll_until, segment_id, serve_config, store_with, unique_id,
};
use rstest_reuse::apply;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The lost acknowledgement's mechanism: WAIT counts only the writes of the connection
/// it is sent on. The writing connection is killed while its WAIT blocks (the only replica is
/// paused), so the update's outcome is unknown; the client's retry of the same change is then a
/// no-op that must still wait for the replica, and a WAIT on a fresh connection, which has no
/// write of its own to wait for, would confirm it at once. Neither may answer success while the
/// replica cannot hold the change.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_connection_dies_before_its_wait_is_never_acknowledged(strategy: Strategy) {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let primary = &deployment.nodes()[0];
    let redis = connect(&primary.url()).await;
    let store = Arc::new(
        store_with(
            &redis,
            StoreConfig {
                replicas: wait_for(1),
                ..StoreConfig::new(strategy)
            },
        )
        .await,
    );
    let j = journey(&unique_id("KILL"), 2);
    store.create(&j).await.unwrap();
    acknowledged(&store, &j.id, 0, SegmentStatus::Delayed).await;

    deployment.nodes()[1].signal("STOP").unwrap();
    let update = {
        let (store, id) = (Arc::clone(&store), j.id.clone());
        tokio::spawn(async move {
            store
                .update_segment_status(&id, &segment_id(1), SegmentStatus::Boarding, None)
                .await
        })
    };
    // The write has been sent and its WAIT blocks: kill every client connection but ours.
    poll_until(
        Duration::from_secs(10),
        "a WAIT blocked on the primary",
        || async {
            primary.raw_command("CLIENT LIST").is_ok_and(|list| {
                list.lines()
                    .any(|l| l.contains("cmd=wait") && l.contains("flags=b"))
            })
        },
    )
    .await;
    primary
        .raw_command("CLIENT KILL TYPE normal SKIPME yes")
        .unwrap();
    let first = update.await.unwrap();
    assert!(
        matches!(
            first,
            Err(StoreError::Unavailable { .. } | StoreError::NotReplicated { .. })
        ),
        "{strategy}: the write's WAIT never completed, yet: {first:?}"
    );
    // The client retries the same change while the replica is still paused: a no-op now, on
    // fresh connections (the killed ones are replaced as they fail). Until the replica is back
    // no answer may be a success, and the store must come to say why: not replicated.
    let mut answers = Vec::new();
    for _ in 0..20 {
        let retried = store
            .update_segment_status(&j.id, &segment_id(1), SegmentStatus::Boarding, None)
            .await;
        let settled = matches!(
            retried,
            Err(StoreError::NotReplicated { .. } | StoreError::ReplicasMissing { .. })
        );
        answers.push(retried);
        if settled {
            break;
        }
    }
    deployment.nodes()[1].signal("CONT").unwrap();
    assert!(
        answers.iter().all(Result::is_err),
        "{strategy}: acknowledged while the only replica was paused: {answers:?}"
    );
    assert!(
        matches!(
            answers.last(),
            Some(Err(
                StoreError::NotReplicated { .. } | StoreError::ReplicasMissing { .. }
            ))
        ),
        "{strategy}: {answers:?}"
    );
}

/// The fact the hole was made of (docs/reliability.md), shown on the server: with the only replica
/// paused, the connection that wrote waits and answers 0, while a `WAIT` that is the first
/// command of a fresh connection (what a replaced connection sends) confirms at once. This is
/// why a write and its `WAIT` must never be split across two requests that a reconnect can
/// separate; the store sends them as one pipeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_on_a_fresh_connection_confirms_what_it_never_wrote() {
    let deployment = LocalRedis::primary_with_replicas(1).unwrap();
    let client = redis::Client::open(deployment.nodes()[0].url()).unwrap();
    let mut writer = client.get_multiplexed_async_connection().await.unwrap();
    deployment.nodes()[1].signal("STOP").unwrap();
    let ((), writer_confirmed): ((), u32) = redis::pipe()
        .set("k", "v")
        .cmd("WAIT")
        .arg(1)
        .arg(200)
        .query_async(&mut writer)
        .await
        .unwrap();
    let mut fresh = client.get_multiplexed_async_connection().await.unwrap();
    let fresh_confirmed: u32 = redis::cmd("WAIT")
        .arg(1)
        .arg(200)
        .query_async(&mut fresh)
        .await
        .unwrap();
    deployment.nodes()[1].signal("CONT").unwrap();
    assert_eq!(
        writer_confirmed, 0,
        "the paused replica cannot confirm the write"
    );
    assert_eq!(
        fresh_confirmed, 1,
        "a fresh connection's WAIT has nothing to wait for and counts the connected replica"
    );
}

/// One PUT of the failover history.
#[derive(Debug, Clone)]
struct Put {
    journey: usize,
    segment: usize,
    status: SegmentStatus,
    sent: Instant,
    took: Duration,
    /// 200, the problem type of an error, or `None` when no answer came within the bound.
    answer: Option<Result<(), String>>,
}

/// How long any request may take during a failover: no request without an answer
/// after 2 s.
const ANSWER_BOUND: Duration = Duration::from_secs(2);

async fn put_status(
    client: &reqwest::Client,
    base: &str,
    id: &JourneyId,
    segment: usize,
    status: SegmentStatus,
) -> Option<Result<(), String>> {
    let sent = client
        .put(format!(
            "{base}/api/journeys/{id}/segments/{}/status",
            segment_id(segment)
        ))
        .json(&json!({ "status": status.to_string() }))
        .timeout(ANSWER_BOUND)
        .send()
        .await
        .ok()?;
    if sent.status() == 200 {
        return Some(Ok(()));
    }
    let problem: Value = sent.json().await.unwrap_or_default();
    Some(Err(problem["type"].as_str().unwrap_or("?").to_owned()))
}

/// Reads a journey once the cluster's nodes agree on its slot's new primary (a fresh client may
/// first be sent to the dead one): polled, bounded.
async fn read_settled(store: &RedisJourneyStore, id: &JourneyId) -> flyrtech_core::Journey {
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

/// Polls (bounded by `seconds`) until a PUT of segment 1's status through `base` is answered as
/// `expected` says.
async fn until_answered(
    client: &reqwest::Client,
    base: &str,
    id: &JourneyId,
    seconds: u64,
    what: &str,
    expected: impl Fn(&Result<(), String>) -> bool,
) {
    let what = format!("{id} {what} through {base}");
    poll_until(Duration::from_secs(seconds), &what, || async {
        put_status(client, base, id, 1, SegmentStatus::Delayed)
            .await
            .is_some_and(|a| expected(&a))
    })
    .await;
}

/// The primary serving `slot`, and its replica.
pub(crate) fn primary_and_replica(
    cluster: &LocalRedis,
    slot: u16,
) -> (
    &flyrtech_infrastructure::RedisProcess,
    &flyrtech_infrastructure::RedisProcess,
) {
    let nodes = cluster.nodes();
    let primary = nodes
        .iter()
        .find(|n| {
            n.raw_command("INFO replication")
                .is_ok_and(|i| i.contains("role:master"))
                && n.raw_command(&format!("CLUSTER COUNTKEYSINSLOT {slot}"))
                    .is_ok_and(|r| r.trim() != "0" && r.trim() != ":0")
        })
        .expect("the primary of the slot");
    let replica = nodes
        .iter()
        .find(|n| {
            n.raw_command("INFO replication")
                .is_ok_and(|i| i.contains(&format!("master_port:{}", primary.port())))
        })
        .expect("the primary's replica");
    (primary, replica)
}

/// The failover, for every strategy, through two instances with `--wait-replicas 1`:
/// eight writers PUT segment statuses over their own journeys; the replica of the primary that
/// holds the first journey is paused, that primary is SIGKILLed, the replica resumed and
/// promoted. Checked from the recorded history: no acknowledged update lost; none acknowledged
/// for that shard once its only replica was paused (it could not hold it); every request
/// answered within [`ANSWER_BOUND`]; after the failover the replica-less shard is refused with
/// `replicas-missing` without anything being written, `/ready` names it, and the other shards
/// keep acknowledging. `FLYRTECH_FAULT_ROUNDS` repeats it (`just faults`: 10).
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_under_wait_replicas_keeps_every_promise(strategy: Strategy) {
    let rounds: usize = std::env::var("FLYRTECH_FAULT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(1);
    for round in 1..=rounds {
        failover_round(strategy, round).await;
    }
}

async fn failover_round(strategy: Strategy, round: usize) {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let url = cluster.url();
    let config = StoreConfig {
        replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_millis(500),
            confirmation: flyrtech_infrastructure::Confirmation::Received,
        }),
        ..StoreConfig::new(strategy)
    };
    let servers = [
        TestServer::start_with(serve_config(&url, config.clone())).await,
        TestServer::start_with(serve_config(&url, config.clone())).await,
    ];
    let bases: Arc<Vec<String>> = Arc::new(servers.iter().map(|s| s.base.clone()).collect());
    let store = store_with(&connect(&url).await, config).await;
    // 24 journeys for the writers, the rest for this test's own probes.
    let ids = seed(&store, 56, 2).await;
    let slot_of = |id: &JourneyId| keys::slot(&strategy.layout().key(id));
    let (primary, replica) = primary_and_replica(&cluster, slot_of(&ids[0]));
    let on_victim: Vec<bool> = ids
        .iter()
        .map(|id| {
            primary
                .raw_command(&format!("CLUSTER COUNTKEYSINSLOT {}", slot_of(id)))
                .is_ok_and(|r| r.trim() != "0" && r.trim() != ":0")
        })
        .collect();
    let probe_on = |victim: bool| {
        ids.iter()
            .zip(&on_victim)
            .skip(24)
            .find(|(_, v)| **v == victim)
            .map(|(id, _)| id.clone())
            .expect("a probe journey on each side")
    };
    let (victim_probe, healthy_probe) = (probe_on(true), probe_on(false));

    // Eight writers, each over its own three journeys (so that even the controls lose nothing
    // to the race itself), alternating between the two instances.
    let stop = Arc::new(AtomicBool::new(false));
    let client = http_client();
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let (client, bases, ids, stop) = (
                client.clone(),
                Arc::clone(&bases),
                Arc::clone(&ids),
                Arc::clone(&stop),
            );
            tokio::spawn(async move {
                let mut history = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::SeqCst) && n < 20_000 {
                    let journey = w + 8 * (n % 3);
                    let segment = (n / 3) % 2;
                    let status = if (n / 6).is_multiple_of(2) {
                        SegmentStatus::Delayed
                    } else {
                        SegmentStatus::Scheduled
                    };
                    let sent = Instant::now();
                    let answer =
                        put_status(&client, &bases[n % 2], &ids[journey], segment, status).await;
                    history.push(Put {
                        journey,
                        segment,
                        status,
                        sent,
                        took: sent.elapsed(),
                        answer,
                    });
                    n += 1;
                }
                history
            })
        })
        .collect();
    poll_until(Duration::from_secs(20), "acknowledged updates", || async {
        store.get(&ids[0]).await.is_ok_and(|j| j.version.get() >= 2)
    })
    .await;

    // The fault: the only replica paused while requests keep coming, then its primary killed.
    replica.signal("STOP").unwrap();
    let paused = Instant::now();
    let probe = http_client();
    // A request of our own to the victim's shard, answered with an error, shows the pause has
    // been felt.
    until_answered(
        &probe,
        &bases[0],
        &victim_probe,
        20,
        "refused during the pause",
        |a| a.is_err(),
    )
    .await;
    primary.signal("KILL").unwrap();
    replica.signal("CONT").unwrap();

    // The replica is promoted; the shard now has no replica. Through each instance its writes
    // are refused before they are sent (replicas-missing), fast, while the other shards
    // acknowledge as usual.
    for base in bases.iter() {
        until_answered(
            &probe,
            base,
            &victim_probe,
            30,
            "refused as lacking replicas",
            |a| a == &Err("/problems/replicas-missing".to_owned()),
        )
        .await;
    }
    until_answered(
        &probe,
        &bases[1],
        &healthy_probe,
        10,
        "acknowledged",
        Result::is_ok,
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    for writer in writers {
        history.extend(writer.await.unwrap());
    }

    // Refused without being sent: the journey's version does not move.
    let reader = store_with(&connect(&url).await, StoreConfig::new(strategy)).await;
    let before = read_settled(&reader, &victim_probe).await.version;
    for _ in 0..5 {
        let refused = put_status(
            &probe,
            &bases[0],
            &victim_probe,
            0,
            SegmentStatus::Scheduled,
        )
        .await;
        assert_eq!(
            refused,
            Some(Err("/problems/replicas-missing".to_owned())),
            "{strategy}"
        );
    }
    assert_eq!(
        reader.get(&victim_probe).await.unwrap().version,
        before,
        "{strategy}"
    );
    let ready = probe
        .get(format!("{}/ready", bases[0]))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "{strategy}");
    let problem: Value = ready.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("primary 127.0.0.1:")),
        "{strategy}: {problem}"
    );

    // The history check.
    let mut lost = 0;
    let mut targets: BTreeMap<(usize, usize), Vec<&Put>> = BTreeMap::new();
    for put in &history {
        targets
            .entry((put.journey, put.segment))
            .or_default()
            .push(put);
    }
    for ((journey, segment), puts) in &targets {
        let Some(last_ack) = puts.iter().rposition(|p| p.answer == Some(Ok(()))) else {
            continue;
        };
        let allowed: Vec<SegmentStatus> = puts[last_ack..].iter().map(|p| p.status).collect();
        let stored = read_settled(&reader, &ids[*journey]).await.segments[*segment].status;
        if !allowed.contains(&stored) {
            lost += 1;
        }
    }
    let acked_unreplicable = history
        .iter()
        .filter(|p| on_victim[p.journey] && p.sent > paused && p.answer == Some(Ok(())))
        .count();
    let unanswered = history
        .iter()
        .filter(|p| p.answer.is_none() || p.took > ANSWER_BOUND)
        .count();
    let acknowledged = history.iter().filter(|p| p.answer == Some(Ok(()))).count();
    let slowest = history.iter().map(|p| p.took).max().unwrap_or_default();
    eprintln!(
        "failover {strategy} round {round}: {} requests, {acknowledged} acknowledged, {lost} lost, \
         {acked_unreplicable} acknowledged for the paused shard, {unanswered} unanswered within \
         {ANSWER_BOUND:?}, slowest {slowest:?}",
        history.len()
    );
    assert_eq!(lost, 0, "{strategy}: acknowledged updates lost");
    assert_eq!(
        acked_unreplicable, 0,
        "{strategy}: acknowledged while the only replica could not have it"
    );
    assert_eq!(
        unanswered, 0,
        "{strategy}: requests without an answer in time"
    );
    for server in servers {
        server.stop().await;
    }
}

/// A cluster primary that stops answering without closing its connections (a host gone from the
/// network; SIGSTOP here, so no reset reaches the client) while its replica is promoted: the
/// handle's shared connection, which the relay's sweep and every script use, must reach the new
/// primary. redis-rs retries a timed-out command on the same connection and never asks for the
/// new slot map, so without the handle rebuilding its shared cluster connection after repeated
/// timeouts, every command for that shard times out for as long as the old primary stays silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_connection_follows_a_failover_away_from_a_silent_primary() {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let redis = flyrtech_infrastructure::Redis::connect(
        &flyrtech_infrastructure::RedisSettings::new(cluster.url()),
    )
    .await
    .unwrap();
    let key = "silent-primary-probe";
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg("before")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let victim = flyrtech_tests::primary_holding(cluster.nodes(), key);
    let _paused = flyrtech_tests::paused(victim);
    // Bounded by the promotion (node timeout 1 s) and a few timed-out commands, not by the victim,
    // which stays silent until the end of the test.
    poll_until(
        Duration::from_secs(45),
        "a write through the shared connection to the promoted replica",
        || async {
            redis::cmd("SET")
                .arg(key)
                .arg("after")
                .query_async::<()>(&mut redis.shared())
                .await
                .is_ok()
        },
    )
    .await;
    let stored: String = redis::cmd("GET")
        .arg(key)
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    assert_eq!(stored, "after");
}

/// A cluster primary first written to while it has no replica online (here its replica was cut
/// off: paused, its replication connection killed; after a failover, a promoted replica
/// is in this state until its old primary rejoins) is refused from its first write, and once the
/// replica is back its writes are let through again, for every strategy. The probe that watches
/// for the replica writes a marker of a slot that primary serves: with the marker of no key
/// (slot 0, served here by another primary) every probe was answered MOVED and the primary
/// stayed refused for good, which left the compose stack's relay holding a batch forever.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_first_seen_without_its_replica_is_let_through_once_it_is_back(
    strategy: Strategy,
) {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let redis = connect(&cluster.url()).await;
    let plain = store_with(&redis, StoreConfig::new(strategy)).await;
    let ids = seed(&plain, 12, 2).await;
    // A journey whose primary does not serve slot 0.
    let slot_zero_owner = cluster
        .nodes()
        .iter()
        .find(|n| {
            n.raw_command("INFO replication")
                .is_ok_and(|i| i.contains("role:master"))
                && n.raw_command("CLUSTER NODES").is_ok_and(|nodes| {
                    nodes.lines().any(|l| {
                        l.contains("myself") && l.split_whitespace().any(|w| w.starts_with("0-"))
                    })
                })
        })
        .map(|n| n.port())
        .expect("the primary of slot 0");
    let (id, primary) = ids
        .iter()
        .find_map(|id| {
            let primary = flyrtech_tests::primary_holding(cluster.nodes(), &format!("*{id}*"));
            (primary.port() != slot_zero_owner).then_some((id.clone(), primary))
        })
        .expect("a journey on a primary without slot 0");
    let replica = cluster
        .nodes()
        .iter()
        .find(|n| {
            n.raw_command("INFO replication")
                .is_ok_and(|i| i.contains(&format!("master_port:{}", primary.port())))
        })
        .expect("the primary's replica");

    let paused = flyrtech_tests::paused(replica);
    primary.raw_command("CLIENT KILL TYPE replica").unwrap();
    poll_until(
        Duration::from_secs(10),
        "the primary to list no replica",
        || async {
            primary
                .raw_command("INFO replication")
                .is_ok_and(|i| i.contains("connected_slaves:0"))
        },
    )
    .await;
    // A store that has never written to that primary: its first look finds no replica.
    let waiting = store_with(
        &redis,
        StoreConfig {
            replicas: wait_for(1),
            ..StoreConfig::new(strategy)
        },
    )
    .await;
    let refused = waiting
        .update_segment_status(&id, &segment_id(0), SegmentStatus::Delayed, None)
        .await;
    assert!(
        matches!(refused, Err(StoreError::ReplicasMissing { .. })),
        "{strategy}: {refused:?}"
    );
    drop(paused);
    poll_until(
        Duration::from_secs(30),
        "a write let through once the replica is back",
        || async {
            waiting
                .update_segment_status(&id, &segment_id(0), SegmentStatus::Boarding, None)
                .await
                .is_ok()
        },
    )
    .await;
}
