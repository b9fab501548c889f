//! The PostgreSQL projection: each journey's current journey and segment statuses and their
//! history, built from the changes on the bus, exactly once each and in per-journey order.
//!
//! Delivery is at least once and a redelivered or reclaimed change can overtake a newer one, so
//! every change (an [`Envelope`](flyrtech_core::Envelope), identified by its first event's id) goes through the rules of
//! [`flyrtech_core::consumer`], made durable (tables in `docs/outbox/SCHEMA.sql`):
//! - **duplicates**: a change whose id is in `processed_events` changes nothing;
//! - **in order**: version n of a journey is applied only when `journey_positions.last_version`
//!   is n - 1; the position row is locked (`FOR UPDATE`) for that decision, so two projectors
//!   cannot both apply n;
//! - **early**: a later version waits in `held_events` and is applied, in order, by the
//!   transaction that applies its predecessor;
//! - **stale**: a version at or below the position (never from a correct store: two changes
//!   committed the same version, which is a lost update) is recorded and ignored.
//!
//! A batch of changes is decided and written in **one transaction**: the `processed_events`
//! rows, the position, the projected statuses, the history and the held changes commit
//! together or not at all. The bus messages are acknowledged only after the commit, so a
//! projector killed at any point leaves either nothing of a batch (redelivered, applied then)
//! or all of it (redelivered, dropped as duplicates): restarted, the projection ends equal to
//! one application of each change. Each statement covers the whole batch (`UNNEST` of arrays),
//! so a batch costs about ten round trips however many changes it holds.
//!
//! # Layout
//! - [`schema`]: the connection and the tables (`docs/outbox/SCHEMA.sql`), applied once under a
//!   lock.
//! - [`apply`]: one batch of changes decided by [`flyrtech_core::consumer::decide`] and written in
//!   one transaction.
//! - [`reconcile`](mod@reconcile): the projection compared with the stored journeys (`flyrtech audit
//!   --projection`).
//! - [`projector`]: one durable consumer feeding the projection.
//! - [`partitioned`]: several projectors sharing a partitioned stream through PostgreSQL leases.
//!
//! # What it may import
//! The core crate, [`crate::events`] (the JetStream bus the changes arrive on) and
//! [`crate::plumbing`] (the trace context a change carries); never the store's internals: the audit reads journeys through [`flyrtech_core::JourneyStore`].

pub mod apply;
pub mod partitioned;
pub mod projector;
pub mod reconcile;
pub mod schema;

pub use apply::{AppliedBatch, BatchStats, Outcome, apply_batch};
pub use partitioned::{BALANCE_EVERY, PartitionedProjector};
pub use projector::{Projector, ProjectorSettings, ProjectorStats};
pub use reconcile::{Difference, ProjectionReport, reconcile};
pub use schema::{SCHEMA_SQL, connect, ensure_schema};

use flyrtech_core::{BusError, StoreError};

/// Why the projection could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// PostgreSQL refused or could not be reached; nothing of the batch was committed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored held change cannot be decoded (a foreign writer).
    #[error("held change of journey {journey} version {version} cannot be decoded: {reason}")]
    Corrupt {
        journey: String,
        version: i64,
        reason: String,
    },
    /// The bus (JetStream) could not be reached or refused a consumer; nothing was acknowledged.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The journey store failed while reconciling.
    #[error(transparent)]
    Store(#[from] StoreError),
}
