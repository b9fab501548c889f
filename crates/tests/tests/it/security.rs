//! Who may write, and how much (issue 25): API keys with scopes on a real service and Redis.

use std::net::SocketAddr;

use flyrtech_api::http::auth::{Access, ApiKeys, Scope};
use flyrtech_api::http::{Application, ServeError};
use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{TestRedis, TestServer, http_client, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A keys file with one key per scope; the keys, in scope order.
fn keys() -> (tempfile::TempDir, ApiKeys, [String; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let made = [Scope::Read, Scope::Write, Scope::Admin]
        .map(|scope| ApiKeys::create(&path, scope.name(), scope).unwrap());
    (dir, ApiKeys::load(&path).unwrap(), made)
}

async fn server(redis: &TestRedis, keys: ApiKeys, open_reads: bool) -> TestServer {
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.access = Access {
        keys: Some(keys),
        open_reads,
    };
    TestServer::start_with(config).await
}

const SEGMENT: &str = "/api/journeys/JRN-001/segments/SEG-001-1/status";

#[tokio::test]
async fn each_route_answers_only_a_key_with_its_scope() {
    let redis = TestRedis::single();
    let (_dir, keys, [read, write, admin]) = keys();
    let server = server(&redis, keys, false).await;
    let client = http_client();
    let get = |path: &str, key: Option<&str>| {
        let mut request = client.get(server.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };
    let put = |key: Option<&str>| {
        let mut request = client
            .put(server.url(SEGMENT))
            .json(&json!({"status": "Delayed"}));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send()
    };

    // No key, or an unknown one: 401 with the Bearer challenge.
    for key in [None, Some("flyr_not-a-key")] {
        let response = get("/api/journeys", key).await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{key:?}");
        assert_eq!(
            response.headers()["www-authenticate"],
            "Bearer realm=\"flyrtech\""
        );
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/unauthorized", "{problem}");
    }
    // A read key reads, and may not write: 403, nothing changed.
    let before = get("/api/journeys/JRN-001", Some(&read)).await.unwrap();
    assert_eq!(before.status(), StatusCode::OK);
    let etag = before.headers()["etag"].clone();
    let refused = put(Some(&read)).await.unwrap();
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/forbidden", "{problem}");
    assert_eq!(put(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let after = get("/api/journeys/JRN-001", Some(&read)).await.unwrap();
    assert_eq!(after.headers()["etag"], etag);
    // A write key writes; an admin key too.
    assert_eq!(put(Some(&write)).await.unwrap().status(), StatusCode::OK);
    let cache = client
        .post(server.url("/api/cache/k1"))
        .bearer_auth(&write)
        .json(&json!({"value": "v"}))
        .send()
        .await
        .unwrap();
    assert_eq!(cache.status(), StatusCode::OK);
    // /metrics is the admin's.
    for (key, status) in [
        (&read, StatusCode::FORBIDDEN),
        (&write, StatusCode::FORBIDDEN),
        (&admin, StatusCode::OK),
    ] {
        assert_eq!(get("/metrics", Some(key)).await.unwrap().status(), status);
    }
    // Health, readiness and the OpenAPI document stay open.
    for path in ["/health", "/ready", "/api-docs/openapi.json"] {
        assert_eq!(
            get(path, None).await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
}

#[tokio::test]
async fn open_reads_let_anyone_read_but_not_write() {
    let redis = TestRedis::single();
    let (_dir, keys, [_, write, _]) = keys();
    let server = server(&redis, keys, true).await;
    let client = http_client();
    let read = client
        .get(server.url("/api/journeys"))
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    let unkeyed = client
        .put(server.url(SEGMENT))
        .json(&json!({"status": "Delayed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(unkeyed.status(), StatusCode::UNAUTHORIZED);
    let keyed = client
        .put(server.url(SEGMENT))
        .bearer_auth(&write)
        .json(&json!({"status": "Delayed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(keyed.status(), StatusCode::OK);
}

/// Without keys the service binds loopback only, unless told it is insecure.
#[tokio::test]
async fn without_keys_a_reachable_address_is_refused_unless_insecure() {
    let redis = TestRedis::single();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.listen = SocketAddr::from(([0, 0, 0, 0], 0));
    let refused = Application::build(config.clone()).await.unwrap_err();
    assert!(matches!(refused, ServeError::Exposed(_)), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("--api-keys") && message.contains("--insecure-no-auth"),
        "{message}"
    );
    config.insecure_no_auth = true;
    let app = Application::build(config).await.unwrap();
    assert!(!app.local_addr().unwrap().ip().is_loopback());
}
