//! Redis plumbing: how the service reaches Redis and what every write path shares, whatever it
//! stores.
//!
//! - [`acl`]: the `ACL SETUSER` line each role needs (least privilege).
//! - [`connection`]: the [`Redis`](connection::Redis) handle: a shared multiplexed connection
//!   plus a pool of dedicated connections for WATCH, standalone or cluster, counting round trips.
//! - [`settings`]: how to reach Redis ([`RedisSettings`](settings::RedisSettings)), read by the
//!   connections and the per-primary connections alike.
//! - `nodes`: the primaries of a deployment, each reached by connections that are never silently
//!   replaced (a WATCH or a WAIT belongs to one connection).
//! - [`keys`]: every key name, with the journey's hash tag where atomicity needs it.
//! - `error`: Redis errors mapped onto the store's error contract.
//! - [`retry`]: bounded exponential backoff with full jitter.
//! - [`server`]: what the Redis server must guarantee (no eviction of journeys, data on disk).
//! - `wakeup`: lock waiters woken by the release (pub/sub per lock), with a bounded fallback poll.
//! - [`replication`]: replica-confirmed writes (`--wait-replicas`), a write and its `WAIT`
//!   inseparable, in group commits per primary.
//! - `script`: a Lua script call that can travel alone or in a replica-confirmed batch.
//! - [`secret`]: passwords in URLs replaced by `***` wherever a URL is printed.
//! - [`telemetry`]: the metrics every process records, and their catalog.
//! - [`trace_context`]: the W3C `traceparent` a change carries from the request to the
//!   projection row.
//!
//! # What it may import
//! The core crate and nothing else of this crate: every other room builds on this one.

pub mod acl;
pub mod connection;
pub(crate) mod error;
pub mod keys;
pub(crate) mod nodes;
pub mod replication;
pub mod retry;
pub(crate) mod script;
pub mod secret;
pub mod server;
pub mod settings;
pub mod telemetry;
pub mod trace_context;
pub(crate) mod wakeup;
