//! Nemeses with the history checked: `flyrtech-lab verify`'s clients drive a
//! `serve` on a primary with one replica under `--wait-replicas 1` while a fault is injected, and
//! every answer they were given is checked for linearizability, not only the final state.
//!
//! Each fault waits for the clients to have recorded some operations (polled, bounded), so it
//! lands mid-run whatever the machine's speed; the run then goes on until its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flyrtech_cli::config::{Seed, ServeSettings};
use flyrtech_infrastructure::{Fsync, LaunchError, LocalRedis, StoreConfig, Strategy};
use flyrtech_lab::history::{self, Answer, Verdict};
use flyrtech_lab::verify::{Plan, record};
use flyrtech_tests::netns::{Host, HostedRedis, Link};
use flyrtech_tests::{TestServer, poll_until, serve_config};
use rstest_reuse::apply;

use crate::every_strategy_across_instances;
use crate::reliability::{promote, wait_for};

/// How long a partition lasts: longer than a write's wait for its replica (900 ms) and than a
/// Redis command's timeout, so that both are felt.
const PARTITION: Duration = Duration::from_secs(2);

/// A primary and its replica (on loopback, or each on a test host of its own), and a `serve` on
/// a port of its own that a restart keeps.
struct Rig {
    redis: Deployment,
    strategy: Strategy,
    listen: SocketAddr,
    serve: Option<TestServer>,
    recorded: Arc<AtomicU64>,
}

/// Where the primary and its replica run.
enum Deployment {
    /// Both on loopback, the primary with an AOF.
    Loopback(LocalRedis),
    /// Each on a test host of its own, joined to the tests and to each other by links a test
    /// can cut.
    Hosts(Box<Hosts>),
    /// A 3-master cluster, a replica each, set to fail over within seconds.
    Cluster(LocalRedis),
}

impl Deployment {
    fn loopback(&self) -> &LocalRedis {
        match self {
            Self::Loopback(redis) => redis,
            _ => panic!("this nemesis needs the loopback deployment"),
        }
    }

    fn loopback_mut(&mut self) -> &mut LocalRedis {
        match self {
            Self::Loopback(redis) => redis,
            _ => panic!("this nemesis needs the loopback deployment"),
        }
    }

    fn hosts(&self) -> &Hosts {
        match self {
            Self::Hosts(hosts) => hosts,
            _ => panic!("this nemesis needs the test hosts"),
        }
    }

    fn primary_url(&self) -> String {
        match self {
            Self::Loopback(redis) => redis.nodes()[0].url(),
            Self::Hosts(hosts) => hosts.primary.url(hosts.to_primary.addr(1)),
            Self::Cluster(redis) => redis.url(),
        }
    }
}

/// The primary and its replica on two test hosts: links from the tests to each, and between them.
struct Hosts {
    // Field order is drop order: the servers, then the links, then the namespaces.
    primary: HostedRedis,
    _replica: HostedRedis,
    to_primary: Link,
    _to_replica: Link,
    between: Link,
    _primary_host: Host,
    _replica_host: Host,
}

impl Hosts {
    fn start() -> Result<Self, LaunchError> {
        let primary_host = Host::create()?;
        let replica_host = Host::create()?;
        let to_primary = Link::join(None, Some(&primary_host))?;
        let to_replica = Link::join(None, Some(&replica_host))?;
        let between = Link::join(Some(&primary_host), Some(&replica_host))?;
        let primary = HostedRedis::start(&primary_host, to_primary.addr(1), &[])?;
        let replica = HostedRedis::start(
            &replica_host,
            to_replica.addr(1),
            &[
                "--replicaof".to_owned(),
                between.addr(0).to_string(),
                primary.port.to_string(),
            ],
        )?;
        Ok(Self {
            primary,
            _replica: replica,
            to_primary,
            _to_replica: to_replica,
            between,
            _primary_host: primary_host,
            _replica_host: replica_host,
        })
    }

    /// Waits until the primary sees its replica online (after a start or a healed partition).
    async fn replica_online(&self) {
        let primary = crate::reliability::connect(&self.primary.url(self.to_primary.addr(1))).await;
        poll_until(Duration::from_secs(30), "the replica online", || {
            let mut conn = primary.shared();
            async move {
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await
                    .unwrap_or_default();
                info.contains("state=online")
            }
        })
        .await;
    }
}

impl Rig {
    async fn start(strategy: Strategy) -> Self {
        let redis = LocalRedis::primary_with_replicas_and_aof(1, Fsync::EverySec).unwrap();
        Self::on(strategy, Deployment::Loopback(redis)).await
    }

    /// On two test hosts, or `None` (the test is skipped) where namespaces cannot be made.
    async fn on_hosts(strategy: Strategy) -> Option<Self> {
        let hosts = flyrtech_tests::service("network namespaces (root, ip)", Hosts::start)?;
        hosts.replica_online().await;
        Some(Self::on(strategy, Deployment::Hosts(Box::new(hosts))).await)
    }

    async fn on(strategy: Strategy, redis: Deployment) -> Self {
        let port = flyrtech_infrastructure::local::free_port(false).unwrap();
        let mut rig = Self {
            redis,
            strategy,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            serve: None,
            recorded: Arc::new(AtomicU64::new(0)),
        };
        let primary = rig.redis.primary_url();
        rig.serve_on(&primary).await;
        rig
    }

    fn settings(&self, url: &str) -> ServeSettings {
        let store = StoreConfig {
            replicas: wait_for(1),
            ..StoreConfig::new(self.strategy)
        };
        ServeSettings {
            listen: self.listen,
            // The clients create journeys of their own; a promoted replica with no replica of
            // its own could not seed under `--wait-replicas 1` anyway.
            seed: Seed::Nothing,
            ..serve_config(url, store)
        }
    }

    /// (Re)starts `serve` on `url`, at the same address.
    async fn serve_on(&mut self, url: &str) {
        // Dropping the server aborts it: requests in flight are cut, as a kill would cut them.
        drop(self.serve.take());
        self.serve = Some(TestServer::start_with(self.settings(url)).await);
    }

    /// Waits until the clients have recorded `n` more operations.
    async fn after(&self, n: u64, what: &str) {
        after(&self.recorded, n, what).await;
    }
}

/// Runs the clients against `rig` for `seconds` while `nemesis` acts, and checks the history.
async fn checked<F, Fut>(name: &str, rig: Rig, seconds: u64, nemesis: F) -> Checked
where
    F: FnOnce(Rig) -> Fut,
    Fut: std::future::Future<Output = Rig>,
{
    let (strategy, target, recorded) = (
        rig.strategy,
        format!("http://{}", rig.listen),
        Arc::clone(&rig.recorded),
    );
    record_during(
        name,
        strategy,
        vec![target],
        seconds,
        recorded,
        rig,
        nemesis,
    )
    .await
}

/// Runs `verify`'s clients against `targets` for `seconds`, counting what they record into
/// `recorded`, while `nemesis` acts on `context`; then checks the whole history. What the fault
/// suite shares: a fault is judged by every answer, not by a final state.
pub(crate) async fn record_during<T, F, Fut>(
    name: &str,
    strategy: Strategy,
    targets: Vec<String>,
    seconds: u64,
    recorded: Arc<AtomicU64>,
    context: T,
    nemesis: F,
) -> Checked
where
    F: FnOnce(T) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let plan = Plan {
        targets,
        api_key: None,
        duration: Duration::from_secs(seconds),
        journeys: 2,
        segments: 3,
        clients: 6,
        timeout: Duration::from_secs(2),
        seed: 11,
    };
    let clients = tokio::spawn(async move {
        record(&plan, move |n| recorded.store(n, Ordering::Relaxed))
            .await
            .unwrap()
    });
    let context = nemesis(context).await;
    let run = clients.await.unwrap();
    drop(context);
    let report = history::check(&run.history, &run.initial, 2_000_000);
    let unknown = run
        .history
        .iter()
        .filter(|o| o.answer == Answer::Unknown)
        .count();
    eprintln!(
        "nemesis {name} {strategy}: {} operations ({unknown} unknown), {:?}, {} registers decided of {}",
        report.operations,
        report.verdict,
        report.registers.total() - report.registers.undecided,
        report.registers.total()
    );
    Checked { report, unknown }
}

/// A run's verdict, and how many answers the fault left unknown.
pub(crate) struct Checked {
    pub(crate) report: history::Report,
    pub(crate) unknown: usize,
}

/// Waits until `recorded` has grown by `n` operations (bounded).
pub(crate) async fn after(recorded: &Arc<AtomicU64>, n: u64, what: &str) {
    let from = recorded.load(Ordering::Relaxed);
    poll_until(Duration::from_secs(30), what, || {
        let recorded = Arc::clone(recorded);
        async move { recorded.load(Ordering::Relaxed) >= from + n }
    })
    .await;
}

/// Linearizable, every register decided but a percent at most, and the fault was felt: some
/// answers were left unknown by it.
pub(crate) fn assert_linearizable(checked: &Checked) {
    let report = &checked.report;
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:#?}");
    assert!(report.decided() >= 0.99, "{report:?}");
    assert!(checked.unknown > 0, "the fault left no answer unknown");
}

/// `serve` killed mid-run (its task aborted: requests in flight are cut) and started again on
/// the same address: the cut requests are unknown, the rest is linearizable. On a primary with
/// its replica, and on a cluster with a replica per primary.
#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_and_restarted(strategy: Strategy, #[values(false, true)] cluster: bool) {
    let (name, rig) = if cluster {
        let redis = LocalRedis::cluster_with_replicas(3, 1).unwrap();
        (
            "serve-restart-cluster",
            Rig::on(strategy, Deployment::Cluster(redis)).await,
        )
    } else {
        ("serve-restart", Rig::start(strategy).await)
    };
    let report = checked(name, rig, 4, |mut rig| async move {
        rig.after(300, "operations before the kill").await;
        let primary = rig.redis.primary_url();
        rig.serve_on(&primary).await;
        rig.after(300, "operations after the restart").await;
        rig
    })
    .await;
    assert_linearizable(&report);
}

/// The primary SIGKILLed mid-run and restarted from its AOF: nothing it acknowledged is lost,
/// and no client saw anything it then forgot.
#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_restarted_from_its_aof(strategy: Strategy) {
    // 8 s: the clients must outlast the restart (the AOF loaded, serve reconnected, and under
    // redlock the locks the kill left behind expired) by the 300 operations awaited after it.
    let report = checked(
        "aof-restart",
        Rig::start(strategy).await,
        8,
        |mut rig| async move {
            rig.after(300, "operations before the kill").await;
            rig.redis.loopback().nodes()[0].signal("KILL").unwrap();
            rig.redis.loopback_mut().nodes_mut()[0].restart().unwrap();
            rig.after(300, "operations after the restart").await;
            rig
        },
    )
    .await;
    assert_linearizable(&report);
}

/// The only replica paused, then its primary killed and the replica promoted, `serve` moved to
/// it: what was acknowledged had been confirmed by the replica; what the paused replica could
/// not confirm was answered 503 (unknown).
#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_promoted_after_its_primary_dies(strategy: Strategy) {
    let report = checked(
        "paused-replica-failover",
        Rig::start(strategy).await,
        5,
        |mut rig| async move {
            rig.after(300, "operations before the pause").await;
            rig.redis.loopback().nodes()[1].signal("STOP").unwrap();
            rig.after(200, "operations while the replica is paused")
                .await;
            let nodes = rig.redis.loopback().nodes();
            nodes[0].signal("KILL").unwrap();
            nodes[1].signal("CONT").unwrap();
            let replica = nodes[1].url();
            promote(&replica).await;
            rig.serve_on(&replica).await;
            rig.after(100, "operations after the promotion").await;
            rig
        },
    )
    .await;
    assert_linearizable(&report);
}

/// Which link a partition cuts.
#[derive(Debug, Clone, Copy)]
enum Cut {
    /// Between the primary and its replica: while it lasts no write is acknowledged (the
    /// replica cannot confirm it: 503, unknown), what the primary applied regardless may be
    /// read, and once healed the replica catches up, so nothing seen is ever unseen.
    PrimaryReplica,
    /// Between `serve` and the primary: the requests it cuts are unknown (a write may or may
    /// not have reached Redis before the link went down), the rest goes on after.
    ServePrimary,
}

/// A real partition (the link between two test hosts taken down both ways: nothing is buffered
/// for later, unlike a paused process), held for [`PARTITION`], then healed.
#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition(
    strategy: Strategy,
    #[values(Cut::PrimaryReplica, Cut::ServePrimary)] cut: Cut,
) {
    let Some(rig) = Rig::on_hosts(strategy).await else {
        return;
    };
    let name = match cut {
        Cut::PrimaryReplica => "partition-primary-replica",
        Cut::ServePrimary => "partition-serve-primary",
    };
    let report = checked(name, rig, 8, |rig| async move {
        rig.after(300, "operations before the partition").await;
        let hosts = rig.redis.hosts();
        let link = match cut {
            Cut::PrimaryReplica => &hosts.between,
            Cut::ServePrimary => &hosts.to_primary,
        };
        link.cut();
        // The fault's length, not a wait for a condition.
        tokio::time::sleep(PARTITION).await;
        link.heal();
        hosts.replica_online().await;
        rig.after(200, "operations after the partition healed")
            .await;
        rig
    })
    .await;
    assert_linearizable(&report);
}

/// A cluster primary that holds one of the run's journeys SIGKILLed: its replica is promoted and
/// the same `serve` follows the new slot map; while the shard has no primary every key is
/// refused (503), and after the promotion it has no replica to confirm writes (503 too).
#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_primary_killed_and_its_replica_promoted(strategy: Strategy) {
    let cluster = LocalRedis::cluster_with_replicas(3, 1).unwrap();
    let rig = Rig::on(strategy, Deployment::Cluster(cluster)).await;
    let report = checked("cluster-failover", rig, 8, |rig| async move {
        rig.after(300, "operations before the kill").await;
        let Deployment::Cluster(cluster) = &rig.redis else {
            unreachable!("a cluster rig")
        };
        let victim = flyrtech_tests::primary_holding(cluster.nodes(), "*VFY-*");
        victim.signal("KILL").unwrap();
        rig.after(300, "operations after the kill").await;
        rig
    })
    .await;
    assert_linearizable(&report);
}
