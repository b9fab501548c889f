//! The Redis event stream's retention (issue 24): trimmed by length and age once every consumer
//! group is done with the entries, never before unless past the hard cap, on a real Redis.

use std::time::{Duration, Instant};

use flyrtech_core::{Envelope, EventPublisher, JourneyStatus};
use flyrtech_infrastructure::Redis;
use flyrtech_infrastructure::events::publisher::{RedisStreamPublisher, Retention};
use flyrtech_tests::{TestRedis, change_of, unique_id};

const STREAM: &str = "events";

async fn publish(publisher: &RedisStreamPublisher, n: usize) {
    let id = unique_id("RET");
    let batch: Vec<Envelope> = (1..=n as u64)
        .map(|v| change_of(&id, v, JourneyStatus::Completed))
        .collect();
    for chunk in batch.chunks(500) {
        publisher.publish(chunk).await.unwrap();
    }
}

async fn len(redis: &Redis) -> u64 {
    redis::cmd("XLEN")
        .arg(STREAM)
        .query_async(&mut redis.shared())
        .await
        .unwrap()
}

async fn cmd(redis: &Redis, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query_async(&mut redis.shared()).await.unwrap()
}

fn retention(max_len: usize, max_age: Option<Duration>, hard_cap: usize) -> Retention {
    Retention {
        max_len,
        max_age,
        hard_cap,
    }
}

#[tokio::test]
async fn without_consumer_groups_the_stream_keeps_about_max_len() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let publisher =
        RedisStreamPublisher::new(redis.clone(), STREAM, Some(retention(1000, None, 10_000)));
    publish(&publisher, 5000).await;
    publisher.trim().await.unwrap();
    let kept = len(&redis).await;
    // `~` trims whole nodes of 100 entries: at least max_len stay, about a node more at most.
    assert!((1000..=1100).contains(&kept), "{kept}");
}

#[tokio::test]
async fn what_a_consumer_group_has_not_read_is_kept_until_the_hard_cap() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    cmd(
        &redis,
        &["XGROUP", "CREATE", STREAM, "audit", "0", "MKSTREAM"],
    )
    .await;
    let publisher =
        RedisStreamPublisher::new(redis.clone(), STREAM, Some(retention(1000, None, 3000)));
    publish(&publisher, 2500).await;
    assert_eq!(publisher.trim().await.unwrap(), 0);
    assert_eq!(
        len(&redis).await,
        2500,
        "nothing the group has not read is trimmed"
    );

    // The group reads everything and acknowledges half: only what it acknowledged may go.
    let read = cmd(
        &redis,
        &[
            "XREADGROUP",
            "GROUP",
            "audit",
            "c",
            "COUNT",
            "2500",
            "STREAMS",
            STREAM,
            ">",
        ],
    )
    .await;
    let ids: Vec<String> = match read {
        redis::Value::Array(streams) => match &streams[0] {
            redis::Value::Array(pair) => match &pair[1] {
                redis::Value::Array(entries) => entries
                    .iter()
                    .map(|e| match e {
                        redis::Value::Array(e) => redis::from_redis_value_ref(&e[0]).unwrap(),
                        other => panic!("{other:?}"),
                    })
                    .collect(),
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(ids.len(), 2500);
    let mut ack = vec!["XACK", STREAM, "audit"];
    ack.extend(ids[..1250].iter().map(String::as_str));
    cmd(&redis, &ack).await;
    publisher.trim().await.unwrap();
    let kept = len(&redis).await;
    assert!(
        (1250..=1350).contains(&kept),
        "the pending half is kept: {kept}"
    );

    // Past the hard cap, trimmed whatever the group has read.
    publish(&publisher, 3000).await;
    let dropped = publisher.trim().await.unwrap();
    let kept = len(&redis).await;
    assert!(
        dropped > 0 && (3000..=3100).contains(&kept),
        "{dropped} {kept}"
    );
}

#[tokio::test]
async fn entries_older_than_max_age_are_trimmed() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    let publisher = RedisStreamPublisher::new(
        redis.clone(),
        STREAM,
        Some(retention(100_000, Some(Duration::from_millis(20)), 100_000)),
    );
    publish(&publisher, 1000).await;
    let published = Instant::now();
    // The entries must be older than max_age: a bounded wait for the clock, not for an event.
    while published.elapsed() < Duration::from_millis(40) {
        tokio::task::yield_now().await;
    }
    assert!(publisher.trim().await.unwrap() >= 900);
    assert!(len(&redis).await <= 100);
}
