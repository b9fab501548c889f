//! The `flyrtech` binary's library half (FlyrTech.Api): the journey service, in rooms that
//! import one way:
//!
//! ```text
//!   main.rs ──▶ commands ──▶ http ──▶ flyrtech-infrastructure
//!                  │           │
//!                  └──────▶ flyrtech-cli (the configuration, the deployment, what every
//!                            command shares with the lab's)
//! ```
//!
//! - [`commands`]: one file per subcommand (`serve`, `relay`, `project`, `audit`, `migrate`,
//!   `import-legacy`, `api-key`, `redis-acl`); `main.rs` only parses the command line and calls
//!   one. The lab (`flyrtech-lab`, crates/lab) is a binary of its own.
//! - [`http`]: the HTTP API that `flyrtech serve` runs.
//! - [`telemetry`]: the logs and the OpenTelemetry traces every process installs (`main.rs`).
//!
//! The telemetry imports no other room of this crate, the HTTP service only the configuration
//! it is built from (`flyrtech_cli::config`); the commands import them (checked by the `rooms`
//! tests of the suite).

pub mod commands;
pub mod http;
pub mod telemetry;
