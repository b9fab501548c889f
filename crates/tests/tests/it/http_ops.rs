//! The HTTP API in operation: Redis outages and the lock masters down (503 within a bound),
//! graceful shutdown, the operations endpoints, `/ready` on an evicting Redis, and what a GET
//! renders.

use crate::every_strategy;
use crate::http::{Fixture, SEGMENT};
use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{
    S, TestRedis, TestServer, http_client, journey, poll_until, segment_id, serve_config, unique_id,
};
use reqwest::{Client, StatusCode};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::{Value, json};
use std::time::Duration;

/// With Redis down every request is answered 503 with Retry-After by the store's own timeout
/// (the `unavailable` problem, not the request deadline); /ready says so; once Redis is back the
/// same server serves again without a restart.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_503_and_recovers(strategy: Strategy) {
    let mut redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    redis.stop();

    let put = client
        .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(put.headers()["retry-after"], "1");
    let problem: Value = put.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/unavailable", "{problem}");
    for path in [
        "/api/journeys",
        "/api/journeys/JRN-001",
        "/ready",
        "/api/cache/demo",
    ] {
        let r = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
    let health = client.get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK, "the process itself is up");

    redis.restart();
    poll_until(
        Duration::from_secs(10),
        "the server to see Redis again",
        || async {
            client
                .get(server.url("/ready"))
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        },
    )
    .await;
    // The restarted server is empty: create, then update through the same server.
    let id = unique_id("BACK");
    let created = client
        .post(server.url("/api/journeys"))
        .json(&journey(&id, 2))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let updated = client
        .put(server.url(&format!(
            "/api/journeys/{id}/segments/{}/status",
            segment_id(1)
        )))
        .json(&json!({"status": "Boarding"}))
        .send()
        .await
        .unwrap();
    assert_eq!(updated.status(), StatusCode::OK);
}

/// SIGTERM/ctrl-c semantics: a request in flight when shutdown begins still gets its answer,
/// and its write lands. The 300 ms processing delay keeps it in flight; the test waits until
/// the server counts it before asking for shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_requests_in_flight() {
    let redis = TestRedis::single();
    let mut store = StoreConfig::new(S::Lua);
    store.processing_delay = Duration::from_millis(300);
    let mut server = TestServer::start_with(serve_config(&redis.url(), store)).await;
    let client = http_client();
    let url = server.url("/api/journeys/JRN-003/status");
    let request = tokio::spawn({
        let client = client.clone();
        async move {
            client
                .put(url)
                .json(&json!({"status": "Cancelled"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    poll_until(
        Duration::from_secs(5),
        "the request to be in flight",
        || {
            let n = server.in_flight();
            async move { n == 1 }
        },
    )
    .await;
    let stopped = server.begin_stop();
    assert_eq!(request.await.unwrap(), StatusCode::OK);
    stopped.await.unwrap().unwrap();

    let after = TestServer::start(&redis.url(), S::Lua).await;
    let state: Value = after.get_json("/api/journeys/JRN-003").await;
    assert_eq!(state["status"], "Cancelled");
}

/// Health, readiness, metrics and the OpenAPI document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoints() {
    let f = Fixture::new().await;
    let get = |path: &str| f.client.get(f.server.url(path)).send();
    let mut ready: Value = get("/ready").await.unwrap().json().await.unwrap();
    // The engine as read at start-up: which one depends on the server the suite runs.
    let engine = ready["engine"].take();
    assert!(
        engine
            .as_str()
            .is_some_and(|e| e.contains("standalone") && e.contains("AOF off")),
        "{engine}"
    );
    assert_eq!(
        ready,
        json!({"status": "ready", "strategy": "lua", "redis": "standalone", "engine": null})
    );
    let put = f
        .client
        .put(f.server.url(SEGMENT))
        .json(&json!({"status": "Boarding"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "journey_updates_total{strategy=\"lua\",outcome=\"applied\"}",
        "journey_update_attempts_bucket{strategy=\"lua\"",
        "http_requests_total{method=\"PUT\",route=\"/api/journeys/{id}/segments/{segmentId}/status\",status=\"200\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    let doc: Value = get("/api-docs/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for path in [
        "/api/journeys",
        "/api/journeys/{id}",
        "/api/journeys/{id}/segments/{segmentId}/status",
        "/api/journeys/{id}/status",
        "/api/cache/{key}",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} not documented");
    }
    let ui = get("/swagger-ui/").await.unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert!(ui.text().await.unwrap().contains("swagger-ui"));

    // The route labels are the router's templates, as axum's `MatchedPath` names them, for
    // SwaggerUi's routes too; a path no route has is `unmatched`, and a route's path with a
    // method it does not take is still its template.
    assert_eq!(
        get("/no/such/route").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let refused = f
        .client
        .delete(f.server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert!(
        get("/swagger-ui/index.css")
            .await
            .unwrap()
            .status()
            .is_success()
    );
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    for needle in [
        "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"}",
        "http_requests_total{method=\"DELETE\",route=\"/health\",status=\"405\"}",
        "http_requests_total{method=\"GET\",route=\"/swagger-ui/\",status=\"200\"}",
        "http_requests_total{method=\"GET\",route=\"/swagger-ui/{*rest}\",status=\"200\"}",
        "http_requests_total{method=\"GET\",route=\"/api-docs/openapi.json\",status=\"200\"}",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
}

/// Ids no journey can have (our id rules reject them): 404 with the original's `message`, on
/// every route, for every strategy, and nothing is written.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_no_journey_can_have_are_404_with_the_originals_message(strategy: Strategy) {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    let ids_before: Value = server.get_json("/api/journeys").await;
    let journey_before: Value = server.get_json("/api/journeys/JRN-001").await;
    let long = "J".repeat(1000);
    // As the message quotes it: whole when short, else its first 80 characters and its length.
    let long_shown = format!("'{}…' (1000 characters)", "J".repeat(80));
    let impossible = [
        ("%7Bx%7D", "'{x}'".to_owned()),
        ("*", "'*'".to_owned()),
        (long.as_str(), long_shown),
        ("JRN-%C3%BC", "'JRN-ü'".to_owned()),
        ("a%3Ab", "'a:b'".to_owned()),
    ];
    let departed = json!({"status": "Departed"});
    for (encoded, raw) in impossible {
        let requests = [
            (
                client.get(server.url(&format!("/api/journeys/{encoded}"))),
                format!("Journey {raw} not found"),
                "journey-not-found",
            ),
            (
                client
                    .put(server.url(&format!("/api/journeys/{encoded}/status")))
                    .json(&json!({"status": "InProgress"})),
                format!("Journey {raw} not found"),
                "journey-not-found",
            ),
            (
                client
                    .put(server.url(&format!(
                        "/api/journeys/{encoded}/segments/SEG-001-1/status"
                    )))
                    .json(&departed),
                format!("Journey {raw} or segment 'SEG-001-1' not found"),
                "journey-not-found",
            ),
            (
                client
                    .put(server.url(&format!("/api/journeys/JRN-001/segments/{encoded}/status")))
                    .json(&departed),
                format!("Journey 'JRN-001' or segment {raw} not found"),
                // The journey id is fine: the problem names the segment as the bad one.
                "segment-not-found",
            ),
        ];
        for (request, message, kind) in requests {
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{message}");
            assert_eq!(
                response.headers()["content-type"],
                "application/problem+json"
            );
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], format!("/problems/{kind}"), "{problem}");
            assert_eq!(problem["message"], message, "{problem}");
        }
    }
    assert_eq!(server.get_json("/api/journeys").await, ids_before);
    assert_eq!(
        server.get_json("/api/journeys/JRN-001").await,
        journey_before
    );
}

/// With every lock master (for the other strategies: Redis itself) refusing connections, each
/// strategy answers 503 with Retry-After within 1.5 s: the bound set for a client's wait,
/// checked per request; redlock gives up as soon as a quorum cannot be reached instead of
/// retrying until its deadline.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_lock_master_down_the_503_comes_within_a_bound(strategy: Strategy) {
    let mut redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    redis.stop();
    assert_503_within_bound(&client, &server, strategy.name()).await;
}

/// Redlock on three independent lock masters, all down, while the journey Redis is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_with_its_lock_masters_down_answers_503_within_a_bound() {
    let redis = TestRedis::single();
    let mut masters = flyrtech_infrastructure::LocalRedis::independent_masters(3).unwrap();
    let mut store = StoreConfig::new(S::Redlock);
    store.lock.urls = masters
        .iter()
        .map(flyrtech_infrastructure::LocalRedis::url)
        .collect();
    let server = TestServer::start_with(serve_config(&redis.url(), store)).await;
    let client = http_client();
    for master in &mut masters {
        master.nodes_mut()[0].stop();
    }
    assert_503_within_bound(&client, &server, "redlock, 3 lock masters").await;
}

async fn assert_503_within_bound(client: &Client, server: &TestServer, what: &str) {
    const BOUND: Duration = Duration::from_millis(1500);
    for (n, (path, status)) in [
        (
            "/api/journeys/JRN-001/segments/SEG-001-1/status",
            "Departed",
        ),
        ("/api/journeys/JRN-001/status", "InProgress"),
    ]
    .into_iter()
    .cycle()
    .take(4)
    .enumerate()
    {
        let started = std::time::Instant::now();
        let response = client
            .put(server.url(path))
            .json(&json!({ "status": status }))
            .send()
            .await
            .unwrap();
        let waited = started.elapsed();
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}, request {n}"
        );
        assert_eq!(response.headers()["retry-after"], "1");
        assert!(waited < BOUND, "{what}, request {n}: 503 after {waited:?}");
    }
}

/// `/ready` re-checks what start-up checked: once someone lets Redis evict keys without a TTL,
/// the instance is not ready and says which setting to fix; once fixed, it is ready again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_says_when_redis_may_evict_journeys() {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), S::Lua).await;
    let conn = redis.connect().await;
    let client = http_client();
    let set_policy = |policy: &'static str| {
        let conn = conn.clone();
        async move {
            let () = redis::cmd("CONFIG")
                .arg("SET")
                .arg("maxmemory-policy")
                .arg(policy)
                .query_async(&mut conn.shared())
                .await
                .unwrap();
        }
    };
    for (policy, ready) in [
        ("volatile-lru", true),
        ("allkeys-lfu", false),
        ("noeviction", true),
    ] {
        set_policy(policy).await;
        let response = client.get(server.url("/ready")).send().await.unwrap();
        assert_eq!(response.status().is_success(), ready, "{policy}");
        if !ready {
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            let problem: Value = response.json().await.unwrap();
            assert_eq!(problem["type"], "/problems/eviction-risk", "{problem}");
            assert!(
                problem["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("allkeys-lfu") && d.contains("noeviction")),
                "{problem}"
            );
        }
    }
}

/// A read is rendered from exactly the bytes Redis returned (the service decodes and
/// encodes a journey only for a read it has not rendered before): the body is always what
/// encoding the decoded journey gives, after a change through the API, and after a foreign
/// writer changed a field behind the service's back without a new version.
#[rstest]
#[case::document(S::Lua)]
#[case::hash(S::Hash)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_is_rendered_from_exactly_what_redis_returned(#[case] strategy: Strategy) {
    use flyrtech_core::{JourneyId, JourneyStore};
    use flyrtech_infrastructure::keys;

    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let admin = redis.connect().await;
    let store = flyrtech_tests::store_with(&admin, StoreConfig::new(strategy)).await;
    let client = http_client();
    let id = JourneyId::parse("JRN-001").unwrap();
    let url = server.url("/api/journeys/JRN-001");
    let body = || async {
        let response = client.get(&url).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["content-type"], "application/json");
        response.text().await.unwrap()
    };
    let decoded = || async { serde_json::to_string(&store.get(&id).await.unwrap()).unwrap() };

    let first = body().await;
    assert_eq!(first, decoded().await);
    assert_eq!(body().await, first, "the same read, the same body");

    // A change through the API: a new read, a new body.
    let put = client
        .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&json!({ "status": "Delayed" }))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let changed = body().await;
    assert_ne!(changed, first);
    assert_eq!(changed, decoded().await);

    // A foreign writer renames the passenger and leaves the version as it was.
    let mut conn = admin.shared();
    if strategy == S::Hash {
        let key = keys::journey_hash(&id);
        let written: String = redis::cmd("HGET")
            .arg(&key)
            .arg("journey")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(written.contains("John Smith"), "{written}");
        let () = redis::cmd("HSET")
            .arg(&key)
            .arg("journey")
            .arg(written.replace("John Smith", "Jane Smith"))
            .query_async(&mut conn)
            .await
            .unwrap();
    } else {
        let key = keys::journey_document(&id);
        let text: String = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        let () = redis::cmd("SET")
            .arg(&key)
            .arg(text.replace("John Smith", "Jane Smith"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let renamed = body().await;
    assert!(renamed.contains("Jane Smith"), "{renamed}");
    assert_eq!(renamed, decoded().await);
    let versions: Vec<u64> = [&changed, &renamed]
        .iter()
        .map(|b| {
            serde_json::from_str::<Value>(b).unwrap()["version"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        versions[0], versions[1],
        "the foreign write kept the version"
    );
    if strategy != S::Hash {
        return;
    }
    // The hash layout's reads after the first ask for the fields by name: a foreign writer that
    // changes the segment list is still seen, whether the fields asked for suffice (a segment
    // dropped) or not (a segment the service has not read, which a full read finds missing:
    // 500 either way), and a journey deleted behind its back is gone.
    let key = keys::journey_hash(&id);
    let written: Value = serde_json::from_str(
        &redis::cmd("HGET")
            .arg(&key)
            .arg("journey")
            .query_async::<String>(&mut admin.shared())
            .await
            .unwrap(),
    )
    .unwrap();
    // The journey field rewritten with these segments (one not in the journey: a copy of the
    // last with that id).
    let set_segments = |ids: &'static [&'static str]| {
        let mut conn = admin.shared();
        let key = key.clone();
        let mut journey = written.clone();
        let all = written["segments"].as_array().unwrap().clone();
        journey["segments"] = ids
            .iter()
            .map(|id| {
                let mut segment = all
                    .iter()
                    .find(|s| s["segmentId"] == *id)
                    .or(all.last())
                    .unwrap()
                    .clone();
                segment["segmentId"] = json!(id);
                segment
            })
            .collect();
        async move {
            let () = redis::cmd("HSET")
                .arg(&key)
                .arg("journey")
                .arg(journey.to_string())
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    };
    set_segments(&["SEG-001-2"]).await;
    let one = body().await;
    assert_eq!(one, decoded().await);
    assert_eq!(
        serde_json::from_str::<Value>(&one).unwrap()["segments"]
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    set_segments(&["SEG-001-2", "SEG-001-9"]).await;
    let unknown = client.get(&url).send().await.unwrap();
    assert_eq!(unknown.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(store.get(&id).await.is_err(), "a full read refuses it too");
    set_segments(&["SEG-001-1", "SEG-001-2"]).await;
    assert_eq!(body().await, decoded().await);
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut admin.shared())
        .await
        .unwrap();
    let gone = client.get(&url).send().await.unwrap();
    assert_eq!(gone.status(), StatusCode::NOT_FOUND);
}
