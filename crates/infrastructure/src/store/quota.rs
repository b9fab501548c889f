//! How many journeys each client has created, with a ceiling: the journey quota.
//!
//! # The gap it closes
//! Journeys are never deleted through the API, so every journey a client creates takes Redis
//! memory for good (up to the document size limit each). Without a ceiling one write key can
//! fill the memory every client shares. The count lives in Redis (`quota:journeys`, a hash of
//! client to count), so every instance of the service sees the same count, and a restart
//! forgets nothing.
//!
//! # What it guarantees
//! [`JourneyQuota::take`] counts one more journey for a client in one atomic step unless that
//! would pass the ceiling ([`StoreError::OverQuota`], nothing counted), so concurrent creates by
//! one client can never pass it together. The caller gives the unit back
//! ([`JourneyQuota::give_back`]) when the create wrote nothing (the id exists, the input was
//! refused). The count and the journey are two keys, in different slots of a cluster, so they
//! are two steps: an outcome the store cannot know (a timeout) keeps the unit, and so does a
//! process that dies between the two. A count therefore errs towards refusing, by at most one
//! journey per such failure, never towards letting a client past its ceiling.

use std::sync::LazyLock;

use flyrtech_core::{Quota, StoreError};
use redis::Script;

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;
use crate::keys;

static STEP: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/quota.lua")));

/// The per-client ceiling on journeys created.
#[derive(Debug, Clone)]
pub struct JourneyQuota {
    redis: Redis,
    limit: u64,
}

impl JourneyQuota {
    /// Journeys one client may create unless configured otherwise.
    pub const DEFAULT_LIMIT: u64 = 100_000;

    /// At most `limit` journeys per client, counted on `redis`.
    pub fn new(redis: Redis, limit: u64) -> Self {
        Self { redis, limit }
    }

    /// The ceiling.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Counts one more journey for `owner`; returns the count it now has.
    ///
    /// # Errors
    /// [`StoreError::OverQuota`] when `owner` has created its ceiling of journeys (nothing
    /// counted); [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn take(&self, owner: &str) -> Result<u64, StoreError> {
        match self.step(owner, "take").await? {
            -1 => Err(StoreError::OverQuota {
                quota: Quota::Journeys,
                owner: owner.to_owned(),
                limit: self.limit,
            }),
            n => Ok(u64::try_from(n).unwrap_or(0)),
        }
    }

    /// Gives back the unit a create that wrote nothing took.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached (the unit stays counted).
    pub async fn give_back(&self, owner: &str) -> Result<(), StoreError> {
        self.step(owner, "give").await.map(drop)
    }

    /// How many journeys `owner` has created, as counted.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn count(&self, owner: &str) -> Result<u64, StoreError> {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(keys::JOURNEY_QUOTA)
            .arg(owner)
            .query_async(&mut self.redis.shared())
            .await
            .store_err()?;
        Ok(n.unwrap_or(0))
    }

    async fn step(&self, owner: &str, how: &str) -> Result<i64, StoreError> {
        STEP.key(keys::JOURNEY_QUOTA)
            .arg(owner)
            .arg(self.limit)
            .arg(how)
            .invoke_async(&mut self.redis.shared())
            .await
            .store_err()
    }
}
