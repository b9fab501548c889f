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
