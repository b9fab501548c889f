//! The document layout: each journey is one JSON string at `journey:{P}:ID` (see
//! [`crate::keys`]), as in the original
//! service. Shared by every strategy except `hash`.
//!
//! A change is written with its outbox entry in one MULTI/EXEC ([`commit`]).
//!
//! Creation never overwrites: `SET NX` creates the document, then the id joins the index set.
//! The index lives in its own slot, so on a cluster the two steps cannot be one transaction; if
//! the process dies between them the journey exists but is unlisted until the next `create` or
//! seeding of that id, which repairs the index (`SADD` is idempotent). An unlisted journey is
//! still readable and updatable by id; a listed id always has a journey.

use flyrtech_core::{Journey, JourneyId, StoreError};
use redis::AsyncCommands;

use crate::connection::{Conn, Redis};
use crate::error::{RedisResultExt, corrupt};
use crate::keys;

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
pub(crate) fn commit(journey: &Journey) -> Result<redis::Pipeline, StoreError> {
    let fields = crate::outbox::encode(journey.events.pending())
        .map_err(|e| corrupt(&keys::journey_outbox(&journey.id), e))?;
    let mut pipe = redis::pipe();
    pipe.atomic()
        .cmd("XADD")
        .arg(keys::journey_outbox(&journey.id))
        .arg("*")
        .arg(crate::outbox::xadd_args(&fields))
        .set(keys::journey_document(&journey.id), encode(journey)?);
    Ok(pipe)
}

/// The reply of a [`commit`]: `None` when a WATCH aborted it.
pub(crate) type Committed = Option<(String, String)>;

/// Reads and decodes one journey on `conn`.
pub(crate) async fn read(conn: &mut Conn, id: &JourneyId) -> Result<Journey, StoreError> {
    let raw: Option<String> = conn.get(keys::journey_document(id)).await.store_err()?;
    let raw = raw.ok_or_else(|| StoreError::JourneyNotFound(id.clone()))?;
    decode(id, &raw)
}

/// Creates the document unless the journey exists, then lists the id.
pub(crate) async fn create(redis: &Redis, journey: &Journey) -> Result<(), StoreError> {
    journey.validate_new()?;
    let doc = encode(journey)?;
    let mut conn = redis.shared();
    let created: bool = redis::cmd("SET")
        .arg(keys::journey_document(&journey.id))
        .arg(doc)
        .arg("NX")
        .query_async::<Option<String>>(&mut conn)
        .await
        .store_err()?
        .is_some();
    add_to_index(&mut conn, &journey.id).await?;
    if created {
        Ok(())
    } else {
        Err(StoreError::AlreadyExists(journey.id.clone()))
    }
}

/// Lists the id in the index (idempotent; also repairs an interrupted create).
pub(crate) async fn add_to_index(conn: &mut Conn, id: &JourneyId) -> Result<(), StoreError> {
    let _: i64 = conn
        .sadd(keys::JOURNEY_INDEX, id.as_str())
        .await
        .store_err()?;
    Ok(())
}

/// All listed journey ids, sorted.
pub(crate) async fn list_ids(redis: &Redis) -> Result<Vec<JourneyId>, StoreError> {
    let raw: Vec<String> = redis
        .shared()
        .smembers(keys::JOURNEY_INDEX)
        .await
        .store_err()?;
    let mut ids = raw
        .into_iter()
        .map(|r| JourneyId::parse(r).map_err(|e| corrupt(keys::JOURNEY_INDEX, e)))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort();
    Ok(ids)
}
