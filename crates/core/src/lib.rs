//! The journey domain of the FlyrTech Journey Service, and the ports it needs.
//!
//! This crate knows nothing of Redis, HTTP or Tokio. It holds what must be true whatever the
//! storage strategy: which status changes are allowed, what a journey looks like on the wire, how
//! versions grow, and what each port promises.
//!
//! # Layout
//! - [`ids`]: validated, key-safe `JourneyId` and `SegmentId`.
//! - [`status`]: `SegmentStatus`, `JourneyStatus` and the one transition table.
//! - [`money`]: exact prices in whole cents.
//! - [`journey`]: the `Journey` aggregate, `StatusChange`, `JourneyVersion`.
//! - [`error`]: `DomainError`, `StoreError`, `InvalidInput`.
//! - [`events`]: domain events, the `Envelope` of one change, the injected `Clock`.
//! - [`consumer`]: the idempotent, in-order consumer of published envelopes.
//! - [`history`]: the linearizability checker of what clients were answered (pure).
//! - [`ports`]: the `JourneyStore` and `CacheService` traits with their error contracts.

pub mod consumer;
pub mod error;
pub mod events;
pub mod history;
pub mod ids;
pub mod journey;
pub mod money;
pub mod ports;
pub mod status;

pub use error::{BusError, CacheError, DomainError, InvalidInput, Quota, StoreError, Target};
pub use events::{Clock, DomainEvent, Envelope, EventId, EventKind, ManualClock, SystemClock};
pub use ids::{JourneyId, SegmentId};
pub use journey::{Applied, Journey, JourneyFile, JourneyVersion, Segment, StatusChange};
pub use money::Money;
pub use ports::{
    CacheKey, CacheService, EventPublisher, JourneyStore, PublishError, UpdateOutcome,
};
pub use status::{JourneyStatus, SegmentStatus, Status, Transition};
