//! The lab's binary as a user runs it: the main job on a private Redis, clear errors for a
//! missing redis-server and for bad configuration, `verify` against a running service, a soak
//! that runs the service beside it, and no secret in a report.
#![allow(clippy::unwrap_used)]

mod basics;
mod pages;
mod secrets;
mod stack;
mod verify;

use std::process::Command;

use flyrtech_tests::stdout_of;

/// `flyrtech-lab` with none of the caller's configuration ([`flyrtech_tests::binary`]). The
/// service's binary, which `soak` runs, is found beside it (the workspace's tests build both).
fn lab() -> Command {
    flyrtech_tests::binary(env!("CARGO_BIN_EXE_flyrtech-lab"))
}

/// Runs `flyrtech-lab` with `args` and `--json` into a file of its own, asserts that it
/// succeeded and returns the report it wrote.
fn report_of(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    stdout_of(lab().args(args).arg(format!("--json={}", json.display())));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}
