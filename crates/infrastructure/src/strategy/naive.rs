//! `naive`: the original service's read-modify-write of the whole document. **Unsafe by design.**
//!
//! The race it does not close: two writers GET the same document, each changes a different
//! segment in memory, each SETs the whole document back; the second SET erases the first
//! writer's change although both were acknowledged. The wider the window between GET and SET
//! (the processing delay), the more updates are lost.
//!
//! It is kept as the control: the test suite and the lab run it to prove that they can see the
//! bug, so that "no update lost" for the other strategies means something.
//!
//! Cost: two round trips (GET, SET), no retries, no server-side work beyond the two commands.

use std::time::Duration;

use flyrtech_core::{Applied, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};
use redis::AsyncCommands;

use super::{modify, outcome, process};
use crate::connection::Redis;
use crate::document;
use crate::error::RedisResultExt;
use crate::keys;

/// The unsafe read-modify-write.
#[derive(Debug)]
pub struct Naive {
    redis: Redis,
    delay: Duration,
}

impl Naive {
    pub(crate) fn new(redis: Redis, delay: Duration) -> Self {
        Self { redis, delay }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut conn = self.redis.shared();
        let mut journey = document::read(&mut conn, id).await?;
        let applied = modify(&mut journey, change, expected)?;
        process(self.delay).await;
        if let Applied::Changed { .. } = applied {
            // The bug: whatever was written since our GET is overwritten here.
            let () = conn
                .set(keys::journey_document(id), document::encode(&journey)?)
                .await
                .store_err()?;
        }
        Ok(outcome(&journey, applied))
    }
}
