//! `local-lock`: an in-process mutex per journey around the naive read-modify-write. **A
//! control: correct inside one process only.**
//!
//! The race it closes: two tasks of the *same* process updating one journey are serialised, so
//! within one instance no update is lost. The race it leaves open: a second instance of the API
//! (a second pod, a rolling deploy) has its own lock table, and its read-modify-write
//! interleaves with ours exactly as in `naive`. It is the fix that passes a single-process test
//! and fails in production as soon as the service is scaled out; the suite shows both.
//!
//! Cost: two round trips; waiting tasks queue on a Tokio mutex. The lock table drops a
//! journey's entry when nobody holds or awaits it, so it does not grow with the number of ids.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use flyrtech_core::{JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};

use super::naive::Naive;
use crate::store::write::WriteContext;

type LockTable = HashMap<JourneyId, Arc<tokio::sync::Mutex<()>>>;

/// Per-process locking around the naive read-modify-write.
#[derive(Debug)]
pub struct LocalLock {
    inner: Naive,
    // A std mutex: it is held only to look up or drop an entry, never across an await.
    locks: Mutex<LockTable>,
}

impl LocalLock {
    pub(crate) fn new(ctx: WriteContext) -> Self {
        Self {
            inner: Naive::new(ctx),
            locks: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, LockTable> {
        // The table holds no invariant a panic could break: recover from poisoning.
        self.locks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let lock = Arc::clone(self.table().entry(id.clone()).or_default());
        let waited = Instant::now();
        let result = {
            let _held = lock.lock().await;
            let lock_wait = waited.elapsed();
            self.inner
                .update(id, change, expected)
                .await
                .map(|o| o.map(|o| UpdateOutcome { lock_wait, ..o }))
        };
        let mut table = self.table();
        // Two references: the table's and ours. Nobody else holds or awaits the lock.
        if Arc::strong_count(&lock) == 2 {
            table.remove(id);
        }
        result
    }
}
