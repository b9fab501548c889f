//! The `flyrtech` binary's library half (FlyrTech.Api): the journey service, in rooms that
//! import one way:
//!
//! ```text
//!   main.rs ──▶ commands ──▶ http ──▶ flyrtech-infrastructure
//!                  │           │
//!                  └──────▶ config ──▶ deployment
//! ```
//!
//! - [`commands`]: one file per subcommand (`serve`, `relay`, `project`, `audit`, `migrate`,
//!   `import-legacy`, `api-key`, `redis-acl`); `main.rs` only parses the command line and calls
//!   one. The lab (`flyrtech-lab`, crates/lab) is a binary of its own.
//! - [`http`]: the HTTP API that `flyrtech serve` runs.
//! - [`config`]: the layered configuration (defaults < file < `FLYRTECH_*` env < flags), one
//!   settings type per command.
//! - [`deployment`]: the configured Redis, or a private redis-server.
//! - [`telemetry`]: the logs and the OpenTelemetry traces every process installs (`main.rs`).
//!
//! The deployment and the telemetry import no other room of this crate, the HTTP service only
//! the configuration it is built from; the commands import them (checked by the `rooms` tests of
//! the suite).

pub mod commands;
pub mod config;
pub mod deployment;
pub mod http;
pub mod telemetry;
