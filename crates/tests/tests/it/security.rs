//! Who may write, and how much: API keys with scopes on a real service and Redis.

use std::net::SocketAddr;
use std::path::PathBuf;

use flyrtech_api::http::auth::{ApiKeys, Scope};
use flyrtech_api::http::{Application, ServeError};
use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{TestRedis, TestServer, http_client, serve_config};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// A keys file with one key per scope; the keys, in scope order.
pub(crate) fn keys() -> (tempfile::TempDir, PathBuf, [String; 3]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keys");
    let made = [Scope::Read, Scope::Write, Scope::Admin]
        .map(|scope| ApiKeys::create(&path, scope.name(), scope).unwrap());
    (dir, path, made)
}

async fn server(redis: &TestRedis, keys: PathBuf, open_reads: bool) -> TestServer {
    let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    config.api_keys = Some(keys);
    config.open_reads = open_reads;
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
    let url = redis.url();
    let refused = Application::build(config.clone(), &url).await.unwrap_err();
    assert!(matches!(refused, ServeError::Exposed(_)), "{refused}");
    let message = refused.to_string();
    assert!(
        message.contains("--api-keys") && message.contains("--insecure-no-auth"),
        "{message}"
    );
    config.insecure_no_auth = true;
    let app = Application::build(config, &url).await.unwrap();
    assert!(!app.local_addr().unwrap().ip().is_loopback());
}

mod cache_limits {
    use flyrtech_api::http::cache::CacheLimits;
    use flyrtech_infrastructure::keys;
    use flyrtech_infrastructure::{StoreConfig, Strategy};
    use flyrtech_tests::{TestRedis, TestServer, http_client, serve_config};
    use reqwest::StatusCode;
    use serde_json::{Value, json};

    async fn server(redis: &TestRedis, limits: CacheLimits) -> TestServer {
        let mut config = serve_config(&redis.url(), StoreConfig::new(Strategy::Hash));
        config.cache = limits;
        TestServer::start_with(config).await
    }

    async fn pttl(redis: &TestRedis, key: &str) -> i64 {
        let key = flyrtech_core::CacheKey::parse(key).unwrap();
        redis::cmd("PTTL")
            .arg(keys::cache_entry(&key))
            .query_async(&mut redis.connect().await.shared())
            .await
            .unwrap()
    }

    /// Values, lifetimes and the number of entries are bounded; what is refused changes
    /// nothing, and the journeys never pay for a full cache.
    #[tokio::test]
    async fn the_cache_bounds_sizes_lifetimes_and_entries() {
        const CAP: u64 = 3;
        let redis = TestRedis::single();
        let server = server(
            &redis,
            CacheLimits {
                max_value_bytes: 100,
                max_entries: CAP,
                ..CacheLimits::default()
            },
        )
        .await;
        let client = http_client();
        let set = |key: &str, body: Value| {
            client
                .post(server.url(&format!("/api/cache/{key}")))
                .json(&body)
                .send()
        };
        let status = |response: reqwest::Response| response.status();

        // A value over the limit: 413, nothing stored.
        let big = set("big", json!({"value": "x".repeat(101)})).await.unwrap();
        assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let problem: Value = big.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/value-too-large", "{problem}");
        assert_eq!(pttl(&redis, "big").await, -2);

        // No expiration: the default hour. A whole number written as 600.0 is accepted.
        let default = set("k1", json!({"value": "v"})).await.unwrap();
        assert_eq!(default.status(), StatusCode::OK);
        assert_eq!(
            default.json::<Value>().await.unwrap()["expirationSeconds"],
            Value::Null
        );
        let ttl = pttl(&redis, "k1").await;
        assert!((3_590_000..=3_600_000).contains(&ttl), "{ttl}");
        let float = set("k2", json!({"value": "v", "expirationSeconds": 600.0}))
            .await
            .unwrap();
        assert_eq!(float.status(), StatusCode::OK);
        assert_eq!(
            float.json::<Value>().await.unwrap()["expirationSeconds"],
            600
        );
        assert!(pttl(&redis, "k2").await <= 600_000);
        // Past the maximum (a day), or not whole: 422, nothing stored.
        for expiration in [json!(86_401), json!(1.5), json!(0)] {
            let refused = set("k9", json!({"value": "v", "expirationSeconds": expiration}))
                .await
                .unwrap();
            assert_eq!(
                refused.status(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "{expiration}"
            );
        }
        assert_eq!(pttl(&redis, "k9").await, -2);

        // The cap: a third entry fits, a fourth new key does not (507), an existing key may
        // still be replaced, and a deletion makes room.
        assert_eq!(
            status(set("k3", json!({"value": "v"})).await.unwrap()),
            StatusCode::OK
        );
        let full = set("k4", json!({"value": "v"})).await.unwrap();
        assert_eq!(full.status(), StatusCode::INSUFFICIENT_STORAGE);
        let problem: Value = full.json().await.unwrap();
        assert_eq!(problem["type"], "/problems/cache-full", "{problem}");
        assert_eq!(pttl(&redis, "k4").await, -2);
        assert_eq!(
            status(set("k1", json!({"value": "w"})).await.unwrap()),
            StatusCode::OK
        );
        // The journeys are not the cache's to fill.
        let put = client
            .put(server.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
            .json(&json!({"status": "Delayed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), StatusCode::OK);
        let deleted = client
            .delete(server.url("/api/cache/k3"))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::OK);
        assert_eq!(
            status(set("k4", json!({"value": "v"})).await.unwrap()),
            StatusCode::OK
        );
    }

    /// `expirationSeconds: 102898.0` is the integer 102898 (the schema's `integer`): accepted
    /// when the maximum allows it, refused naming the maximum when it does not.
    #[tokio::test]
    async fn an_integral_float_expiration_is_an_integer() {
        let redis = TestRedis::single();
        let long = server(
            &redis,
            CacheLimits {
                max_ttl: std::time::Duration::from_secs(2 * 86_400),
                ..CacheLimits::default()
            },
        )
        .await;
        let client = http_client();
        let stored = client
            .post(long.url("/api/cache/f"))
            .json(&json!({"value": "v", "expirationSeconds": 102_898.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(stored.status(), StatusCode::OK);
        assert_eq!(
            stored.json::<Value>().await.unwrap()["expirationSeconds"],
            102_898
        );
        let ttl = pttl(&redis, "f").await;
        assert!((102_890_000..=102_898_000).contains(&ttl), "{ttl}");
        let other = TestRedis::single();
        let default = server(&other, CacheLimits::default()).await;
        let refused = client
            .post(default.url("/api/cache/f"))
            .json(&json!({"value": "v", "expirationSeconds": 102_898.0}))
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let problem: Value = refused.json().await.unwrap();
        assert!(
            problem["detail"]
                .as_str()
                .is_some_and(|d| d.contains("86400")),
            "{problem}"
        );
    }

    /// The cap is exact under concurrent writers: of many new keys sent at once, exactly as
    /// many as there is room for are stored.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cap_holds_under_concurrent_writers() {
        const CAP: u64 = 5;
        let redis = TestRedis::single();
        let server = server(
            &redis,
            CacheLimits {
                max_entries: CAP,
                ..CacheLimits::default()
            },
        )
        .await;
        let client = http_client();
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(20));
        let sends = (0..20).map(|i| {
            let (client, barrier) = (client.clone(), barrier.clone());
            let url = server.url(&format!("/api/cache/c{i}"));
            tokio::spawn(async move {
                barrier.wait().await;
                let sent = std::time::Instant::now();
                let status = client
                    .post(url)
                    .json(&json!({"value": "v"}))
                    .send()
                    .await
                    .unwrap()
                    .status();
                (status, (sent, std::time::Instant::now()))
            })
        });
        let mut stored = 0;
        let mut spans = Vec::new();
        for send in sends.collect::<Vec<_>>() {
            let (status, span) = send.await.unwrap();
            spans.push(span);
            match status {
                StatusCode::OK => stored += 1,
                StatusCode::INSUFFICIENT_STORAGE => {}
                other => panic!("unexpected {other}"),
            }
        }
        // The control: the requests were in flight together, not one after another.
        assert!(
            flyrtech_tests::max_overlap(&spans) >= 10,
            "{} at once",
            flyrtech_tests::max_overlap(&spans)
        );
        assert_eq!(stored, CAP);
        let entries: u64 = redis::cmd("ZCARD")
            .arg(keys::CACHE_INDEX)
            .query_async(&mut redis.connect().await.shared())
            .await
            .unwrap();
        assert_eq!(entries, CAP);
    }

    /// `--cache off`: the cache routes are gone.
    #[tokio::test]
    async fn a_service_without_cache_has_no_cache_routes() {
        let redis = TestRedis::single();
        let server = server(
            &redis,
            CacheLimits {
                enabled: false,
                ..CacheLimits::default()
            },
        )
        .await;
        let client = http_client();
        for path in ["/api/cache/demo", "/api/cache/k"] {
            let response = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        let journeys = client
            .get(server.url("/api/journeys"))
            .send()
            .await
            .unwrap();
        assert_eq!(journeys.status(), StatusCode::OK);
    }
}

/// `GET /api/journeys` a page at a time: every journey on exactly one page, no page above its
/// `limit` (whatever one `SSCAN` call returns: 2,503 ids are a hashtable, and the limits do not
/// divide them), the next page named in the body and the `Link` header; the three sample
/// journeys with `limit=2` are two pages; a bad `limit` or `cursor` is 422.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journey_list_comes_in_pages_of_at_most_limit_without_repeats() {
    use std::collections::BTreeSet;

    use flyrtech_core::JourneyStore;
    use flyrtech_infrastructure::RedisJourneyStore;

    let client = http_client();
    let walk = |server: &TestServer, limit: usize| {
        let first = server.url(&format!("/api/journeys?limit={limit}"));
        let server_url = server.url("");
        let client = client.clone();
        async move {
            let mut seen = BTreeSet::new();
            let mut pages = Vec::new();
            let mut url = first;
            loop {
                let response = client.get(&url).send().await.unwrap();
                assert_eq!(response.status(), StatusCode::OK);
                let link = response
                    .headers()
                    .get("link")
                    .map(|l| l.to_str().unwrap().to_owned());
                let body: Value = response.json().await.unwrap();
                let ids = body["journeyIds"].as_array().unwrap();
                assert_eq!(body["count"], ids.len());
                assert!(
                    ids.len() <= limit,
                    "a page of {} at limit {limit}",
                    ids.len()
                );
                for id in ids {
                    let id = id.as_str().unwrap().to_owned();
                    assert!(
                        seen.insert(id.clone()),
                        "{id} on two pages (limit {limit}, page {}, {url})",
                        pages.len()
                    );
                }
                pages.push((ids.len(), body["total"].clone()));
                assert!(pages.len() <= 10_000, "the walk does not end");
                match body["nextCursor"].as_str() {
                    None => {
                        assert!(link.is_none());
                        break;
                    }
                    Some(cursor) => {
                        let next = format!("/api/journeys?limit={limit}&cursor={cursor}");
                        assert_eq!(link.unwrap(), format!("<{next}>; rel=\"next\""));
                        url = format!("{}{next}", server_url.trim_end_matches('/'));
                    }
                }
            }
            (seen, pages)
        }
    };

    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), Strategy::Hash).await;
    // The three sample journeys: a small set, which one SSCAN call returns whole.
    let (seen, pages) = walk(&server, 2).await;
    assert_eq!(seen.len(), 3);
    assert_eq!(
        pages.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        vec![2, 1],
        "{pages:?}"
    );

    const MORE: usize = 2500;
    let store = RedisJourneyStore::new(redis.connect().await, &StoreConfig::new(Strategy::Hash))
        .await
        .unwrap();
    let created = futures::future::join_all((0..MORE).map(|n| {
        let store = &store;
        async move {
            let id = flyrtech_core::JourneyId::parse(format!("PAGE-{n:05}")).unwrap();
            store.create(&flyrtech_tests::journey(&id, 1)).await
        }
    }))
    .await;
    assert!(created.iter().all(Result::is_ok));
    let total = MORE + 3;
    for limit in [7, 400, 999] {
        let (seen, pages) = walk(&server, limit).await;
        assert_eq!(seen.len(), total, "limit {limit}");
        assert!(pages.iter().all(|(_, t)| *t == total), "limit {limit}");
        // Full pages, and the rest on the last one.
        let sizes: Vec<usize> = pages.iter().map(|(n, _)| *n).collect();
        let mut expected = vec![limit; total / limit];
        if !total.is_multiple_of(limit) {
            expected.push(total % limit);
        }
        assert_eq!(sizes, expected, "limit {limit}");
    }

    for bad in [
        "limit=0",
        "limit=10001",
        "limit=many",
        "cursor=next",
        "cursor=1&cursor=2",
        "cursor=12:no%20id",
        "cursor=:JRN-001",
    ] {
        let response = client
            .get(server.url(&format!("/api/journeys?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    }
}

/// Least privilege: every strategy serves, the relay publishes and the
/// migration runs, each as a Redis user made from `flyrtech redis-acl`'s line, with nothing
/// denied along the way (Redis' `ACL LOG` stays empty); that user cannot flush, configure, list keys or touch a key outside
/// the service's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_and_the_relay_run_as_a_least_privilege_user() {
    use flyrtech_infrastructure::events::publisher::RedisStreamPublisher;
    use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
    use flyrtech_infrastructure::keys;
    use flyrtech_infrastructure::secrets::acl::Role;
    use flyrtech_infrastructure::{Redis, RedisSettings};

    async fn create_user(admin: &Redis, url: &str, name: &str, role: Role) -> String {
        let line = role.setuser(name).replace(">PASSWORD", ">pw-acl-7");
        let mut cmd = redis::cmd("ACL");
        for word in line.split_whitespace().skip(1) {
            cmd.arg(word);
        }
        let () = cmd.query_async(&mut admin.shared()).await.unwrap();
        url.replacen("redis://", &format!("redis://{name}:pw-acl-7@"), 1)
    }
    async fn denials(admin: &Redis) -> Vec<redis::Value> {
        redis::cmd("ACL")
            .arg("LOG")
            .query_async(&mut admin.shared())
            .await
            .unwrap()
    }

    for strategy in Strategy::ALL {
        let redis = TestRedis::single();
        let admin = redis.connect().await;
        let serve_url = create_user(
            &admin,
            &redis.url(),
            "svc",
            Role::Serve {
                locks: strategy == Strategy::Redlock,
            },
        )
        .await;
        let server =
            TestServer::start_with(serve_config(&serve_url, StoreConfig::new(strategy))).await;
        let client = http_client();
        for (status, path) in [("Delayed", SEGMENT), ("Scheduled", SEGMENT)] {
            let response = client
                .put(server.url(path))
                .json(&json!({ "status": status }))
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert_eq!(
                status,
                StatusCode::OK,
                "{strategy}: {body} {:?}",
                denials(&admin).await
            );
        }
        for path in [
            "/api/journeys",
            "/api/journeys/JRN-002",
            "/ready",
            "/api/cache/demo",
        ] {
            let response = client.get(server.url(path)).send().await.unwrap();
            assert_eq!(response.status(), StatusCode::OK, "{strategy} {path}");
        }
        let cached = client
            .post(server.url("/api/cache/k"))
            .json(&json!({"value": "v"}))
            .send()
            .await
            .unwrap();
        assert_eq!(cached.status(), StatusCode::OK, "{strategy}");
        assert_eq!(
            client
                .delete(server.url("/api/cache/k"))
                .send()
                .await
                .unwrap()
                .status(),
            StatusCode::OK
        );
        // A create, counted against the client's journey quota (`quota:journeys`).
        let created = client
            .post(server.url("/api/journeys"))
            .json(&flyrtech_tests::sample_journey("ACL-1"))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), StatusCode::CREATED, "{strategy}");

        // The relay, as its own user, publishes both changes.
        let relay_url = create_user(&admin, &redis.url(), "relay", Role::Relay).await;
        let relay_redis = Redis::connect(&RedisSettings::new(relay_url))
            .await
            .unwrap();
        let relay = Relay::new(
            relay_redis.clone(),
            RedisStreamPublisher::new(relay_redis, keys::EVENTS, None),
            RelaySettings::new(),
        )
        .await
        .unwrap();
        relay.drain().await.unwrap();
        let published: u64 = redis::cmd("XLEN")
            .arg(keys::EVENTS)
            .query_async(&mut admin.shared())
            .await
            .unwrap();
        assert_eq!(published, 2, "{strategy}");

        // The migration, as its own user: to the hash layout (a conversion of every journey, or
        // for `hash` the check that each is there in the compact form), twice.
        let migrate_url = create_user(&admin, &redis.url(), "mig", Role::Migrate).await;
        let migrate_redis = Redis::connect(&RedisSettings::new(migrate_url))
            .await
            .unwrap();
        for _ in 0..2 {
            let report = flyrtech_infrastructure::dataset::migrate(
                &migrate_redis,
                flyrtech_infrastructure::Layout::Hash,
                flyrtech_infrastructure::dataset::MigrationSettings::default(),
                &|_, _| {},
            )
            .await
            .unwrap();
            assert!(report.is_complete(), "{strategy}: {report:?}");
        }
        let log = denials(&admin).await;
        let denied: std::collections::BTreeSet<String> = log
            .iter()
            .filter_map(|entry| match entry {
                redis::Value::Array(fields) => fields
                    .windows(2)
                    .find(|w| matches!(&w[0], redis::Value::BulkString(k) if k == b"object"))
                    .and_then(|w| match &w[1] {
                        redis::Value::BulkString(v) => {
                            Some(String::from_utf8_lossy(v).into_owned())
                        }
                        _ => None,
                    }),
                _ => None,
            })
            // redis-rs' CLIENT SETINFO, which no role is granted (Redis 7.0 rejects the grant),
            // is logged on the engines that know it (Redis 7.2+, Valkey); see acl_denials.
            .filter(|object| object != "client|setinfo")
            .collect();
        assert!(denied.is_empty(), "{strategy}: denied {denied:?}");

        // What the service's user may not do.
        let svc = Redis::connect(&RedisSettings::new(serve_url))
            .await
            .unwrap();
        for args in [
            vec!["FLUSHALL"],
            vec!["CONFIG", "GET", "maxmemory-policy"],
            vec!["KEYS", "*"],
            vec!["GET", "secret:x"],
            vec!["ACL", "LIST"],
        ] {
            let mut cmd = redis::cmd(args[0]);
            for arg in &args[1..] {
                cmd.arg(*arg);
            }
            let refused = cmd.query_async::<redis::Value>(&mut svc.shared()).await;
            let error = refused.expect_err(&format!("{strategy}: {args:?} was allowed"));
            // Redis says "no permissions", Valkey "No permissions": the refusal is the point.
            assert!(
                error.to_string().to_lowercase().contains("no permissions"),
                "{args:?}: {error}"
            );
        }
    }
}

/// TLS to Redis: a private `redis-server --tls-port` with certificates made
/// here; the store and the service reach it over `rediss://` trusting the test's CA, and
/// without that CA (or without TLS) the connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_reaches_redis_over_tls_and_checks_its_certificate() {
    use flyrtech_core::{JourneyStore, SegmentStatus, StatusChange};
    use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings};
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

    /// A TLS-only redis-server, stopped when dropped.
    struct TlsRedis {
        child: std::process::Child,
        port: u16,
        _dir: tempfile::TempDir,
    }
    impl Drop for TlsRedis {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let ca_file = write("ca.pem", ca.pem());
    let cert_file = write("server.pem", server.pem());
    let key_file = write("server.key", server_key.serialize_pem());
    let port = flyrtech_infrastructure::local::free_port(false).unwrap();
    let child = std::process::Command::new("redis-server")
        .args([
            "--port",
            "0",
            "--bind",
            "127.0.0.1",
            "--tls-port",
            &port.to_string(),
        ])
        .arg("--tls-cert-file")
        .arg(&cert_file)
        .arg("--tls-key-file")
        .arg(&key_file)
        .arg("--tls-ca-cert-file")
        .arg(&ca_file)
        .args([
            "--tls-auth-clients",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let tls = TlsRedis {
        child,
        port,
        _dir: dir,
    };
    let url = format!("rediss://127.0.0.1:{}", tls.port);
    let trusted = RedisSettings::new(url.clone())
        .with_ca_file(&ca_file)
        .unwrap();

    // Polled until the server answers over TLS (bounded).
    let mut connected = None;
    for _ in 0..200 {
        if let Ok(redis) = Redis::connect(&trusted).await {
            connected = Some(redis);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    let redis = connected.expect("the TLS server answers");
    let store = RedisJourneyStore::new(redis, &StoreConfig::new(Strategy::Lua))
        .await
        .unwrap();
    let id = flyrtech_core::JourneyId::parse("TLS-1").unwrap();
    let journey = flyrtech_tests::journey(&id, 1);
    store.create(&journey).await.unwrap();
    let change = StatusChange::Segment {
        segment_id: journey.segments[0].segment_id.clone(),
        status: SegmentStatus::Delayed,
    };
    assert!(store.update(&id, &change, None).await.unwrap().changed);
    assert_eq!(
        store.get(&id).await.unwrap().segments[0].status,
        SegmentStatus::Delayed
    );

    // The service over TLS.
    let mut config = serve_config(&url, StoreConfig::new(Strategy::Lua));
    config.redis_ca = Some(ca_file.clone());
    let service = TestServer::start_with(config).await;
    let response = http_client()
        .put(service.url(SEGMENT))
        .json(&json!({"status": "Delayed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    // Not trusting the CA, or not speaking TLS: refused.
    assert!(Redis::connect(&RedisSettings::new(url)).await.is_err());
    let plain = format!("redis://127.0.0.1:{}", tls.port);
    assert!(Redis::connect(&RedisSettings::new(plain)).await.is_err());
}
