//! The `flyrtech` binary's library half (FlyrTech.Api): configuration, where Redis comes from,
//! the HTTP API and the lab. `main.rs` only parses the command line and wires these together.
//!
//! # Layout
//! - [`config`]: the layered configuration (defaults < file < `FLYRTECH_*` env < flags).
//! - [`dataset`]: `flyrtech migrate` and `flyrtech import-legacy`.
//! - [`deployment`]: the configured Redis, or a private redis-server.
//! - [`http`]: `flyrtech serve`, the HTTP API.
//! - [`lab`]: `flyrtech compare`, strategies side by side, with lost updates counted.
//! - [`outbox`]: `flyrtech relay`, `flyrtech audit` and `flyrtech backlog`.
//! - [`projection`]: `flyrtech project` (the bus into PostgreSQL), `flyrtech audit
//!   --projection`, `flyrtech project-bench`.

pub mod commands;
pub mod config;
pub mod deployment;
pub mod http;
pub mod lab;
