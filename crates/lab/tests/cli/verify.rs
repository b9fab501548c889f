//! `flyrtech-lab verify` as an operator runs it against running instances: its exit status, the
//! history file in Jepsen's shape, and the report.

use std::time::Duration;

use flyrtech_infrastructure::{StoreConfig, Strategy};
use flyrtech_tests::{TestRedis, TestServer, serve_config};

use super::*;

fn verify(target: &str, dir: &std::path::Path) -> std::process::Output {
    lab()
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
    // The file alone judges the same, and a budget too small to decide says so.
    let history = dir.path().join("history.jsonl");
    assert_eq!(check(&history, &[]).status.code(), Some(0));
    assert_eq!(check(&history, &["--budget", "1"]).status.code(), Some(3));
    std::fs::copy(&history, dir.path().join("lua.jsonl")).unwrap();

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
    let judged = check(&dir.path().join("history.jsonl"), &[]);
    assert_eq!(judged.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&judged.stdout).contains("NOT linearizable"));

    // A history whose first operation of a journey is not a read of it has no starting state:
    // without the setup's reads and the clients' (one of which may have come first).
    let lua = std::fs::read_to_string(dir.path().join("lua.jsonl")).unwrap();
    let headless: String = lua
        .lines()
        .filter(|l| !l.contains(&format!("\"process\":{}", u64::MAX)))
        .filter(|l| !l.contains("\"f\":\"read\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let path = dir.path().join("headless.jsonl");
    std::fs::write(&path, headless).unwrap();
    let refused = check(&path, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("no starting state"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// Pointed at a service whose rate limit turns most of its writes away, verify has judged almost
/// nothing: it is undecided (exit 3) however clean the little it saw, and names the cause and
/// what to do. With the floor lowered below the share that got through, it judges what it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_the_rate_limit_mostly_refused_is_undecided_and_names_the_cause() {
    let redis = TestRedis::single();
    let mut settings = serve_config(&redis.url(), StoreConfig::new(Strategy::Lua));
    settings.rate_limit = Some(flyrtech_cli::config::RateLimit {
        per_second: 20,
        burst: 20,
        max_clients: 16,
    });
    let limited = TestServer::start_with(settings).await;
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::task::spawn_blocking({
        let (base, path) = (limited.base.clone(), dir.path().to_owned());
        move || verify(&base, &path)
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.contains(": undecided"), "{stdout}");
    assert!(
        stdout.contains("of writes were refused by the service's rate limit (429)")
            && stdout.contains("run serve with --rate-limit off"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let coverage = &report["coverage"];
    let (writes, reached) = (
        coverage["writes"].as_u64().unwrap(),
        coverage["reached"].as_u64().unwrap(),
    );
    let limited_writes = coverage["turned_away"]["rate-limit"].as_u64().unwrap();
    assert!(limited_writes * 2 > writes, "{coverage}");
    assert!(report["shortfall"].as_str().is_some(), "{report}");
    // The search itself found nothing wrong in what did get through: undecided, not a violation.
    assert_eq!(report["verdict"], "undecided");
    assert_eq!(report["registers"]["not_linearizable"], 0, "{report}");
    let history = dir.path().join("history.jsonl");
    assert_eq!(check(&history, &[]).status.code(), Some(3));
    let floor = reached * 100 / writes.max(1);
    let judged = check(&history, &["--min-reached", &floor.to_string()]);
    assert_eq!(
        judged.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&judged.stdout)
    );
}

fn check(path: &std::path::Path, extra: &[&str]) -> std::process::Output {
    lab()
        .args(["verify", "--check"])
        .arg(path)
        .args(extra)
        .output()
        .unwrap()
}

/// A hand-made history in Jepsen's shape, recorded nowhere: a read that saw one segment from
/// before a change and another from after the next, at a version where neither was so. Each
/// register alone is explained; `verify --check` judges the journey whole and finds the torn read.
#[test]
fn verify_check_judges_a_hand_made_history_and_finds_a_torn_read() {
    let dir = tempfile::tempdir().unwrap();
    let journey = r#""journey":"JRN-T""#;
    let segments = |a: &str, b: &str| format!(r#"{{"S1":"{a}","S2":"{b}"}}"#);
    let lines = [
        format!(r#"{{"process":9,"type":"invoke","f":"read","value":{{{journey}}},"time":0}}"#),
        format!(
            r#"{{"process":9,"type":"ok","f":"read","value":{{{journey},"outcome":"observed","version":0,"status":"Confirmed","segments":{}}},"time":1}}"#,
            segments("Scheduled", "Scheduled")
        ),
        format!(
            r#"{{"process":1,"type":"invoke","f":"set-segment","value":{{{journey},"segment":"S1","to":"Delayed"}},"time":10}}"#
        ),
        format!(
            r#"{{"process":1,"type":"ok","f":"set-segment","value":{{{journey},"segment":"S1","to":"Delayed","outcome":"changed","version":1}},"time":20}}"#
        ),
        format!(r#"{{"process":3,"type":"invoke","f":"read","value":{{{journey}}},"time":15}}"#),
        format!(
            r#"{{"process":2,"type":"invoke","f":"set-segment","value":{{{journey},"segment":"S2","to":"Delayed"}},"time":30}}"#
        ),
        format!(
            r#"{{"process":2,"type":"ok","f":"set-segment","value":{{{journey},"segment":"S2","to":"Delayed","outcome":"changed","version":2}},"time":40}}"#
        ),
        format!(
            r#"{{"process":3,"type":"ok","f":"read","value":{{{journey},"outcome":"observed","version":1,"status":"Confirmed","segments":{}}},"time":50}}"#,
            segments("Scheduled", "Delayed")
        ),
    ];
    let path = dir.path().join("torn.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    let out = check(&path, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("torn read"), "{stdout}");
    // The same read at version 2, seeing both changes, is what the journey was.
    let fixed = lines.join("\n").replace(
        &format!(
            r#""version":1,"status":"Confirmed","segments":{}"#,
            segments("Scheduled", "Delayed")
        ),
        &format!(
            r#""version":2,"status":"Confirmed","segments":{}"#,
            segments("Delayed", "Delayed")
        ),
    );
    std::fs::write(&path, fixed).unwrap();
    assert_eq!(check(&path, &[]).status.code(), Some(0));
}
