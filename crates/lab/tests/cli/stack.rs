//! The whole pipeline as an operator deploys it: the compose stack of deploy/compose (a Redis
//! Cluster of three primaries with a replica each, two `serve` confirming each write on a
//! replica, the relay, a three-node NATS JetStream cluster, PostgreSQL, two projectors,
//! Prometheus) brought up on this host's Docker, `verify` driving both `serve`, then the
//! projection audited against the store.

use std::path::Path;
use std::time::{Duration, Instant};

use flyrtech_tests::docker::{self, Stack};

use super::*;

/// Every service up and ready; every answer `verify` got from both instances explained by one
/// order (at least 99 % of the registers decided); once the relay and the projectors have
/// drained, the projection equal to the store (`audit --projection`: 0 differences, no
/// phantom); every process scraped by Prometheus. The stack goes with its volumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_stack_comes_up_and_its_pipeline_loses_nothing() {
    if !docker::answers() {
        return;
    }
    let service = Path::new(env!("CARGO_BIN_EXE_flyrtech-lab")).with_file_name("flyrtech");
    let stack = Stack::up(&service);
    let deadline = Instant::now() + Duration::from_secs(180);
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

    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("verify.json");
    let key = stack.api_key();
    let targets = stack
        .serve
        .map(|p| format!("--target=http://127.0.0.1:{p}"));
    let verified = lab()
        .args([
            "verify",
            "--duration",
            "8s",
            "--journeys",
            "4",
            "--clients",
            "8",
        ])
        .args(&targets)
        .arg(format!("--api-key={key}"))
        .arg(format!("--json={}", json.display()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&verified.stdout);
    assert_eq!(
        verified.status.code(),
        Some(0),
        "{stdout}\n{}",
        stack.logs()
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["verdict"], "linearizable", "{stdout}");
    assert!(report["decided"].as_f64().unwrap() >= 0.99, "{stdout}");

    // The relay and the projectors drain: the projection catches up with the store.
    let redis = format!("redis://{}:6379", stack.ip("redis-1"));
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
            Instant::now() < deadline + Duration::from_secs(60),
            "{said}\n{}",
            stack.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(!audited.contains(" 0 changes projected"), "{audited}");

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
            Instant::now() < deadline + Duration::from_secs(90),
            "{targets}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
