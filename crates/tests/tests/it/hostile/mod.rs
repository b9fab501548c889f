//! A hostile client: what it can send is refused fast, typed, and changes nothing.
//! Each test probes from outside, on real servers: ids that are path steps, corrupt data
//! answered as permanent, and (in the modules below) connections, the rate limit's identity,
//! quotas, sizes and secrets.

use flyrtech_infrastructure::Strategy;
use flyrtech_tests::{TestRedis, TestServer, http_client};
use reqwest::StatusCode;
use rstest_reuse::apply;
use serde_json::{Value, json};

use crate::every_strategy;

mod quotas;

mod connections;

mod fairness;

/// `.` and `..` are refused as journey ids (a client would be sent to `/api/` by its own URL
/// resolution), and a bad segment id is named as the segment's.
#[tokio::test]
async fn path_steps_are_not_ids_and_a_bad_segment_is_named() {
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), Strategy::Lua).await;
    let client = http_client();
    for id in [".", ".."] {
        let journey = flyrtech_tests::sample_journey(id);
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
        detail.contains("segment") && detail.contains("'a:b'"),
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
                .arg("journey")
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

/// The rate limit keys on who a client verifiably is: a key over its budget
/// is answered 429 with `Retry-After` while another key is served; bearer values that are no
/// key, however many, draw on their address' one budget, as requests without a key do.
#[tokio::test]
async fn made_up_keys_share_their_address_budget() {
    use flyrtech_cli::config::RateLimit;
    use flyrtech_infrastructure::StoreConfig;

    let redis = TestRedis::single();
    let (_dir, keys, [reader, _, admin]) = crate::security::keys();
    let mut config = flyrtech_tests::serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.api_keys = Some(keys);
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

/// Bounded journeys: a metadata value past its length is 422, a document past
/// `--max-journey-bytes` is 413 naming the limit, and neither reaches Redis (SLOWLOG, logging
/// every command, holds none of them); the largest journey accepted is stored at its size, so
/// what one update of it costs Redis is bounded by it. The median time Redis spent in one
/// update of that journey is printed (`-- --nocapture`): speed is measured, not asserted.
#[rstest::rstest]
#[case::document(Strategy::Lua)]
#[case::hash(Strategy::Hash)]
#[tokio::test]
async fn journeys_are_bounded_in_size_and_what_is_refused_never_reaches_redis(
    #[case] strategy: Strategy,
) {
    const DEFAULT_MAX_JOURNEY_BYTES: usize =
        flyrtech_cli::config::ServeSettings::DEFAULT_MAX_JOURNEY_BYTES;

    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), strategy).await;
    let client = http_client();
    let mut conn = redis.connect().await.shared();
    let config = |name: &str, value: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .to_owned()
    };
    let _: () = config("slowlog-log-slower-than", "0")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = config("slowlog-max-len", "10000")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SLOWLOG")
        .arg("RESET")
        .query_async(&mut conn)
        .await
        .unwrap();
    let with_metadata = |id: &str, entries: usize, value: &str| {
        let mut journey = flyrtech_tests::sample_journey(id);
        journey["metadata"] = (0..entries)
            .map(|n| (format!("k{n:02}"), json!(value)))
            .collect::<serde_json::Map<_, _>>()
            .into();
        journey
    };
    let post = |journey: Value| {
        client
            .post(server.url("/api/journeys"))
            .json(&journey)
            .send()
    };

    // One value past 1024 characters: 422, naming the field.
    let long = post(with_metadata("BIG-VALUE", 1, &"x".repeat(1025)))
        .await
        .unwrap();
    assert_eq!(long.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let problem: Value = long.json().await.unwrap();
    assert!(
        problem["detail"].as_str().unwrap().contains("1024"),
        "{problem}"
    );
    // 64 values of 1024 characters of four bytes each: every value is allowed, the document
    // (about 256 KiB) is not: 413 naming both sizes.
    let large = post(with_metadata("BIG-DOC", 64, &"\u{1F6EB}".repeat(1024)))
        .await
        .unwrap();
    assert_eq!(large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let problem: Value = large.json().await.unwrap();
    assert_eq!(problem["type"], "/problems/journey-too-large", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains(&DEFAULT_MAX_JOURNEY_BYTES.to_string()),
        "{problem}"
    );
    // The largest journey accepted: 60 values of 1000 characters, under 64 KiB.
    let largest = with_metadata("BIG-OK", 60, &"y".repeat(1000));
    assert!(serde_json::to_vec(&largest).unwrap().len() <= DEFAULT_MAX_JOURNEY_BYTES);
    assert_eq!(post(largest).await.unwrap().status(), StatusCode::CREATED);
    let key = strategy
        .layout()
        .key(&flyrtech_core::JourneyId::parse("BIG-OK").unwrap());
    let stored: u64 = match strategy.layout() {
        flyrtech_infrastructure::store::layout::Layout::Document => redis::cmd("STRLEN")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap(),
        flyrtech_infrastructure::store::layout::Layout::Hash => {
            let fields: Vec<(String, String)> = redis::cmd("HGETALL")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            fields.iter().map(|(f, v)| (f.len() + v.len()) as u64).sum()
        }
    };
    assert!(
        stored > 60_000 && stored <= 2 * DEFAULT_MAX_JOURNEY_BYTES as u64,
        "{stored} bytes stored"
    );
    let statuses = ["Delayed", "Scheduled"];
    for n in 0..40 {
        let response = client
            .put(server.url("/api/journeys/BIG-OK/segments/SEG-001-1/status"))
            .json(&json!({"status": statuses[n % 2]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }
    // SLOWLOG: every command since the reset, with its arguments (each cut at 128 bytes).
    let log: Vec<redis::Value> = redis::cmd("SLOWLOG")
        .arg("GET")
        .arg(-1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut update_micros = Vec::new();
    for entry in &log {
        let redis::Value::Array(fields) = entry else {
            panic!("{entry:?}");
        };
        let micros: u64 = redis::from_redis_value_ref(&fields[2]).unwrap();
        let args: Vec<String> = redis::from_redis_value_ref(&fields[3]).unwrap();
        let line = args.join(" ");
        assert!(
            !line.contains("BIG-VALUE") && !line.contains("BIG-DOC"),
            "a refused journey reached Redis: {line}"
        );
        if args[0].eq_ignore_ascii_case("EVALSHA") && line.contains("BIG-OK") {
            update_micros.push(micros);
        }
    }
    assert!(
        update_micros.len() >= 40,
        "{} updates of BIG-OK in SLOWLOG",
        update_micros.len()
    );
    update_micros.sort_unstable();
    eprintln!(
        "{strategy}: {stored} bytes stored; Redis time per update of the largest journey: \
         median {} us, max {} us ({} updates)",
        update_micros[update_micros.len() / 2],
        update_micros[update_micros.len() - 1],
        update_micros.len()
    );
}
