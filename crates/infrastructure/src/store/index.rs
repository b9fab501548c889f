//! The index: the set that lists every journey of a store (`journeys:index` for the service,
//! a scratch set for the lab).
//!
//! `journeys:index` lists every journey id. It lives in its own slot, so on a cluster creating a
//! journey and listing it cannot be one transaction: the journey is created first, then listed
//! (`SADD` is idempotent). If the process dies in between, the journey exists unlisted until the
//! next creation of that id (seeding, import) lists it; it is readable and updatable by id all
//! along. A listed id always has a journey, except one whose creation never happened.

use flyrtech_core::{JourneyId, StoreError};
use redis::AsyncCommands;

use crate::plumbing::connection::Redis;
use crate::plumbing::error::{RedisResultExt, corrupt};

/// Lists the id in `index` (idempotent; also repairs an interrupted create).
pub(crate) async fn add_to_index(
    base: &super::strategy::Base,
    index: &str,
    id: &JourneyId,
) -> Result<(), StoreError> {
    let mut sadd = redis::cmd("SADD");
    sadd.arg(index).arg(id.as_str());
    match &base.replication {
        // The listing is confirmed like the journey: a failover must not unlist it.
        Some(replication) => replication.write(index, vec![sadd], None).await.map(drop),
        None => sadd
            .query_async::<i64>(&mut base.redis.shared())
            .await
            .store_err()
            .map(drop),
    }
}

/// All ids listed in `index`, sorted.
pub(crate) async fn list_ids(redis: &Redis, index: &str) -> Result<Vec<JourneyId>, StoreError> {
    let raw: Vec<String> = redis.shared().smembers(index).await.store_err()?;
    let mut ids = raw
        .into_iter()
        .map(|r| JourneyId::parse(r).map_err(|e| corrupt(index, e)))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    Ok(ids)
}
