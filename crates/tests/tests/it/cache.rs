//! The cache service on real Redis: set, get, TTL expiry, remove, exists, validation, and the
//! namespace that keeps it away from journeys.

use std::time::Duration;

use flyrtech_core::{CacheError, CacheKey, CacheService, JourneyStore};
use flyrtech_infrastructure::RedisCache;
use flyrtech_tests::{S, TestRedis, journey, store, unique_id};

#[tokio::test]
async fn set_get_exists_remove() {
    let redis = TestRedis::single();
    let cache = RedisCache::new(redis.connect().await, RedisCache::DEFAULT_MAX_ENTRIES);
    let key = CacheKey::parse("greeting").unwrap();
    assert_eq!(cache.get(&key).await.unwrap(), None);
    assert!(!cache.exists(&key).await.unwrap());
    cache.set(&key, "hello", None).await.unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some("hello"));
    assert!(cache.exists(&key).await.unwrap());
    assert!(cache.remove(&key).await.unwrap());
    assert!(!cache.remove(&key).await.unwrap());
    assert_eq!(cache.get(&key).await.unwrap(), None);
}

#[tokio::test]
async fn values_expire_after_their_ttl() {
    let redis = TestRedis::single();
    let cache = RedisCache::new(redis.connect().await, RedisCache::DEFAULT_MAX_ENTRIES);
    let key = CacheKey::parse("short-lived").unwrap();
    cache
        .set(&key, "v", Some(Duration::from_secs(2)))
        .await
        .unwrap();
    // Stored first (two seconds is ample), then gone: poll with a bound instead of sleeping for a
    // guessed time.
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some("v"));
    let mut expired = false;
    for _ in 0..1000 {
        if !cache.exists(&key).await.unwrap() {
            expired = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(expired, "the key outlived its TTL by more than 8 s");
}

#[tokio::test]
async fn a_zero_ttl_is_rejected_and_writes_nothing() {
    let redis = TestRedis::single();
    let cache = RedisCache::new(redis.connect().await, RedisCache::DEFAULT_MAX_ENTRIES);
    let key = CacheKey::parse("k").unwrap();
    let err = cache
        .set(&key, "v", Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(err, CacheError::InvalidInput(_)), "{err}");
    assert!(!cache.exists(&key).await.unwrap());
}

#[test]
fn invalid_keys_are_rejected() {
    for bad in ["", "has space", "tab\t", &"x".repeat(CacheKey::MAX_LEN + 1)] {
        assert!(CacheKey::parse(bad).is_err(), "{bad:?} accepted");
    }
}

#[tokio::test]
async fn the_cache_cannot_reach_journey_data() {
    let redis = TestRedis::single();
    let conn = redis.connect().await;
    let journeys = store(&conn, S::Naive).await;
    let id = unique_id("JRN");
    let original = journey(&id, 2);
    journeys.create(&original).await.unwrap();
    let cache = RedisCache::new(conn, RedisCache::DEFAULT_MAX_ENTRIES);
    for raw in [
        flyrtech_infrastructure::keys::journey_document(&id),
        format!("journey:{id}"),
        "journeys:index".to_owned(),
    ] {
        let key = CacheKey::parse(raw.as_str()).unwrap();
        assert_eq!(
            cache.get(&key).await.unwrap(),
            None,
            "{raw} read journey data"
        );
        cache.set(&key, "overwritten", None).await.unwrap();
        cache.remove(&key).await.unwrap();
    }
    assert_eq!(journeys.get(&id).await.unwrap(), original);
    assert_eq!(journeys.list_ids().await.unwrap(), vec![id]);
}
