//! The journey store: the journeys and their outbox, written race-free by interchangeable
//! strategies.
//!
//! - [`strategy`]: one module per strategy (`naive`, `local_lock`, `optimistic`, `redlock`,
//!   `lua`, `hash`) and [`RedisJourneyStore`](strategy::RedisJourneyStore), which forwards to
//!   the configured one.
//! - [`layout`]: the two layouts (`document`, `hash`), both copies of a journey as one read finds
//!   them, creation that never makes a second copy.
//! - [`conversion`]: the atomic conversion of one journey between the layouts (the migration's
//!   step).
//! - `write`: what every strategy's write step shares (the write context, the processing delay).
//! - `document`: the one-JSON-document layout shared by every strategy but `hash`.
//! - `hash_fields`: the hash layout's codec (a journey as hash fields, and back).
//! - `update_script`: the in-Redis update scripts (`lua`, `hash`): which one, its call, its reply.
//! - [`index`]: the set that lists a store's journeys.
//! - [`outbox`]: the outbox entry every change writes in the same atomic step, and its decoding.
//! - [`cache`]: the namespaced general-purpose cache, with a quota of entries per client.
//! - [`quota`]: the count of journeys each client has created, with a ceiling.
//! - [`render`]: the journey as JSON text for readers, decoded and encoded once per distinct
//!   read.
//! - `scripts/`: the Lua sources, loaded once and invoked by SHA.
//!
//! # What it may import
//! The core crate and the rooms below it: [`crate::connection`], [`crate::replication`], [`crate::keys`], [`crate::secrets`], [`crate::telemetry`]. The dataset and the events build on the store; the
//! store knows neither.

pub mod cache;
pub mod conversion;
pub(crate) mod document;
#[cfg(test)]
pub(crate) mod fixtures;
pub(crate) mod hash_fields;
pub mod index;
pub mod layout;
pub mod outbox;
pub mod quota;
pub mod render;
pub mod strategy;
pub(crate) mod update_script;
pub(crate) mod write;
