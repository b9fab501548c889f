//! The original service's general-purpose cache, on Redis, in a namespace of its own.
//!
//! Every cache key is stored under `cache:` ([`crate::keys::cache_entry`]), so no cache call can
//! read, overwrite or delete a journey or any other internal key. The original let
//! `POST /api/cache/journey:JRN-001` replace a journey with any string.

use std::time::Duration;

use flyrtech_core::{CacheKey, CacheService, InvalidInput, StoreError};
use redis::AsyncCommands;

use crate::connection::Redis;
use crate::error::RedisResultExt;
use crate::keys;

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
            Some(ttl) => {
                let millis = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
                if millis == 0 {
                    return Err(InvalidInput::new(
                        "expiration",
                        "must be at least one millisecond",
                    )
                    .into());
                }
                conn.pset_ex(key, value, millis).await.store_err()
            }
        }
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
