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

/// One page of an index: ids sorted within the page, the cursor of the next page, and how many
/// the index lists in all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// The page's ids, sorted, each once.
    pub ids: Vec<JourneyId>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<u64>,
    /// Ids listed in all (`SCARD`).
    pub total: u64,
}

/// Most `SSCAN` calls one page makes: a sparse set can answer a call with nothing.
const SCANS_PER_PAGE: usize = 64;

/// A page of about `limit` ids from `cursor` (`None`: the first page). An index of at most
/// `limit` ids is one page, read whole and sorted, as the original listed it. A larger one is
/// read with `SSCAN` (`COUNT limit`), so a page costs the same at any size; its guarantees are
/// SSCAN's: every id listed for the whole walk appears on some page, an id may appear on two
/// pages if the set is resized between them, and a page may hold somewhat more or fewer than
/// `limit`.
///
/// # Errors
/// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a member that is not an id.
pub async fn page(
    redis: &Redis,
    index: &str,
    cursor: Option<u64>,
    limit: usize,
) -> Result<Page, StoreError> {
    let mut conn = redis.shared();
    let total: u64 = conn.scard(index).await.store_err()?;
    let parse = |raw: Vec<String>| {
        raw.into_iter()
            .map(|r| JourneyId::parse(r).map_err(|e| corrupt(index, e)))
            .collect::<Result<Vec<_>, _>>()
    };
    if cursor.is_none() && total <= limit as u64 {
        let mut ids = parse(conn.smembers(index).await.store_err()?)?;
        ids.sort();
        return Ok(Page {
            ids,
            next: None,
            total,
        });
    }
    let mut at = cursor.unwrap_or(0);
    let mut raw: Vec<String> = Vec::new();
    for _ in 0..SCANS_PER_PAGE {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(index)
            .arg(at)
            .arg("COUNT")
            .arg(limit)
            .query_async(&mut conn)
            .await
            .store_err()?;
        raw.extend(batch);
        at = next;
        if at == 0 || raw.len() >= limit {
            break;
        }
    }
    let mut ids = parse(raw)?;
    ids.sort();
    ids.dedup();
    Ok(Page {
        ids,
        next: (at != 0).then_some(at),
        total,
    })
}
