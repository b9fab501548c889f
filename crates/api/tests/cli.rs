//! The binary as a user runs it: a private redis-server when no URL is configured, clear errors
//! for a missing redis-server and for bad configuration.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn flyrtech() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flyrtech"));
    for var in [
        "FLYRTECH_REDIS_URL",
        "REDIS_URL",
        "FLYRTECH_STRATEGY",
        "FLYRTECH_CONFIG",
        "FLYRTECH_PROCESSING_DELAY_MS",
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
    let naive = stdout.lines().find(|l| l.starts_with("naive:")).unwrap();
    assert!(
        !naive.ends_with(" 0 lost"),
        "the control lost nothing: {naive}"
    );
    assert!(
        stdout.contains("hash: 20 of 20 updates applied, 0 lost"),
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
        stdout.contains("lua: 4 of 4 updates applied, 0 lost"),
        "{stdout}"
    );
    assert!(!stdout.contains("naive:"), "{stdout}");
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
