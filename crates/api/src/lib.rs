//! The `flyrtech` binary's library half (FlyrTech.Api), in rooms that import one way:
//!
//! ```text
//!   main.rs ──▶ commands ──▶ lab, http ──▶ flyrtech-infrastructure
//!                  └───────▶ config, deployment
//! ```
//!
//! - [`commands`]: one file per subcommand (`serve`, `compare`, `relay`, `audit`, `backlog`,
//!   `project`, `project-bench`, `migrate`, `migrate-bench`, `import-legacy`); `main.rs` only
//!   parses the command line and calls one.
//! - [`http`]: the HTTP API that `flyrtech serve` runs.
//! - [`lab`]: strategies side by side with lost updates counted (`flyrtech compare`), and the
//!   report, charts and synthetic journeys the bench commands reuse.
//! - [`config`]: the layered configuration (defaults < file < `FLYRTECH_*` env < flags).
//! - [`deployment`]: the configured Redis, or a private redis-server.
//!
//! The lab, the HTTP service, the configuration and the deployment import no other room of this
//! crate; the commands import them (checked by the `rooms` tests of the suite).

pub mod commands;
pub mod config;
pub mod deployment;
pub mod http;
pub mod lab;
