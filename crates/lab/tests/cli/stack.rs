//! The whole pipeline as an operator deploys it: the compose stack of deploy/compose (a Redis
//! Cluster of three primaries with a replica each, two `serve` confirming each write on a
//! replica, the relay, a three-node NATS JetStream cluster, PostgreSQL, two projectors,
//! Prometheus) brought up on this host's Docker, `verify` driving both `serve` while a nemesis
//! acts on the containers, then the projection audited against the store.

use std::path::Path;
use std::time::{Duration, Instant};

use flyrtech_tests::docker::{self, Stack};

use super::*;

/// Every service up and ready; under the faults of [`nemesis`], every answer `verify` got from
/// both instances explained by one order (at least 99 % of the registers decided: no
/// acknowledged update lost); every process healthy again, none having exited for good; once
/// the relay and the projectors have drained, the projection equal to the store (`audit
/// --projection`: 0 differences, so no phantom either); every process scraped by Prometheus;
/// `serve-1` and PostgreSQL stopped until Prometheus' API shows the alerts the runbook names
/// for them firing, and those alerts resolved once they are back. The stack goes with its
/// volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_rides_out_container_faults_losing_nothing() {
    if !docker::answers() {
        return;
    }
    let service = Path::new(env!("CARGO_BIN_EXE_flyrtech-lab")).with_file_name("flyrtech");
    let stack = Stack::up(&service);
    let deadline = Instant::now() + Duration::from_secs(180);
    all_healthy(&stack, deadline).await;

    // verify drives both instances while the nemesis acts on the containers.
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    let key = stack.api_key();
    let targets = stack
        .serve
        .map(|p| format!("--target=http://127.0.0.1:{p}"));
    let verify = lab()
        .args([
            "verify",
            "--duration",
            "50s",
            "--journeys",
            "4",
            "--clients",
            "8",
        ])
        .args(&targets)
        .arg(format!("--api-key={key}"))
        .arg(format!("--json={}", json.display()))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    nemesis(&stack).await;
    let verified = verify.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&verified.stderr),
        stack.logs()
    );
    // The figures, for `--nocapture` (docs/results/stack.txt).
    eprintln!("{stdout}");
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "linearizable", "{stdout}");
    assert!(report["decided"].as_f64().unwrap() >= 0.99, "{stdout}");

    // The pages: serve-1 and PostgreSQL stopped until the alerts the runbook names for them
    // fire (on Prometheus' faster clock: `Stack`), then started again.
    eprintln!("nemesis: serve-1 and postgres stopped until their alerts fire");
    stack.act("stop", "serve-1");
    stack.act("stop", "postgres");
    let stopped = Instant::now();
    loop {
        let mut all = true;
        for (_, alert, labels) in STOPPED_PAGES {
            // Firing now, while its fault lasts: not an earlier firing.
            all &= stack.alert(alert, labels, "firing").await == Some(true);
        }
        if all {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(120),
            "{:#?}",
            stack.query("ALERTS").await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "pages: {} fired {} s after the stop",
        STOPPED_PAGES.map(|(_, alert, _)| alert).join(" and "),
        stopped.elapsed().as_secs()
    );
    stack.act("start", "postgres");
    stack.act("start", "serve-1");
    let restarted = Instant::now();

    // Every process is back, none having exited for good.
    all_healthy(&stack, deadline + Duration::from_secs(120)).await;

    // The relay and the projectors drain: the projection catches up with the store.
    let redis = (1..=3)
        .map(|n| format!("redis://{}:6379", stack.ip(&format!("redis-{n}"))))
        .collect::<Vec<_>>()
        .join(",");
    let postgres = format!("postgres://postgres@{}:5432/postgres", stack.ip("postgres"));
    let audited = loop {
        let audit = flyrtech_tests::binary(&service)
            .args(["--redis-url", &redis, "--strategy", "lua", "audit"])
            .args(["--projection", &postgres])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&audit.stdout).into_owned();
        if audit.status.success() && said.contains(" 0 differences") {
            break said;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(120),
            "{said}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!audited.contains(" 0 changes projected"), "{audited}");
    eprintln!("{audited}");
    // How many changes the projectors had to read from the stream because the bus' consumer
    // never delivered them (crates/infrastructure/src/projection/gaps.rs), for the record.
    let mut filled = 0.0;
    for projector in ["project-1", "project-2"] {
        let url = format!("http://{}:9100/metrics", stack.ip(projector));
        let metrics = reqwest::get(&url).await.unwrap().text().await.unwrap();
        filled += metrics
            .lines()
            .find_map(|l| l.strip_prefix("projector_gap_fills_total "))
            .map_or(0.0, |n| n.trim().parse::<f64>().unwrap());
    }
    eprintln!("changes read from the stream that the consumer never delivered: {filled}");

    // Prometheus scrapes every process of the stack.
    let url = format!("http://127.0.0.1:{}/api/v1/targets", stack.prometheus);
    loop {
        let targets: serde_json::Value = match reqwest::get(&url).await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(_) => serde_json::Value::Null,
        };
        let up: Vec<&str> = targets["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str())
            .collect();
        if up.len() == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(150),
            "{targets}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each page, its fault over, resolved.
    let over = Instant::now();
    for (fault, alert, labels) in STOPPED_PAGES {
        // Resolved: Prometheus answers, and lists it neither pending nor firing.
        while stack.alert(alert, labels, "").await != Some(false) {
            assert!(
                over.elapsed() < Duration::from_secs(90),
                "{alert} ({fault}) still active: {:#?}",
                stack.query("ALERTS").await
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    // The Redis faults' page, for the record: whether the shard's writes were refused long
    // enough depends on how fast the cluster promoted and the old primary came back.
    eprintln!(
        "pages resolved by {} s after serve-1 and postgres were started",
        restarted.elapsed().as_secs()
    );
    eprintln!(
        "FlyrtechNotReplicated (a Redis primary lost): fired {:?}, active now {:?}",
        stack.fired("FlyrtechNotReplicated", "").await,
        stack.alert("FlyrtechNotReplicated", "", "").await
    );
}

/// The faults held until their page fires, and the alert the runbook (docs/operations.md)
/// names for each, narrowed to the fault's process or dependency.
const STOPPED_PAGES: [(&str, &str, &str); 2] = [
    (
        "serve-1 stopped",
        "FlyrtechProcessDown",
        r#"instance="serve-1:8080""#,
    ),
    (
        "PostgreSQL stopped",
        "FlyrtechDependencyUnreachable",
        r#"dependency="postgres""#,
    ),
];

/// The faults, one after another while verify runs (its 50 s are the schedule; each fault is
/// spaced so that the clients work between them): a `serve` restarted; a NATS node killed and
/// started again 3 s later; the Redis primary holding verify's journeys killed, its replica
/// promoted (node timeout 2 s), and the old primary started again, now its replica; then the
/// primary holding them cut from the network, its replica promoted in turn, and the old one
/// connected again; PostgreSQL restarted under the two projectors (a fast shutdown). While a
/// shard has no replica, `--wait-replicas 1` refuses its writes (503 `replicas-missing`), which
/// verify counts as turned away.
async fn nemesis(stack: &Stack) {
    let pause = |seconds| tokio::time::sleep(Duration::from_secs(seconds));
    let say = |what: &str| eprintln!("nemesis: {what}");
    pause(4).await;
    say("serve-1 restarted");
    stack.act("restart", "serve-1");
    pause(3).await;
    say("nats-2 killed");
    stack.act("kill", "nats-2");
    pause(3).await;
    say("nats-2 started");
    stack.act("start", "nats-2");
    pause(3).await;
    let primary = stack.redis_primary_holding("*VFY-*");
    say(&format!(
        "{primary} (a primary holding verify's journeys) killed"
    ));
    stack.act("kill", &primary);
    pause(6).await;
    say(&format!("{primary} started"));
    stack.act("start", &primary);
    pause(5).await;
    let primary = stack.redis_primary_holding("*VFY-*");
    say(&format!(
        "{primary} (a primary holding verify's journeys) cut from the network"
    ));
    stack.cut(&primary);
    pause(6).await;
    say(&format!("{primary} connected again"));
    stack.heal(&primary);
    pause(3).await;
    say("postgres restarted");
    stack.act("restart", "postgres");
}

/// Polls until Docker reports every flyrtech process of `stack` healthy, at most until `deadline`.
async fn all_healthy(stack: &Stack, deadline: Instant) {
    for name in ["serve-1", "serve-2", "relay", "project-1", "project-2"] {
        while stack.health(name) != "healthy" {
            assert!(
                Instant::now() < deadline,
                "{name} is {}:\n{}",
                stack.health(name),
                stack.logs()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
