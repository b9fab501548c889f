//! The events' way out of Redis: the relay that publishes the outbox, the publishers it
//! publishes through (a Redis Stream, NATS JetStream), the PostgreSQL projection fed from the
//! bus, and the audits that replay what was published against what was stored.
//!
//! - [`relay`]: the background worker that publishes outbox entries, at least once, in order.
//! - [`publisher`]: the Redis Stream bus, its retention, and [`Bus`](publisher::Bus), the
//!   relay's choice of bus.
//! - [`nats`]: the JetStream bus and the stream both ends agree on.
//! - [`projection`]: the PostgreSQL projection of the bus' changes (exactly once, in order).
//! - [`audit`]: replays the published events against the stored journeys to find lost updates.
//!
//! # What it may import
//! The core crate, [`crate::plumbing`] and [`crate::store`] (the outbox entry's format lives
//! with the store that writes it).

pub mod audit;
pub mod nats;
pub mod projection;
pub mod publisher;
pub mod relay;
