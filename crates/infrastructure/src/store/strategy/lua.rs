//! `lua`: the whole read-modify-write of the journey document runs inside Redis as one script
//! (`scripts/document_update.lua`).
//!
//! The race it closes: a script runs atomically — no other command executes between its GET and
//! its SET — so no change can be overwritten by one based on an older read.
//!
//! One source of truth: the script does not hold a transition table. Rust passes the statuses
//! the target may be reached from ([`StatusChange::allowed_predecessors`]), so the script and
//! the Rust domain cannot disagree. Checks all happen before the only write.
//!
//! cjson traps, handled: an empty `segments` list is re-encoded as `{}` (restored to `[]` by
//! the script, and accepted by the Rust decoder anyway); numbers keep 14 significant digits,
//! which is why prices are bounded ([`flyrtech_core::Money`]); key order is not kept (JSON
//! objects are unordered). The round trip is property-tested.
//!
//! Cost: one round trip (EVALSHA; the script is loaded once and reloaded on NOSCRIPT by
//! `Script::invoke_async`), but the server decodes and re-encodes the whole document while
//! every other client waits: server CPU grows with document size. The processing delay is spent
//! before the call, since the decision is made inside Redis.

use flyrtech_core::{JourneyId, JourneyVersion, StatusChange, StoreError, UpdateOutcome};

use crate::store::layout::Layout;
use crate::store::update_script::{ScriptCall, UpdateScript};
use crate::store::write::WriteContext;

/// The read-modify-write as one Lua script.
#[derive(Debug)]
pub struct Lua {
    ctx: WriteContext,
    script: UpdateScript,
}

impl Lua {
    pub(crate) fn new(ctx: WriteContext) -> Self {
        Self {
            ctx,
            script: UpdateScript::of(Layout::Document),
        }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        self.script.update(&self.ctx, id, change, expected).await
    }

    /// The exact script call an update sends.
    pub(crate) fn call(&self, id: &JourneyId, change: &StatusChange) -> ScriptCall {
        self.script.call(&self.ctx, id, change, None)
    }
}
