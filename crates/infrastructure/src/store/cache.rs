//! The original service's general-purpose cache, on Redis, in a namespace of its own.
//!
//! Every cache key is stored under `cache:` ([`crate::plumbing::keys::cache_entry`]), so no cache call can
//! read, overwrite or delete a journey or any other internal key. The original let
//! `POST /api/cache/journey:JRN-001` replace a journey with any string.

use std::time::Duration;

use flyrtech_core::{CacheKey, CacheService, InvalidInput, StoreError};
use redis::AsyncCommands;

use crate::plumbing::connection::Redis;
use crate::plumbing::error::RedisResultExt;
use crate::plumbing::keys;

/// [`CacheService`] on Redis.
#[derive(Debug, Clone)]
pub struct RedisCache {
    redis: Redis,
}

impl RedisCache {
    /// A cache on `redis`.
    pub fn new(redis: Redis) -> Self {
        Self { redis }
    }
}

/// A time to live in whole milliseconds, at least one.
fn millis(ttl: Duration) -> Result<u64, StoreError> {
    match u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) {
        0 => Err(InvalidInput::new("expiration", "must be at least one millisecond").into()),
        millis => Ok(millis),
    }
}

impl CacheService for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<String>, StoreError> {
        self.redis
            .shared()
            .get(keys::cache_entry(key))
            .await
            .store_err()
    }

    async fn set(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), StoreError> {
        let mut conn = self.redis.shared();
        let key = keys::cache_entry(key);
        match ttl {
            None => conn.set(key, value).await.store_err(),
            Some(ttl) => conn.pset_ex(key, value, millis(ttl)?).await.store_err(),
        }
    }

    async fn set_if_absent(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, StoreError> {
        // `SET NX GET` (Redis 7.0+): one atomic step that either stores ours or returns theirs.
        redis::cmd("SET")
            .arg(keys::cache_entry(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl)?)
            .arg("GET")
            .query_async(&mut self.redis.shared())
            .await
            .store_err()
    }

    async fn remove(&self, key: &CacheKey) -> Result<bool, StoreError> {
        let removed: i64 = self
            .redis
            .shared()
            .del(keys::cache_entry(key))
            .await
            .store_err()?;
        Ok(removed > 0)
    }

    async fn exists(&self, key: &CacheKey) -> Result<bool, StoreError> {
        self.redis
            .shared()
            .exists(keys::cache_entry(key))
            .await
            .store_err()
    }
}
