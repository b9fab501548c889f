//! Redis adapters for the journey service: the journey store with its interchangeable
//! concurrency strategies, the cache, and a launcher for private Redis servers.
//!
//! # Layout
//! - [`connection`]: the [`Redis`] handle — shared multiplexed connection plus a pool of
//!   dedicated connections for WATCH, standalone or cluster, counting round trips.
//! - [`keys`]: every key name, with the journey's hash tag where atomicity needs it.
//! - [`layout`]: the two layouts (`document`, `hash`), creation that never makes a second copy,
//!   and the atomic conversion of one journey between them.
//! - [`dataset`]: the layout recorded in Redis, the start-up guard, the index, and the online
//!   migration.
//! - [`legacy`]: import from the original .NET service's Redis.
//! - `document`: the one-JSON-document layout shared by all strategies but `hash`.
//! - [`strategy`]: one module per strategy (`naive`, `local_lock`, `optimistic`, `redlock`,
//!   `lua`, `hash`) and [`RedisJourneyStore`], which forwards to the configured one.
//! - `scripts/`: the Lua sources, loaded once and invoked by SHA.
//! - [`outbox`]: the outbox entry written with every change, the [`outbox::relay::Relay`] that
//!   publishes it through a [`outbox::publisher`], and what the audit reads.
//! - [`projection`]: the PostgreSQL projection of the bus' changes (exactly once, in order),
//!   and its audit against the stored journeys.
//! - [`audit`]: replays the published events against the stored journeys to find lost updates.
//! - [`cache`]: the namespaced general-purpose cache.
//! - [`local_redis`]: starts `redis-server` (one, N independent masters, a 3-master cluster).
//! - [`local_services`]: starts `nats-server -js` and PostgreSQL, for the tests and the lab.
//! - [`retry`]: bounded exponential backoff with full jitter.
//! - [`server`]: what the Redis server must guarantee (no eviction of journeys, data on disk).
//! - `wakeup`: lock waiters woken by the release (pub/sub per lock), with a bounded fallback
//!   poll.
//! - `telemetry`: the metrics the store records (names and labels in its module docs).

pub mod audit;
pub mod cache;
pub mod connection;
pub mod dataset;
mod document;
mod error;
pub mod keys;
pub mod layout;
pub mod legacy;
pub mod local_redis;
pub mod local_services;
mod nodes;
pub mod outbox;
pub mod projection;
pub mod replication;
pub mod retry;
mod script;
mod script_reply;
pub mod server;
pub mod strategy;
mod telemetry;
mod wakeup;

pub use cache::RedisCache;
pub use connection::{Redis, RedisSettings};
pub use dataset::{DatasetError, DatasetState};
pub use layout::Layout;
pub use local_redis::{Fsync, LaunchError, LocalRedis, RedisProcess};
pub use local_services::{LocalNats, LocalPostgres};
pub use retry::RetryPolicy;
pub use script_reply::ScriptCall;
pub use strategy::{
    FencingToken, LockGuard, LockSettings, LockWaiters, RedisJourneyStore, ReplicaWait, SeedReport,
    StoreConfig, Strategy, UnknownStrategy,
};
