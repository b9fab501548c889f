//! Redis adapters for the journey service, in rooms by concern. Each room is a folder whose
//! `mod.rs` says what it owns and what it may import; the arrows run one way:
//!
//! ```text
//!   dataset ──┐      projection ──▶ events ──┐
//!             ▼                                ▼
//!           store ──────────────▶ replication ──▶ connection ──▶ secrets, telemetry, keys
//!   local (private servers: imports nothing of this crate)
//! ```
//!
//! - [`keys`]: every key name, with the journey's hash tag where atomicity needs it.
//! - [`telemetry`]: the metrics every process records, and the trace context a change carries.
//! - [`secrets`]: passwords in URLs redacted wherever printed; the least-privilege ACL lines.
//! - [`connection`]: the Redis handle, its settings, the primaries, errors, retries, server
//!   facts, lock wake-ups.
//! - [`replication`]: replica-confirmed writes (`--wait-replicas`, `--wait-aof`), a write and its
//!   `WAIT` inseparable, in group commits per primary.
//! - [`store`]: the strategies, the layouts, the scripts and their reply protocol, the outbox
//!   entry, and [`RedisJourneyStore`], which dispatches to the configured strategy.
//! - [`dataset`]: the layout recorded in Redis, the start-up guard, the online migration, the
//!   import from the original service.
//! - [`events`]: the relay, the publishers (Redis Stream, NATS JetStream), the audit of the
//!   published events.
//! - [`projection`]: the PostgreSQL projection fed from the bus, its projectors and its
//!   reconciliation with the stored journeys.
//! - [`local`]: private `redis-server`, `nats-server` and PostgreSQL processes.

pub mod connection;
pub mod dataset;
pub mod events;
pub mod keys;
pub mod local;
pub mod projection;
pub mod replication;
pub mod secrets;
pub mod store;
pub mod telemetry;

pub use connection::handle::Redis;
pub use connection::retry::RetryPolicy;
pub use connection::settings::RedisSettings;
pub use dataset::{DatasetError, DatasetState};
pub use local::redis_servers::{Fsync, LaunchError, LocalRedis, RedisProcess};
pub use local::services::{LocalNats, LocalPostgres};
pub use replication::Confirmation;
pub use store::cache::RedisCache;
pub use store::layout::Layout;
pub use store::strategy::{
    FencingToken, LockGuard, LockSettings, LockWaiters, RedisJourneyStore, ReplicaWait, SeedReport,
    StoreConfig, Strategy, UnknownStrategy,
};
pub use store::update_script::ScriptCall;
