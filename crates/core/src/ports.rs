//! The ports: what the service needs from the outside world, and the contract each must keep.
//!
//! Adapters live in `flyrtech-infrastructure`. Futures are `Send` so that a store can be used
//! from any Tokio task or Axum handler.

use std::future::Future;
use std::time::Duration;

use crate::error::{CacheError, StoreError};
use crate::ids::{JourneyId, SegmentId};
use crate::input::InvalidInput;
use crate::journey::{Journey, StatusChange};
use crate::status::{JourneyStatus, SegmentStatus};
use crate::version::JourneyVersion;

/// What an acknowledged update did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateOutcome {
    /// The journey's version after the update (unchanged for a no-op).
    pub version: JourneyVersion,
    /// False when the status already was the target and nothing was written.
    pub changed: bool,
    /// How many tries the strategy needed (1 when nothing collided).
    pub attempts: u32,
    /// Time spent waiting for a lock, for strategies that take one.
    pub lock_wait: Duration,
}

/// Stores journeys and applies status changes without losing concurrent ones (except the
/// deliberately unsafe control strategies, which document that they do).
pub trait JourneyStore: Send + Sync {
    /// Reads one journey.
    ///
    /// # Errors
    /// MUST return [`StoreError::JourneyNotFound`] when no journey has this id,
    /// [`StoreError::Unavailable`] when the backing store cannot be reached, and
    /// [`StoreError::Corrupt`] when the stored value cannot be decoded.
    fn get(&self, id: &JourneyId) -> impl Future<Output = Result<Journey, StoreError>> + Send;

    /// Lists the ids of all journeys, sorted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the backing store cannot be reached.
    fn list_ids(&self) -> impl Future<Output = Result<Vec<JourneyId>, StoreError>> + Send;

    /// Creates a journey. Never overwrites: an existing journey is left exactly as it is.
    ///
    /// # Errors
    /// MUST return [`StoreError::AlreadyExists`] when a journey with this id exists,
    /// [`StoreError::InvalidInput`] when the journey fails [`Journey::validate_new`], and
    /// [`StoreError::Unavailable`] when the backing store cannot be reached.
    fn create(&self, journey: &Journey) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Applies one status change, atomically with respect to every other change to the journey.
    /// With `expected = Some(v)` the change is applied only if the stored version is `v`.
    ///
    /// # Errors
    /// MUST return [`StoreError::JourneyNotFound`] when the journey does not exist;
    /// [`StoreError::Rejected`] with `SegmentNotFound` or `InvalidTransition` when the domain
    /// refuses the change; [`StoreError::VersionMismatch`] when `expected` is stale;
    /// [`StoreError::Conflict`] when the strategy gave up under contention; and
    /// [`StoreError::Unavailable`] when the backing store cannot be reached. On every error
    /// nothing is written, except that after `Unavailable` a write may or may not have landed.
    fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send;

    /// Sets one segment's status: [`JourneyStore::update`] with a segment change.
    ///
    /// # Errors
    /// As [`JourneyStore::update`].
    fn update_segment_status(
        &self,
        id: &JourneyId,
        segment_id: &SegmentId,
        status: SegmentStatus,
        expected: Option<JourneyVersion>,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send {
        let change = StatusChange::Segment {
            segment_id: segment_id.clone(),
            status,
        };
        async move { self.update(id, &change, expected).await }
    }

    /// Sets the journey's own status: [`JourneyStore::update`] with a journey change.
    ///
    /// # Errors
    /// As [`JourneyStore::update`].
    fn update_journey_status(
        &self,
        id: &JourneyId,
        status: JourneyStatus,
        expected: Option<JourneyVersion>,
    ) -> impl Future<Output = Result<UpdateOutcome, StoreError>> + Send {
        let change = StatusChange::Journey { status };
        async move { self.update(id, &change, expected).await }
    }
}

/// A key of the general-purpose cache: 1 to 512 characters, none of them whitespace or control
/// characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(String);

impl CacheKey {
    /// Longest key accepted, in characters.
    pub const MAX_LEN: usize = 512;

    /// The rule as a regular expression (for the OpenAPI document): no control characters
    /// (Unicode `Cc`) and no whitespace (Unicode `White_Space`), 1 to [`Self::MAX_LEN`].
    pub const PATTERN: &'static str = "^[^\\u0000-\\u0020\\u007f-\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]{1,512}$";

    /// Validates a cache key.
    ///
    /// # Errors
    /// [`InvalidInput`] when the key is empty, too long, or contains whitespace or control
    /// characters.
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidInput> {
        let raw = raw.into();
        if raw.is_empty() || raw.chars().count() > Self::MAX_LEN {
            return Err(InvalidInput::new(
                "cache key",
                format!("must be 1 to {} characters long", Self::MAX_LEN),
            ));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(InvalidInput::new(
                "cache key",
                "must not contain whitespace or control characters",
            ));
        }
        Ok(Self(raw))
    }

    /// The key as the caller wrote it (before any namespacing by the adapter).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The original service's general-purpose cache. Adapters keep its keys in a namespace of their
/// own, so that no cache call can reach journey data.
pub trait CacheService: Send + Sync {
    /// Reads a value; `None` when absent or expired.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when the backing store cannot be reached.
    fn get(
        &self,
        key: &CacheKey,
    ) -> impl Future<Output = Result<Option<String>, CacheError>> + Send;

    /// Stores a value, replacing any previous one, expiring after `ttl` when given.
    ///
    /// # Errors
    /// [`CacheError::InvalidInput`] when `ttl` is zero; [`CacheError::Full`] when the cache
    /// holds its maximum of entries and `key` is not one of them; [`CacheError::Unavailable`]
    /// when the backing store cannot be reached.
    fn set(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Option<Duration>,
    ) -> impl Future<Output = Result<(), CacheError>> + Send;

    /// Stores `value` for `ttl` unless the key already holds a value, atomically: the
    /// cache-aside step, so two callers racing on a missing key end up with one value.
    /// Returns the value the key already held (nothing was written), or `None` when `value` was
    /// stored.
    ///
    /// # Errors
    /// [`CacheError::InvalidInput`] when `ttl` is zero; [`CacheError::Full`] as for `set`;
    /// [`CacheError::Unavailable`] when the backing store cannot be reached.
    fn set_if_absent(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Duration,
    ) -> impl Future<Output = Result<Option<String>, CacheError>> + Send;

    /// Removes a value; true when there was one.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when the backing store cannot be reached.
    fn remove(&self, key: &CacheKey) -> impl Future<Output = Result<bool, CacheError>> + Send;

    /// Whether a value is present.
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when the backing store cannot be reached.
    fn exists(&self, key: &CacheKey) -> impl Future<Output = Result<bool, CacheError>> + Send;
}

/// Why a batch of envelopes was not (entirely) published.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The bus cannot be reached now, or did not confirm. At least `published` envelopes were
    /// published; later ones may or may not have been. The relay retries from `published` later
    /// without counting the failure against the entries.
    #[error("event bus unavailable after {published} envelopes: {message}")]
    Unavailable {
        /// How many envelopes, from the start of the batch, were published.
        published: usize,
        /// What failed.
        message: String,
    },
    /// The bus refused the envelope at index `published`: the ones before it were published.
    /// The relay redelivers it and parks it after too many deliveries.
    #[error("event bus rejected envelope {published}: {reason}")]
    Rejected {
        /// How many envelopes, from the start of the batch, were published.
        published: usize,
        /// Why.
        reason: String,
    },
}

impl PublishError {
    /// How many envelopes, from the start of the batch, were published before the failure.
    pub fn published(&self) -> usize {
        match self {
            Self::Unavailable { published, .. } | Self::Rejected { published, .. } => *published,
        }
    }
}

/// Where the relay publishes: a Redis Stream by default, or NATS JetStream; any other bus
/// implements the same contract (see `docs/outbox/SCHEMA.md`).
///
/// Contract: envelopes are published in the order given (so a journey's changes keep their
/// order), and a successful return means the bus has durably accepted all of them. Publishing
/// the same envelope twice is allowed (delivery is at least once; consumers deduplicate by
/// event id).
pub trait EventPublisher: Send + Sync {
    /// Publishes a batch, in order.
    ///
    /// # Errors
    /// [`PublishError`] saying how many were published before the failure.
    fn publish(
        &self,
        batch: &[crate::events::Envelope],
    ) -> impl Future<Output = Result<(), PublishError>> + Send;

    /// Brings the bus within its retention now, as a relay does before it exits: a bus trimmed
    /// only every so often would otherwise keep what arrived since its last trim. The default
    /// does nothing (a bus that keeps its own bounds, as JetStream does).
    fn settle(&self) -> impl Future<Output = ()> + Send {
        async {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cache key is 1 to 512 characters (counted as characters, not bytes), with no
    /// whitespace or control character; it reads back as written.
    #[test]
    fn a_cache_key_is_checked_at_its_bounds() {
        assert!(CacheKey::parse("").is_err());
        let longest = "é".repeat(CacheKey::MAX_LEN);
        assert_eq!(
            CacheKey::parse(longest.clone())
                .expect("test data")
                .as_str(),
            longest
        );
        assert!(CacheKey::parse("k".repeat(CacheKey::MAX_LEN + 1)).is_err());
        assert!(CacheKey::parse("a b").is_err());
        assert!(CacheKey::parse("a\u{7}").is_err());
        assert_eq!(
            CacheKey::parse("user:1").expect("test data").as_str(),
            "user:1"
        );
    }

    #[test]
    fn a_publish_error_says_how_many_went_out_before_it() {
        let failed = |published| PublishError::Rejected {
            published,
            reason: "no".into(),
        };
        assert_eq!(failed(0).published(), 0);
        assert_eq!(failed(3).published(), 3);
        let down = PublishError::Unavailable {
            published: 2,
            message: "down".into(),
        };
        assert_eq!(down.published(), 2);
    }
}
