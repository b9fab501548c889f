//! `optimistic`: WATCH the journey, read it, apply the change in Rust, write it in MULTI/EXEC;
//! retry when EXEC reports that the journey changed in between.
//!
//! The race it closes: any write to `journey:{P}:ID` between our WATCH and our EXEC makes EXEC
//! answer nil, so a write based on a stale read never lands. We then re-read and re-apply, so
//! every acknowledged change was applied to the state it read.
//!
//! The traps it avoids (of Redis transactions and redis-rs' replies):
//! - WATCH is per connection: each attempt uses a dedicated pooled connection, never the shared
//!   multiplexed one, and starts with UNWATCH in case a cancelled request left a WATCH behind.
//! - A nil EXEC decodes as success into `()`: the reply is decoded into an `Option`.
//! - Unbounded retry: attempts and time are bounded ([`RetryPolicy`]); the give-up is a typed
//!   [`StoreError::Conflict`], and nothing was written.
//! - No rollback: validation happens before MULTI; the transaction holds the outbox XADD and
//!   the SET, and every reply is decoded.
//!
//! Cost: two round trips per attempt (`UNWATCH+WATCH+GET` pipelined, `MULTI+XADD+SET+EXEC`). All
//! writers of one journey conflict with each other (WATCH is per key), so a hot journey with a
//! long processing window pays roughly one full window per writer ahead of it.

use flyrtech_core::{Applied, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};

use crate::connection::error::RedisResultExt;
use crate::connection::retry::{Attempts, RetryPolicy};
use crate::keys;
use crate::store::document;
use crate::store::write::{WriteContext, outcome, simulate_processing};

/// WATCH/MULTI/EXEC with bounded, jittered retries.
#[derive(Debug)]
pub struct Optimistic {
    ctx: WriteContext,
    retry: RetryPolicy,
}

impl Optimistic {
    pub(crate) fn new(ctx: WriteContext, retry: RetryPolicy) -> Self {
        Self { ctx, retry }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let key = keys::journey_document(id);
        let mut attempts = Attempts::new(self.retry);
        loop {
            let (mut conn, primary) = self.ctx.redis.dedicated(&key).await?;
            if let Some(replication) = &self.ctx.replication {
                // A primary known to lack its replicas: refused before any work.
                replication.check(&key, &primary).await?;
            }
            let read: Result<(Option<String>,), _> = redis::pipe()
                .cmd("UNWATCH")
                .ignore()
                .cmd("WATCH")
                .arg(&key)
                .ignore()
                .get(&key)
                .query_async(&mut conn)
                .await
                .store_err();
            let (raw,) = match read {
                Ok(read) => read,
                Err(e) => {
                    // A moved slot or a dead primary: the next attempt asks the new map.
                    self.ctx.redis.nodes().refresh().await.ok();
                    return Err(e);
                }
            };
            let read_at = std::time::Instant::now();
            // Absent: not created, or moved to the hash layout by a migration.
            let Some(raw) = raw else { return Ok(None) };
            let mut journey = document::decode(id, &raw)?;
            let applied = self.ctx.modify(&mut journey, change, expected)?;
            simulate_processing(self.ctx.delay).await;
            let done = UpdateOutcome {
                attempts: attempts.made(),
                ..outcome(&journey, applied)
            };
            if let Applied::Unchanged = applied {
                // Nothing to write; the WATCH is cleared by the next user of the connection.
                self.ctx.confirm(&key).await?;
                return Ok(Some(done));
            }
            let committed = match &self.ctx.replication {
                None => document::commit(&journey, true)?
                    .query_async::<document::Committed>(&mut conn)
                    .await
                    .store_err()?
                    .is_some(),
                // The EXEC and its WAIT in one request on the connection that holds the WATCH.
                Some(replication) => {
                    let transaction = document::commit(&journey, false)?;
                    let replies = replication
                        .commit_on(&mut conn, &primary, transaction, exec_wrote)
                        .await?;
                    exec_wrote(&replies)
                }
            };
            if committed {
                return Ok(Some(done));
            }
            attempts.backoff_after_conflict(read_at.elapsed()).await?;
        }
    }
}

/// Whether the `EXEC` among a transaction's replies (`MULTI`, each `QUEUED`, `EXEC`) wrote:
/// nil when a WATCH aborted it.
fn exec_wrote(replies: &[redis::Value]) -> bool {
    matches!(replies.last(), Some(redis::Value::Array(_)))
}
