//! `flyrtech verify` as an operator runs it against running instances: its exit status, the
//! history file in Jepsen's shape, and the report.

use std::time::Duration;

use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{TestRedis, TestServer, serve_config};

use super::*;

fn verify(target: &str, dir: &std::path::Path) -> std::process::Output {
    flyrtech()
        .args([
            "verify",
            "--target",
            target,
            "--duration",
            "2s",
            "--journeys",
            "1",
            "--clients",
            "6",
        ])
        .arg(format!("--history={}", dir.join("history.jsonl").display()))
        .arg(format!("--json={}", dir.join("report.json").display()))
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_exits_by_its_verdict_and_writes_the_history_in_jepsens_shape() {
    let redis = TestRedis::single();
    let lua = TestServer::start(&redis.url(), Strategy::Lua).await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let (base, path) = (lua.base.clone(), dir.path().to_owned());
        move || verify(&base, &path)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(": linearizable"), "{stdout}");
    let lines = std::fs::read_to_string(dir.path().join("history.jsonl")).unwrap();
    let events: Vec<serde_json::Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(events.len() > 100, "{}", events.len());
    for event in &events {
        for field in ["process", "type", "f", "value", "time"] {
            assert!(event.get(field).is_some(), "{event}");
        }
    }
    assert_eq!(events[0]["type"], "invoke");
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "linearizable");
    assert_eq!(report["decided"], 1.0);

    // The control: the original read-modify-write, with a modelled processing delay.
    let mut store = StoreConfig::new(Strategy::Naive);
    store.processing_delay = Duration::from_millis(5);
    let naive = TestServer::start_with(serve_config(&redis.url(), store)).await;
    let out = tokio::task::spawn_blocking({
        let (base, path) = (naive.base.clone(), dir.path().to_owned());
        move || verify(&base, &path)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("NOT linearizable"), "{stdout}");
    assert!(
        stdout.contains("no order of these operations explains"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["verdict"], "not-linearizable");
    assert!(!report["windows"][0].as_array().unwrap().is_empty());
}
