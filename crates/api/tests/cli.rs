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

/// `flyrtech serve` as an operator runs it: a private redis-server, the sample journeys, the
/// chosen strategy, and on SIGTERM a graceful stop that also stops the private server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_until_sigterm_and_cleans_up() {
    let mut child = flyrtech()
        .args(["serve", "--listen", "127.0.0.1:0", "--strategy", "hash"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut log = String::new();
    // Read the log until the server says where it listens (bounded by the lines it prints).
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
    let redis_url = log
        .split("url=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let get = |path: &str| {
        let request = client.get(format!("http://{addr}{path}")).send();
        async move {
            request
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };
    let ready = get("/ready").await;
    assert_eq!(ready["strategy"], "hash");
    let ids = get("/api/journeys").await;
    assert_eq!(ids["count"], 3, "the sample journeys are seeded: {ids}");

    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    log.push_str(&rest);
    assert!(status.success(), "{log}");
    assert!(log.contains("all in-flight requests finished"), "{log}");
    // The private redis-server went with it.
    let port = redis_url.rsplit(':').next().unwrap();
    assert!(
        std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_err(),
        "the private redis-server on {port} is still running"
    );
}
