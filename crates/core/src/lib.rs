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
//! - [`ports`]: the `JourneyStore` and `CacheService` traits with their error contracts.

pub mod error;
pub mod ids;
pub mod journey;
pub mod money;
pub mod ports;
pub mod status;

pub use error::{DomainError, InvalidInput, StoreError, Target};
pub use ids::{JourneyId, SegmentId};
pub use journey::{Applied, Journey, JourneyFile, JourneyVersion, Segment, StatusChange};
pub use money::Money;
pub use ports::{CacheKey, CacheService, JourneyStore, UpdateOutcome};
pub use status::{JourneyStatus, SegmentStatus, Status, Transition};
