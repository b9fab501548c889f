//! The journey domain of the FlyrTech Journey Service, and the ports it needs.
//!
//! This crate knows nothing of Redis, HTTP or Tokio. It holds what must be true whatever the
//! storage strategy: which status changes are allowed, what a journey looks like on the wire, how
//! versions grow, and what each port promises.
//!
//! The modules import one way, leaves first (`input`; `ids`, `money`, `status`, `version`; then
//! `events`, `error`; then `journey`; then `ports`, `consumer`): no circle, checked by the suite's
//! `rooms` test.
//!
//! # Layout
//! - [`ids`]: validated, key-safe `JourneyId` and `SegmentId`.
//! - [`status`]: `SegmentStatus`, `JourneyStatus` and the one transition table.
//! - [`money`]: exact prices in whole cents.
//! - [`input`]: `InvalidInput`, the leaf every value type reports through.
//! - [`version`]: `JourneyVersion`, how many changes a journey has had.
//! - [`journey`]: the `Journey` aggregate and `StatusChange`.
//! - [`error`]: `DomainError`, `StoreError` and the other ports' errors.
//! - [`events`]: domain events, the `Envelope` of one change, the injected `Clock`.
//! - [`consumer`]: the idempotent, in-order consumer of published envelopes.
//! - [`ports`]: the `JourneyStore` and `CacheService` traits with their error contracts.

pub mod consumer;
pub mod error;
pub mod events;
pub mod ids;
pub mod input;
pub mod journey;
pub mod money;
pub mod ports;
pub mod status;
pub mod version;

pub use error::{BusError, CacheError, DomainError, Quota, StoreError, Target};
pub use events::{Clock, DomainEvent, Envelope, EventId, EventKind, ManualClock, SystemClock};
pub use ids::{JourneyId, SegmentId};
pub use input::InvalidInput;
pub use journey::{Applied, Journey, JourneyFile, Segment, StatusChange};
pub use money::Money;
pub use ports::{
    CacheKey, CacheService, EventPublisher, JourneyStore, PublishError, UpdateOutcome,
};
pub use status::{JourneyStatus, SegmentStatus, Status, Transition};
pub use version::JourneyVersion;
