//! Errors of the domain and of the ports.
//!
//! One enum per boundary: [`DomainError`] is what the aggregate itself refuses, [`StoreError`]
//! is the journey store's contract (it wraps domain refusals so that a caller matches one enum),
//! [`CacheError`] the general-purpose cache's, [`BusError`] an event bus' (reaching it, setting up
//! its streams), and [`InvalidInput`] is a value that fails validation at the edge.

use std::error::Error as StdError;
use std::fmt;

use crate::ids::{JourneyId, SegmentId};
use crate::input::InvalidInput;
use crate::version::JourneyVersion;

/// What a status change targets, for error messages and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Target {
    /// The journey's own status.
    Journey,
    /// One segment's status.
    Segment(SegmentId),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Journey => f.write_str("journey"),
            Self::Segment(id) => write!(f, "segment {id}"),
        }
    }
}

/// A change the journey aggregate refuses. Nothing is written when one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// The journey has no segment with this id.
    #[error("journey {journey} has no segment {segment}")]
    SegmentNotFound {
        /// The journey that was searched.
        journey: JourneyId,
        /// The segment that is missing.
        segment: SegmentId,
    },
    /// The transition table does not allow `from -> to`.
    #[error("{target} cannot change from {from} to {to}")]
    InvalidTransition {
        /// What was being changed.
        target: Target,
        /// The current status.
        from: &'static str,
        /// The requested status.
        to: &'static str,
    },
}

/// The journey store's error contract. Every store method documents which variants it returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No journey with this id exists.
    #[error("journey {0} not found")]
    JourneyNotFound(JourneyId),
    /// The domain refused the change (missing segment, invalid transition).
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The request itself is malformed (bad id, bad status, invalid journey fields).
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// `create` was asked to create a journey that already exists; it was left untouched.
    #[error("journey {0} already exists")]
    AlreadyExists(JourneyId),
    /// The caller's expected version (HTTP `If-Match`) is not the stored one.
    #[error("journey is at version {actual}, not the expected {expected}")]
    VersionMismatch {
        /// The version the caller based its change on.
        expected: JourneyVersion,
        /// The version currently stored.
        actual: JourneyVersion,
    },
    /// The change kept colliding with concurrent writers and the strategy gave up; nothing was
    /// written. Retrying later is safe.
    #[error("gave up after {attempts} attempts because of concurrent updates")]
    Conflict {
        /// How many attempts were made before giving up.
        attempts: u32,
    },
    /// A lock holder's write was refused because a newer fencing token has been minted for the
    /// journey since its own: its lock expired and someone else took over. Nothing was written.
    #[error("fencing token {token} is stale; token {newest} has been issued since")]
    StaleFencingToken {
        /// The refused token.
        token: u64,
        /// The newest token minted for the journey.
        newest: u64,
    },
    /// The change reached the primary, but fewer replicas than required confirmed it within
    /// the wait (`--wait-replicas`, `--wait-aof`): it may be in place on the primary, and a
    /// failover now could lose it. Its outcome is unknown. Retrying the same change is safe (it
    /// is a no-op if it stayed applied, and waits for the replicas again).
    #[error(
        "only {confirmed} of the {required} replicas required confirmed the change in time (it \
         may be in place on the primary)"
    )]
    NotReplicated {
        /// Replicas that confirmed.
        confirmed: u32,
        /// Replicas required.
        required: u32,
    },
    /// The change was refused before anything was written: its primary is known to lack the
    /// replicas a write needs (a confirmation came back short, or Redis answered `NOREPLICAS`).
    /// Nothing of it is in place, and nothing of it will surface later.
    #[error(
        "refused before it was sent: the primary has {confirmed} of the {required} replicas \
         required, so nothing was written"
    )]
    ReplicasMissing {
        /// Replicas that confirmed the primary's last write or probe.
        confirmed: u32,
        /// Replicas required.
        required: u32,
    },
    /// One client's share of something every client shares is used up; nothing was written.
    /// Other clients are not affected.
    #[error("{owner} holds its quota of {limit} {quota}")]
    OverQuota {
        /// Which quota.
        quota: Quota,
        /// The client, as the quota names it (`key:NAME` or `addr:ADDRESS`).
        owner: String,
        /// The quota.
        limit: u64,
    },
    /// The stored data could not be decoded: a bug or a foreign writer, never bad user input.
    #[error("stored data for {key} is corrupt: {reason}")]
    Corrupt {
        /// The Redis key holding the bad value.
        key: String,
        /// What failed to decode.
        reason: String,
    },
    /// The backing store could not be reached or timed out. For a write, the outcome may be
    /// unknown (a timed-out command may still have been applied); retrying the same status change
    /// is harmless because setting a status twice is a no-op.
    #[error("store unavailable: {message}")]
    Unavailable {
        /// A short description for logs and problem responses.
        message: String,
        /// The underlying cause, kept for the log's cause chain.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

/// A per-client quota on what the service's clients share (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// Journeys a client has created.
    Journeys,
}

impl std::fmt::Display for Quota {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Journeys => "journeys created",
        })
    }
}

impl StoreError {
    /// A stable, low-cardinality name for the error, for metrics labels and log fields.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::JourneyNotFound(_) => "not_found",
            Self::Rejected(DomainError::SegmentNotFound { .. }) => "segment_not_found",
            Self::Rejected(DomainError::InvalidTransition { .. }) => "invalid_transition",
            Self::InvalidInput(_) => "invalid_input",
            Self::AlreadyExists(_) => "already_exists",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::Conflict { .. } => "conflict",
            Self::StaleFencingToken { .. } => "stale_fencing_token",
            Self::NotReplicated { .. } => "not_replicated",
            Self::ReplicasMissing { .. } => "replicas_missing",
            Self::OverQuota { .. } => "over_quota",
            Self::Corrupt { .. } => "corrupt",
            Self::Unavailable { .. } => "unavailable",
        }
    }

    /// An [`StoreError::Unavailable`] with a cause.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// The general-purpose cache's contract ([`crate::CacheService`]). Nothing is written when one is
/// returned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CacheError {
    /// The request is malformed (a zero time to live).
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The cache holds as many entries as it may (its cap). Entries expire, so room comes back
    /// without anyone deleting.
    #[error("the cache holds its maximum of {limit} entries")]
    Full {
        /// The cap.
        limit: u64,
    },
    /// The client's share of the cache is used up; other clients are not affected.
    #[error("{owner} holds its quota of {limit} cache entries")]
    OverQuota {
        /// The client, as the quota names it (`key:NAME` or `addr:ADDRESS`).
        owner: String,
        /// The quota.
        limit: u64,
    },
    /// The backing store could not be reached, timed out, or holds what the cache cannot read.
    #[error("cache unavailable: {message}")]
    Unavailable {
        /// A short description for logs and problem responses.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
}

/// The cache lives in the same Redis as the journeys and goes through the same plumbing, which
/// reports in the store's terms: what it can meet there is the server being unreachable (or a
/// value it cannot decode), and that is the cache being unavailable.
impl From<StoreError> for CacheError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidInput(e) => Self::InvalidInput(e),
            other => {
                let (message, source) = unavailable_parts(other);
                Self::Unavailable { message, source }
            }
        }
    }
}

/// A store error as another boundary's "unavailable": its message and cause.
fn unavailable_parts(error: StoreError) -> (String, Option<Box<dyn StdError + Send + Sync>>) {
    match error {
        StoreError::Unavailable { message, source } => (message, source),
        other => (other.to_string(), Some(Box::new(other))),
    }
}

/// Why an event bus (a Redis Stream, NATS JetStream) could not be reached or set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BusError {
    /// The settings cannot work with this bus (a partition count out of range, or other than
    /// the one the stream records).
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    /// The bus could not be reached, refused, or timed out.
    #[error("bus unavailable: {message}")]
    Unavailable {
        /// A short description for logs.
        message: String,
        /// The underlying cause.
        #[source]
        source: Option<Box<dyn StdError + Send + Sync>>,
    },
    /// What the bus holds cannot be decoded (a foreign writer).
    #[error("bus entry {entry} is corrupt: {reason}")]
    Corrupt {
        /// The entry (a stream id, a subject).
        entry: String,
        /// What failed to decode.
        reason: String,
    },
}

impl BusError {
    /// A [`BusError::Unavailable`] with a cause.
    pub fn unavailable(
        message: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// The Redis Stream bus goes through the store's Redis plumbing, which reports in the store's
/// terms.
impl From<StoreError> for BusError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InvalidInput(e) => Self::InvalidInput(e),
            StoreError::Corrupt { key, reason } => Self::Corrupt { entry: key, reason },
            other => {
                let (message, source) = unavailable_parts(other);
                Self::Unavailable { message, source }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kinds are metric labels and log fields: stable, distinct and snake_case.
    #[test]
    fn every_store_error_has_its_own_stable_kind() {
        let journey = JourneyId::parse("JRN-1").expect("test data");
        let errors = [
            (StoreError::JourneyNotFound(journey.clone()), "not_found"),
            (StoreError::Conflict { attempts: 3 }, "conflict"),
            (
                StoreError::unavailable("down", InvalidInput::new("x", "y")),
                "unavailable",
            ),
            (
                StoreError::OverQuota {
                    quota: Quota::Journeys,
                    owner: "addr:1".into(),
                    limit: 2,
                },
                "over_quota",
            ),
        ];
        for (error, kind) in &errors {
            assert_eq!(error.kind(), *kind, "{error}");
        }
        assert!(
            StoreError::OverQuota {
                quota: Quota::Journeys,
                owner: "addr:1".into(),
                limit: 2
            }
            .to_string()
            .contains("journeys created")
        );
    }

    /// Through the cache's and the bus' boundaries, a store that is down stays "unavailable"
    /// with its message and cause; any other store error keeps its text and becomes the cause.
    #[test]
    fn a_store_error_crosses_a_boundary_with_its_message_and_cause() {
        let down = StoreError::unavailable("redis down", InvalidInput::new("x", "y"));
        match CacheError::from(down) {
            CacheError::Unavailable { message, source } => {
                assert_eq!(message, "redis down");
                assert_eq!(source.expect("test data").to_string(), "invalid x: y");
            }
            other => panic!("{other:?}"),
        }
        let conflict = StoreError::Conflict { attempts: 3 };
        let text = conflict.to_string();
        match BusError::from(conflict) {
            BusError::Unavailable { message, source } => {
                assert_eq!(message, text);
                assert!(source.is_some_and(|s| s.to_string() == text && s.source().is_none()));
            }
            other => panic!("{other:?}"),
        }
    }
}
