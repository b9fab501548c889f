//! A hostile client (issue 32): what it can send is refused fast, typed, and changes nothing.
//! Each test probes from outside, on real servers: ids that are path steps, corrupt data
//! answered as permanent, and (in the modules below) connections, the rate limit's identity,
//! quotas, sizes and secrets.

use flyrtech_infrastructure::Strategy;
use flyrtech_tests::{TestRedis, TestServer, http_client};
use reqwest::StatusCode;
use rstest_reuse::apply;
use serde_json::{Value, json};

use crate::every_strategy;

/// `.` and `..` are refused as journey ids (a client would be sent to `/api/` by its own URL
/// resolution), and a bad segment id is named as the segment's.
#[tokio::test]
async fn path_steps_are_not_ids_and_a_bad_segment_is_named() {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), Strategy::Lua).await;
    let client = http_client();
    for id in [".", ".."] {
        let mut journey: Value =
            serde_json::from_str(flyrtech_tests::sample_journeys_json()).unwrap();
        let mut journey = journey["journeys"][0].take();
        journey["id"] = json!(id);
        let response = client
            .post(server.url("/api/journeys"))
            .json(&journey)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{id}");
        assert!(response.headers().get("location").is_none());
    }
    let response = client
        .put(server.url("/api/journeys/JRN-003/segments/a:b/status"))
        .json(&json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "/problems/segment-not-found", "{body}");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("segment") && detail.contains("\"a:b\""),
        "{detail}"
    );
    assert_eq!(
        body["message"],
        "Journey 'JRN-003' or segment 'a:b' not found"
    );
}

/// A stored journey that cannot be decoded is a permanent error: 500 `corrupt-journey`
/// without `Retry-After`, for reads and updates, whatever the strategy decodes it with (Rust or
/// the scripts).
#[apply(every_strategy)]
#[tokio::test]
async fn a_corrupt_journey_is_500_without_retry_after(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let id = flyrtech_core::JourneyId::parse("JRN-001").unwrap();
    let mut conn = redis.connect().await.shared();
    match strategy.layout() {
        flyrtech_infrastructure::store::layout::Layout::Document => {
            let _: () = redis::cmd("SET")
                .arg(strategy.layout().key(&id))
                .arg("{not json")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        flyrtech_infrastructure::store::layout::Layout::Hash => {
            let _: () = redis::cmd("HSET")
                .arg(strategy.layout().key(&id))
                .arg("version")
                .arg("many")
                .arg("header")
                .arg("{not json")
                .query_async(&mut conn)
                .await
                .unwrap();
        }
    }
    let client = http_client();
    let get = client
        .get(server.url("/api/journeys/JRN-001"))
        .send()
        .await
        .unwrap();
    let put = client
        .put(server.url("/api/journeys/JRN-001/segments/SEG-001/status"))
        .json(&json!({"status": "Delayed"}))
        .send()
        .await
        .unwrap();
    for response in [get, put] {
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.headers().get("retry-after").is_none());
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["type"], "/problems/corrupt-journey", "{body}");
    }
}
