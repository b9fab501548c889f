//! Test support shared by every integration test: real Redis servers on free loopback ports,
//! stores for any strategy, and journey fixtures.
//!
//! # Layout
//! - [`TestRedis`]: a private standalone server or 3-master cluster, killed on drop; every
//!   failure message carries the server log.
//! - [`store`] / [`store_with`]: a journey store for a strategy on a given Redis.
//! - [`journey`], [`sample_journeys_json`], [`unique_id`]: fixtures.
//! - [`TestServer`]: `flyrtech serve` in-process on a free port, stopped gracefully on
//!   [`TestServer::stop`] and at drop, with typed request helpers.
//! - [`netns`]: test hosts in network namespaces, for real partitions.
//! - [`binary`]: a built binary of the workspace, run with none of the caller's configuration.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc, unreachable_pub)]

pub mod browser;
pub mod docker;
pub mod netns;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use flyrtech_api::http::Application;
use flyrtech_cli::config::{Seed, ServeSettings};

use flyrtech_core::{Journey, JourneyId, SegmentId};
use flyrtech_infrastructure::{
    LocalRedis, Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy,
};

pub use flyrtech_infrastructure::Strategy as S;

/// The binary at `path` with none of the caller's configuration: every `FLYRTECH_*` variable and
/// `REDIS_URL` removed, so a developer's environment cannot change what a test sees.
pub fn binary(path: impl AsRef<std::ffi::OsStr>) -> std::process::Command {
    let mut cmd = std::process::Command::new(path);
    for (var, _) in std::env::vars_os() {
        if var
            .to_str()
            .is_some_and(|v| v.starts_with("FLYRTECH_") || v == "REDIS_URL")
        {
            cmd.env_remove(var);
        }
    }
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

/// Runs `command`, asserts that it succeeded (showing its stderr when not) and returns its stdout.
pub fn stdout_of(command: &mut std::process::Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A private standalone Redis that asks for `password` (`requirepass`), and the URL of it with a
/// given password: `url(pw)` is `redis://:pw@127.0.0.1:PORT`.
pub async fn redis_with_password(password: &str) -> (TestRedis, impl Fn(&str) -> String) {
    let local = TestRedis::single();
    let redis = local.connect().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(password)
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let port = local.url().rsplit(':').next().unwrap().to_owned();
    (local, move |pw: &str| {
        format!("redis://:{pw}@127.0.0.1:{port}")
    })
}

/// Where a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One standalone server.
    Single,
    /// A 3-master cluster.
    Cluster,
}

/// A private Redis deployment for one test.
#[derive(Debug)]
pub struct TestRedis {
    local: LocalRedis,
}

impl TestRedis {
    /// Starts a deployment of the given topology, or panics with the reason and the log.
    pub fn start(topology: Topology) -> Self {
        let local = match topology {
            Topology::Single => LocalRedis::standalone(),
            Topology::Cluster => LocalRedis::cluster(3),
        };
        match local {
            Ok(local) => Self { local },
            Err(e) => panic!("cannot start a test Redis ({topology:?}): {e}"),
        }
    }

    /// One standalone server.
    pub fn single() -> Self {
        Self::start(Topology::Single)
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        self.local.url()
    }

    /// A fresh connection handle, retrying the first connect briefly.
    pub async fn connect(&self) -> Redis {
        let settings = RedisSettings::new(self.url());
        let mut last = None;
        for _ in 0..50 {
            match Redis::connect(&settings).await {
                Ok(redis) => return redis,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!(
            "cannot connect to {}: {last:?}\n{}",
            self.url(),
            self.local.log_tail()
        );
    }

    /// A connection handle as a Redis user made from `role`'s least-privilege `ACL SETUSER`
    /// line (`flyrtech redis-acl`), created on every node.
    pub async fn connect_as(&self, role: flyrtech_infrastructure::secrets::acl::Role) -> Redis {
        const USER: &str = "least";
        const PASSWORD: &str = "least-pw-1";
        let line = role
            .setuser(USER)
            .replace(">PASSWORD", &format!(">{PASSWORD}"));
        for node in self.local.nodes() {
            let mut cmd = redis::cmd("ACL");
            for word in line.split_whitespace().skip(1) {
                cmd.arg(word);
            }
            let client = redis::Client::open(node.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let () = cmd.query_async(&mut conn).await.unwrap();
        }
        let url = self
            .url()
            .replace("redis://", &format!("redis://{USER}:{PASSWORD}@"));
        Redis::connect(&RedisSettings::new(url)).await.unwrap()
    }

    /// Every command Redis refused on any node since start (`ACL LOG`): what a least-privilege
    /// user was denied, even where the service only logged the refusal.
    pub async fn acl_denials(&self) -> Vec<String> {
        let mut denied = Vec::new();
        for node in self.local.nodes() {
            let client = redis::Client::open(node.url()).unwrap();
            let mut conn = client.get_multiplexed_async_connection().await.unwrap();
            let log: Vec<redis::Value> = redis::cmd("ACL")
                .arg("LOG")
                .query_async(&mut conn)
                .await
                .unwrap();
            // redis-rs sends `CLIENT SETINFO` on connecting and ignores a refusal; no role is
            // granted it, since Redis 7.0 rejects the grant itself (secrets/acl.rs), so on an
            // engine that knows the command (Redis 7.2+, Valkey) it is logged and left out here.
            denied.extend(
                log.iter()
                    .map(|entry| format!("{entry:?}"))
                    .filter(|entry| !entry.contains("client|setinfo")),
            );
        }
        denied
    }

    /// Kills the (first) server, as an outage would. Its data is gone.
    pub fn stop(&mut self) {
        self.local.nodes_mut()[0].stop();
    }

    /// Starts the (first) server again on the same port, empty.
    pub fn restart(&mut self) {
        if let Err(e) = self.local.nodes_mut()[0].restart() {
            panic!("cannot restart the test Redis: {e}");
        }
    }

    /// The servers' logs, for assertion messages.
    pub fn logs(&self) -> String {
        self.local.log_tail()
    }
}

/// A store for `strategy` with no processing delay.
pub async fn store(redis: &Redis, strategy: Strategy) -> RedisJourneyStore {
    store_with(redis, StoreConfig::new(strategy)).await
}

/// A store with a custom configuration.
pub async fn store_with(redis: &Redis, config: StoreConfig) -> RedisJourneyStore {
    RedisJourneyStore::new(redis.clone(), &config)
        .await
        .unwrap()
}

/// A store with a processing delay between read and write.
pub async fn store_delayed(
    redis: &Redis,
    strategy: Strategy,
    delay: Duration,
) -> RedisJourneyStore {
    store_with(
        redis,
        StoreConfig {
            processing_delay: delay,
            ..StoreConfig::new(strategy)
        },
    )
    .await
}

/// A process-unique journey id with a readable prefix.
pub fn unique_id(prefix: &str) -> JourneyId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    JourneyId::parse(format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))).unwrap()
}

/// The segment id of segment `i` of a fixture journey.
pub fn segment_id(i: usize) -> SegmentId {
    flyrtech_lab::compare::synthetic_segment_id(i).unwrap()
}

/// A confirmed journey with `segments` scheduled segments, the lab's synthetic journey.
pub fn journey(id: &JourneyId, segments: usize) -> Journey {
    flyrtech_lab::compare::synthetic_journey(id, segments).unwrap()
}

/// The sample data shipped in `data/journeys.json`.
pub fn sample_journeys_json() -> &'static str {
    include_str!("../../../data/journeys.json")
}

/// The first sample journey (`JRN-001`) as JSON, under another id: a body for
/// `POST /api/journeys`.
pub fn sample_journey(id: &str) -> serde_json::Value {
    let mut journeys: serde_json::Value =
        serde_json::from_str(sample_journeys_json()).expect("the sample journeys are valid JSON");
    let mut journey = journeys["journeys"][0].take();
    journey["id"] = serde_json::Value::from(id);
    journey
}

/// `serve`'s settings for tests: `redis_url`, port 0, the sample journeys seeded, every other
/// setting its default.
pub fn serve_config(redis_url: &str, store: StoreConfig) -> ServeSettings {
    ServeSettings {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        redis_url: Some(redis_url.to_owned()),
        store,
        seed: Seed::Sample,
        // The suite drives load from one address; the rate limit has tests of its own (security).
        rate_limit: None,
        ..ServeSettings::default()
    }
}

/// The HTTP API running in-process on a free loopback port.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub base: String,
    /// What seeding did at start-up.
    pub seeded: flyrtech_infrastructure::SeedReport,
    /// The client its request helpers send with ([`http_client`]).
    pub client: reqwest::Client,
    in_flight: Arc<AtomicUsize>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    /// Serves `strategy` on `redis_url` with the sample journeys.
    pub async fn start(redis_url: &str, strategy: Strategy) -> Self {
        Self::start_with(serve_config(redis_url, StoreConfig::new(strategy))).await
    }

    /// Serves with custom settings (their `redis_url` is required).
    pub async fn start_with(settings: ServeSettings) -> Self {
        let url = settings
            .redis_url
            .clone()
            .expect("the settings name a Redis");
        let app = Application::build(settings, &url).await.unwrap();
        let base = format!("http://{}", app.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (seeded, in_flight) = (app.seeded(), app.in_flight());
        let task = tokio::spawn(app.run(async move {
            // A dropped sender also means stop.
            let _ = rx.await;
        }));
        Self {
            base,
            seeded,
            client: http_client(),
            in_flight,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// `base` + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// A request to `path`, for what the typed helpers below do not cover (keys, headers).
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client.request(method, self.url(path))
    }

    /// GETs `path` and decodes the JSON body, whatever the status.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        get_json(&self.client, self.url(path)).await
    }

    /// PUTs `{"status": status}` to `path` (a journey's or a segment's status route): the
    /// answer's status and its decoded body (`Null` when it has none).
    pub async fn put_status(
        &self,
        path: &str,
        status: &str,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let body = serde_json::json!({ "status": status });
        answer(self.request(reqwest::Method::PUT, path).json(&body)).await
    }

    /// POSTs `body` as JSON to `path`: the answer's status and its decoded body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        answer(self.request(reqwest::Method::POST, path).json(body)).await
    }

    /// Requests being handled right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Asks the server to stop and returns a handle that resolves when it has finished every
    /// request in flight.
    pub fn begin_stop(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }

    /// Stops gracefully and waits.
    pub async fn stop(mut self) {
        self.begin_stop().await.unwrap().unwrap();
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// An HTTP client for the tests: loopback only, generous timeout so a hang fails loudly.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

/// A client that opens a new connection for every request: for tests that send requests the
/// server refuses before reading their body (413), after which it closes the connection; a
/// pooled client could pick that closing connection for the next request.
pub fn unpooled_http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Sends `request`: the answer's status and its decoded JSON body (`Null` when it has none).
async fn answer(request: reqwest::RequestBuilder) -> (reqwest::StatusCode, serde_json::Value) {
    let response = request.send().await.unwrap();
    let status = response.status();
    let body = response.bytes().await.unwrap();
    (
        status,
        serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
    )
}

/// GETs `url` and decodes the JSON body, whatever the status.
pub async fn get_json(client: &reqwest::Client, url: impl reqwest::IntoUrl) -> serde_json::Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// The text of `server`'s `/metrics`, fetched with `client` (whose address may matter: the
/// per-client connection share counts it).
pub async fn metrics(client: &reqwest::Client, server: &TestServer) -> String {
    let response = client.get(server.url("/metrics")).send().await.unwrap();
    response.text().await.unwrap()
}

/// The cluster primary that holds keys matching `pattern` (a `KEYS` glob): the node a
/// failover test kills to take some of the run's journeys with it.
pub fn primary_holding<'a>(
    nodes: &'a [flyrtech_infrastructure::RedisProcess],
    pattern: &str,
) -> &'a flyrtech_infrastructure::RedisProcess {
    nodes
        .iter()
        .find(|n| {
            n.raw_command("INFO replication")
                .is_ok_and(|i| i.contains("role:master"))
                && n.raw_command(&format!("KEYS {pattern}"))
                    .is_ok_and(|r| !r.starts_with("*0"))
        })
        .unwrap_or_else(|| panic!("no primary holds a key matching {pattern}"))
}

/// `process` paused (SIGSTOP) until the answer is dropped (SIGCONT), so that a failing test
/// does not leave it stopped: a host that went silent without closing its connections.
pub fn paused(process: &flyrtech_infrastructure::RedisProcess) -> Paused<'_> {
    process.signal("STOP").expect("SIGSTOP sent");
    Paused(process)
}

/// A process [`paused`] until this is dropped.
#[derive(Debug)]
pub struct Paused<'a>(&'a flyrtech_infrastructure::RedisProcess);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        let _ = self.0.signal("CONT");
    }
}

/// Polls `check` every 20 ms until it returns true, for at most `limit`; panics with `what`.
pub async fn poll_until<F, Fut>(limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gave up after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The instant tests apply changes at, unless they say otherwise.
pub fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2026-11-21T08:00:00.000Z")
        .unwrap()
        .to_utc()
}

/// [`Journey::apply`] at [`t0`], for tests of the domain rules.
pub trait ApplyNow {
    /// Applies `change` at [`t0`].
    fn apply_now(
        &mut self,
        change: &flyrtech_core::StatusChange,
    ) -> Result<flyrtech_core::Applied, flyrtech_core::DomainError>;
}

impl ApplyNow for Journey {
    fn apply_now(
        &mut self,
        change: &flyrtech_core::StatusChange,
    ) -> Result<flyrtech_core::Applied, flyrtech_core::DomainError> {
        self.apply(change, t0())
    }
}

/// The envelopes in the outbox for one journey, oldest first (pending publication).
pub async fn outbox_entries(redis: &Redis, id: &JourneyId) -> Vec<flyrtech_core::Envelope> {
    flyrtech_infrastructure::events::read_stream(
        redis,
        &flyrtech_infrastructure::keys::journey_outbox(id),
    )
    .await
    .unwrap()
    .into_iter()
    .filter_map(
        |(entry, f)| match flyrtech_infrastructure::store::outbox::decode(&f) {
            Ok(envelope) => (envelope.journey_id == *id).then_some(envelope),
            // The shard holds other journeys' entries too: only one of this journey's must
            // decode.
            Err(e) if f.values().any(|v| v.contains(id.as_str())) => {
                panic!("entry {entry} does not decode: {e}")
            }
            Err(_) => None,
        },
    )
    .collect()
}

/// Every envelope on a bus stream, oldest first.
pub async fn bus(redis: &Redis, stream: &str) -> Vec<flyrtech_core::Envelope> {
    flyrtech_infrastructure::events::publisher::read_bus(redis, stream)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect()
}

/// Drains the outbox to the bus (the library's relay, in this process), audits `ids` and asserts
/// that nothing acknowledged is missing from the state (no lost update, no version gap); returns
/// how many changes were published.
pub async fn assert_audit_clean(redis_url: &str, strategy: Strategy, ids: &[JourneyId]) -> u64 {
    use flyrtech_infrastructure::events::publisher::RedisStreamPublisher;
    use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
    let redis = Redis::connect(&RedisSettings::new(redis_url))
        .await
        .unwrap();
    let publisher =
        RedisStreamPublisher::new(redis.clone(), flyrtech_infrastructure::keys::EVENTS, None);
    let relay = Relay::new(redis, publisher, RelaySettings::new())
        .await
        .unwrap();
    relay.drain().await.unwrap();
    let audit = flyrtech_lab::compare::audit::audit_published(redis_url, strategy, ids)
        .await
        .unwrap();
    assert_eq!(
        (audit.lost_updates, audit.version_gaps),
        (0, 0),
        "{audit:?}"
    );
    audit.changes_published
}

/// Starts a service for a test, or, when its program is not installed on a developer's machine,
/// says so and answers `None` (the test returns early). Under CI (`CI` set) a missing program
/// fails the test: CI installs NATS and PostgreSQL (`.ci/run`), so there every test runs.
pub fn service<T>(
    what: &str,
    start: impl FnOnce() -> Result<T, flyrtech_infrastructure::LaunchError>,
) -> Option<T> {
    match start() {
        Ok(service) => Some(service),
        Err(e @ flyrtech_infrastructure::LaunchError::NotInstalled { .. })
            if std::env::var_os("CI").is_none() =>
        {
            eprintln!("SKIPPED: this test needs {what}: {e}");
            None
        }
        Err(e) => panic!("cannot start {what}: {e}"),
    }
}

/// A private `nats-server -js` (see [`service`]).
pub fn nats() -> Option<flyrtech_infrastructure::LocalNats> {
    service("nats-server", flyrtech_infrastructure::LocalNats::start)
}

/// A private PostgreSQL (see [`service`]).
pub fn postgres() -> Option<flyrtech_infrastructure::LocalPostgres> {
    service("PostgreSQL", flyrtech_infrastructure::LocalPostgres::start)
}

/// The change `version` of `id`: its journey status from `InProgress` to `to`, one event.
pub fn change_of(
    id: &JourneyId,
    version: u64,
    to: flyrtech_core::JourneyStatus,
) -> flyrtech_core::Envelope {
    flyrtech_core::Envelope::new(vec![flyrtech_core::DomainEvent {
        id: flyrtech_core::EventId::new(),
        journey_id: id.clone(),
        version: flyrtech_core::JourneyVersion::new(version),
        occurred_at: t0(),
        kind: flyrtech_core::EventKind::JourneyStatusChanged {
            from: flyrtech_core::JourneyStatus::InProgress,
            to,
        },
    }])
    .unwrap()
}

/// How many of `spans` (send, answer) were in flight at one instant, at most: a concurrency
/// test's evidence that its requests did overlap rather than run one after another.
pub fn max_overlap(spans: &[(std::time::Instant, std::time::Instant)]) -> usize {
    let mut edges: Vec<(std::time::Instant, i32)> = spans
        .iter()
        .flat_map(|(start, end)| [(*start, 1), (*end, -1)])
        .collect();
    // At equal instants an answer before a send: touching spans do not overlap.
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in edges {
        now += delta;
        most = most.max(now);
    }
    usize::try_from(most).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    #[test]
    fn overlap_counts_what_is_in_flight_together() {
        let t = Instant::now();
        let at = |ms: u64| t + Duration::from_millis(ms);
        assert_eq!(super::max_overlap(&[]), 0);
        // One after another (touching): never two at once.
        assert_eq!(super::max_overlap(&[(at(0), at(5)), (at(5), at(9))]), 1);
        assert_eq!(
            super::max_overlap(&[
                (at(0), at(10)),
                (at(2), at(4)),
                (at(3), at(12)),
                (at(11), at(13))
            ]),
            3
        );
    }
}
