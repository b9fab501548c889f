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

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;

/// Lists the id in `index` (idempotent; also repairs an interrupted create).
pub(crate) async fn add_to_index(
    ctx: &crate::store::write::WriteContext,
    index: &str,
    id: &JourneyId,
) -> Result<(), StoreError> {
    let mut sadd = redis::cmd("SADD");
    sadd.arg(index).arg(id.as_str());
    match &ctx.replication {
        // The listing is confirmed like the journey: a failover must not unlist it.
        Some(replication) => replication.write(index, vec![sadd], None).await.map(drop),
        None => sadd
            .query_async::<i64>(&mut ctx.redis.shared())
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
    /// The page's ids, sorted, each once; never more than the page's `limit`.
    pub ids: Vec<JourneyId>,
    /// Where the next page starts; `None` on the last.
    pub next: Option<PageCursor>,
    /// Ids listed in all (`SCARD`).
    pub total: u64,
}

/// Where a page of the index starts: an `SSCAN` cursor, and, when the previous page ended in the
/// middle of what that cursor's call returns, the last id it took from it. Written `SCAN` or
/// `SCAN:LAST` (`1840`, `1840:JRN-0417`): ids never hold a `:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageCursor {
    /// The `SSCAN` cursor to call.
    pub scan: u64,
    /// Ids up to this one (in sorted order) of that call's batch were on earlier pages.
    pub after: Option<JourneyId>,
}

impl std::fmt::Display for PageCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.after {
            None => write!(f, "{}", self.scan),
            Some(after) => write!(f, "{}:{after}", self.scan),
        }
    }
}

/// A cursor that is not one this service wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("is not a cursor: use the nextCursor of the previous page")]
pub struct BadCursor;

impl std::str::FromStr for PageCursor {
    type Err = BadCursor;
    fn from_str(raw: &str) -> Result<Self, BadCursor> {
        let (scan, after) = match raw.split_once(':') {
            Some((scan, after)) => (scan, Some(JourneyId::parse(after).map_err(|_| BadCursor)?)),
            None => (raw, None),
        };
        if scan.is_empty() || !scan.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadCursor);
        }
        Ok(Self {
            scan: scan.parse().map_err(|_| BadCursor)?,
            after,
        })
    }
}

/// Most `SSCAN` calls one page makes beyond what `limit` needs: a sparse set can answer a call
/// with nothing.
const SPARE_SCANS: usize = 64;

/// A page of at most `limit` ids from `cursor` (`None`: the first page). An index of at most
/// `limit` ids is one page, read whole and sorted, as the original listed it. A larger one is
/// read with `SSCAN` (`COUNT limit`), so a page costs the same at any size.
///
/// The race it closes is between what one `SSCAN` call returns and what a page may hold: a call
/// returns whole buckets, more or fewer than `COUNT`. A page that ends inside a call's batch
/// takes the batch's first ids in sorted order and records the last it took; the next page calls
/// the same cursor again and skips the ids up to that one. So an id listed for the whole walk is
/// on exactly one page (unless the set is resized mid-walk, when `SSCAN` itself may return an id
/// twice: a page never holds one twice), ids added or removed during the walk may or may not
/// appear, and no page holds more than `limit`.
///
/// # Errors
/// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a member that is not an id.
pub async fn page(
    redis: &Redis,
    index: &str,
    cursor: Option<PageCursor>,
    limit: usize,
) -> Result<Page, StoreError> {
    let limit = limit.max(1);
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
    let PageCursor { scan, mut after } = cursor.unwrap_or(PageCursor {
        scan: 0,
        after: None,
    });
    let mut at = scan;
    let mut ids: Vec<JourneyId> = Vec::with_capacity(limit.min(MAX_PREALLOCATED));
    let mut next = None;
    for _ in 0..limit.div_ceil(SCAN_COUNT_MAX) + SPARE_SCANS {
        let (following, raw): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(index)
            .arg(at)
            .arg("COUNT")
            .arg(limit.min(SCAN_COUNT_MAX))
            .query_async(&mut conn)
            .await
            .store_err()?;
        let mut batch = parse(raw)?;
        batch.sort();
        batch.dedup();
        if let Some(after) = after.take() {
            batch.retain(|id| *id > after);
        }
        let room = limit - ids.len();
        if batch.len() > room {
            // The page ends inside this batch: the next one calls the same cursor again.
            batch.truncate(room);
            next = Some(PageCursor {
                scan: at,
                after: batch.last().cloned(),
            });
            ids.extend(batch);
            break;
        }
        ids.extend(batch);
        at = following;
        next = (at != 0).then_some(PageCursor {
            scan: at,
            after: None,
        });
        if next.is_none() || ids.len() == limit {
            break;
        }
    }
    ids.sort();
    ids.dedup();
    Ok(Page { ids, next, total })
}

/// `COUNT` of one `SSCAN` call at most.
const SCAN_COUNT_MAX: usize = 1000;
/// Ids a page reserves room for before it reads any.
const MAX_PREALLOCATED: usize = 1024;
