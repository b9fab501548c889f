//! `flyrtech-lab verify`'s client and checker against real instances: every strategy that
//! loses nothing is linearizable over two instances, on one server and on a cluster; the two
//! controls (naive, local-lock) are caught by the same checker, so it can fail.

use std::time::Duration;

use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_lab::history::{self, Answer, Verdict};
use flyrtech_lab::verify::{Plan, record};
use flyrtech_tests::{TestRedis, TestServer, Topology, serve_config};
use rstest_reuse::apply;

use crate::{every_strategy, every_strategy_across_instances};

/// Two instances of `strategy` on one deployment, a modelled processing delay to force overlap,
/// and one journey for eight clients: the verdict.
async fn verdict_over_two_instances(strategy: Strategy, topology: Topology) -> history::Report {
    let redis = TestRedis::start(topology);
    let mut store = StoreConfig::new(strategy);
    store.processing_delay = Duration::from_millis(5);
    let servers = [
        TestServer::start_with(serve_config(&redis.url(), store.clone())).await,
        TestServer::start_with(serve_config(&redis.url(), store)).await,
    ];
    let plan = Plan {
        targets: servers.iter().map(|s| s.base.clone()).collect(),
        api_key: None,
        duration: Duration::from_millis(1500),
        journeys: 1,
        segments: 3,
        clients: 8,
        timeout: Duration::from_secs(5),
        seed: 7,
    };
    let recorded = record(&plan, |_| {}).await.unwrap();
    let changed = recorded
        .history
        .iter()
        .filter(|o| matches!(o.answer, Answer::Changed { .. }))
        .count();
    assert!(
        changed > 20,
        "the run changed too little to judge: {changed}"
    );
    history::check(&recorded.history, &recorded.initial, 2_000_000)
}

#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_the_correct_strategies_and_catches_the_controls(strategy: Strategy) {
    let report = verdict_over_two_instances(strategy, Topology::Single).await;
    assert_eq!(report.registers.undecided, 0, "{report:?}");
    if strategy.is_correct_across_instances() {
        assert_eq!(report.verdict, Verdict::Linearizable, "{report:?}");
    } else {
        assert_eq!(report.verdict, Verdict::NotLinearizable, "{report:?}");
        assert!(report.violations.iter().all(|v| !v.window.is_empty()));
    }
}

#[apply(every_strategy_across_instances)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_the_correct_strategies_on_a_cluster(strategy: Strategy) {
    let report = verdict_over_two_instances(strategy, Topology::Cluster).await;
    assert_eq!(report.verdict, Verdict::Linearizable, "{report:?}");
    assert_eq!(report.registers.undecided, 0);
}
