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
//! Cost: two round trips (GET; one EVALSHA that appends the outbox entry and SETs the document,
//! refusing only if a migration has removed the document), no retries.

use flyrtech_core::{Applied, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};

use crate::store::document;
use crate::store::write::{WriteContext, absent_here, outcome, simulate_processing};

/// The unsafe read-modify-write.
#[derive(Debug)]
pub struct Naive {
    ctx: WriteContext,
}

impl Naive {
    pub(crate) fn new(ctx: WriteContext) -> Self {
        Self { ctx }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let mut conn = self.ctx.redis.shared();
        let Some(mut journey) = absent_here(document::read(&mut conn, id).await)? else {
            return Ok(None);
        };
        let applied = self.ctx.modify(&mut journey, change, expected)?;
        simulate_processing(self.ctx.delay).await;
        match applied {
            // The bug: whatever was written since our GET is overwritten here. The outbox entry
            // is still written with it, which is how the audit sees the loss.
            Applied::Changed { .. } => {
                if !document::commit_unchecked(&self.ctx, &journey).await? {
                    return Ok(None);
                }
            }
            Applied::Unchanged => {
                self.ctx.confirm(&crate::keys::journey_document(id)).await?;
            }
        }
        Ok(Some(outcome(&journey, applied)))
    }
}
