//! The binary as a user runs it: a private redis-server when no URL is configured, clear errors
//! for a missing redis-server and for bad configuration.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn flyrtech() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flyrtech"));
    for var in [
        "FLYRTECH_REDIS_URL",
        "REDIS_URL",
        "FLYRTECH_STRATEGY",
        "FLYRTECH_CONFIG",
        "FLYRTECH_PROCESSING_DELAY_MS",
        "FLYRTECH_LISTEN",
        "FLYRTECH_SEED_FILE",
        "FLYRTECH_LOCK_URLS",
        "FLYRTECH_REQUEST_TIMEOUT_MS",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0");
    cmd
}

#[test]
fn compare_starts_its_own_redis_and_reports_the_incident() {
    let out = flyrtech()
        .args([
            "compare",
            "--strategies",
            "naive,hash",
            "--scenario",
            "incident",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("started a private redis-server"),
        "{stderr}"
    );
    let naive = stdout
        .lines()
        .find(|l| l.starts_with("naive (incident):"))
        .unwrap();
    assert!(
        !naive.ends_with(" 0 lost"),
        "the control lost nothing: {naive}"
    );
    assert!(
        stdout.contains("hash (incident): 20 of 20 updates acknowledged (20 changes), 0 lost"),
        "{stdout}"
    );
    // The table fits a 120-column terminal, and lists no target this run did not measure.
    let widest = stdout.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    assert!(widest <= 120, "{widest} columns:\n{stdout}");
    assert!(!stdout.contains("not run"), "{stdout}");
    assert!(
        stdout.contains("p99 ms") && !stdout.contains("lock wait ms"),
        "{stdout}"
    );
}

#[test]
fn the_configured_strategy_is_the_one_compared() {
    let out = flyrtech()
        .args(["compare", "--writers", "4"])
        .env("FLYRTECH_STRATEGY", "lua")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("lua (incident): 4 of 4 updates acknowledged (4 changes), 0 lost"),
        "{stdout}"
    );
    assert!(!stdout.contains("naive ("), "{stdout}");
}

#[test]
fn a_missing_redis_server_is_one_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let out = flyrtech()
        .args(["compare", "--strategies", "naive"])
        .env("PATH", empty.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("`redis-server` was not found on PATH"),
        "{stderr}"
    );
    assert!(stderr.contains("apt-get install redis-server"), "{stderr}");
    assert!(stderr.contains("REDIS_URL"), "{stderr}");
}

/// An expected failure reads like a CLI's error whatever `RUST_BACKTRACE` says: one `error:`
/// line with its causes, no stack backtrace, exit status 1.
#[test]
fn an_operator_error_is_one_line_without_a_backtrace() {
    let out = flyrtech()
        .args(["--redis-url", "redis://127.0.0.1:1", "audit"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(errors[0].contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("backtrace"), "{stderr}");
    assert!(!stderr.contains("Stack"), "{stderr}");
}

#[test]
fn an_unknown_strategy_lists_the_valid_ones() {
    let out = flyrtech()
        .args(["compare", "--strategy", "fastest"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("valid strategies: naive, local-lock, optimistic, redlock, lua, hash"),
        "{stderr}"
    );
}

/// A running `flyrtech serve`, read until it listens.
struct Serving {
    child: std::process::Child,
    addr: String,
    redis_port: u16,
    log: String,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Serving {
    /// Starts `flyrtech serve ARGS --listen 127.0.0.1:0` on a private redis-server and reads its
    /// log until it says where it listens (bounded by the lines it prints).
    fn start(args: &[&str]) -> Self {
        let mut serving = Self::start_with(args, &[]);
        serving.redis_port = serving
            .log
            .split("url=redis://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        serving
    }

    /// Starts `flyrtech serve ARGS --listen 127.0.0.1:0` with `env` and reads its log until it
    /// says where it listens.
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = flyrtech()
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited before listening:\n{log}"
            );
            log.push_str(&line);
            if line.contains("serving the journey API") {
                let addr = line.split("addr=").nth(1).unwrap();
                break addr.split_whitespace().next().unwrap().to_owned();
            }
        };
        Self {
            child,
            addr,
            redis_port: 0,
            log,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit status and the whole log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        self.log.push_str(&rest);
        (status, self.log)
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Whether anything answers on the loopback port.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
}

/// Polls (bounded) until nothing listens on `port`; false when something still does.
async fn gone_within(port: u16, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while listening(port) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// `flyrtech serve` as an operator runs it: a private redis-server, the sample journeys, the
/// chosen strategy, and on SIGTERM a graceful stop that also stops the private server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_until_sigterm_and_cleans_up() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let serving = Serving::start(&["--strategy", "hash", "--data-dir", dir]);
    let client = http();
    let get = |path: String| {
        let request = client.get(path).send();
        async move {
            request
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let ready = get(serving.url("/ready")).await;
    assert_eq!(ready["strategy"], "hash");
    let ids = get(serving.url("/api/journeys")).await;
    assert_eq!(ids["count"], 3, "the sample journeys are seeded: {ids}");

    let port = serving.redis_port;
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
    assert!(log.contains("all in-flight requests finished"), "{log}");
    // The private redis-server went with it, and left its AOF behind.
    assert!(
        !listening(port),
        "the private redis-server on {port} is still running"
    );
    assert!(data.path().join("appendonlydir").is_dir(), "{log}");
}

/// The embedded default persists: `serve` SIGKILLed right after acknowledging an update takes
/// its redis-server with it (no orphan), and the next `serve` on the same data directory serves
/// the update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_killed_on_its_embedded_redis_loses_nothing_and_leaves_no_orphan() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap();
    let mut first = Serving::start(&["--strategy", "lua", "--data-dir", dir]);
    let client = http();
    let put = client
        .put(first.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .json(&serde_json::json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    first.child.kill().unwrap(); // SIGKILL: no graceful anything
    first.child.wait().unwrap();
    assert!(
        gone_within(first.redis_port, std::time::Duration::from_secs(10)).await,
        "the private redis-server on {} outlived serve",
        first.redis_port
    );

    let second = Serving::start(&["--strategy", "lua", "--data-dir", dir]);
    assert!(second.log.contains("created=0 kept=3"), "{}", second.log);
    let journey: serde_json::Value = client
        .get(second.url("/api/journeys/JRN-001"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(journey["segments"][0]["status"], "Departed", "{journey}");
    assert_eq!(journey["version"], 1);
    let (status, log) = second.terminate();
    assert!(status.success(), "{log}");
}

/// A redis-server left running in the data directory (as where setpriv is missing) is shut down
/// by the next `serve`, which then serves what it had written; a second `serve` on a directory
/// in use is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_server_in_the_data_dir_is_shut_down_and_its_data_kept() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().canonicalize().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut leftover = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
        ])
        .args(["--appendonly", "yes", "--dir"])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(dir.join("redis.port"), port.to_string()).unwrap();
    let redis = loop {
        if let Ok(redis) = flyrtech_infrastructure::Redis::connect(
            &flyrtech_infrastructure::RedisSettings::new(format!("redis://127.0.0.1:{port}")),
        )
        .await
        {
            break redis;
        }
        assert!(
            leftover.try_wait().unwrap().is_none(),
            "the leftover server exited"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let () = redis::cmd("SET")
        .arg("written-before")
        .arg("kept")
        .query_async(&mut redis.shared())
        .await
        .unwrap();

    let serving = Serving::start(&["--data-dir", dir.to_str().unwrap()]);
    assert!(serving.log.contains("shutting it down"), "{}", serving.log);
    assert!(
        leftover.wait().unwrap().success(),
        "SHUTDOWN ends it cleanly"
    );
    let now =
        flyrtech_infrastructure::Redis::connect(&flyrtech_infrastructure::RedisSettings::new(
            format!("redis://127.0.0.1:{}", serving.redis_port),
        ))
        .await
        .unwrap();
    let kept: Option<String> = redis::cmd("GET")
        .arg("written-before")
        .query_async(&mut now.shared())
        .await
        .unwrap();
    assert_eq!(kept.as_deref(), Some("kept"));

    let refused = flyrtech()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("in use by another flyrtech serve"),
        "{stderr}"
    );
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
}

/// A Redis that may evict journeys (maxmemory-policy allkeys-*) is refused by `serve` and
/// `relay` with the setting and the fix named, unless --allow-eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_may_evict_journeys_is_refused() {
    let (_local, url, redis) = private_redis().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    for command in [
        &["serve", "--listen", "127.0.0.1:0"][..],
        &["relay", "--drain"][..],
    ] {
        let out = flyrtech()
            .args(["--redis-url", &url])
            .args(command)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{command:?}: {stderr}");
        for needle in [
            "maxmemory-policy allkeys-lru",
            "noeviction",
            "--allow-eviction",
        ] {
            assert!(
                stderr.contains(needle),
                "{command:?}: {needle} missing: {stderr}"
            );
        }
    }
    let allowed = flyrtech()
        .args(["--redis-url", &url, "--allow-eviction", "relay", "--drain"])
        .output()
        .unwrap();
    assert!(
        allowed.status.success(),
        "{}",
        String::from_utf8_lossy(&allowed.stderr)
    );
}

/// `flyrtech relay` killed with SIGKILL in the middle of a batch (published, not yet
/// acknowledged), then a fresh relay: every change reaches the bus at least once, the
/// republished ones are counted as duplicates and absorbed by the consumer, and `flyrtech audit`
/// finds the published history and the stored journeys in agreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_republishes_after_restart() {
    use flyrtech_core::consumer::{Consumer, StatusHistory};
    use flyrtech_infrastructure::plumbing::keys::{self, Partition};

    let local = flyrtech_infrastructure::LocalRedis::standalone().unwrap();
    let url = local.url();
    let (journeys, changes) = (30, 4);
    let (redis, ids) = journeys_with_changes(&url, "KILL", journeys, changes).await;
    let total = (journeys * changes) as u64;
    let relay_args = |consumer: &str| {
        [
            "--redis-url",
            &url,
            "relay",
            "--batch",
            "16",
            "--parallel",
            "1",
            "--claim-idle-ms",
            "200",
            "--lease-ms",
            "300",
            "--consumer",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([consumer.to_owned()])
        .collect::<Vec<_>>()
    };
    let mut doomed = flyrtech()
        .args(relay_args("doomed"))
        .args(["--publish-delay-ms", "10000"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Poll (bounded) until the first batch is on the bus: the relay now waits before acking it.
    let bus_len = || {
        let redis = redis.clone();
        async move {
            redis::cmd("XLEN")
                .arg(keys::EVENTS)
                .query_async::<u64>(&mut redis.shared())
                .await
                .unwrap()
        }
    };
    let mut published = 0;
    for _ in 0..2000 {
        published = bus_len().await;
        if published > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(published > 0, "the relay never published");
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let mut pending = 0;
    for p in Partition::all() {
        let (count, ..): (u64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
            .arg(p.outbox())
            .arg("relay")
            .query_async(&mut redis.shared())
            .await
            .unwrap();
        pending += count;
    }
    assert!(
        pending > 0,
        "killed mid-batch: published entries are still pending"
    );

    let out = flyrtech()
        .args(relay_args("survivor"))
        .arg("--drain")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bus = flyrtech_infrastructure::events::publisher::read_bus(&redis, keys::EVENTS)
        .await
        .unwrap();
    let mut consumer = Consumer::new(StatusHistory::default());
    for (_, envelope) in bus {
        consumer.receive(envelope);
    }
    let stats = consumer.stats();
    assert_eq!(stats.applied, total, "every change reached the bus");
    assert!(
        stats.duplicates > 0,
        "the unacknowledged batch was published again"
    );
    assert_eq!(stats.delivered, total + stats.duplicates);
    for id in &ids {
        let history = &consumer.projection().journeys[id];
        assert_eq!(history.versions.len(), changes);
        assert!(history.last_status.values().all(|s| *s == "Delayed"));
    }

    let audit = flyrtech()
        .args(["--redis-url", &url, "--strategy", "lua", "audit"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&audit.stdout);
    assert!(audit.status.success(), "{stdout}");
    assert!(stdout.contains("lost updates"), "{stdout}");
}

/// A private redis-server, its URL, and a connection handle on it.
async fn private_redis() -> (
    flyrtech_infrastructure::LocalRedis,
    String,
    flyrtech_infrastructure::Redis,
) {
    let local = flyrtech_infrastructure::LocalRedis::standalone().unwrap();
    let url = local.url();
    let redis = flyrtech_infrastructure::Redis::connect(
        &flyrtech_infrastructure::RedisSettings::new(url.clone()),
    )
    .await
    .unwrap();
    (local, url, redis)
}

/// Counts a Redis command's calls so far (`INFO commandstats`).
async fn calls(redis: &flyrtech_infrastructure::Redis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// `flyrtech migrate` SIGKILLed part-way, then run again: every journey ends in the new layout
/// exactly once, unchanged, and a third run has nothing to do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_migration_killed_part_way_finishes_when_run_again() {
    use flyrtech_core::{JourneyId, JourneyStore};
    use flyrtech_infrastructure::{RedisJourneyStore, StoreConfig, Strategy};
    use futures::StreamExt;

    let (_local, url, redis) = private_redis().await;
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Lua))
        .await
        .unwrap();
    flyrtech_infrastructure::dataset::admit(&redis, Strategy::Lua)
        .await
        .unwrap();
    let total = 5_000;
    let ids: Vec<JourneyId> = (0..total)
        .map(|n| JourneyId::parse(format!("MOVE-{n}")).unwrap())
        .collect();
    let journeys: Vec<_> = ids
        .iter()
        .map(|id| flyrtech_api::lab::synthetic_journey(id, 3).unwrap())
        .collect();
    futures::stream::iter(&journeys)
        .for_each_concurrent(64, |j| {
            let store = &store;
            async move { store.create(j).await.unwrap() }
        })
        .await;

    let migrate = || {
        let mut cmd = flyrtech();
        cmd.args(["--redis-url", &url, "migrate", "--to", "hash"]);
        cmd
    };
    let mut doomed = migrate()
        .args(["--concurrency", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Each conversion deletes its source: poll (bounded) until a few hundred have happened.
    let mut converted = 0;
    for _ in 0..3000 {
        converted = calls(&redis, "del").await;
        if converted >= 200 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert!(converted >= 200, "the migration never started converting");
    doomed.kill().unwrap(); // SIGKILL
    doomed.wait().unwrap();
    let mut in_hash = 0;
    for id in &ids {
        let (document, hash): (bool, bool) = redis::pipe()
            .exists(flyrtech_infrastructure::plumbing::keys::journey_document(
                id,
            ))
            .exists(flyrtech_infrastructure::plumbing::keys::journey_hash(id))
            .query_async(&mut redis.shared())
            .await
            .unwrap();
        assert!(document != hash, "{id}: in both layouts or in neither");
        in_hash += usize::from(hash);
    }
    assert!(in_hash < total, "killed too late: everything was converted");

    let out = migrate().output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "{total} listed; {} converted, {in_hash} already there",
            total - in_hash
        )),
        "{stdout}"
    );
    let hash = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Hash))
        .await
        .unwrap();
    for j in &journeys {
        assert_eq!(&hash.get(&j.id).await.unwrap(), j);
    }
    let again = migrate().output().unwrap();
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("0 converted, {total} already there")),
        "{stdout}"
    );
    // The old layout's strategies are now refused, with the way back named.
    let refused = flyrtech()
        .args([
            "--redis-url",
            &url,
            "--strategy",
            "lua",
            "serve",
            "--listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("flyrtech migrate --to document"),
        "{stderr}"
    );
}

/// `flyrtech import-legacy`: exit status 3 and each skipped journey named when something could
/// not be imported, 0 once everything is in (kept journeys count as in).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_legacy_reports_what_it_skipped_in_its_exit_status() {
    let (_local, url, redis) = private_redis().await;
    let good = r#"{"Id":"OLD-1","PassengerName":"A B","PassengerEmail":"a@b.c","BookingDate":"2025-12-01T10:30:00Z","Status":"Confirmed","TotalPrice":850.50,"Segments":[],"Metadata":{}}"#;
    let () = redis::pipe()
        .set("journey:OLD-1", good)
        .ignore()
        .set("journey:OLD-2", "not json")
        .ignore()
        .set("journey:ids", r#"["OLD-1","OLD-2"]"#)
        .ignore()
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let import = |extra: &[&str]| {
        flyrtech()
            .args(["--redis-url", &url, "--strategy", "hash", "import-legacy"])
            .args(extra)
            .output()
            .unwrap()
    };
    let dry = import(&["--dry-run"]);
    let stdout = String::from_utf8_lossy(&dry.stdout);
    assert_eq!(dry.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("would import 1 in the hash layout"),
        "{stdout}"
    );

    let first = import(&[]);
    let stdout = String::from_utf8_lossy(&first.stdout);
    assert_eq!(first.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("imported 1 in the hash layout, 0 kept"),
        "{stdout}"
    );
    assert!(
        stdout.contains("skipped OLD-2: not a journey document"),
        "{stdout}"
    );

    let () = redis::cmd("SET")
        .arg("journey:OLD-2")
        .arg(good.replace("OLD-1", "OLD-2"))
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let second = import(&[]);
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert_eq!(second.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("imported 1 in the hash layout, 1 kept"),
        "{stdout}"
    );
}

/// `flyrtech relay --bus` into JetStream, then `flyrtech project` SIGKILLed part-way and run
/// again: the projection ends equal to one application of each change, and `flyrtech audit
/// --projection` agrees with the stored journeys (exit 0), until the projection is tampered
/// with (exit 1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_killed_part_way_ends_with_each_change_applied_once() {
    let Some(rig) = ProjectionRig::relayed("PROJ", 200, 5, &[]).await else {
        return;
    };
    let (bus, db, total) = (rig.bus.as_str(), rig.db.as_str(), rig.total);

    let project = |extra: &[&str]| {
        let mut cmd = flyrtech();
        cmd.args(["project", "--bus", bus, "--postgres", db, "--batch", "4"])
            .args(["--ack-wait-ms", "1000"])
            .args(extra);
        cmd
    };
    let client = &rig.client;
    let sum = |sql: &'static str| rig.count(sql);
    let mut doomed = project(&[])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut projected = 0;
    for _ in 0..3000 {
        projected = sum(POSITIONS).await;
        if projected > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    doomed.kill().unwrap(); // SIGKILL, wherever it is
    doomed.wait().unwrap();
    assert!(
        projected > 0 && projected < total,
        "killed part-way: {projected} of {total} projected"
    );

    let finished = project(&["--drain"]).output().unwrap();
    assert!(
        finished.status.success(),
        "{}",
        String::from_utf8_lossy(&finished.stderr)
    );
    rig.assert_projected_once().await;

    client
        .execute(
            "UPDATE projected_segments SET status = 'Boarding' WHERE journey_id = 'PROJ-7'",
            &[],
        )
        .await
        .unwrap();
    let dirty = rig.audit();
    assert_eq!(
        dirty.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&dirty.stdout)
    );
    assert!(
        String::from_utf8_lossy(&dirty.stdout).contains("journey PROJ-7 segment"),
        "{}",
        String::from_utf8_lossy(&dirty.stdout)
    );
}

/// Three `flyrtech project` share one partitioned stream (issue 27): each takes partitions of
/// its own, and when one is SIGKILLed part-way the other two take its partitions over and finish
/// the projection without it; started again later, it finds nothing left. The projection ends
/// equal to one application of each change, every journey's versions applied in order (no
/// version committed after a later one), nothing held, and `audit --projection` exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projectors_share_the_partitions_and_take_over_from_a_killed_one() {
    // Enough changes, applied one per transaction, that the three are still at work when one
    // is killed.
    let Some(rig) = ProjectionRig::relayed("SHARE", 500, 4, &["--partitions", "6"]).await else {
        return;
    };
    let (url, bus, db, total) = (
        rig.url.as_str(),
        rig.bus.as_str(),
        rig.db.as_str(),
        rig.total,
    );
    // Another count on the same stream is refused, and says why.
    let refused = flyrtech()
        .args(["--redis-url", url, "relay", "--drain", "--bus", bus])
        .args(["--partitions", "4"])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("records 6"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );

    let logs = tempfile::tempdir().unwrap();
    // Projector 1 serves its metrics.
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let project = |n: usize| {
        let log = std::fs::File::create(logs.path().join(format!("projector-{n}.log"))).unwrap();
        let mut cmd = flyrtech();
        cmd.args(["project", "--bus", bus, "--postgres", db, "--batch", "1"])
            .args(["--ack-wait-ms", "1000"]);
        if n == 1 {
            cmd.args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")]);
        }
        cmd.stdout(Stdio::null()).stderr(log).spawn().unwrap()
    };
    let took = |n: usize| {
        std::fs::read_to_string(logs.path().join(format!("projector-{n}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("took a partition"))
            .count()
    };
    let sum = |sql: &'static str| rig.count(sql);
    let mut projectors: Vec<std::process::Child> = (0..3).map(project).collect();
    // All three hold partitions and the projection has begun before one is killed.
    let mut projected = 0;
    for _ in 0..6000 {
        projected = sum(POSITIONS).await;
        if projected > 0 && (0..3).all(|n| took(n) > 0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let log = |n: usize| {
        std::fs::read_to_string(logs.path().join(format!("projector-{n}.log"))).unwrap_or_default()
    };
    assert!(
        (0..3).all(|n| took(n) > 0),
        "every projector took a partition: {}\n{}\n{}",
        log(0),
        log(1),
        log(2)
    );
    projectors[0].kill().unwrap(); // SIGKILL, wherever it is
    projectors[0].wait().unwrap();
    assert!(
        projected > 0 && projected < total,
        "killed part-way: {projected} of {total} projected"
    );
    // The survivors finish: the dead one's partitions were taken over.
    for _ in 0..6000 {
        if sum(POSITIONS).await == total {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(sum(POSITIONS).await, total, "the survivors took over");
    let metrics = http()
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for name in [
        "projector_changes_total{outcome=\"applied\"}",
        "projector_owned_partitions",
        "projector_lag_seconds",
    ] {
        assert!(metrics.contains(name), "{name} missing:\n{metrics}");
    }
    assert!(
        took(1) + took(2) > 4,
        "6 partitions, 2 each, then the dead one's"
    );
    // Started again later, it finds the work done.
    let again = flyrtech()
        .args(["project", "--bus", bus, "--postgres", db, "--drain"])
        .output()
        .unwrap();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    for mut survivor in projectors.drain(1..) {
        survivor.kill().unwrap();
        survivor.wait().unwrap();
    }

    rig.assert_projected_once().await;
}

/// A private Redis, nats-server and PostgreSQL; journeys with changes in the outbox, relayed
/// into JetStream by `flyrtech relay --drain --bus` with `relay_args`.
struct ProjectionRig {
    _servers: (
        flyrtech_infrastructure::LocalRedis,
        flyrtech_infrastructure::LocalNats,
        flyrtech_infrastructure::LocalPostgres,
    ),
    url: String,
    bus: String,
    db: String,
    /// Changes relayed.
    total: i64,
    /// A session on the projection's database.
    client: tokio_postgres::Client,
}

/// The sum of the projection's positions: the changes applied.
const POSITIONS: &str = "SELECT COALESCE(sum(last_version), 0)::bigint FROM journey_positions";

impl ProjectionRig {
    /// `None` when NATS or PostgreSQL is missing outside CI (see [`service`]).
    async fn relayed(
        prefix: &str,
        journeys: usize,
        changes: usize,
        relay_args: &[&str],
    ) -> Option<Self> {
        use flyrtech_infrastructure::{LocalNats, LocalPostgres};
        let local = flyrtech_infrastructure::LocalRedis::standalone().unwrap();
        let nats = service("nats-server", LocalNats::start())?;
        let pg = service("PostgreSQL", LocalPostgres::start())?;
        let (url, bus, db) = (local.url(), nats.url(), pg.url());
        journeys_with_changes(&url, prefix, journeys, changes).await;
        let relayed = flyrtech()
            .args(["--redis-url", &url, "relay", "--drain", "--bus", &bus])
            .args(relay_args)
            .output()
            .unwrap();
        assert!(
            relayed.status.success(),
            "{}",
            String::from_utf8_lossy(&relayed.stderr)
        );
        let client = flyrtech_infrastructure::projection::connect(&db)
            .await
            .unwrap();
        Some(Self {
            _servers: (local, nats, pg),
            url,
            bus,
            db,
            total: i64::try_from(journeys * changes).unwrap(),
            client,
        })
    }

    /// `flyrtech audit --projection` of the rig's journeys.
    fn audit(&self) -> std::process::Output {
        flyrtech()
            .args(["--redis-url", &self.url, "--strategy", "lua", "audit"])
            .args(["--projection", &self.db])
            .output()
            .unwrap()
    }

    /// The projection holds each change once: positions, history and `processed_events` each
    /// equal to the changes relayed, nothing held, no journey's version committed after a later
    /// one, and `audit --projection` finds no difference (exit 0).
    async fn assert_projected_once(&self) {
        let total = self.total;
        assert_eq!(self.count(POSITIONS).await, total);
        assert_eq!(
            self.count("SELECT count(*) FROM status_history").await,
            total
        );
        assert_eq!(
            self.count("SELECT count(*) FROM processed_events").await,
            total
        );
        assert_eq!(self.count("SELECT count(*) FROM held_events").await, 0);
        let out_of_order = self
            .count(
                "SELECT count(*) FROM status_history a JOIN status_history b \
                 ON a.journey_id = b.journey_id AND a.version < b.version \
                 AND a.projected_at > b.projected_at",
            )
            .await;
        assert_eq!(out_of_order, 0, "a version was committed after a later one");
        let clean = self.audit();
        let stdout = String::from_utf8_lossy(&clean.stdout);
        assert_eq!(
            clean.status.code(),
            Some(0),
            "{stdout}{}",
            String::from_utf8_lossy(&clean.stderr)
        );
        assert!(stdout.contains("0 differences"), "{stdout}");
    }

    /// The one `bigint` that `sql` answers on the projection (0 before its tables exist).
    async fn count(&self, sql: &str) -> i64 {
        self.client
            .query_one(sql, &[])
            .await
            .map_or(0, |r| r.get::<_, i64>(0))
    }
}

/// Like the suite's own helper: a developer without NATS or PostgreSQL is told and the test
/// returns; CI installs both, and there a missing one fails.
fn service<T>(what: &str, started: Result<T, flyrtech_infrastructure::LaunchError>) -> Option<T> {
    match started {
        Err(e @ flyrtech_infrastructure::LaunchError::NotInstalled { .. })
            if std::env::var_os("CI").is_none() =>
        {
            eprintln!("SKIPPED: this test needs {what}: {e}");
            None
        }
        other => Some(other.unwrap()),
    }
}

/// `journeys` journeys `PREFIX-n` created through a `lua` store on `url`, each with `changes`
/// segments set to Delayed one by one (one outbox entry each).
async fn journeys_with_changes(
    url: &str,
    prefix: &str,
    journeys: usize,
    changes: usize,
) -> (
    flyrtech_infrastructure::Redis,
    Vec<flyrtech_core::JourneyId>,
) {
    use flyrtech_core::{JourneyId, JourneyStore, SegmentStatus};
    use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy};
    let redis = Redis::connect(&RedisSettings::new(url.to_owned()))
        .await
        .unwrap();
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Lua))
        .await
        .unwrap();
    let ids: Vec<JourneyId> = (0..journeys)
        .map(|n| JourneyId::parse(format!("{prefix}-{n}")).unwrap())
        .collect();
    for id in &ids {
        store
            .create(&flyrtech_api::lab::synthetic_journey(id, changes).unwrap())
            .await
            .unwrap();
        for s in 0..changes {
            let segment = flyrtech_api::lab::synthetic_segment_id(s).unwrap();
            store
                .update_segment_status(id, &segment, SegmentStatus::Delayed, None)
                .await
                .unwrap();
        }
    }
    (redis, ids)
}

/// `flyrtech soak` (issue 24, part 5) end to end, briefly: serve and the relay run as processes
/// of their own, the load is answered, every sample sees the processes and the stream, and the
/// chart is written. Its goals are judged by the real run (`just soak`), not here.
#[test]
fn a_short_soak_samples_serve_the_relay_and_redis() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("soak.json");
    let chart = dir.path().join("soak.svg");
    let out = flyrtech()
        .args([
            "soak",
            "--duration",
            "4s",
            "--sample-every",
            "1s",
            "--journeys",
            "40",
            "--connections",
            "4",
            "--bus-max-len",
            "1000",
            "--json",
            json.to_str().unwrap(),
            "--chart",
            chart.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: every goal met; 1: a goal not met in so short a run. Anything else is a failure.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "{:?}\n{stderr}",
        out.status
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(report["requests"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["failed_requests"], 0, "{report}");
    let samples = report["samples"].as_array().unwrap();
    assert!(samples.len() >= 4, "{report}");
    for sample in samples {
        assert!(sample["serve_rss_mb"].as_f64().unwrap() > 0.0, "{sample}");
        assert!(sample["relay_rss_mb"].as_f64().unwrap() > 0.0, "{sample}");
        assert!(
            sample["redis_used_memory_mb"].as_f64().unwrap() > 0.0,
            "{sample}"
        );
    }
    // The relay published what serve wrote.
    let last = samples.last().unwrap();
    assert!(last["events_stream"].as_u64().unwrap() > 0, "{last}");
    assert!(report["goals"].as_array().unwrap().len() >= 4, "{report}");
    assert!(dir.path().join("soak.png").exists());
    assert!(chart.exists());
}

/// Secrets never printed (issue 25): a Redis password in the URL appears in no line of a failed
/// start, of a running service's log and answers, or of a report's recorded command line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_password_is_never_printed() {
    const PASSWORD: &str = "pw-7f3a9c-secret";
    const WRONG: &str = "wrong-pw-1b2c3d";
    let (_local, url, redis) = private_redis().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg(PASSWORD)
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    let port = url.rsplit(':').next().unwrap().to_owned();
    let with = |pw: &str| format!("redis://:{pw}@127.0.0.1:{port}");

    // A wrong password: the start fails, naming the URL without it.
    let out = flyrtech()
        .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
        .env("FLYRTECH_REDIS_URL", with(WRONG))
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{printed}");
    assert!(!printed.contains(WRONG), "{printed}");
    assert!(
        printed.contains(&format!("redis://:***@127.0.0.1:{port}")),
        "{printed}"
    );

    // The right one: a running service, asked for its readiness, metrics, a missing journey and
    // a bad body; then stopped. Nothing it printed or answered holds the password.
    let serving = Serving::start_with(
        &["--no-seed"],
        &[
            ("FLYRTECH_REDIS_URL", &with(PASSWORD)),
            ("RUST_LOG", "debug"),
        ],
    );
    let client = http();
    let mut answers = String::new();
    for (method, path, body) in [
        ("GET", "/ready", None),
        ("GET", "/metrics", None),
        ("GET", "/api/journeys/JRN-404", None),
        ("PUT", "/api/journeys/JRN-404/status", Some("{not json")),
    ] {
        let url = serving.url(path);
        let request = match (method, body) {
            ("PUT", Some(body)) => client
                .put(url)
                .header("content-type", "application/json")
                .body(body),
            _ => client.get(url),
        };
        answers.push_str(&request.send().await.unwrap().text().await.unwrap());
    }
    let (_, log) = serving.terminate();
    assert!(log.contains("serving the journey API"), "{log}");
    assert!(!log.contains(PASSWORD), "{log}");
    assert!(!answers.contains(PASSWORD), "{answers}");

    // A report records its command line with the password replaced.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("backlog.json");
    let out = flyrtech()
        .args(["--redis-url", &with(PASSWORD), "backlog", "--entries", "50"])
        .args(["--journeys", "5", "--json", json.to_str().unwrap()])
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    let report = std::fs::read_to_string(&json).unwrap();
    assert!(!report.contains(PASSWORD), "{report}");
    assert!(report.contains("redis://:***@127.0.0.1"), "{report}");
    assert!(!printed.contains(PASSWORD), "{printed}");
}

/// Every way a start can fail prints no password (issue 32): URLs that do not parse (a password
/// with `/`, `?` and `#`), without a scheme, lists of seeds, a config file that is not TOML, an
/// unreachable server, a wrong password, TLS refused by a plain server, and a lock node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_start_up_failure_prints_a_password() {
    const PASSWORD: &str = "Sl/ash?Pw#991";
    let (_local, url, _redis) = private_redis().await;
    let port = url.rsplit(':').next().unwrap().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(
        &bad_toml,
        format!("redis_url = \"redis://:{PASSWORD}@127.0.0.1:{port}\nstrategy = \"lua\"\n"),
    )
    .unwrap();
    let cases: Vec<(&str, Vec<String>)> = vec![
        (
            "a URL that does not parse",
            vec![format!("--redis-url=redis://:{PASSWORD}@127.0.0.1:{port}")],
        ),
        (
            "no scheme",
            vec![format!("--redis-url=:{PASSWORD}@127.0.0.1:{port}")],
        ),
        (
            "seeds",
            vec![format!(
                "--redis-url=redis://:{PASSWORD}@127.0.0.1:1,redis://u:{PASSWORD}@127.0.0.1:2"
            )],
        ),
        (
            "a config file that is not TOML",
            vec![format!("--config={}", bad_toml.display())],
        ),
        (
            "unreachable",
            vec!["--redis-url=redis://:pw-unreachable-77@127.0.0.1:1".to_owned()],
        ),
        (
            "a wrong password",
            vec![format!("--redis-url=redis://:wrong-pw-88@127.0.0.1:{port}")],
        ),
        (
            "TLS refused",
            vec![format!("--redis-url=rediss://:tls-pw-99@127.0.0.1:{port}")],
        ),
        (
            "a lock node",
            vec![
                format!("--redis-url={url}"),
                "--strategy=redlock".to_owned(),
                format!("--lock-urls=redis://:{PASSWORD}@127.0.0.1:1"),
            ],
        ),
    ];
    for (what, args) in cases {
        let out = flyrtech()
            .args(&args)
            .args(["serve", "--listen", "127.0.0.1:0", "--no-seed"])
            .env_remove("FLYRTECH_REDIS_URL")
            .env_remove("REDIS_URL")
            .output()
            .unwrap();
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.status.success(), "{what}: {printed}");
        assert!(printed.contains("error: "), "{what}: {printed}");
        for secret in [
            PASSWORD,
            "Pw#991",
            "pw-unreachable-77",
            "wrong-pw-88",
            "tls-pw-99",
        ] {
            assert!(!printed.contains(secret), "{what}: {printed}");
        }
    }
}
