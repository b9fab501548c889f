use std::time::Duration;

use flyrtech_cli::config::Connections;
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

/// One request on a new connection to `server`, answered 200, then nothing more sent: the
/// server closes the connection within a bound.
async fn answered_then_left_alone(server: &TestServer) {
    let mut stream = connect(server).await;
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let answered = until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(answered.starts_with("HTTP/1.1 200"), "{answered}");
}

/// A client that sends its headers a byte at a time is cut off at the header timeout, and so
/// is one that sends nothing after a response; with a shorter idle timeout, that one is cut
/// off at the idle timeout.
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

    // The header timeout also runs from each response: a kept-alive connection that sends
    // nothing more is dropped at it, well before its 30 s idle timeout.
    answered_then_left_alone(&server).await;

    let idle_server = self::server(
        &redis,
        Connections {
            idle_timeout: Duration::from_millis(300),
            ..Connections::default()
        },
    )
    .await;
    answered_then_left_alone(&idle_server).await;
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
    let metrics = flyrtech_tests::metrics(&client, &server).await;
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
