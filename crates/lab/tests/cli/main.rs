//! The lab's binary as a user runs it: the main job on a private Redis, clear errors for a
//! missing redis-server and for bad configuration, `verify` against a running service, a soak
//! that runs the service beside it, and no secret in a report.
#![allow(clippy::unwrap_used)]

mod basics;
mod secrets;
mod verify;

use std::process::Command;

/// `flyrtech-lab` with none of the caller's configuration ([`flyrtech_tests::binary`]). The
/// service's binary, which `soak` runs, is found beside it (the workspace's tests build both).
fn lab() -> Command {
    flyrtech_tests::binary(env!("CARGO_BIN_EXE_flyrtech-lab"))
}

/// Runs `command`, asserts that it succeeded (showing its stderr when not) and returns its stdout.
fn stdout_of(command: &mut Command) -> String {
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs `flyrtech-lab` with `args` and `--json` into a file of its own, asserts that it
/// succeeded and returns the report it wrote.
fn report_of(args: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("report.json");
    stdout_of(lab().args(args).arg(format!("--json={}", json.display())));
    serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap()
}
