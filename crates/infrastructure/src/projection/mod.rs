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
//! - **a version given twice**: an unseen change at a version already applied (or held)
//!   replaces what is there (below).
//!
//! # A version given twice
//! The store gives each change of a journey the next version. It gives one version to two
//! changes in two ways: the `naive` strategy lost an update (both read the same version), or a
//! failover discarded a change that had already been published (replication is asynchronous;
//! with `--wait-replicas` the relay publishes only what the replicas hold, so this needs a
//! deployment without it) and the promoted replica gave its version to the next change. Either
//! way the later change is the one the store holds, and a projection that kept the first
//! (ignoring the second as stale) would disagree with the store for good. So the later one
//! **replaces** it: every change the projection applied from that version on is undone (its
//! history rows removed, its `processed_events` row marked `superseded`, each status it set put
//! back to what the remaining history last set), the position goes back to the version before,
//! and the new change is applied as the next one; the store's later changes follow it as usual.
//! A superseded change that is delivered again is a duplicate. `projector_changes_total`
//! counts both sides (`replaced`, `superseded`), and `FlyrtechProjectorStaleVersions` pages on
//! them: the runbook says how to tell the failover from the lost update. A failover that
//! discarded a journey's last changes, when no later change of that journey follows, leaves the
//! projection ahead of the store; [`repair_ahead`] (`flyrtech audit --projection URL --repair`)
//! undoes them down to the stored version.
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
//! - [`gaps`]: the changes that consumer never delivered, read from the stream by the changes
//!   held behind them.
//! - [`partitioned`]: several projectors sharing a partitioned stream through PostgreSQL leases.
//!
//! # What it may import
//! The core crate, [`crate::events`] (the JetStream bus the changes arrive on) and
//! [`crate::telemetry`] (the trace context a change carries), [`crate::connection`], [`crate::keys`]; never the store's internals: the audit reads journeys through [`flyrtech_core::JourneyStore`].

pub mod apply;
pub mod gaps;
pub mod partitioned;
pub mod projector;
pub mod reconcile;
pub mod schema;

pub use apply::{AppliedBatch, BatchStats, Outcome, apply_batch};
pub use gaps::{Gaps, JOURNEYS_PER_ROUND};
pub use partitioned::{BALANCE_EVERY, PartitionedProjector};
pub use projector::{Projector, ProjectorSettings, ProjectorStats};
pub use reconcile::{Difference, ProjectionReport, reconcile, repair_ahead};
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

impl ProjectionError {
    /// The dependency whose failure this is, which a worker waits for and tries again; `None`
    /// for what no retry mends (a corrupt held change).
    pub fn dependency(&self) -> Option<crate::telemetry::health::Dependency> {
        use crate::telemetry::health::Dependency;
        match self {
            Self::Postgres(_) => Some(Dependency::Postgres),
            Self::Bus(_) => Some(Dependency::Nats),
            Self::Store(_) => Some(Dependency::Redis),
            Self::Corrupt { .. } => None,
        }
    }
}
