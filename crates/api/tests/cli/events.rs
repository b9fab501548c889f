//! The events pipeline as processes: a relay and projectors killed part-way, projectors sharing
//! the partitions, and each worker riding out a restart of what it depends on.

use super::*;

/// `flyrtech relay` killed with SIGKILL in the middle of a batch (published, not yet
/// acknowledged), then a fresh relay: every change reaches the bus at least once, the
/// republished ones are counted as duplicates and absorbed by the consumer, and `flyrtech audit`
/// finds the published history and the stored journeys in agreement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_killed_mid_batch_republishes_after_restart() {
    use flyrtech_core::consumer::{Consumer, StatusHistory};
    use flyrtech_infrastructure::keys::{self, OutboxShard};

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
    for p in OutboxShard::all() {
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
    assert!(
        stdout.contains(" 0 lost updates, 0 version gaps, 0 unpublished"),
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
    for _ in 0..3000 {
        if sum(POSITIONS).await > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    doomed.kill().unwrap(); // SIGKILL, wherever it is
    doomed.wait().unwrap();
    // Read after the kill: the kill landed part-way, not after the projector had finished.
    let projected = sum(POSITIONS).await;
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

/// Three `flyrtech project` share one partitioned stream: each takes partitions of
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
    let metrics_port = flyrtech_infrastructure::local::free_port(false).unwrap();
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
    for _ in 0..6000 {
        if sum(POSITIONS).await > 0 && (0..3).all(|n| took(n) > 0) {
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
    // Read after the kill: it landed part-way (the survivors have not finished either).
    let projected = sum(POSITIONS).await;
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

/// PostgreSQL stopped (fast shutdown, every session aborted) while `flyrtech project` applies a
/// stream of changes, then started again: the projector does not exit, its `/ready` answers
/// 503 naming PostgreSQL while it is down, and once it is back the projector joins again,
/// finishes, is ready, and every change is applied exactly once (`audit --projection`: 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projector_rides_out_a_postgres_restart() {
    let Some(mut rig) = ProjectionRig::relayed("PGR", 200, 5, &[]).await else {
        return;
    };
    let port = flyrtech_infrastructure::local::free_port(false).unwrap();
    let projector = Worker::start(
        flyrtech()
            .args([
                "project",
                "--bus",
                &rig.bus,
                "--postgres",
                &rig.db,
                "--batch",
                "4",
            ])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")]),
        port,
    );
    poll(60, "some changes projected", || async {
        rig.count(POSITIONS).await > 0
    })
    .await;

    rig.servers.2.stop();
    let down = projector.ready_until(503).await;
    assert!(down.contains("\"postgres\":{\"reachable\":false"), "{down}");
    projector.assert_running();

    rig.servers.2.start_again().unwrap();
    rig.reconnect().await;
    let total = rig.total;
    poll(120, "every change projected after the restart", || async {
        projector.assert_running();
        rig.count(POSITIONS).await == total
    })
    .await;
    projector.ready_until(200).await;
    projector.terminate();
    rig.assert_projected_once().await;
}

/// The same with two projectors sharing the stream's partitions: both lose their sessions (and
/// with them their partitions' leases) at once, both join again, and between them every change
/// is applied exactly once; nothing stays held behind a predecessor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_projectors_ride_out_a_postgres_restart() {
    let Some(mut rig) = ProjectionRig::relayed("PG2", 200, 5, &[]).await else {
        return;
    };
    let projectors: Vec<Worker> = (0..2)
        .map(|_| {
            let port = flyrtech_infrastructure::local::free_port(false).unwrap();
            Worker::start(
                flyrtech()
                    .args(["project", "--bus", &rig.bus, "--postgres", &rig.db])
                    .args(["--batch", "4"])
                    .args(["--metrics-listen", &format!("127.0.0.1:{port}")]),
                port,
            )
        })
        .collect();
    poll(60, "some changes projected", || async {
        rig.count(POSITIONS).await > 0
    })
    .await;

    rig.servers.2.stop();
    for projector in &projectors {
        let down = projector.ready_until(503).await;
        assert!(down.contains("\"postgres\":{\"reachable\":false"), "{down}");
    }
    rig.servers.2.start_again().unwrap();
    rig.reconnect().await;
    let total = rig.total;
    poll(120, "every change projected after the restart", || async {
        for projector in &projectors {
            projector.assert_running();
        }
        rig.count(POSITIONS).await == total
    })
    .await;
    for projector in projectors {
        projector.ready_until(200).await;
        projector.terminate();
    }
    rig.assert_projected_once().await;
}

/// nats-server killed while `flyrtech relay` publishes and journeys keep changing, then started
/// again on its store: the relay does not exit, its `/ready` answers 503 naming NATS while it is
/// down, and once it is back it publishes everything: projected, the bus agrees with the store
/// (`audit --projection`: 0 differences).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_rides_out_a_nats_restart() {
    use flyrtech_core::{JourneyStore, SegmentStatus};
    let Some(mut nats) = service("nats-server", flyrtech_infrastructure::LocalNats::start) else {
        return;
    };
    let local = flyrtech_infrastructure::LocalRedis::standalone().unwrap();
    let url = local.url();
    let (redis, ids) = journeys_with_changes(&url, "NRR", 50, 2).await;
    let port = flyrtech_infrastructure::local::free_port(false).unwrap();
    let relay = Worker::start(
        flyrtech()
            .args(["--redis-url", &url, "relay", "--bus", &nats.url()])
            .args(["--metrics-listen", &format!("127.0.0.1:{port}")]),
        port,
    );
    relay.ready_until(200).await;

    nats.stop();
    // Changes made while the bus is gone wait in the outbox.
    let store = flyrtech_infrastructure::RedisJourneyStore::new(
        redis.clone(),
        &flyrtech_infrastructure::StoreConfig::new(flyrtech_infrastructure::Strategy::Lua),
    )
    .await
    .unwrap();
    for id in &ids {
        store
            .update_segment_status(
                id,
                &flyrtech_tests::segment_id(0),
                SegmentStatus::Boarding,
                None,
            )
            .await
            .unwrap();
    }
    let down = relay.ready_until(503).await;
    assert!(down.contains("\"nats\":{\"reachable\":false"), "{down}");
    relay.assert_running();

    nats.start_again().unwrap();
    relay.ready_until(200).await;
    poll(60, "the outbox drained after the restart", || async {
        relay.assert_running();
        flyrtech_infrastructure::events::backlog::depth(&redis)
            .await
            .is_ok_and(|d| d.entries == 0)
    })
    .await;
    relay.terminate();
    // What reached the bus, projected and compared with the store.
    let Some(pg) = service("PostgreSQL", flyrtech_infrastructure::LocalPostgres::start) else {
        return;
    };
    let (bus, db) = (nats.url(), pg.url());
    flyrtech_tests::stdout_of(flyrtech().args([
        "project",
        "--drain",
        "--bus",
        &bus,
        "--postgres",
        &db,
    ]));
    let audit = flyrtech()
        .args(["--redis-url", &url, "--strategy", "lua", "audit"])
        .args(["--projection", &pg.url()])
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&audit.stdout);
    assert_eq!(
        audit.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

/// A long-running worker (`relay`, `project`) with its operations endpoints on `port`, its log
/// in a file shown when an assertion about it fails; killed if a test ends without
/// [`Worker::terminate`].
struct Worker {
    child: std::sync::Mutex<std::process::Child>,
    port: u16,
    log: tempfile::NamedTempFile,
}

impl Worker {
    fn start(command: &mut Command, port: u16) -> Self {
        let log = tempfile::NamedTempFile::new().unwrap();
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::from(log.reopen().unwrap()))
            .spawn()
            .unwrap();
        Self {
            child: std::sync::Mutex::new(child),
            port,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Panics with the log if the worker has exited.
    fn assert_running(&self) {
        if let Ok(Some(status)) = self.child.lock().unwrap().try_wait() {
            panic!("the worker exited ({status}):\n{}", self.log());
        }
    }

    /// Polls `/ready` (bounded) until it answers `status`; its body.
    async fn ready_until(&self, status: u16) -> String {
        let url = format!("http://127.0.0.1:{}/ready", self.port);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            self.assert_running();
            if let Ok(r) = http().get(&url).send().await
                && r.status().as_u16() == status
            {
                return r.text().await.unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "/ready never answered {status}:\n{}",
                self.log()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM; asserts that it exits 0.
    fn terminate(self) {
        let mut child = self.child.lock().unwrap();
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = child.wait().unwrap();
        assert!(status.success(), "{status}:\n{}", self.log());
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let child = self
            .child
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// [`flyrtech_tests::poll_until`] for at most `seconds`.
async fn poll<F, Fut>(seconds: u64, what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    flyrtech_tests::poll_until(std::time::Duration::from_secs(seconds), what, check).await;
}

/// A private Redis, nats-server and PostgreSQL; journeys with changes in the outbox, relayed
/// into JetStream by `flyrtech relay --drain --bus` with `relay_args`.
struct ProjectionRig {
    servers: (
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
        let nats = service("nats-server", LocalNats::start)?;
        let pg = service("PostgreSQL", LocalPostgres::start)?;
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
            servers: (local, nats, pg),
            url,
            bus,
            db,
            total: i64::try_from(journeys * changes).unwrap(),
            client,
        })
    }

    /// A new session on the projection's database, after a restart ended the last one.
    async fn reconnect(&mut self) {
        self.client = flyrtech_infrastructure::projection::connect(&self.db)
            .await
            .unwrap();
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
            .create(&flyrtech_tests::journey(id, changes))
            .await
            .unwrap();
        for s in 0..changes {
            let segment = flyrtech_tests::segment_id(s);
            store
                .update_segment_status(id, &segment, SegmentStatus::Delayed, None)
                .await
                .unwrap();
        }
    }
    (redis, ids)
}
