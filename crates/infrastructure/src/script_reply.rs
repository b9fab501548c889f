//! The reply protocol shared by the in-Redis update scripts (`lua` and `hash`).
//!
//! Both scripts take the same arguments ([`ScriptCall`]) and answer `{outcome, ...}`; this module
//! builds the one and turns the other into the store's result, so both strategies report errors
//! exactly as the Rust domain would.

use flyrtech_core::{
    DomainError, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome,
};

use redis::Script;

use crate::error::corrupt;
use crate::keys;
use crate::outbox::Stamp;
use crate::strategy::{Base, process};

/// An in-Redis update script (`lua`'s or `hash`'s): the script, its source, and where the
/// journey's state lives in its layout. Both strategies update through this one path.
#[derive(Debug)]
pub(crate) struct UpdateScript {
    script: Script,
    source: &'static str,
    state_key: fn(&JourneyId) -> String,
}

impl UpdateScript {
    pub(crate) fn new(source: &'static str, state_key: fn(&JourneyId) -> String) -> Self {
        Self {
            script: Script::new(source),
            source,
            state_key,
        }
    }

    /// The processing delay, then the one atomic call.
    pub(crate) async fn update(
        &self,
        base: &Base,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        process(base.delay).await;
        self.call(base, id, change, expected)
            .run(&self.script, &base.redis, id, change, expected)
            .await
    }

    /// The exact script call an update sends, stamped with fresh event ids and the clock's now.
    pub(crate) fn call(
        &self,
        base: &Base,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> ScriptCall {
        ScriptCall::new(
            (&self.script, self.source),
            (self.state_key)(id),
            id,
            change,
            expected,
            &Stamp::new(base.clock.as_ref(), change),
        )
    }
}

/// One invocation of an update script: what `EVALSHA` is sent with. The lab replays it with
/// redis-benchmark to measure the script's own ceiling on the same server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptCall {
    /// The script's SHA1, as `EVALSHA` takes it.
    pub sha: String,
    /// The script source, for `SCRIPT LOAD`.
    pub source: &'static str,
    /// The keys: the journey's state, then its outbox partition (one slot).
    pub keys: Vec<String>,
    /// The arguments: the segment id (empty for the journey's own status), target status,
    /// expected version (empty for none), journey id, occurred-at, event id, completion event
    /// id (empty unless completing), then the allowed predecessor statuses from the Rust
    /// transition table.
    pub args: Vec<String>,
}

impl ScriptCall {
    /// Sends the call on the shared connection and interprets the reply.
    async fn run(
        &self,
        script: &Script,
        redis: &crate::connection::Redis,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<UpdateOutcome, StoreError> {
        let mut invocation = script.prepare_invoke();
        invocation.key(&self.keys).arg(&self.args);
        let reply: Vec<String> = invocation
            .invoke_async(&mut redis.shared())
            .await
            .map_err(crate::error::from_redis)?;
        interpret(&self.keys[0], id, change, expected, &reply)
    }

    fn new(
        (script, source): (&Script, &'static str),
        state_key: String,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
        stamp: &Stamp,
    ) -> Self {
        let segment = match change {
            StatusChange::Segment { segment_id, .. } => segment_id.to_string(),
            _ => String::new(),
        };
        let mut args = vec![
            segment,
            change.target_status().to_owned(),
            expected.map(|v| v.to_string()).unwrap_or_default(),
        ];
        args.extend(stamp.args(id));
        args.extend(change.allowed_predecessors().into_iter().map(str::to_owned));
        Self {
            sha: script.get_hash().to_owned(),
            source,
            keys: vec![state_key, keys::journey_outbox(id)],
            args,
        }
    }
}

/// Interprets `{outcome, detail}` from an update script.
pub(crate) fn interpret(
    key: &str,
    id: &JourneyId,
    change: &StatusChange,
    expected: Option<JourneyVersion>,
    reply: &[String],
) -> Result<UpdateOutcome, StoreError> {
    let version = |raw: Option<&String>| -> Result<JourneyVersion, StoreError> {
        raw.and_then(|v| v.parse().ok())
            .map(JourneyVersion::new)
            .ok_or_else(|| corrupt(key, format!("script reply {reply:?}")))
    };
    let outcome = |version, changed| UpdateOutcome {
        version,
        changed,
        attempts: 1,
        lock_wait: std::time::Duration::ZERO,
    };
    match reply.first().map(String::as_str) {
        Some("changed") => Ok(outcome(version(reply.get(1))?, true)),
        Some("unchanged") => Ok(outcome(version(reply.get(1))?, false)),
        Some("not_found") => Err(StoreError::JourneyNotFound(id.clone())),
        Some("segment_not_found") => match change {
            StatusChange::Segment { segment_id, .. } => Err(DomainError::SegmentNotFound {
                journey: id.clone(),
                segment: segment_id.clone(),
            }
            .into()),
            _ => Err(corrupt(key, "journey status field missing")),
        },
        Some("version_mismatch") => Err(StoreError::VersionMismatch {
            expected: expected.unwrap_or_default(),
            actual: version(reply.get(1))?,
        }),
        Some("invalid_transition") => Err(change
            .invalid_from(reply.get(1).map_or("", String::as_str))
            .into()),
        _ => Err(corrupt(key, format!("unexpected script reply {reply:?}"))),
    }
}
