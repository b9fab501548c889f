//! The Redis event stream's retention: trimmed by length and age once every consumer
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

/// One trim takes a stream far past its length back to it: an approximate `XTRIM` stops after
/// 10,000 entries unless told otherwise, which above 10,000 changes a second let the stream
/// grow without bound (the soak found it).
#[tokio::test]
async fn one_trim_removes_more_than_ten_thousand_entries() {
    let server = TestRedis::single();
    let redis = server.connect().await;
    publish(
        &RedisStreamPublisher::new(redis.clone(), STREAM, None),
        25_000,
    )
    .await;
    let publisher =
        RedisStreamPublisher::new(redis.clone(), STREAM, Some(retention(1000, None, 100_000)));
    let removed = publisher.trim().await.unwrap();
    let kept = len(&redis).await;
    assert!((1000..=1100).contains(&kept), "{kept}");
    assert_eq!(removed + kept, 25_000);
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

/// The outbox is visible and bounded: with no relay running, `/metrics`
/// shows the backlog, `/ready` names it once it is older than `stale_after` (and stays 200),
/// and once it reaches the cap updates are refused with 503 `outbox-full`, changing nothing;
/// after a relay drains the outbox, updates are accepted again.
#[tokio::test]
async fn a_backlog_with_no_relay_is_named_and_capped_then_the_relay_frees_it() {
    use flyrtech_infrastructure::events::backlog::BacklogLimits;
    use flyrtech_infrastructure::events::publisher::RedisStreamPublisher as Stream;
    use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
    use flyrtech_infrastructure::{StoreConfig, Strategy};
    use flyrtech_tests::{TestServer, http_client, poll_until, serve_config};
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    const CAP: u64 = 4;
    let redis = TestRedis::single();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Hash));
    config.backlog = BacklogLimits {
        stale_after: Duration::from_millis(50),
        hard_cap: Some(CAP),
        every: Duration::from_millis(20),
    };
    // The hard cap alone: one client's share of it has a test of its own (hostile::quotas).
    config.quotas.outbox_share = None;
    let server = TestServer::start_with(config).await;
    let client = http_client();
    let put = |status: &'static str| {
        let client = client.clone();
        let url = server.url("/api/journeys/JRN-001/segments/SEG-001-1/status");
        async move {
            client
                .put(url)
                .json(&json!({ "status": status }))
                .send()
                .await
                .unwrap()
        }
    };
    let version = || {
        let client = client.clone();
        let url = server.url("/api/journeys/JRN-001");
        async move {
            let response = client.get(url).send().await.unwrap();
            let etag = response.headers()["etag"]
                .to_str()
                .unwrap()
                .trim_matches('"');
            etag.parse::<u64>().unwrap()
        }
    };
    // Nothing waits yet: ready, no warning.
    let ready = server.get_json("/ready").await;
    assert!(ready.get("warnings").is_none(), "{ready}");

    // The first CAP updates are accepted whatever the watch has measured (it can only have seen
    // fewer entries); each adds one outbox entry.
    let start = version().await;
    let statuses = ["Delayed", "Scheduled"];
    for i in 0..CAP {
        assert_eq!(
            put(statuses[(i % 2) as usize]).await.status(),
            StatusCode::OK
        );
    }
    // Then updates are accepted until the watch's next measurement sees the cap (it measures
    // every 20 ms: a few more may pass, the documented overshoot), then refused.
    let accepted = std::sync::atomic::AtomicU64::new(CAP);
    poll_until(
        Duration::from_secs(10),
        "an update refused at the cap",
        || {
            let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
            let response = put(statuses[(n % 2) as usize]);
            let accepted = &accepted;
            async move {
                let status = response.await.status();
                if status == StatusCode::OK {
                    accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                status == StatusCode::SERVICE_UNAVAILABLE
            }
        },
    )
    .await;
    let accepted = accepted.into_inner();
    let n = accepted;
    let refused = put(statuses[(n % 2) as usize]).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/outbox-full", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("flyrtech relay")),
        "{problem}"
    );
    // The refused updates changed nothing: one version per accepted update.
    assert_eq!(version().await, start + accepted);

    // Visible: the gauges on /metrics, the warning on /ready (still 200).
    let metrics = flyrtech_tests::metrics(&client, &server).await;
    assert!(
        metrics.contains(&format!("outbox_backlog_entries {accepted}")),
        "{metrics}"
    );
    assert!(metrics.contains("outbox_backlog_oldest_age_seconds"));
    poll_until(
        Duration::from_secs(10),
        "/ready names the stale backlog",
        || {
            let request = client.get(server.url("/ready")).send();
            async move {
                let response = request.await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let body: Value = response.json().await.unwrap();
                body.get("warnings").is_some()
            }
        },
    )
    .await;
    let named = server.get_json("/ready").await;
    assert!(
        named["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("flyrtech relay") && w.contains(&accepted.to_string())),
        "{named}"
    );

    // A relay publishes the backlog; updates are accepted again.
    let conn = redis.connect().await;
    let relay = Relay::new(
        conn.clone(),
        Stream::new(conn.clone(), STREAM, None),
        RelaySettings::new(),
    )
    .await
    .unwrap();
    relay.drain().await.unwrap();
    poll_until(Duration::from_secs(10), "updates accepted again", || {
        let response = put("Delayed");
        async move {
            let status = response.await.status();
            assert!(
                status == StatusCode::OK || status == StatusCode::SERVICE_UNAVAILABLE,
                "{status}"
            );
            status == StatusCode::OK
        }
    })
    .await;
}

/// A relay that stops (here: `drain`, as `relay --drain` does) leaves the stream within its
/// bounds: the once-a-second trim would otherwise keep what arrived since the last one.
#[tokio::test]
async fn a_relay_trims_the_stream_to_its_bounds_before_it_returns() {
    use flyrtech_core::{JourneyStore, SegmentStatus, StatusChange};
    use flyrtech_infrastructure::Strategy;
    use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};

    const CHANGES: usize = 600;
    const MAX_LEN: usize = 100;
    let server = TestRedis::single();
    let redis = server.connect().await;
    let store = flyrtech_tests::store(&redis, Strategy::Lua).await;
    let id = unique_id("TRIM");
    store
        .create(&flyrtech_tests::journey(&id, 1))
        .await
        .unwrap();
    for n in 0..CHANGES {
        let status = if n % 2 == 0 {
            SegmentStatus::Delayed
        } else {
            SegmentStatus::Scheduled
        };
        let change = StatusChange::Segment {
            segment_id: flyrtech_tests::segment_id(0),
            status,
        };
        store.update(&id, &change, None).await.unwrap();
    }
    let relay = Relay::new(
        redis.clone(),
        RedisStreamPublisher::new(
            redis.clone(),
            STREAM,
            Some(retention(MAX_LEN, None, 100_000)),
        ),
        // Batches of 50: the first is trimmed after, the next eleven come within the second.
        RelaySettings {
            batch: 50,
            ..RelaySettings::new()
        },
    )
    .await
    .unwrap();
    let stats = relay.drain().await.unwrap();
    assert_eq!(stats.published, CHANGES as u64);
    let kept = len(&redis).await;
    // `~` trims whole nodes of 100 entries: at least MAX_LEN stay, about a node more at most.
    assert!(
        (MAX_LEN as u64..=2 * MAX_LEN as u64).contains(&kept),
        "{kept}"
    );
}
