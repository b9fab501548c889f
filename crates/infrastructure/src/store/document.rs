//! The document layout: each journey is one JSON string at `journey:{P}:ID` (see
//! [`crate::keys`]), as in the original
//! service. Shared by every strategy except `hash`.
//!
//! A change is written with its outbox entry in one atomic step: MULTI/EXEC under WATCH
//! ([`commit`], `optimistic`), or a script that also checks that the document still exists
//! ([`commit_unchecked`], `naive` and `local-lock`). Creation is shared with the hash layout
//! (`crate::store::layout::create`).

use std::sync::LazyLock;

use flyrtech_core::{Journey, JourneyId, StoreError};
use redis::AsyncCommands;

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Conn;
use crate::keys;
use crate::replication::script::LuaScript;
use crate::store::write::WriteContext;

/// Encodes a journey for storage.
pub(crate) fn encode(journey: &Journey) -> Result<String, StoreError> {
    serde_json::to_string(journey).map_err(|e| corrupt(&keys::journey_document(&journey.id), e))
}

/// Decodes a stored journey, checking that it is the one asked for.
pub(crate) fn decode(id: &JourneyId, raw: &str) -> Result<Journey, StoreError> {
    let key = keys::journey_document(id);
    let journey: Journey = serde_json::from_str(raw).map_err(|e| corrupt(&key, e))?;
    if &journey.id != id {
        return Err(corrupt(&key, format!("holds journey {}", journey.id)));
    }
    Ok(journey)
}

/// The atomic write of a changed journey with its outbox entry: `MULTI; XADD outbox; SET
/// journey; EXEC`, both keys in the journey's slot, so no reader ever sees one without the
/// other. Queue-time refusals (OOM, a bad command) abort the whole EXEC. MULTI has no rollback
/// for a command that fails at run time (only possible here if a foreign value of another type
/// sits at the outbox key): the reply of every command is decoded, so such a write is reported
/// as an error, never acknowledged, and the audit reports the version without its event.
///
/// `atomic`: the pipeline is redis-rs' transaction (`query_async` answers `EXEC`'s reply);
/// otherwise it holds `MULTI` and `EXEC` as plain commands, so that more can follow `EXEC` in
/// the same request (its `WAIT`: see `crate::replication`).
pub(crate) fn commit(journey: &Journey, atomic: bool) -> Result<redis::Pipeline, StoreError> {
    let fields = crate::store::outbox::encode(journey.events.pending())
        .map_err(|e| corrupt(&keys::journey_outbox(&journey.id), e))?;
    let mut pipe = redis::pipe();
    if atomic {
        pipe.atomic();
    } else {
        pipe.cmd("MULTI");
    }
    pipe.cmd("XADD")
        .arg(keys::journey_outbox(&journey.id))
        .arg("*")
        .arg(crate::store::outbox::xadd_args(&fields))
        .set(keys::journey_document(&journey.id), encode(journey)?);
    if !atomic {
        pipe.cmd("EXEC");
    }
    Ok(pipe)
}

/// The reply of a [`commit`]: `None` when a WATCH aborted it.
pub(crate) type Committed = Option<(String, String)>;

/// The write of `naive` and `local-lock` (`scripts/document_commit.lua`): the document and its
/// outbox entry, without a version check (their bug, kept on purpose), but only while the
/// document exists. `Ok(false)` when a migration has moved the journey away (nothing written).
pub(crate) async fn commit_unchecked(
    ctx: &WriteContext,
    journey: &Journey,
) -> Result<bool, StoreError> {
    static SCRIPT: LazyLock<LuaScript> =
        LazyLock::new(|| LuaScript::new(include_str!("scripts/document_commit.lua")));
    let fields = crate::store::outbox::encode(journey.events.pending())
        .map_err(|e| corrupt(&keys::journey_outbox(&journey.id), e))?;
    let keys = [
        keys::journey_document(&journey.id),
        keys::journey_outbox(&journey.id),
    ];
    let written: i64 = ctx
        .run(SCRIPT.call(
            &keys,
            (encode(journey)?, crate::store::outbox::xadd_args(&fields)),
        ))
        .await?;
    Ok(written == 1)
}

/// Reads and decodes one journey on `conn`.
pub(crate) async fn read(conn: &mut Conn, id: &JourneyId) -> Result<Journey, StoreError> {
    decode(id, &read_raw(conn, id).await?)
}

/// The document's text, undecoded.
pub(crate) async fn read_raw(conn: &mut Conn, id: &JourneyId) -> Result<String, StoreError> {
    let raw: Option<String> = conn.get(keys::journey_document(id)).await.store_err()?;
    raw.ok_or_else(|| StoreError::JourneyNotFound(id.clone()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::store::fixtures::journey;

    #[test]
    fn a_journey_is_stored_as_its_json_and_read_back_whole() {
        let mut journey = journey();
        journey.version = flyrtech_core::JourneyVersion::new(3);
        let text = encode(&journey).unwrap();
        assert!(text.starts_with(r#"{"id":"JRN-1""#), "{text}");
        assert_eq!(decode(&journey.id, &text).unwrap(), journey);
    }

    /// A document under one journey's key that holds another, or is not a journey, is corrupt.
    #[test]
    fn a_document_of_another_journey_or_of_nothing_is_corrupt() {
        let journey = journey();
        let text = encode(&journey).unwrap();
        let other = JourneyId::parse("JRN-2").unwrap();
        for (id, raw) in [
            (&other, text.as_str()),
            (&journey.id, "{}"),
            (&journey.id, ""),
        ] {
            assert!(
                matches!(decode(id, raw), Err(StoreError::Corrupt { .. })),
                "{id} {raw:?}: {:?}",
                decode(id, raw)
            );
        }
    }
}
