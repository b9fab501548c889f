//! The original service's general-purpose cache, on Redis, in a namespace of its own.
//!
//! Every cache key is stored under `cache:` ([`crate::keys::cache_entry`]), so no cache call can
//! read, overwrite or delete a journey or any other internal key. The original let
//! `POST /api/cache/journey:JRN-001` replace a journey with any string.
//!
//! # Bounded
//! The original let a client fill Redis through the cache (entries without expiry, as many as it
//! liked). Here the cache holds at most `max_entries` entries: every write is one script
//! (`scripts/cache_set.lua`) that drops the index's expired keys, refuses a new key once the cap
//! is reached ([`CacheError::Full`]), and records the key with its expiry, so the count is
//! exact under concurrent writers. The HTTP layer bounds each value's size and time to live.
//!
//! # Shared fairly
//! A cap alone lets one client fill the cache for everyone. Every entry therefore has an owner,
//! the client whose write it holds ([`RedisCache::owned_by`]), and the same script counts each
//! owner's entries and refuses a write that would take an owner past its quota
//! ([`CacheError::OverQuota`]). An entry overwritten by another client becomes that client's;
//! an expired or removed one leaves its owner's count in the same step that drops it from the
//! index, so the counts stay exact and the owners' table never outgrows the cache.

use std::sync::LazyLock;
use std::time::Duration;

use std::sync::Arc;

use flyrtech_core::{CacheError, CacheKey, CacheService, InvalidInput};
use redis::{AsyncCommands, Script, Value};

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;
use crate::keys;

/// [`CacheService`] on Redis, holding at most `max_entries` entries, written on behalf of one
/// owner ([`RedisCache::owned_by`]).
#[derive(Debug, Clone)]
pub struct RedisCache {
    redis: Redis,
    max_entries: u64,
    owner: Arc<str>,
    owner_max_entries: u64,
}

static SET: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("scripts/cache_set.lua")));
static REMOVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("scripts/cache_remove.lua")));

impl RedisCache {
    /// The default cap: 10,000 entries.
    pub const DEFAULT_MAX_ENTRIES: u64 = 10_000;

    /// The owner of entries written without one named (`service`), whose quota is the cap.
    pub const SERVICE_OWNER: &str = "service";

    /// A cache on `redis` of at most `max_entries` entries, written by [`Self::SERVICE_OWNER`].
    pub fn new(redis: Redis, max_entries: u64) -> Self {
        Self {
            redis,
            max_entries,
            owner: Arc::from(Self::SERVICE_OWNER),
            owner_max_entries: max_entries,
        }
    }

    /// The same cache, written on behalf of `owner`, who may hold at most `max_entries` of its
    /// entries (a client's quota).
    #[must_use]
    pub fn owned_by(&self, owner: impl Into<Arc<str>>, max_entries: u64) -> Self {
        Self {
            redis: self.redis.clone(),
            max_entries: self.max_entries,
            owner: owner.into(),
            owner_max_entries: max_entries,
        }
    }

    /// The service's own entry `key` (the cache-aside demo's): set to `value` for `ttl` unless a
    /// value is held, which is answered. One key written by the service, never a client: it is
    /// outside every client's quota and outside the cap's count, so a read that sets it is never
    /// refused for want of room (`SET NX GET PX`, Redis 7).
    ///
    /// # Errors
    /// [`CacheError::Unavailable`] when Redis fails.
    pub async fn service_entry_if_absent(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        let held: Option<String> = redis::cmd("SET")
            .arg(keys::cache_entry(key))
            .arg(value)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(millis(ttl)?)
            .query_async(&mut self.redis.shared())
            .await
            .store_err()?;
        Ok(held)
    }

    /// The capped write: `Ok(None)` stored, `Ok(Some(held))` (absent-only) a value is held.
    async fn write(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Option<Duration>,
        only_if_absent: bool,
    ) -> Result<Option<String>, CacheError> {
        let ttl_ms = ttl.map(millis).transpose()?.unwrap_or(0);
        let reply: Vec<Value> = SET
            .key(keys::cache_entry(key))
            .key(keys::CACHE_INDEX)
            .key(keys::CACHE_OWNERS)
            .key(keys::CACHE_OWNED)
            .arg(value)
            .arg(ttl_ms)
            .arg(self.max_entries)
            .arg(key.as_str())
            .arg(if only_if_absent { "1" } else { "0" })
            .arg(&*self.owner)
            .arg(self.owner_max_entries)
            .invoke_async(&mut self.redis.shared())
            .await
            .store_err()?;
        match reply.as_slice() {
            [Value::Int(1)] => Ok(None),
            [Value::Int(0)] => Err(CacheError::Full {
                limit: self.max_entries,
            }),
            [Value::Int(3)] => Err(CacheError::OverQuota {
                owner: self.owner.to_string(),
                limit: self.owner_max_entries,
            }),
            [Value::Int(2), held] => Ok(Some(
                redis::from_redis_value_ref(held)
                    .map_err(|e| corrupt(keys::CACHE_INDEX, e.to_string()))?,
            )),
            other => Err(corrupt(
                keys::CACHE_INDEX,
                format!("unexpected cache script reply {other:?}"),
            )
            .into()),
        }
    }
}

/// What one client may put in the cache (docs/security.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The cache routes are served at all (`--cache off` removes them).
    pub enabled: bool,
    /// Largest value, in bytes (413 beyond).
    pub max_value_bytes: usize,
    /// The time to live of an entry set without `expirationSeconds`.
    pub default_ttl: Duration,
    /// The longest `expirationSeconds` accepted (422 beyond).
    pub max_ttl: Duration,
    /// Entries the cache may hold (507 for a new key beyond).
    pub max_entries: u64,
    /// Entries one client's writes may hold (429 `cache-quota` beyond).
    pub max_entries_per_client: u64,
}

impl CacheLimits {
    /// A client's quota of a cache of `max_entries` unless configured: a hundredth, at least one.
    /// A tenth would let ten clients (ten addresses, or ten keys) fill the cache for everyone;
    /// a hundredth takes a hundred, each held to its share.
    pub fn default_per_client(max_entries: u64) -> u64 {
        (max_entries / 100).max(1)
    }
}

impl Default for CacheLimits {
    /// 64 KiB values, an hour by default, a day at most, 10,000 entries, a hundredth of them per
    /// client.
    fn default() -> Self {
        Self {
            enabled: true,
            max_value_bytes: 64 * 1024,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(86_400),
            max_entries: RedisCache::DEFAULT_MAX_ENTRIES,
            max_entries_per_client: Self::default_per_client(RedisCache::DEFAULT_MAX_ENTRIES),
        }
    }
}

/// A time to live in whole milliseconds, at least one.
fn millis(ttl: Duration) -> Result<u64, CacheError> {
    match u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX) {
        0 => Err(InvalidInput::new("expiration", "must be at least one millisecond").into()),
        millis => Ok(millis),
    }
}

impl CacheService for RedisCache {
    async fn get(&self, key: &CacheKey) -> Result<Option<String>, CacheError> {
        self.redis
            .shared()
            .get(keys::cache_entry(key))
            .await
            .store_err()
            .map_err(Into::into)
    }

    async fn set(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(), CacheError> {
        self.write(key, value, ttl, false).await.map(drop)
    }

    async fn set_if_absent(
        &self,
        key: &CacheKey,
        value: &str,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        self.write(key, value, Some(ttl), true).await
    }

    async fn remove(&self, key: &CacheKey) -> Result<bool, CacheError> {
        let removed: i64 = REMOVE
            .key(keys::cache_entry(key))
            .key(keys::CACHE_INDEX)
            .key(keys::CACHE_OWNERS)
            .key(keys::CACHE_OWNED)
            .arg(key.as_str())
            .invoke_async(&mut self.redis.shared())
            .await
            .store_err()?;
        Ok(removed > 0)
    }

    async fn exists(&self, key: &CacheKey) -> Result<bool, CacheError> {
        self.redis
            .shared()
            .exists(keys::cache_entry(key))
            .await
            .store_err()
            .map_err(Into::into)
    }
}
