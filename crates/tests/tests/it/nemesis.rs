//! Nemeses with the history checked (issue 34, part 3): `flyrtech verify`'s clients drive a
//! `serve` on a primary with one replica under `--wait-replicas 1` while a fault is injected, and
//! every answer they were given is checked for linearizability, not only the final state.
//!
//! Each fault waits for the clients to have recorded some operations (polled, bounded), so it
//! lands mid-run whatever the machine's speed; the run then goes on until its end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flyrtech_api::config::{Seed, ServeSettings};
use flyrtech_api::verify::{Plan, record};
use flyrtech_core::history::{self, Verdict};
use flyrtech_infrastructure::{Fsync, LocalRedis, StoreConfig, Strategy};
use flyrtech_tests::{TestServer, poll_until, serve_config};
use rstest::rstest;

use crate::reliability::{connect, wait_for};

/// A primary and its replica, and a `serve` on a port of its own that a restart keeps.
struct Rig {
    redis: LocalRedis,
    strategy: Strategy,
    listen: SocketAddr,
    serve: Option<TestServer>,
    recorded: Arc<AtomicU64>,
}

impl Rig {
    async fn start(strategy: Strategy) -> Self {
        let redis = LocalRedis::primary_with_replicas_and_aof(1, Fsync::EverySec).unwrap();
        let port = flyrtech_infrastructure::local::free_port(false).unwrap();
        let mut rig = Self {
            redis,
            strategy,
            listen: SocketAddr::from(([127, 0, 0, 1], port)),
            serve: None,
            recorded: Arc::new(AtomicU64::new(0)),
        };
        let primary = rig.redis.nodes()[0].url();
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
        let from = self.recorded.load(Ordering::Relaxed);
        let recorded = Arc::clone(&self.recorded);
        poll_until(Duration::from_secs(30), what, || {
            let recorded = Arc::clone(&recorded);
            async move { recorded.load(Ordering::Relaxed) >= from + n }
        })
        .await;
    }
}

/// Runs the clients against `rig` for `seconds` while `nemesis` acts, and checks the history.
async fn checked<F, Fut>(strategy: Strategy, seconds: u64, nemesis: F) -> history::Report
where
    F: FnOnce(Rig) -> Fut,
    Fut: std::future::Future<Output = Rig>,
{
    let rig = Rig::start(strategy).await;
    let plan = Plan {
        targets: vec![format!("http://{}", rig.listen)],
        api_key: None,
        duration: Duration::from_secs(seconds),
        journeys: 2,
        segments: 3,
        clients: 6,
        timeout: Duration::from_secs(2),
        seed: 11,
    };
    let recorded = Arc::clone(&rig.recorded);
    let clients = tokio::spawn(async move {
        record(&plan, move |n| recorded.store(n, Ordering::Relaxed))
            .await
            .unwrap()
    });
    let rig = nemesis(rig).await;
    let run = clients.await.unwrap();
    drop(rig);
    let report = history::check(&run.history, &run.initial, 2_000_000);
    eprintln!(
        "nemesis {strategy}: {} operations, {:?}, {} registers decided of {}",
        report.operations,
        report.verdict,
        report.registers.total() - report.registers.undecided,
        report.registers.total()
    );
    report
}

fn assert_linearizable(report: &history::Report) {
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:#?}");
    assert!(report.registers.decided() >= 0.99, "{report:?}");
}

/// `serve` killed mid-run (its task aborted: requests in flight are cut) and started again on
/// the same address: the cut requests are unknown, the rest is linearizable.
#[rstest]
#[case::optimistic(Strategy::Optimistic)]
#[case::redlock(Strategy::Redlock)]
#[case::lua(Strategy::Lua)]
#[case::hash(Strategy::Hash)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serve_killed_and_restarted(#[case] strategy: Strategy) {
    let report = checked(strategy, 4, |mut rig| async move {
        rig.after(300, "operations before the kill").await;
        let primary = rig.redis.nodes()[0].url();
        rig.serve_on(&primary).await;
        rig.after(300, "operations after the restart").await;
        rig
    })
    .await;
    assert_linearizable(&report);
}

/// The primary SIGKILLed mid-run and restarted from its AOF: nothing it acknowledged is lost,
/// and no client saw anything it then forgot.
#[rstest]
#[case::optimistic(Strategy::Optimistic)]
#[case::redlock(Strategy::Redlock)]
#[case::lua(Strategy::Lua)]
#[case::hash(Strategy::Hash)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_primary_restarted_from_its_aof(#[case] strategy: Strategy) {
    let report = checked(strategy, 5, |mut rig| async move {
        rig.after(300, "operations before the kill").await;
        rig.redis.nodes()[0].signal("KILL").unwrap();
        rig.redis.nodes_mut()[0].restart().unwrap();
        rig.after(300, "operations after the restart").await;
        rig
    })
    .await;
    assert_linearizable(&report);
}

/// The only replica paused, then its primary killed and the replica promoted, `serve` moved to
/// it: what was acknowledged had been confirmed by the replica; what the paused replica could
/// not confirm was answered 503 (unknown).
#[rstest]
#[case::optimistic(Strategy::Optimistic)]
#[case::redlock(Strategy::Redlock)]
#[case::lua(Strategy::Lua)]
#[case::hash(Strategy::Hash)]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_replica_promoted_after_its_primary_dies(#[case] strategy: Strategy) {
    let report = checked(strategy, 5, |mut rig| async move {
        rig.after(300, "operations before the pause").await;
        rig.redis.nodes()[1].signal("STOP").unwrap();
        rig.after(200, "operations while the replica is paused")
            .await;
        rig.redis.nodes()[0].signal("KILL").unwrap();
        rig.redis.nodes()[1].signal("CONT").unwrap();
        let replica = rig.redis.nodes()[1].url();
        let promoted = connect(&replica).await;
        let () = redis::cmd("REPLICAOF")
            .arg("NO")
            .arg("ONE")
            .query_async(&mut promoted.shared())
            .await
            .unwrap();
        rig.serve_on(&replica).await;
        rig.after(100, "operations after the promotion").await;
        rig
    })
    .await;
    assert_linearizable(&report);
}
