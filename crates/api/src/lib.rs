//! The `flyrtech` binary's library half (FlyrTech.Api), in rooms that import one way:
//!
//! ```text
//!   main.rs ──▶ commands ──▶ lab, verify, http ──▶ flyrtech-infrastructure
//!                  │                    │
//!                  └───────▶ config ◀───┘ ──▶ deployment
//! ```
//!
//! - [`commands`]: one file per subcommand (`serve`, `compare`, `verify`, `relay`, `audit`,
//!   `backlog`, `project`, `project-bench`, `migrate`, `migrate-bench`, `import-legacy`, `soak`,
//!   `api-key`, `redis-acl`); `main.rs` only parses the command line and calls one.
//! - [`http`]: the HTTP API that `flyrtech serve` runs.
//! - [`lab`]: strategies side by side with lost updates counted (`flyrtech compare`), and the
//!   report, charts and synthetic journeys the bench commands reuse.
//! - [`verify`]: the client that records a history of a running deployment's answers for the
//!   linearizability checker (`flyrtech verify`).
//! - [`config`]: the layered configuration (defaults < file < `FLYRTECH_*` env < flags), one
//!   settings type per command.
//! - [`deployment`]: the configured Redis, or a private redis-server.
//! - [`telemetry`]: the logs and the OpenTelemetry traces every process installs (`main.rs`).
//!
//! The lab, the verify client, the deployment and the telemetry import no other room of this crate, the HTTP
//! service only the configuration it is built from; the commands import them (checked by the
//! `rooms` tests of the suite).

pub mod commands;
pub mod config;
pub mod deployment;
pub mod http;
pub mod lab;
pub mod telemetry;
pub mod verify;
