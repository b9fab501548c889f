//! Private servers for development, the tests and the lab: `redis-server` (one, several
//! independent masters, a cluster with or without replicas; `FLYRTECH_REDIS_SERVER` names
//! another Redis-compatible server, such as `valkey-server`), `nats-server -js` and PostgreSQL,
//! each on a free loopback port in a temporary directory, stopped when dropped.
//!
//! - [`redis_servers`]: [`LocalRedis`](redis_servers::LocalRedis) and its processes.
//! - [`services`]: [`LocalNats`](services::LocalNats) and [`LocalPostgres`](services::LocalPostgres).
//!
//! # What it may import
//! Nothing else of this crate: these are processes, not clients.

pub mod redis_servers;
pub mod services;

pub use redis_servers::{free_port, server_program, spawn_from_long_lived_thread};
