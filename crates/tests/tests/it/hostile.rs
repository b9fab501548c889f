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

/// The rate limit keys on who a client verifiably is (issue 32, part 2): a key over its budget
/// is answered 429 with `Retry-After` while another key is served; bearer values that are no
/// key, however many, draw on their address' one budget, as requests without a key do.
#[tokio::test]
async fn made_up_keys_share_their_address_budget() {
    use flyrtech_api::http::auth::Access;
    use flyrtech_api::http::limit::RateLimit;
    use flyrtech_infrastructure::StoreConfig;

    let redis = TestRedis::single();
    let (_dir, keys, [reader, _, admin]) = crate::security::keys();
    let mut config = flyrtech_tests::serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.access = Access {
        keys: Some(keys),
        open_reads: false,
    };
    // One request a second sustained, three at once: the fourth in a row is over.
    config.rate_limit = Some(RateLimit {
        per_second: 1,
        burst: 3,
        ..RateLimit::default()
    });
    let server = TestServer::start_with(config).await;
    let client = http_client();
    let get = |bearer: Option<&str>| {
        let request = client.get(server.url("/api/journeys/JRN-001"));
        match bearer {
            Some(bearer) => request.bearer_auth(bearer),
            None => request,
        }
        .send()
    };
    for _ in 0..3 {
        assert_eq!(get(Some(&reader)).await.unwrap().status(), StatusCode::OK);
    }
    let over = get(Some(&reader)).await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = over.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let problem: Value = over.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/too-many-requests", "{problem}");
    assert_eq!(get(Some(&admin)).await.unwrap().status(), StatusCode::OK);

    // Twenty made-up keys, each new: the address' burst of three, then 429s (never 401s
    // beyond the budget, and never a budget of their own).
    let mut statuses = Vec::new();
    for n in 0..20 {
        let made_up = format!("flyr_{n:064x}");
        statuses.push(get(Some(&made_up)).await.unwrap().status());
    }
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(refused, 17, "{statuses:?}");
    assert!(
        statuses[..3].iter().all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    // The same address without a key: the same spent budget.
    assert_eq!(
        get(None).await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

mod connections {
    use std::time::Duration;

    use flyrtech_api::http::server::Connections;
    use flyrtech_infrastructure::{StoreConfig, Strategy};
    use flyrtech_tests::{TestRedis, TestServer, poll_until, serve_config};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn server(redis: &TestRedis, connections: Connections) -> TestServer {
        let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
        config.connections = connections;
        TestServer::start_with(config).await
    }

    async fn connect(server: &TestServer) -> TcpStream {
        let addr = server.url("").trim_start_matches("http://").to_owned();
        TcpStream::connect(addr).await.unwrap()
    }

    /// Reads until the server closes the connection; what it sent before.
    async fn until_closed(stream: &mut TcpStream, within: Duration) -> String {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        let read = tokio::time::timeout(within, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        assert!(read.is_ok(), "still open after {within:?}");
        String::from_utf8_lossy(&seen).into_owned()
    }

    /// A client that sends its headers a byte at a time is cut off at the header timeout;
    /// one that sends nothing after a response is cut off at the idle timeout.
    #[tokio::test]
    async fn a_trickling_client_and_an_idle_one_are_cut_off() {
        let redis = TestRedis::single();
        let server = server(
            &redis,
            Connections {
                header_timeout: Duration::from_millis(500),
                idle_timeout: Duration::from_secs(30),
                ..Connections::default()
            },
        )
        .await;
        let mut trickle = connect(&server).await;
        trickle
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        let dripping = tokio::spawn(async move {
            // A byte every 100 ms, for longer than the test waits.
            for _ in 0..200 {
                if trickle.write_all(b"a").await.is_err() {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            false
        });
        poll_until(
            Duration::from_secs(10),
            "the trickling client cut off",
            || {
                let done = dripping.is_finished();
                async move { done }
            },
        )
        .await;
        assert!(dripping.await.unwrap(), "the writes never failed");

        let idle_server = self::server(
            &redis,
            Connections {
                idle_timeout: Duration::from_millis(300),
                ..Connections::default()
            },
        )
        .await;
        let mut idle = connect(&idle_server).await;
        idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answered = until_closed(&mut idle, Duration::from_secs(10)).await;
        assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
    }

    /// Past the cap a new connection is closed before a byte is read, and counted; one held
    /// connection closing makes room again.
    #[tokio::test]
    async fn past_the_cap_a_connection_is_closed_at_once() {
        let redis = TestRedis::single();
        let server = server(
            &redis,
            Connections {
                max_connections: 2,
                ..Connections::default()
            },
        )
        .await;
        let held = [connect(&server).await, connect(&server).await];
        // The server has taken both before it sees the third: poll until it refuses one.
        poll_until(Duration::from_secs(10), "a connection refused", || {
            let server = &server;
            async move {
                let mut third = connect(server).await;
                let _ = third
                    .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    .await;
                until_closed(&mut third, Duration::from_secs(5))
                    .await
                    .is_empty()
            }
        })
        .await;
        drop(held);
        let client = flyrtech_tests::http_client();
        poll_until(Duration::from_secs(10), "room again", || {
            let request = client.get(server.url("/metrics")).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let refused: f64 = metrics
            .lines()
            .find_map(|l| l.strip_prefix("http_connections_refused_total "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0);
        assert!(refused >= 1.0, "{metrics}");
    }

    /// Shutdown answers the request in flight and does not wait for a half-sent one: the
    /// server stops within its grace although a client holds a request open far longer.
    #[tokio::test]
    async fn shutdown_drains_in_flight_and_no_half_sent_request_holds_it() {
        let redis = TestRedis::single();
        let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
        config.store.processing_delay = Duration::from_millis(300);
        config.connections = Connections {
            header_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_millis(800),
            ..Connections::default()
        };
        let mut server = TestServer::start_with(config).await;
        let mut half = connect(&server).await;
        half.write_all(b"PUT /api/journeys/JRN-001/status HTTP/1.1\r\nHost: x\r\nContent-Le")
            .await
            .unwrap();
        let client = flyrtech_tests::http_client();
        let in_flight = client
            .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
            .json(&serde_json::json!({"status": "Delayed"}))
            .send();
        let in_flight = tokio::spawn(in_flight);
        poll_until(Duration::from_secs(10), "the update in flight", || {
            let n = server.in_flight();
            async move { n > 0 }
        })
        .await;
        let stopping = server.begin_stop();
        poll_until(Duration::from_secs(20), "the server stopped", || {
            let done = stopping.is_finished();
            async move { done }
        })
        .await;
        stopping.await.unwrap().unwrap();
        let answered = in_flight.await.unwrap().unwrap();
        assert_eq!(answered.status(), reqwest::StatusCode::OK);
        assert!(
            until_closed(&mut half, Duration::from_secs(5))
                .await
                .is_empty()
        );
    }
}
