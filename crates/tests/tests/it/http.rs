//! The HTTP API end to end: a real `flyrtech serve` (in-process, port 0) on a real Redis.
//!
//! Covers the original's requests as its `.http` file sends them, lost updates across two server
//! instances for every strategy, every error code with the journey unchanged afterwards,
//! conditional requests, restarts, Redis outages, and graceful shutdown.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_infrastructure::{RetryPolicy, StoreConfig, Strategy};
use flyrtech_tests::{
    S, TestRedis, TestServer, Topology, get_json, http_client, journey, segment_id, serve_config,
    unique_id, unpooled_http_client,
};
use reqwest::{Client, Method, StatusCode};
use rstest::rstest;
use rstest_reuse::apply;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::every_strategy;

/// One request of an `.http` file.
#[derive(Debug)]
struct HttpFileRequest {
    title: String,
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Option<String>,
}

/// Parses the REST-client format of `data/FlyrTech.Api.http`: `@var = value` lines, requests
/// separated by `###` lines, `METHOD URL`, headers, a blank line, a body.
fn parse_http_file(text: &str, host: &str) -> Vec<HttpFileRequest> {
    let mut vars = Vec::new();
    let mut requests = Vec::new();
    let mut title = String::new();
    for block in text.split("\n###") {
        let mut lines = block.lines().peekable();
        let mut request: Option<HttpFileRequest> = None;
        while let Some(line) = lines.next() {
            let line = line.trim_end();
            if let Some(var) = line.strip_prefix('@') {
                let (name, value) = var.split_once('=').unwrap();
                vars.push((name.trim().to_owned(), value.trim().to_owned()));
            } else if request.is_none() && line.trim_start_matches('#').trim().is_empty() {
                continue;
            } else if request.is_none() && !line.starts_with(|c: char| c.is_ascii_uppercase()) {
                title = line.trim_start_matches('#').trim().to_owned();
            } else if request.is_none() {
                let (method, url) = line.split_once(' ').unwrap();
                let mut url = url.trim().to_owned();
                for (name, value) in &vars {
                    url = url.replace(&format!("{{{{{name}}}}}"), value);
                }
                let original_host = vars.first().map(|(_, v)| v.clone()).unwrap();
                request = Some(HttpFileRequest {
                    title: title.clone(),
                    method: method.parse().unwrap(),
                    url: url.replace(&original_host, host),
                    headers: Vec::new(),
                    body: None,
                });
                // Headers until a blank line, then the body.
                for header in lines.by_ref() {
                    if header.trim().is_empty() {
                        break;
                    }
                    let (name, value) = header.split_once(':').unwrap();
                    let r = request.as_mut().unwrap();
                    r.headers
                        .push((name.trim().to_owned(), value.trim().to_owned()));
                }
                let body: String = lines.by_ref().collect::<Vec<_>>().join("\n");
                let body = body.trim();
                if !body.is_empty() {
                    request.as_mut().unwrap().body = Some(body.to_owned());
                }
            }
        }
        requests.extend(request);
    }
    requests
}

async fn send_http_file_request(client: &Client, r: &HttpFileRequest) -> (StatusCode, Value) {
    let mut builder = client.request(r.method.clone(), &r.url);
    for (name, value) in &r.headers {
        builder = builder.header(name, value);
    }
    if let Some(body) = &r.body {
        builder = builder.body(body.clone());
    }
    let response = builder.send().await.unwrap();
    let status = response.status();
    let body = response.json::<Value>().await.unwrap_or(Value::Null);
    (status, body)
}

/// Every request of the original's `.http` file, sent as a user sends it, gets the original's
/// answer; the one documented change is that the cache cannot read a journey.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_original_http_file_works(strategy: Strategy) {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    let text = include_str!("../../../../data/FlyrTech.Api.http");
    let requests = parse_http_file(text, &server.base);
    assert_eq!(requests.len(), 6, "{requests:#?}");
    for r in &requests {
        let (status, body) = send_http_file_request(&client, r).await;
        match r.title.as_str() {
            "Get all journey IDs" => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(
                    body,
                    json!({"journeyIds": ["JRN-001", "JRN-002", "JRN-003"], "count": 3})
                );
            }
            "Get specific journey" => {
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body["id"], "JRN-001");
                assert_eq!(body["passengerName"], "John Smith");
                assert_eq!(body["segments"][0]["segmentId"], "SEG-001-1");
                assert_eq!(body["totalPrice"].to_string(), "850.50");
            }
            "Update segment status (single update)" => {
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["message"], "Segment status updated successfully");
                assert_eq!(body["journeyId"], "JRN-001");
                assert_eq!(body["segmentId"], "SEG-001-1");
                assert_eq!(body["newStatus"], "Departed");
            }
            "Update journey status" => {
                assert_eq!(status, StatusCode::OK, "{body}");
                assert_eq!(body["message"], "Journey status updated successfully");
                assert_eq!(body["journeyId"], "JRN-001");
                assert_eq!(body["newStatus"], "InProgress");
                assert!(body.get("segmentId").is_none(), "{body}");
            }
            "Cache demo endpoint" => {
                // Cache-aside on `demo:timestamp`: computed once, then served from the cache.
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body["source"], "computed", "{body}");
                assert_eq!(
                    body["message"],
                    "New value generated and cached for 60 seconds"
                );
                let value = body["value"].as_str().unwrap();
                assert!(
                    chrono::NaiveDateTime::parse_from_str(
                        value,
                        "Generated at %Y-%m-%d %H:%M:%S UTC"
                    )
                    .is_ok(),
                    "{value}"
                );
                let (again_status, again) = send_http_file_request(&client, r).await;
                assert_eq!(again_status, StatusCode::OK);
                assert_eq!(
                    again,
                    json!({"source": "cache", "value": value, "message": "Value retrieved from Redis cache"})
                );
            }
            "Get cache value by key" => {
                // The documented change: cache keys live in their own namespace.
                assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
                assert_eq!(body["type"], "/problems/not-found");
                assert_eq!(body["message"], "Key 'journey:JRN-001' not found in cache");
            }
            other => panic!("a request the test does not know: {other}"),
        }
    }
    // Both updates landed, and GET says so with the version as ETag.
    let response = client
        .get(server.url("/api/journeys/JRN-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["etag"], "\"2\"");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["segments"][0]["status"], "Departed");
    assert_eq!(body["status"], "InProgress");
}

/// 20 concurrent PUTs to 20 segments of one journey over two server instances sharing one
/// Redis, with 10 ms of modelled processing: every correct strategy keeps all 20.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_over_two_instances(strategy: Strategy) {
    concurrent_puts(strategy, Topology::Single).await;
}

/// The same on a 3-master cluster.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_over_two_instances_on_a_cluster(strategy: Strategy) {
    concurrent_puts(strategy, Topology::Cluster).await;
}

async fn concurrent_puts(strategy: Strategy, topology: Topology) {
    const WRITERS: usize = 20;
    let redis = TestRedis::start(topology);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let mut store = StoreConfig::new(strategy);
        store.processing_delay = Duration::from_millis(10);
        servers.push(TestServer::start_with(serve_config(&redis.url(), store)).await);
    }
    let client = http_client();
    let id = unique_id("HTTP");
    let created = client
        .post(servers[0].url("/api/journeys"))
        .json(&journey(&id, WRITERS))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);

    let barrier = Arc::new(Barrier::new(WRITERS));
    let tasks: Vec<_> = (0..WRITERS)
        .map(|i| {
            let url = servers[i % 2].url(&format!(
                "/api/journeys/{id}/segments/{}/status",
                segment_id(i)
            ));
            let (client, barrier) = (client.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                client
                    .put(url)
                    .json(&json!({"status": "Departed"}))
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    let state: Value = get_json(&client, servers[1].url(&format!("/api/journeys/{id}"))).await;
    let departed = state["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["status"] == "Departed")
        .count();
    if strategy.is_correct_across_instances() {
        assert_eq!(departed, WRITERS, "{strategy} lost updates: {state}");
        assert_eq!(state["version"], WRITERS);
    } else {
        assert!(
            departed < WRITERS,
            "{strategy} was expected to lose updates across instances"
        );
    }
}

/// The sample journey and a way to send one request to the server under test.
pub(crate) struct Fixture {
    _redis: TestRedis,
    pub(crate) server: TestServer,
    pub(crate) client: Client,
}

impl Fixture {
    pub(crate) async fn new() -> Self {
        let redis = TestRedis::single();
        let server = TestServer::start(&redis.url(), S::Lua).await;
        Self {
            _redis: redis,
            server,
            client: unpooled_http_client(),
        }
    }

    async fn journey(&self, id: &str) -> (StatusCode, Value) {
        let r = self
            .client
            .get(self.server.url(&format!("/api/journeys/{id}")))
            .send()
            .await
            .unwrap();
        (r.status(), r.json().await.unwrap())
    }
}

/// A request that must fail with `status` and problem `kind`.
struct Refused {
    method: Method,
    path: &'static str,
    headers: &'static [(&'static str, &'static str)],
    body: Body,
}

enum Body {
    None,
    Raw(&'static str),
    Json(Value),
    Large(usize),
}

fn put_status(path: &'static str, status: &str) -> Refused {
    Refused {
        method: Method::PUT,
        path,
        headers: &[],
        body: Body::Json(json!({ "status": status })),
    }
}

pub(crate) const SEGMENT: &str = "/api/journeys/JRN-001/segments/SEG-001-1/status";
const JOURNEY: &str = "/api/journeys/JRN-001/status";

fn invalid_new_journey() -> Value {
    let mut j = serde_json::to_value(journey(&unique_id("BAD"), 1)).unwrap();
    j["passengerName"] = json!("");
    j
}

fn existing_journey() -> Value {
    let text = flyrtech_tests::sample_journeys_json();
    let file: Value = serde_json::from_str(text).unwrap();
    file["journeys"][0].clone()
}

/// Every error code, as application/problem+json, and the journey is unchanged afterwards.
#[rstest]
#[case::malformed_json(Refused { method: Method::PUT, path: SEGMENT, headers: &[("content-type", "application/json")], body: Body::Raw("{\"status\":") }, 400, "malformed-body")]
#[case::malformed_if_match(Refused { headers: &[("if-match", "3")], ..put_status(SEGMENT, "Departed") }, 400, "malformed-request")]
#[case::journey_not_found(
    put_status("/api/journeys/JRN-404/segments/SEG-001-1/status", "Departed"),
    404,
    "journey-not-found"
)]
#[case::segment_not_found(
    put_status("/api/journeys/JRN-001/segments/SEG-404/status", "Departed"),
    404,
    "segment-not-found"
)]
#[case::invalid_transition(put_status(JOURNEY, "Completed"), 409, "invalid-transition")]
#[case::already_exists(Refused { method: Method::POST, path: "/api/journeys", headers: &[], body: Body::Json(existing_journey()) }, 409, "already-exists")]
#[case::stale_if_match(Refused { headers: &[("if-match", "\"5\"")], ..put_status(SEGMENT, "Departed") }, 412, "precondition-failed")]
#[case::no_if_match_tag_matches(Refused { headers: &[("if-match", "\"5\", W/\"0\"")], ..put_status(SEGMENT, "Departed") }, 412, "precondition-failed")]
// Just over the 1 MiB limit: the server reads up to the limit, answers 413 and closes; with only
// a little of the body left unread the client has written all of it by then and reads the
// answer (twice the limit left megabytes unsent, and the close could break the client's write).
#[case::body_too_large(Refused { method: Method::PUT, path: SEGMENT, headers: &[("content-type", "application/json")], body: Body::Large(1024 * 1024 + 1024) }, 413, "body-too-large")]
#[case::not_json(Refused { method: Method::PUT, path: SEGMENT, headers: &[("content-type", "text/plain")], body: Body::Raw("Departed") }, 415, "unsupported-media-type")]
#[case::unknown_status(put_status(SEGMENT, "Landed"), 422, "invalid-input")]
#[case::missing_status(Refused { body: Body::Json(json!({"state": "Departed"})), ..put_status(SEGMENT, "") }, 422, "invalid-input")]
#[case::invalid_id(
    put_status("/api/journeys/JRN%20001/status", "InProgress"),
    404,
    "journey-not-found"
)]
#[case::invalid_new_journey(Refused { method: Method::POST, path: "/api/journeys", headers: &[], body: Body::Json(invalid_new_journey()) }, 422, "invalid-input")]
#[case::zero_expiration(Refused { method: Method::POST, path: "/api/cache/k", headers: &[], body: Body::Json(json!({"value": "v", "expirationSeconds": 0})) }, 422, "invalid-input")]
#[case::no_body(Refused { body: Body::None, ..put_status(SEGMENT, "") }, 415, "unsupported-media-type")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_problems_and_change_nothing(
    #[case] request: Refused,
    #[case] status: u16,
    #[case] kind: &str,
) {
    let f = Fixture::new().await;
    let (_, before) = f.journey("JRN-001").await;
    let ids_before: Value = get_json(&f.client, f.server.url("/api/journeys")).await;

    let mut builder = f.client.request(request.method, f.server.url(request.path));
    for (name, value) in request.headers {
        builder = builder.header(*name, *value);
    }
    builder = match request.body {
        Body::None => builder,
        Body::Raw(text) => builder.body(text),
        Body::Json(value) => builder.json(&value),
        Body::Large(n) => builder.body(format!("{{\"status\": \"{}\"}}", "x".repeat(n))),
    };
    let response = builder.send().await.unwrap();
    assert_eq!(response.status().as_u16(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let problem: Value = response.json().await.unwrap();
    assert_eq!(problem["type"], format!("/problems/{kind}"), "{problem}");
    assert_eq!(problem["status"], status);
    assert!(problem["detail"].as_str().is_some_and(|d| !d.is_empty()));
    // Every 404 carries the original's `message` for its clients.
    assert_eq!(
        problem["message"]
            .as_str()
            .is_some_and(|m| m.ends_with(" not found")),
        status == 404,
        "{problem}"
    );

    let (_, after) = f.journey("JRN-001").await;
    assert_eq!(before, after, "a refused request changed the journey");
    let ids_after: Value = get_json(&f.client, f.server.url("/api/journeys")).await;
    assert_eq!(ids_before, ids_after, "a refused request created a journey");
}

/// When the strategy gives up under contention the client gets 409 with Retry-After, and the
/// losing change is not applied. Forced: one attempt allowed, two writers overlapping in a
/// 50 ms processing window behind a barrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn giving_up_under_contention_is_409_with_retry_after() {
    let redis = TestRedis::single();
    let mut store = StoreConfig::new(S::Optimistic);
    store.processing_delay = Duration::from_millis(50);
    store.retry = RetryPolicy {
        max_attempts: 1,
        ..RetryPolicy::default()
    };
    let server = TestServer::start_with(serve_config(&redis.url(), store)).await;
    let client = http_client();
    let barrier = Arc::new(Barrier::new(2));
    let tasks: Vec<_> = ["SEG-001-1", "SEG-001-2"]
        .into_iter()
        .map(|segment| {
            let url = server.url(&format!("/api/journeys/JRN-001/segments/{segment}/status"));
            let (client, barrier) = (client.clone(), Arc::clone(&barrier));
            tokio::spawn(async move {
                barrier.wait().await;
                let r = client
                    .put(url)
                    .json(&json!({"status": "Boarding"}))
                    .send()
                    .await
                    .unwrap();
                let retry_after = r.headers().get("retry-after").cloned();
                (r.status(), retry_after, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    results.sort_by_key(|(status, _, _)| *status);
    assert_eq!(results[0].0, StatusCode::OK, "{results:?}");
    assert_eq!(results[1].0, StatusCode::CONFLICT, "{results:?}");
    assert_eq!(results[1].1.as_ref().unwrap(), "1");
    assert_eq!(results[1].2["type"], "/problems/concurrent-update");

    let state: Value = server.get_json("/api/journeys/JRN-001").await;
    assert_eq!(
        state["version"], 1,
        "exactly the acknowledged change: {state}"
    );
}

/// GET's ETag is the version; If-Match with it succeeds once and then is stale; If-None-Match
/// answers 304; several tags and `*` are understood.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_requests_protect_http_clients(strategy: Strategy) {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    let url = server.url("/api/journeys/JRN-002");
    let etag = client.get(&url).send().await.unwrap().headers()["etag"].clone();
    assert_eq!(etag, "\"0\"");
    let not_modified = client
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    let put = |status: &'static str, if_match: Option<&str>| {
        let mut b = client
            .put(server.url("/api/journeys/JRN-002/status"))
            .json(&json!({ "status": status }));
        if let Some(tag) = if_match {
            b = b.header("if-match", tag);
        }
        b.send()
    };
    // Two clients read version 0; the first write wins, the second is told, not lost.
    let first = put("InProgress", Some("\"0\"")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["etag"], "\"1\"");
    let second = put("Cancelled", Some("\"0\"")).await.unwrap();
    assert_eq!(second.status(), StatusCode::PRECONDITION_FAILED);
    let problem: Value = second.json().await.unwrap();
    assert_eq!(problem["currentVersion"], 1);
    // A list naming the current version, and `*`, both pass.
    let listed = put("Completed", Some("\"0\", \"1\"")).await.unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    let any = put("Completed", Some("*")).await.unwrap();
    assert_eq!(any.status(), StatusCode::OK, "a no-op is still a success");
    let body: Value = any.json().await.unwrap();
    assert_eq!(
        (body["changed"].clone(), body["version"].clone()),
        (json!(false), json!(2))
    );
}

/// The cache cannot reach journey data, and its own entries work as in the original.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_endpoints_stay_in_their_namespace() {
    let f = Fixture::new().await;
    let (_, before) = f.journey("JRN-001").await;
    let url = f.server.url("/api/cache/journey:JRN-001");
    let set = f
        .client
        .post(&url)
        .json(&json!({"value": "not a journey", "expirationSeconds": 60}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), StatusCode::OK);
    assert_eq!(
        set.json::<Value>().await.unwrap(),
        json!({"message": "Value cached successfully", "key": "journey:JRN-001", "expirationSeconds": 60})
    );
    let got: Value = get_json(&f.client, &url).await;
    assert_eq!(
        got,
        json!({"key": "journey:JRN-001", "value": "not a journey"})
    );
    let (status, after) = f.journey("JRN-001").await;
    assert_eq!((status, &after), (StatusCode::OK, &before));
    let deleted = f.client.delete(&url).send().await.unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert_eq!(
        deleted.json::<Value>().await.unwrap(),
        json!({"message": "Value deleted successfully", "key": "journey:JRN-001"})
    );
    let again = f.client.delete(&url).send().await.unwrap();
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
    let problem: Value = again.json().await.unwrap();
    assert_eq!(
        problem["message"],
        "Key 'journey:JRN-001' not found in cache"
    );
    assert_eq!(f.journey("JRN-001").await, (StatusCode::OK, before));
    // No expiration given: the original answers `expirationSeconds: null`.
    let forever = f
        .client
        .post(f.server.url("/api/cache/forever"))
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        forever.json::<Value>().await.unwrap(),
        json!({"message": "Value cached successfully", "key": "forever", "expirationSeconds": null})
    );
}

/// Creating a journey: 201 with Location and the stored document; GET returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_creates_a_journey() {
    let f = Fixture::new().await;
    let id = unique_id("NEW");
    let body = serde_json::to_value(journey(&id, 3)).unwrap();
    let created = f
        .client
        .post(f.server.url("/api/journeys"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    assert_eq!(created.headers()["location"], format!("/api/journeys/{id}"));
    assert_eq!(f.journey(id.as_str()).await, (StatusCode::OK, body));
}

/// A restart seeds again without overwriting: live statuses survive a deploy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_does_not_reset_journeys() {
    let redis = TestRedis::single();
    let client = http_client();
    let first = TestServer::start(&redis.url(), S::Hash).await;
    assert_eq!((first.seeded.created, first.seeded.kept), (3, 0));
    let r = client
        .put(first.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    first.stop().await;

    let second = TestServer::start(&redis.url(), S::Hash).await;
    assert_eq!((second.seeded.created, second.seeded.kept), (0, 3));
    let state: Value = second.get_json("/api/journeys/JRN-001").await;
    assert_eq!(state["segments"][0]["status"], "Departed");
    assert_eq!(state["version"], 1);
}
