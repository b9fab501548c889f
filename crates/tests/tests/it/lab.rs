//! The lab itself: every scenario against every strategy, with small parameters, on a real
//! Redis; the verification catching the control strategies' losses; the HTTP mode; the
//! redis-benchmark ceiling; and the JSON report and charts.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_lab::compare::report::{self, LabReport, Machine};
use flyrtech_lab::compare::{self, Comparison, Driver, Knobs, Scenario, chart};
use flyrtech_tests::{S, TestRedis, TestServer};
use rstest::rstest;
use rstest_reuse::apply;

use crate::every_strategy;

fn small() -> Knobs {
    Knobs {
        writers: Some(8),
        journeys: Some(5),
        segments: Some(4),
        updates: Some(200),
        seed: 7,
        ..Knobs::default()
    }
}

async fn run(
    redis: &TestRedis,
    strategy: Strategy,
    scenario: Scenario,
    knobs: &Knobs,
) -> Vec<compare::RunReport> {
    let comparison = Comparison {
        strategies: vec![strategy],
        scenarios: vec![scenario],
        knobs: knobs.clone(),
        http: Vec::new(),
        http_redis: None,
        http_floor: None,
        audit: None,
        replicas: None,
    };
    compare::compare(&redis.url(), &comparison).await.unwrap()
}

/// Every scenario but the sweep, for every strategy: the counts add up, and the strategies that
/// are correct across instances lose nothing (two instances by default).
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_is_measured_and_verified(strategy: Strategy) {
    let redis = TestRedis::single();
    for scenario in [
        Scenario::Incident,
        Scenario::HotJourney,
        Scenario::Spread,
        Scenario::Mixed,
        Scenario::SameSegment,
    ] {
        for r in run(&redis, strategy, scenario, &small()).await {
            assert_eq!(r.acknowledged + r.rejected, r.attempted, "{r:?}");
            assert!(
                r.round_trips_per_update.is_some_and(|rt| rt >= 1.0),
                "{r:?}"
            );
            if strategy.is_correct_across_instances() {
                assert_eq!(
                    (r.lost, r.stale_targets),
                    (0, 0),
                    "{strategy} {scenario}: {r:?}"
                );
            }
            if scenario == Scenario::Mixed {
                // Completed from Confirmed is refused by the transition table: rejections are
                // counted by kind, not hidden.
                assert!(
                    r.errors.keys().all(|k| k == "invalid_transition"),
                    "{:?}",
                    r.errors
                );
            } else {
                assert_eq!(r.rejected, 0, "{strategy} {scenario}: {:?}", r.errors);
            }
        }
    }
}

/// The verification sees the incident: the original strategy loses updates, and so does the
/// in-process lock across two instances; every correct strategy loses none.
#[apply(every_strategy)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_incident_scenario_shows_the_incident(strategy: Strategy) {
    let redis = TestRedis::single();
    let [r] = run(&redis, strategy, Scenario::Incident, &Knobs::default())
        .await
        .try_into()
        .unwrap();
    assert_eq!((r.attempted, r.acknowledged, r.changed), (20, 20, 20));
    if strategy.is_correct_across_instances() {
        assert_eq!(r.lost, 0);
    } else {
        assert!(r.lost > 0, "{strategy} was expected to lose updates");
        assert!(r.stale_targets > 0);
    }
    assert!(r.summary_line().ends_with(&format!("{} lost", r.lost)));
}

/// The lab drives running servers over HTTP as it drives the library.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_http_mode_drives_running_servers() {
    let redis = TestRedis::single();
    let servers = [
        TestServer::start(&redis.url(), S::Hash).await,
        TestServer::start(&redis.url(), S::Hash).await,
    ];
    let comparison = Comparison {
        strategies: Vec::new(),
        scenarios: vec![Scenario::HotJourney],
        knobs: small(),
        http: servers.iter().map(|s| s.base.clone()).collect(),
        http_redis: Some(redis.url()),
        // Any server answering the floor's routes will do to check the mechanism; the second
        // instance stands in for crates/lab/examples/floor.rs.
        http_floor: Some(servers[1].base.clone()),
        audit: None,
        replicas: None,
    };
    let [r] = compare::compare(&redis.url(), &comparison)
        .await
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(r.strategy, "hash (http)");
    assert_eq!(
        (r.attempted, r.acknowledged, r.lost, r.stale_targets),
        (200, 200, 0, 0)
    );
    assert!(r.round_trips_per_update.is_none());

    // The HTTP ceiling: the same servers' /health, driven with the same client.
    let http = r
        .http_ceiling
        .as_ref()
        .expect("an HTTP run measures /health");
    assert_eq!((http.connections, http.failed), (r.params.writers, 0));
    assert!(http.requests > 0, "{http:?}");
    let fraction = r.fraction_of_http_ceiling.unwrap();
    assert!(
        (fraction - r.throughput / http.requests_per_second).abs() < 1e-9,
        "{fraction} is not throughput / ceiling"
    );
    // Beside it, the servers' strategy's Redis ceiling, replayed on the servers' Redis.
    let ceiling = r.ceiling.as_ref().expect("the servers' Redis was given");
    assert!(
        ceiling
            .commands
            .iter()
            .any(|c| c.command.contains("EVALSHA"))
    );
    assert!(r.fraction_of_ceiling.is_some());

    // The floor's routes beside the first server's, each answered 2xx on both (the PUT's
    // journey is created for the measurement), and judged: /health and GET for every strategy,
    // PUT for hash.
    let floor = r.floor.as_ref().expect("--http-floor measures the floor");
    let routes: Vec<&str> = floor.iter().map(|f| f.route).collect();
    assert_eq!(routes, ["/health", "GET journey", "PUT segment status"]);
    for f in floor {
        assert!(
            f.service_per_second > 0.0 && f.floor_per_second > 0.0,
            "{f:?}"
        );
        assert!((f.ratio - f.service_per_second / f.floor_per_second).abs() < 1e-9);
    }
    let judged: Vec<(String, f64)> = report::targets(std::slice::from_ref(&r))
        .into_iter()
        .filter(|t| t.target.contains("the floor's"))
        .map(|t| (t.target, t.threshold))
        .collect();
    assert_eq!(
        judged,
        [
            (
                "hash (http): /health / the floor's, same run".to_owned(),
                0.9
            ),
            (
                "hash (http): GET journey / the floor's, same run".to_owned(),
                0.85
            ),
            (
                "hash (http): PUT segment status / the floor's, same run".to_owned(),
                0.85
            ),
        ]
    );
}

/// With redis-benchmark installed (CI installs it), script strategies get the ceiling of their
/// own script on the run's documents, and document strategies the ceiling of their commands.
#[rstest]
#[case::lua(S::Lua, "EVALSHA")]
#[case::hash(S::Hash, "EVALSHA")]
#[case::optimistic(S::Optimistic, "GET")]
#[case::redlock(S::Redlock, "INCR")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ceiling_replays_each_strategys_commands(
    #[case] strategy: Strategy,
    #[case] command: &str,
) {
    assert!(
        compare::ceiling::available(),
        "redis-benchmark is not installed"
    );
    let redis = TestRedis::single();
    let [r] = run(&redis, strategy, Scenario::Spread, &small())
        .await
        .try_into()
        .unwrap();
    let ceiling = r
        .ceiling
        .expect("a ceiling for a standalone run without delay");
    assert!(ceiling.updates_per_second > 0.0);
    assert!(
        ceiling
            .commands
            .iter()
            .any(|c| c.command.starts_with(command)),
        "{ceiling:?}"
    );
    assert!(r.fraction_of_ceiling.is_some_and(|f| f > 0.0));
    // The scratch keys are gone: only journeys, their index and strategy keys remain.
    let mut conn = redis.connect().await.shared();
    let scratch: Vec<String> = redis::cmd("KEYS")
        .arg("lab:ceiling:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(scratch.is_empty(), "{scratch:?}");
}

/// A run with processing delay has no ceiling (redis-benchmark cannot model the delay).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ceiling_with_a_processing_delay() {
    let redis = TestRedis::single();
    let knobs = Knobs {
        processing_delay: Some(Duration::from_millis(1)),
        ..small()
    };
    let [r] = run(&redis, S::Lua, Scenario::Spread, &knobs)
        .await
        .try_into()
        .unwrap();
    assert!(r.ceiling.is_none());
}

/// The JSON report has the documented shape and the charts are written as SVG and PNG.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_and_charts_are_written() {
    let redis = TestRedis::single();
    let knobs = Knobs {
        updates: Some(100),
        journeys: Some(10),
        ..Knobs::default()
    };
    let mut runs = Vec::new();
    for strategy in [S::Lua, S::Hash] {
        runs.extend(run(&redis, strategy, Scenario::Scaling, &knobs).await);
    }
    assert_eq!(
        runs.len(),
        2 * 8,
        "5 writer counts + 3 document sizes, per strategy"
    );
    let dir = tempfile::tempdir().unwrap();
    let written = chart::write(&runs, &dir.path().join("scaling.svg")).unwrap();
    let svg = std::fs::read_to_string(&written[0]).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("Throughput vs writers"),
        "{svg:.200}"
    );
    let png = std::fs::read(&written[1]).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    let targets = report::targets(&runs);
    let path = dir.path().join("nested/lab.json");
    LabReport {
        schema_version: report::SCHEMA_VERSION,
        command: "test".into(),
        started_at: "2026-11-21T00:00:00Z".into(),
        machine: Machine::detect(compare::redis_version(&redis.url()).await),
        deployment: "standalone".into(),
        runs,
        targets,
    }
    .write(&path)
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(json["schema_version"], 1);
    assert!(json["machine"]["redis_version"].as_str().is_some());
    let run = &json["runs"][0];
    for field in [
        "strategy",
        "scenario",
        "params",
        "attempted",
        "acknowledged",
        "changed",
        "rejected",
        "errors",
        "lost",
        "stale_targets",
        "elapsed_ms",
        "throughput",
        "latency_us",
        "attempts_per_update",
        "conflicts_per_update",
        "lock_wait_ms_mean",
        "round_trips_per_update",
        "ceiling",
        "fraction_of_ceiling",
    ] {
        assert!(run.get(field).is_some(), "{field} missing from {run}");
    }
    assert_eq!(run["params"]["pattern"], "random");
    let hash_ratio = json["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| {
            t["target"]
                .as_str()
                .unwrap()
                .starts_with("hash: throughput at 200")
        })
        .unwrap();
    assert!(hash_ratio["measured"].as_f64().is_some(), "{hash_ratio}");
}

/// Charts without a sweep are a clear error, not an empty picture.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charts_need_the_sweep() {
    let redis = TestRedis::single();
    let runs = run(&redis, S::Lua, Scenario::Incident, &Knobs::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let err = chart::write(&runs, &dir.path().join("c.svg")).unwrap_err();
    assert!(err.to_string().contains("scaling"), "{err}");
}

/// Library runs count Redis round trips from one driver per run; a driver can be reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_runs_a_plan() {
    let redis = TestRedis::single();
    let driver = Arc::new(
        Driver::library(&redis.url(), &StoreConfig::new(S::Hash), 2)
            .await
            .unwrap(),
    );
    for params in Scenario::SameSegment.plan(&small()) {
        let r = compare::run(&driver, Scenario::SameSegment, params)
            .await
            .unwrap();
        assert_eq!((r.lost, r.stale_targets), (0, 0));
        assert!(r.conflicts_per_update == 0.0, "hash never retries");
    }
}

/// The collision scenario sets the model beside the measurement; the control loses updates to
/// random arrivals, a correct strategy loses none.
#[rstest]
#[case::naive(S::Naive)]
#[case::lua(S::Lua)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collision_scenario_reports_the_model(#[case] strategy: Strategy) {
    let redis = TestRedis::single();
    let knobs = Knobs {
        writers: Some(10),
        processing_delay: Some(Duration::from_millis(20)),
        repeats: Some(3),
        ..Knobs::default()
    };
    let [r] = run(&redis, strategy, Scenario::Collision, &knobs)
        .await
        .try_into()
        .unwrap();
    assert_eq!((r.params.repeats, r.attempted), (3, 30));
    // The run carries the model's figures for its own settings (the model is judged against a
    // simulated read-modify-write in `compare::collision`'s tests).
    assert_eq!(
        r.model_loss_probability,
        Some(flyrtech_lab::compare::collision::absent(
            10,
            Duration::from_millis(20),
            flyrtech_lab::compare::COLLISION_PERIOD
        ))
    );
    if strategy.is_correct_across_instances() {
        assert_eq!(r.lost, 0);
    } else {
        assert!(
            r.lost > 0,
            "10 writers with 20 ms windows in 100 ms always collide"
        );
    }
}

/// The lab beside a served dataset: every strategy, both layouts, on a Redis whose journeys a
/// `lua` instance serves. The service's journeys, listing and recorded layout are untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_leaves_a_served_dataset_alone() {
    use flyrtech_core::JourneyStore;
    let redis = TestRedis::single();
    let server = TestServer::start(&redis.url(), S::Lua).await;
    let conn = redis.connect().await;
    let service = flyrtech_tests::store(&conn, S::Lua).await;
    let before_ids = service.list_ids().await.unwrap();
    let mut before = Vec::new();
    for id in &before_ids {
        before.push(service.get(id).await.unwrap());
    }
    let state = flyrtech_infrastructure::dataset::state(&conn)
        .await
        .unwrap();
    for strategy in Strategy::ALL {
        let reports = run(&redis, strategy, Scenario::Spread, &small()).await;
        assert!(reports.iter().all(|r| r.acknowledged > 0), "{strategy}");
    }
    assert_eq!(service.list_ids().await.unwrap(), before_ids);
    for journey in &before {
        assert_eq!(&service.get(&journey.id).await.unwrap(), journey);
    }
    assert_eq!(
        flyrtech_infrastructure::dataset::state(&conn)
            .await
            .unwrap(),
        state
    );
    let ready = flyrtech_tests::http_client()
        .get(server.url("/ready"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    server.stop().await;
}

/// `compare --wait-replicas 1`: every strategy runs without and then with the wait, side by side
/// on one primary with a replica; both lose nothing and the wait's run is labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_of_waiting_for_a_replica_is_measured_side_by_side() {
    let deployment = flyrtech_infrastructure::LocalRedis::primary_with_replicas(1).unwrap();
    let comparison = Comparison {
        strategies: vec![S::Lua, S::Hash],
        scenarios: vec![Scenario::Spread],
        knobs: small(),
        http: Vec::new(),
        http_redis: None,
        http_floor: None,
        audit: None,
        replicas: Some(flyrtech_infrastructure::ReplicaWait {
            replicas: 1,
            timeout: Duration::from_millis(900),
            confirmation: flyrtech_infrastructure::Confirmation::Received,
        }),
    };
    let reports = compare::compare(&deployment.nodes()[0].url(), &comparison)
        .await
        .unwrap();
    let names: Vec<&str> = reports.iter().map(|r| r.strategy.as_str()).collect();
    assert_eq!(names, ["lua", "lua +wait1", "hash", "hash +wait1"]);
    for r in &reports {
        assert_eq!((r.lost, r.stale_targets), (0, 0), "{}", r.strategy);
        assert!(r.acknowledged > 0, "{}", r.strategy);
    }
}

/// The lab's redlock target compares it with the in-process mutex of the same run on one
/// instance: measured when both ran, absent otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redlock_is_judged_against_the_mutex_of_the_same_run() {
    let redis = TestRedis::single();
    let one = Knobs {
        instances: Some(1),
        ..Knobs::default()
    };
    let target = |runs: &[compare::RunReport]| {
        report::targets(runs)
            .into_iter()
            .find(|t| {
                t.target
                    .starts_with("redlock: incident elapsed / local-lock's")
            })
            .unwrap()
    };
    let mut runs = run(&redis, S::Redlock, Scenario::Incident, &one).await;
    assert_eq!(
        target(&runs).measured,
        None,
        "no local-lock run to compare with"
    );
    runs.extend(run(&redis, S::LocalLock, Scenario::Incident, &one).await);
    let checked = target(&runs);
    let (redlock, mutex) = (runs[0].elapsed.as_secs_f64(), runs[1].elapsed.as_secs_f64());
    let ratio = checked.measured.unwrap();
    assert!((ratio - redlock / mutex).abs() < 1e-9, "{ratio}");
    assert_eq!(checked.threshold, 1.05);
    assert_eq!(checked.met, Some(ratio <= 1.05));
}
