//! The in-Redis update scripts (`lua` and `hash`): which script each layout runs
//! ([`UpdateScript`]), the call both take ([`ScriptCall`]) and the reply both give.
//!
//! Both scripts take the same arguments and answer `{outcome, ...}`; this module builds the one
//! and turns the other into the store's result, so both strategies report errors
//! exactly as the Rust domain would. A script also sees the journey's key in the other layout,
//! so it tells apart a journey that does not exist (`not_found`) from one a migration has moved
//! (`moved`, returned here as `Ok(None)`), atomically.

use flyrtech_core::{
    DomainError, JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome,
};

use crate::connection::error::corrupt;
use crate::keys;
use crate::replication::script::LuaScript;
use crate::store::layout::Layout;
use crate::store::outbox::Stamp;
use crate::store::write::{WriteContext, simulate_processing};

/// An in-Redis update script (`lua`'s or `hash`'s): the script, its source, and the layout it
/// updates. Both strategies update through this one path, and every store keeps the other
/// layout's script to apply a change to a journey a migration has moved.
#[derive(Debug)]
pub(crate) struct UpdateScript {
    script: LuaScript,
    layout: Layout,
}

impl UpdateScript {
    /// The update script of `layout`.
    pub(crate) fn of(layout: Layout) -> Self {
        let source = match layout {
            Layout::Document => include_str!("scripts/document_update.lua"),
            Layout::Hash => include_str!("scripts/hash_update.lua"),
        };
        Self {
            script: LuaScript::new(source),
            layout,
        }
    }

    /// The processing delay, then the one atomic call.
    pub(crate) async fn update(
        &self,
        ctx: &WriteContext,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        simulate_processing(ctx.delay).await;
        self.apply(ctx, id, change, expected).await
    }

    /// The one atomic call, without the processing delay. `Ok(None)` when the journey is in
    /// the other layout (nothing written).
    pub(crate) async fn apply(
        &self,
        ctx: &WriteContext,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let call = self.call(ctx, id, change, expected);
        // With replicas required, a batch confirms the change, or the no-op, before it returns.
        let reply: Vec<String> = ctx.run(self.script.call(&call.keys, &call.args)).await?;
        interpret(&call.keys[0], id, change, expected, &reply)
    }

    /// The exact script call an update sends, stamped with fresh event ids and the clock's now.
    pub(crate) fn call(
        &self,
        ctx: &WriteContext,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> ScriptCall {
        ScriptCall::new(
            &self.script,
            self.layout,
            id,
            change,
            expected,
            &Stamp::new(ctx.clock.as_ref(), change),
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
    /// The keys: the journey's state, its outbox partition, its key in the other layout, and
    /// for the document layout its fencing counter (all one slot).
    pub keys: Vec<String>,
    /// The arguments: the segment id (empty for the journey's own status), target status,
    /// expected version (empty for none), the outbox entry's text after the version and the
    /// old status ([`Stamp::tail`]), the completion event id (empty unless completing), then
    /// the allowed predecessor statuses from the Rust transition table.
    pub args: Vec<String>,
}

impl ScriptCall {
    fn new(
        script: &LuaScript,
        layout: Layout,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
        stamp: &Stamp,
    ) -> Self {
        let segment = match change {
            StatusChange::Segment { segment_id, .. } => segment_id.to_string(),
            _ => String::new(),
        };
        let predecessors = change.allowed_predecessors();
        let mut args = Vec::with_capacity(5 + predecessors.len());
        args.extend([
            segment,
            change.target_status().to_owned(),
            expected.map(|v| v.to_string()).unwrap_or_default(),
            stamp.tail(id, change),
            stamp.completion(),
        ]);
        args.extend(predecessors.into_iter().map(str::to_owned));
        Self {
            sha: script.hash().to_owned(),
            source: script.source(),
            keys: {
                let mut keys = vec![
                    layout.key(id),
                    keys::journey_outbox(id),
                    layout.other().key(id),
                ];
                if layout == Layout::Document {
                    keys.push(keys::journey_fence(id));
                }
                keys
            },
            args,
        }
    }
}

/// Interprets `{outcome, detail}` from an update script; `Ok(None)` for `moved`.
pub(crate) fn interpret(
    key: &str,
    id: &JourneyId,
    change: &StatusChange,
    expected: Option<JourneyVersion>,
    reply: &[String],
) -> Result<Option<UpdateOutcome>, StoreError> {
    let version = |raw: Option<&String>| -> Result<JourneyVersion, StoreError> {
        raw.and_then(|v| v.parse().ok())
            .map(JourneyVersion::new)
            .ok_or_else(|| corrupt(key, format!("script reply {reply:?}")))
    };
    let outcome = |version, changed| {
        Some(UpdateOutcome {
            version,
            changed,
            attempts: 1,
            lock_wait: std::time::Duration::ZERO,
        })
    };
    match reply.first().map(String::as_str) {
        Some("changed") => Ok(outcome(version(reply.get(1))?, true)),
        Some("unchanged") => Ok(outcome(version(reply.get(1))?, false)),
        Some("moved") => Ok(None),
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
        Some("corrupt") => Err(corrupt(
            key,
            reply
                .get(1)
                .map_or("the script could not decode it", String::as_str),
        )),
        _ => Err(corrupt(key, format!("unexpected script reply {reply:?}"))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use flyrtech_core::{JourneyStatus, SegmentStatus};

    use super::*;

    const KEY: &str = "journey:{x}:JRN-1";

    fn id() -> JourneyId {
        JourneyId::parse("JRN-1").unwrap()
    }

    fn segment() -> StatusChange {
        StatusChange::Segment {
            segment_id: flyrtech_core::SegmentId::parse("SEG-1").unwrap(),
            status: SegmentStatus::Delayed,
        }
    }

    fn journey() -> StatusChange {
        StatusChange::Journey {
            status: JourneyStatus::Completed,
        }
    }

    fn reply(
        change: &StatusChange,
        expected: Option<u64>,
        parts: &[&str],
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        let parts: Vec<String> = parts.iter().map(|p| (*p).to_owned()).collect();
        interpret(
            KEY,
            &id(),
            change,
            expected.map(JourneyVersion::new),
            &parts,
        )
    }

    /// What the store answers for each reply the update scripts give.
    #[test]
    fn each_script_reply_is_the_outcome_it_names() {
        let changed = reply(&segment(), None, &["changed", "4"]).unwrap().unwrap();
        assert_eq!(
            (changed.version, changed.changed),
            (JourneyVersion::new(4), true)
        );
        let unchanged = reply(&segment(), None, &["unchanged", "3"])
            .unwrap()
            .unwrap();
        assert_eq!(
            (unchanged.version, unchanged.changed),
            (JourneyVersion::new(3), false)
        );
        assert_eq!(reply(&segment(), None, &["moved"]).unwrap(), None);
        assert!(matches!(
            reply(&segment(), None, &["not_found"]),
            Err(StoreError::JourneyNotFound(found)) if found == id()
        ));
        assert!(matches!(
            reply(&segment(), None, &["segment_not_found"]),
            Err(StoreError::Rejected(DomainError::SegmentNotFound { segment, .. }))
                if segment.as_str() == "SEG-1"
        ));
        assert!(matches!(
            reply(&segment(), Some(2), &["version_mismatch", "5"]),
            Err(StoreError::VersionMismatch { expected, actual })
                if expected == JourneyVersion::new(2) && actual == JourneyVersion::new(5)
        ));
        assert!(matches!(
            reply(&journey(), None, &["invalid_transition", "Confirmed"]),
            Err(StoreError::Rejected(DomainError::InvalidTransition {
                from: "Confirmed",
                ..
            }))
        ));
    }

    /// A reply the protocol does not have, a version that is not a number, the journey's own
    /// status field missing, or the script's own `corrupt`: the stored value is corrupt, with the
    /// key and the reason.
    #[test]
    fn a_reply_outside_the_protocol_is_corrupt() {
        for (change, parts, reason) in [
            (segment(), &["changed", "four"][..], "script reply"),
            (segment(), &["unchanged"][..], "script reply"),
            (segment(), &["version_mismatch", ""][..], "script reply"),
            (
                journey(),
                &["segment_not_found"][..],
                "journey status field missing",
            ),
            (segment(), &["corrupt", "bad segments"][..], "bad segments"),
            (
                segment(),
                &["corrupt"][..],
                "the script could not decode it",
            ),
            (segment(), &["applied", "4"][..], "unexpected script reply"),
            (segment(), &[][..], "unexpected script reply"),
        ] {
            let error = reply(&change, None, parts).unwrap_err();
            let text = error.to_string();
            assert!(
                matches!(error, StoreError::Corrupt { .. }) && text.contains(reason),
                "{parts:?}: {text}"
            );
        }
    }
}
