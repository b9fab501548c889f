//! Fair shares: one client (here one API key) that uses up its quota of
//! journeys, cache entries or outbox share is refused with its quota's own problem, nothing
//! changes, and another client is served.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_api::http::cache::CacheLimits;
use flyrtech_cli::config::{Connections, QuotaLimits};
use flyrtech_infrastructure::events::backlog::BacklogLimits;
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{TestRedis, TestServer, http_client, poll_until, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A server with keys (a writer and an admin: two clients that may write).
pub(crate) async fn server(
    redis: &TestRedis,
    tune: impl FnOnce(&mut flyrtech_cli::config::ServeSettings),
) -> (TestServer, tempfile::TempDir, String, String) {
    let (dir, keys, [_, writer, admin]) = crate::security::keys();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.api_keys = Some(keys);
    config.connections = Connections::default();
    tune(&mut config);
    (TestServer::start_with(config).await, dir, writer, admin)
}

use flyrtech_tests::sample_journey as journey;

async fn problem_type(response: reqwest::Response) -> String {
    let problem: Value = response.json().await.unwrap();
    problem["type"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn journeys_created_are_counted_per_client_and_capped() {
    const QUOTA: u64 = 3;
    let redis = TestRedis::single();
    let (server, _dir, writer, admin) = server(&redis, |config| {
        config.quotas.journeys = Some(QUOTA);
    })
    .await;
    let client = http_client();
    let create = |key: &str, id: &str| {
        client
            .post(server.url("/api/journeys"))
            .bearer_auth(key)
            .json(&journey(id))
            .send()
    };
    // An id that exists (a sample journey) creates nothing and costs nothing.
    assert_eq!(
        create(&writer, "JRN-001").await.unwrap().status(),
        StatusCode::CONFLICT
    );
    // Eight creates at once for a quota of three: the count is one atomic step, so
    // exactly three are created whatever the interleaving.
    let barrier = Arc::new(tokio::sync::Barrier::new(8));
    let tasks: Vec<_> = (0..8)
        .map(|n| {
            let (client, url, key, barrier) = (
                client.clone(),
                server.url("/api/journeys"),
                writer.clone(),
                Arc::clone(&barrier),
            );
            tokio::spawn(async move {
                barrier.wait().await;
                let sent = std::time::Instant::now();
                let response = client
                    .post(url)
                    .bearer_auth(key)
                    .json(&journey(&format!("Q-{n}")))
                    .send()
                    .await
                    .unwrap();
                let span = (sent, std::time::Instant::now());
                let status = response.status();
                (status, problem_type(response).await, span)
            })
        })
        .collect();
    let mut created = 0;
    let mut spans = Vec::new();
    for task in tasks {
        let (status, kind, span) = task.await.unwrap();
        spans.push(span);
        match (status, kind) {
            (StatusCode::CREATED, _) => created += 1,
            (StatusCode::TOO_MANY_REQUESTS, kind) => {
                assert_eq!(kind, "/problems/journey-quota");
            }
            other => panic!("{other:?}"),
        }
    }
    // The control: the creates were in flight together, not one after another.
    assert!(
        flyrtech_tests::max_overlap(&spans) >= 4,
        "{} at once",
        flyrtech_tests::max_overlap(&spans)
    );
    assert_eq!(created, QUOTA);
    let mut conn = redis.connect().await.shared();
    let counted: u64 = redis::cmd("HGET")
        .arg(keys::JOURNEY_QUOTA)
        .arg("key:write")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(counted, QUOTA);
    let listed: Value = client
        .get(server.url("/api/journeys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["journeyIds"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .filter(|id| id.starts_with("Q-"))
        .collect();
    assert_eq!(ids.len(), 3, "{listed}");
    // Refused: nothing written, no Location, and no Retry-After (the quota does not free
    // itself).
    let refused = create(&writer, "Q-late").await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("location").is_none());
    assert!(refused.headers().get("retry-after").is_none());
    let problem: Value = refused.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("key:write"),
        "{problem}"
    );
    let missing = client
        .get(server.url("/api/journeys/Q-late"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    // Another client is served.
    assert_eq!(
        create(&admin, "Q-late").await.unwrap().status(),
        StatusCode::CREATED
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_entries_are_owned_counted_and_capped_per_client() {
    let redis = TestRedis::single();
    let (server, _dir, writer, admin) = server(&redis, |config| {
        config.cache = CacheLimits {
            max_entries: 10,
            max_entries_per_client: 2,
            ..CacheLimits::default()
        };
    })
    .await;
    let client = http_client();
    let set = |key: &str, entry: &str, body: Value| {
        client
            .post(server.url(&format!("/api/cache/{entry}")))
            .bearer_auth(key)
            .json(&body)
            .send()
    };
    let value = || json!({"value": "v"});
    let owned = || {
        let redis = &redis;
        async move {
            let mut conn = redis.connect().await.shared();
            let counts: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
                .arg(keys::CACHE_OWNED)
                .query_async(&mut conn)
                .await
                .unwrap();
            counts
        }
    };
    for entry in ["a", "b"] {
        assert_eq!(
            set(&writer, entry, value()).await.unwrap().status(),
            StatusCode::OK
        );
    }
    // A third key is over the writer's quota; overwriting its own is not a new entry.
    let refused = set(&writer, "c", value()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(problem_type(refused).await, "/problems/cache-quota");
    let absent = client
        .get(server.url("/api/cache/c"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(absent.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        set(&writer, "a", json!({"value": "w"}))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // Another client is served, and an entry it overwrites becomes its own.
    assert_eq!(
        set(&admin, "c", value()).await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        set(&admin, "a", value()).await.unwrap().status(),
        StatusCode::OK
    );
    let counts = owned().await;
    assert_eq!(counts.get("key:write"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("key:admin"), Some(&2), "{counts:?}");
    // Deleting gives the entry back to its owner's count.
    let deleted = client
        .delete(server.url("/api/cache/b"))
        .bearer_auth(&writer)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(owned().await.get("key:write"), None);
    // An entry that expires leaves its owner's count on the next write: the writer fills
    // its quota with one entry of one second, and is served again once it has expired.
    for (entry, body) in [
        ("short", json!({"value": "v", "expirationSeconds": 1})),
        ("long", value()),
    ] {
        assert_eq!(
            set(&writer, entry, body).await.unwrap().status(),
            StatusCode::OK
        );
    }
    assert_eq!(
        set(&writer, "next", value()).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    poll_until(
        Duration::from_secs(10),
        "the expired entry leaves the count",
        || {
            let response = set(&writer, "next", value());
            async move { response.await.unwrap().status() == StatusCode::OK }
        },
    )
    .await;
    let counts = owned().await;
    assert_eq!(counts.get("key:write"), Some(&2), "{counts:?}");
    let mut conn = redis.connect().await.shared();
    let owners: u64 = redis::cmd("HLEN")
        .arg(keys::CACHE_OWNERS)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        owners, 4,
        "a, c, long and next are owned; b and short are gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_changes_cannot_fill_the_outbox_for_the_others() {
    use flyrtech_infrastructure::events::publisher::RedisStreamPublisher as Stream;
    use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};

    const CAP: u64 = 40;
    let redis = TestRedis::single();
    let (server, _dir, writer, admin) = server(&redis, |config| {
        config.backlog = BacklogLimits {
            stale_after: Duration::from_secs(60),
            hard_cap: Some(CAP),
            every: Duration::from_millis(20),
        };
        config.quotas = QuotaLimits {
            outbox_share: Some(0.25),
            ..QuotaLimits::default()
        };
    })
    .await;
    let client = http_client();
    let put = |key: &str, journey: &str, segment: &str, status: &str| {
        client
            .put(server.url(&format!(
                "/api/journeys/{journey}/segments/{segment}/status"
            )))
            .bearer_auth(key)
            .json(&json!({ "status": status }))
            .send()
    };
    // No relay runs: the writer cycles one segment until its share (a quarter of the cap:
    // 10 changes) is used up.
    let cycle = ["Delayed", "Scheduled"];
    let mut accepted = 0;
    let refused = loop {
        let response = put(&writer, "JRN-001", "SEG-001-1", cycle[accepted % 2])
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            break response;
        }
        accepted += 1;
        assert!(accepted <= 10, "the share let more than 10 changes wait");
    };
    assert_eq!(accepted, 10);
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key("retry-after"));
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/outbox-quota", "{problem}");
    assert!(
        problem["detail"].as_str().unwrap().contains("key:write"),
        "{problem}"
    );
    // Refused before the store: the journey is where the tenth change left it.
    let journey: Value = client
        .get(server.url("/api/journeys/JRN-001"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journey["version"], json!(10), "{journey}");
    assert_eq!(journey["segments"][0]["status"], "Scheduled", "{journey}");
    // The outbox is a quarter full: every other client's updates are served.
    let other = put(&admin, "JRN-002", "SEG-002-1", "Delayed")
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK);

    // A relay publishes the backlog: the writer's changes have left the outbox, and its
    // updates are served again.
    let conn = redis.connect().await;
    let relay = Relay::new(
        conn.clone(),
        Stream::new(conn.clone(), "events", None),
        RelaySettings::new(),
    )
    .await
    .unwrap();
    relay.drain().await.unwrap();
    poll_until(Duration::from_secs(10), "the writer served again", || {
        let response = put(&writer, "JRN-001", "SEG-001-1", cycle[accepted % 2]);
        async move {
            let status = response.await.unwrap().status();
            assert!(
                status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
                "{status}"
            );
            status == StatusCode::OK
        }
    })
    .await;
}
