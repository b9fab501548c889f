//! Fair under a hostile crowd: what one client (an address, or a key) can do to the others, and
//! how a client's own faults are answered. Clients are told apart by their loopback address
//! (127.0.0.2, 127.0.0.3, ... are all this machine's).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use flyrtech_cli::config::Connections;
use flyrtech_infrastructure::store::cache::CacheLimits;
use flyrtech_infrastructure::{StoreConfig, Strategy, keys};
use flyrtech_tests::{TestRedis, TestServer, poll_until, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// An HTTP client whose connections come from 127.0.0.`n`.
fn client_from(n: u8) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(loopback(n))
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn addr(server: &TestServer) -> SocketAddr {
    server
        .url("")
        .trim_start_matches("http://")
        .parse()
        .unwrap()
}

/// A connection to `server` from 127.0.0.`n`, sending nothing.
async fn silent(server: &TestServer, n: u8) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(loopback(n), 0)).unwrap();
    socket.connect(addr(server)).await.unwrap()
}

/// Whether the server closes `stream` (reads end) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 256];
    matches!(
        tokio::time::timeout(within, stream.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// A counter on `/metrics` (0 when absent).
async fn counter(server: &TestServer, name: &str) -> f64 {
    let text = flyrtech_tests::metrics(&client_from(1), server).await;
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// One address holding its share of the connection cap with silent sockets: its next
/// connection is closed at once and counted, while another address is served at once (before,
/// it was reset until the holder's header timeout fired, and kept out by reopening).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_at_its_share_does_not_lock_out_another() {
    let redis = TestRedis::single();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.connections = Connections {
        max_connections: 50,
        per_client: Connections::default_per_client(50),
        header_timeout: Duration::from_secs(60),
        idle_timeout: Duration::from_secs(60),
        ..Connections::default()
    };
    let share = config.connections.per_client;
    assert!(share < 50, "a share is a part of the cap: {share}");
    let server = TestServer::start_with(config).await;
    let mut held = Vec::new();
    for _ in 0..share {
        held.push(silent(&server, 7).await);
    }
    // The server has counted them before it sees the next: poll until one is refused.
    poll_until(
        Duration::from_secs(10),
        "the address' next connection refused",
        || {
            let server = &server;
            async move {
                let mut next = silent(server, 7).await;
                closed_within(&mut next, Duration::from_secs(2)).await
            }
        },
    )
    .await;
    let other = client_from(9)
        .get(server.url("/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::OK, "another address is served");
    assert!(counter(&server, "http_connections_refused_per_client_total").await >= 1.0);
    // The holder's silent sockets are still open: it was not the header timeout.
    let mut still = held.pop().unwrap();
    assert!(!closed_within(&mut still, Duration::from_millis(200)).await);
}

/// The cache-aside demo is a read: it writes the service's own entry, never on the caller's
/// account, and is never refused for want of room, even when a crowd filled the cache for
/// everyone. A client at its own quota is told 429; the cache full for all, 507.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_never_writes_on_the_callers_account_nor_answers_507() {
    const CAP: u64 = 10;
    let redis = TestRedis::single();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.cache = CacheLimits {
        max_entries: CAP,
        max_entries_per_client: CacheLimits::default_per_client(CAP),
        ..CacheLimits::default()
    };
    let quota = config.cache.max_entries_per_client;
    let server = TestServer::start_with(config).await;
    let set = |n: u8, key: String| {
        client_from(n)
            .post(server.url(&format!("/api/cache/{key}")))
            .json(&json!({"value": "v"}))
            .send()
    };
    // One client at its quota: its next new key is its own fault, 429.
    for i in 0..quota {
        assert_eq!(
            set(2, format!("a{i}")).await.unwrap().status(),
            StatusCode::OK
        );
    }
    let over = set(2, "a-next".into()).await.unwrap();
    assert_eq!(over.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        over.json::<Value>().await.unwrap()["type"],
        "/problems/cache-quota"
    );
    // The demo, read by that client at its quota: 200, and its count unchanged.
    let owned = || async {
        let counts: std::collections::HashMap<String, u64> = redis::cmd("HGETALL")
            .arg(keys::CACHE_OWNED)
            .query_async(&mut redis.connect().await.shared())
            .await
            .unwrap();
        counts
    };
    let before = owned().await;
    let demo = client_from(2)
        .get(server.url("/api/cache/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(demo.status(), StatusCode::OK);
    assert_eq!(owned().await, before, "the read wrote on nobody's account");
    // How many clients it takes to fill the cache: the cap over each one's quota.
    let crowd = u8::try_from(CAP / quota).unwrap();
    for n in 3..2 + crowd {
        for i in 0..quota {
            assert_eq!(
                set(n, format!("c{n}-{i}")).await.unwrap().status(),
                StatusCode::OK
            );
        }
    }
    let full = set(60, "late".into()).await.unwrap();
    assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
    assert_eq!(
        full.json::<Value>().await.unwrap()["type"],
        "/problems/cache-full"
    );
    // Full for everyone: the demo still answers, to anyone.
    let _: () = redis::cmd("DEL")
        .arg(keys::cache_entry(
            &flyrtech_core::CacheKey::parse("demo:timestamp").unwrap(),
        ))
        .query_async(&mut redis.connect().await.shared())
        .await
        .unwrap();
    let demo = client_from(61)
        .get(server.url("/api/cache/demo"))
        .send()
        .await
        .unwrap();
    assert_eq!(demo.status(), StatusCode::OK);
    assert_eq!(demo.json::<Value>().await.unwrap()["source"], "computed");
}

/// A body that does not arrive within the request timeout is the client's fault: 408, not 503,
/// and nothing of the update is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_is_a_408_and_changes_nothing() {
    let redis = TestRedis::single();
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.request_timeout = Duration::from_millis(400);
    let server = TestServer::start_with(config).await;
    let journey = || async {
        let response = client_from(1)
            .get(server.url("/api/journeys/JRN-001"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json::<Value>().await.unwrap()
    };
    let before = journey().await;
    assert_eq!(before["segments"][0]["segmentId"], "SEG-001-1", "{before}");
    assert_eq!(before["segments"][0]["status"], "Scheduled", "{before}");
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    stream
        .write_all(
            b"PUT /api/journeys/JRN-001/segments/SEG-001-1/status HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 22\r\n\r\n{\"status\":",
        )
        .await
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !String::from_utf8_lossy(&answer).contains("\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "no answer");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    // The rest of the body, sent after the 408, changes nothing either.
    let _ = stream.write_all(b"\"Departed\"}").await;
    assert_eq!(journey().await, before, "unchanged");
}

/// What the contract does not allow is refused with 422 naming the field, and nothing is
/// stored: a price with more than two decimals however it is written (judged on the text,
/// before any rounding), and a date outside RFC 3339's four-digit years.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_contract_prices_and_dates_are_refused_with_nothing_stored() {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), Strategy::Lua).await;
    let client = client_from(1);
    // The number written as text: with arbitrary precision, serde_json keeps it exactly.
    let price: Value = serde_json::from_str("850.50000000000000000000000000001").unwrap();
    for (n, (field, value)) in [
        ("totalPrice", price),
        ("bookingDate", json!("+99999-01-01T00:00:00Z")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("OUT-{n}");
        let mut journey = flyrtech_tests::sample_journey(&id);
        journey[field] = value;
        let body = serde_json::to_string(&journey).unwrap();
        assert!(body.contains(field));
        let response = client
            .post(server.url("/api/journeys"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::UNPROCESSABLE_ENTITY,
            "{field}"
        );
        let problem: Value = response.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains(field)),
            "{field}: {problem}"
        );
        let stored = client
            .get(server.url(&format!("/api/journeys/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            stored.status(),
            StatusCode::NOT_FOUND,
            "{field}: nothing stored"
        );
    }
}

/// Two `Authorization` headers are refused, whichever comes first: a proxy in front may judge
/// the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_authorization_headers_are_refused() {
    let redis = TestRedis::single();
    let (server, _dir, writer, admin) = super::quotas::server(&redis, |_| {}).await;
    let client = client_from(1);
    for (first, second) in [(&writer, &admin), (&admin, &writer)] {
        let response = client
            .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
            .header("authorization", format!("Bearer {first}"))
            .header("authorization", format!("Bearer {second}"))
            .json(&json!({"status": "Delayed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        let problem: Value = response.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/ambiguous-authorization");
    }
    let one = client
        .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .bearer_auth(&writer)
        .json(&json!({"status": "Delayed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), StatusCode::OK, "one header is the rule");
}

/// A body declared over the limit is refused before any of it is read: `Expect:
/// 100-continue` gets 413, not an invitation to send it; and an error quotes at most a prefix
/// of what the client sent (a 60 KB id is not echoed back twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_is_refused_before_it_is_sent_and_errors_do_not_echo() {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), Strategy::Lua).await;
    let mut stream = TcpStream::connect(addr(&server)).await.unwrap();
    stream
        .write_all(
            b"PUT /api/journeys/JRN-001/segments/SEG-001-1/status HTTP/1.1\r\nHost: x\r\n\
              Content-Type: application/json\r\nContent-Length: 5000000\r\n\
              Expect: 100-continue\r\n\r\n",
        )
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    let long = "J".repeat(60_000);
    let response = client_from(1)
        .get(server.url(&format!("/api/journeys/{long}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = response.text().await.unwrap();
    assert!(body.len() < 1_000, "{} bytes echoed", body.len());
    assert!(body.contains("60000 characters"), "{body}");
}
