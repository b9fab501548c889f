//! What every strategy's write step shares: the [`WriteContext`] (the Redis handle, the modelled
//! processing delay, the clock, the replica-confirmed writer) and the small helpers around a
//! write (the processing delay, the outcome of a single attempt, "not in this layout").
//!
//! It sits below the strategies and the layouts' helpers (`document`, `index`, `update_script`,
//! `layout`), which all write through it, so none of them reaches up into [`super::strategy`].
//!
//! # What it guarantees
//! [`WriteContext::run`] sends one script call either alone or, with replicas required, in the
//! next replica-confirmed batch of its slot's primary, so no write a strategy acknowledges skips
//! the replicas' confirmation; [`WriteContext::modify`] checks the caller's expected version
//! before the aggregate applies the change, so `If-Match` is judged on the state being written.

use std::sync::Arc;
use std::time::Duration;

use flyrtech_core::{
    Applied, Clock, Journey, JourneyVersion, StatusChange, StoreError, UpdateOutcome,
};

use tracing::Instrument;

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;
use crate::replication::Replication;
use crate::replication::script::ScriptCmd;

/// `JourneyNotFound` as `None`: the writer's own layout does not hold the journey (it may not
/// exist, or a migration may have moved it to the other layout).
pub(crate) fn absent_here<T>(result: Result<T, StoreError>) -> Result<Option<T>, StoreError> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(StoreError::JourneyNotFound(_)) => Ok(None),
        Err(other) => Err(other),
    }
}

/// What every writer needs: the Redis handle, the modelled processing delay, the clock, and
/// the replica-confirmed writer when `--wait-replicas` is set.
#[derive(Debug, Clone)]
pub(crate) struct WriteContext {
    pub(crate) redis: Redis,
    pub(crate) delay: Duration,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) replication: Option<Arc<Replication>>,
}

impl WriteContext {
    /// Runs one script call that writes in `call.key`'s slot: alone on the shared connection,
    /// or, with replicas required, in the next replica-confirmed batch of that slot's primary.
    /// Loads the script and sends the call again on `NOSCRIPT`.
    ///
    /// # Errors
    /// [`StoreError::NotReplicated`], [`StoreError::Unavailable`] (for a write that was sent,
    /// its outcome is then unknown).
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        call: ScriptCmd,
    ) -> Result<T, StoreError> {
        // The rare paths are boxed: every future that awaits this one carries its size, and
        // moving kilobytes of futures per write was a sixth of what a PUT cost `serve`
        // (docs/lab.md, "What the service adds to each request").
        let Some(replication) = &self.replication else {
            let mut conn = self.redis.shared();
            return match call.cmd.query_async::<T>(&mut conn).await {
                Err(e) if e.code() == Some("NOSCRIPT") => Box::pin(reload(conn, call)).await,
                other => other.store_err(),
            };
        };
        Box::pin(replicated(replication, call)).await
    }

    /// Acknowledges a no-op on `key`'s journey: with replicas required, only once they hold
    /// what the primary holds now (the no-op may be the retry of an unconfirmed write).
    ///
    /// # Errors
    /// As [`WriteContext::run`].
    pub(crate) async fn confirm(&self, key: &str) -> Result<(), StoreError> {
        match &self.replication {
            Some(replication) => replication.confirm(key).await,
            None => Ok(()),
        }
    }

    /// The "modify" of read-modify-write, done in Rust by the aggregate: checks the caller's
    /// expected version, then applies the change at the clock's "now", which raises its events
    /// on the journey.
    pub(crate) fn modify(
        &self,
        journey: &mut Journey,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Applied, StoreError> {
        if let Some(expected) = expected
            && expected != journey.version
        {
            return Err(StoreError::VersionMismatch {
                expected,
                actual: journey.version,
            });
        }
        Ok(journey.apply(change, self.clock.now())?)
    }
}

/// Loads a script Redis does not have (a restart, a failover, `SCRIPT FLUSH`) and sends its
/// call again.
async fn reload<T: redis::FromRedisValue>(
    mut conn: crate::connection::handle::Conn,
    call: ScriptCmd,
) -> Result<T, StoreError> {
    let _: String = redis::cmd("SCRIPT")
        .arg("LOAD")
        .arg(call.source)
        .query_async(&mut conn)
        .await
        .store_err()?;
    call.cmd.query_async(&mut conn).await.store_err()
}

/// The call in the next replica-confirmed batch of its slot's primary, as a span of the
/// update's trace.
async fn replicated<T: redis::FromRedisValue>(
    replication: &Replication,
    call: ScriptCmd,
) -> Result<T, StoreError> {
    let reply = replication
        .write(&call.key, vec![call.cmd], Some(call.source))
        .instrument(tracing::info_span!(
            target: crate::telemetry::trace_context::SPANS,
            "replicas.confirm"
        ))
        .await?
        .into_iter()
        .next()
        .unwrap_or(redis::Value::Nil);
    crate::connection::error::decode(reply)
}

/// The outcome of a single-attempt, lock-free update.
pub(crate) fn outcome(journey: &Journey, applied: Applied) -> UpdateOutcome {
    UpdateOutcome {
        version: journey.version,
        changed: matches!(applied, Applied::Changed { .. }),
        attempts: 1,
        lock_wait: Duration::ZERO,
    }
}

/// Simulated processing between read and write.
pub(crate) async fn simulate_processing(delay: Duration) {
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
}
