//! Redis adapters for the journey service, in rooms by concern. Each room is a folder whose
//! `mod.rs` says what it owns and what it may import; the arrows run one way:
//!
//! ```text
//!   dataset ──┐      projection ──▶ events ──┐
//!             ▼                                ▼
//!           store ───────────────────────▶ plumbing ──▶ flyrtech-core
//!   local (private servers: imports nothing of this crate)
//! ```
//!
//! - [`plumbing`]: connections, keys, errors, retries, server facts, wake-ups, replica-confirmed
//!   writes, telemetry.
//! - [`store`]: the strategies, the layouts, the scripts and their reply protocol, the outbox
//!   entry, and [`RedisJourneyStore`], which dispatches to the configured strategy.
//! - [`dataset`]: the layout recorded in Redis, the start-up guard, the online migration, the
//!   import from the original service.
//! - [`events`]: the relay, the publishers (Redis Stream, NATS JetStream), the audit of the
//!   published events.
//! - [`projection`]: the PostgreSQL projection fed from the bus, its projectors and its
//!   reconciliation with the stored journeys.
//! - [`local`]: private `redis-server`, `nats-server` and PostgreSQL processes.

pub mod dataset;
pub mod events;
pub mod local;
pub mod plumbing;
pub mod projection;
pub mod store;

pub use dataset::{DatasetError, DatasetState};
pub use local::redis_servers::{Fsync, LaunchError, LocalRedis, RedisProcess};
pub use local::services::{LocalNats, LocalPostgres};
pub use plumbing::connection::Redis;
pub use plumbing::replication::Confirmation;
pub use plumbing::retry::RetryPolicy;
pub use plumbing::settings::RedisSettings;
pub use store::cache::RedisCache;
pub use store::layout::Layout;
pub use store::strategy::{
    FencingToken, LockGuard, LockSettings, LockWaiters, RedisJourneyStore, ReplicaWait, SeedReport,
    StoreConfig, Strategy, UnknownStrategy,
};
pub use store::update_script::ScriptCall;
