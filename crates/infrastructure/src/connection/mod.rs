//! How the service reaches Redis: the handle, its settings, the primaries, errors and retries.
//!
//! - [`handle`]: the [`Redis`](handle::Redis) handle: a shared multiplexed connection plus a
//!   pool of dedicated connections for WATCH, standalone or cluster, counting round trips.
//! - [`settings`]: how to reach Redis ([`RedisSettings`](settings::RedisSettings)), read by the
//!   handle and the per-primary connections alike.
//! - `nodes`: the primaries of a deployment, each reached by connections that are never silently
//!   replaced (a WATCH or a WAIT belongs to one connection).
//! - `error`: Redis errors mapped onto the store's error contract.
//! - [`retry`]: bounded exponential backoff with full jitter.
//! - [`server`]: what the Redis server must guarantee (no eviction of journeys, data on disk).
//! - `wakeup`: lock waiters woken by the release (pub/sub per lock), with a bounded fallback poll.
//!
//! # What it may import
//! The core crate, [`crate::keys`], [`crate::secrets`] (a URL is printed redacted) and
//! [`crate::telemetry`] (round trips and errors are counted).

pub(crate) mod error;
pub mod handle;
pub(crate) mod nodes;
pub mod retry;
pub mod server;
pub mod settings;
pub(crate) mod wakeup;
