//! `hash`: the journey is a Redis hash with one field per segment status, so a status change
//! touches one field instead of rewriting the document.
//!
//! Layout of `journey:{P}:ID:hash` (documented in `docs/hash-layout.md`):
//!
//! | field | value |
//! |---|---|
//! | `version` | the journey version, an integer |
//! | `status` | the journey status |
//! | `header` | JSON of the other journey fields (passenger, dates, price, metadata) |
//! | `segments` | JSON list of the segment ids, in order |
//! | `segment:<id>` | JSON of the segment's fields except its status |
//! | `segment:<id>:status` | the segment's status |
//!
//! The race it closes: the update script (`scripts/hash_update.lua`) reads the one status, checks
//! the transition (allowed predecessors passed from Rust), sets it and increments `version`, all
//! atomically; writers of different segments no longer share a read-modify-write at all.
//! A missing segment answers "segment not found" and creates nothing. Reads are one HGETALL, a
//! consistent snapshot, assembled into a journey in Rust.
//!
//! Cost: one round trip and O(1) server work per update, whatever the journey's size. The
//! processing delay is spent before the call. The layout differs from the document strategies':
//! switching a deployment to or from `hash` is `flyrtech migrate` (see `crate::store::layout` and
//! `docs/migration.md`).

use std::collections::HashMap;

use flyrtech_core::{
    Journey, JourneyId, JourneyVersion, SegmentId, StatusChange, StoreError, UpdateOutcome,
};
use redis::AsyncCommands;
use serde_json::Value;

use super::Base;
use crate::plumbing::error::{RedisResultExt, corrupt};
use crate::plumbing::keys;
use crate::store::layout::Layout;
use crate::store::script_reply::{ScriptCall, UpdateScript};

const VERSION: &str = "version";
const STATUS: &str = "status";
const HEADER: &str = "header";
const SEGMENTS: &str = "segments";

fn segment_field(id: &SegmentId) -> String {
    format!("segment:{id}")
}

fn segment_status_field(id: &SegmentId) -> String {
    format!("segment:{id}:status")
}

/// Per-segment hash fields.
#[derive(Debug)]
pub struct Hash {
    base: Base,
    update_script: UpdateScript,
}

impl Hash {
    pub(crate) fn new(base: Base) -> Self {
        Self {
            base,
            update_script: UpdateScript::of(Layout::Hash),
        }
    }

    pub(crate) async fn update(
        &self,
        id: &JourneyId,
        change: &StatusChange,
        expected: Option<JourneyVersion>,
    ) -> Result<Option<UpdateOutcome>, StoreError> {
        self.update_script
            .update(&self.base, id, change, expected)
            .await
    }

    /// The exact script call an update sends.
    pub(crate) fn call(&self, id: &JourneyId, change: &StatusChange) -> ScriptCall {
        self.update_script.call(&self.base, id, change, None)
    }

    pub(crate) async fn read(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        Self::decode_raw(id, &self.read_raw(id).await?)
    }

    /// The journey's fields in the order Redis sent them, undecoded.
    pub(crate) async fn read_raw(
        &self,
        id: &JourneyId,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let fields: Vec<(String, String)> = self
            .base
            .redis
            .shared()
            .hgetall(keys::journey_hash(id))
            .await
            .store_err()?;
        if fields.is_empty() {
            return Err(StoreError::JourneyNotFound(id.clone()));
        }
        Ok(fields)
    }

    /// Decodes fields as [`Hash::read_raw`] returns them.
    pub(crate) fn decode_raw(
        id: &JourneyId,
        fields: &[(String, String)],
    ) -> Result<Journey, StoreError> {
        let fields: HashMap<&str, &str> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        from_fields(&keys::journey_hash(id), id, &fields)
    }
}

/// Appends the JSON object `object` to `out` with `extra` members (name, JSON text) added at its
/// end; `None` when `object` is not a JSON object's text.
fn splice(out: &mut String, object: &str, extra: &[(&str, &str)]) -> Option<()> {
    let body = object.trim().strip_prefix('{')?.strip_suffix('}')?;
    out.push('{');
    out.push_str(body);
    let mut empty = body.trim().is_empty();
    for (name, value) in extra {
        if !empty {
            out.push(',');
        }
        empty = false;
        out.push('"');
        out.push_str(name);
        out.push_str("\":");
        out.push_str(value);
    }
    out.push('}');
    Some(())
}

/// Splits a journey into hash fields.
pub(crate) fn to_fields(journey: &Journey) -> Result<Vec<(String, String)>, StoreError> {
    let key = keys::journey_hash(&journey.id);
    let bad = |e: serde_json::Error| corrupt(&key, e);
    let Value::Object(mut header) = serde_json::to_value(journey).map_err(bad)? else {
        return Err(corrupt(&key, "a journey must serialize to an object"));
    };
    header.remove(STATUS);
    header.remove(SEGMENTS);
    header.remove(VERSION);
    let ids: Vec<&SegmentId> = journey.segments.iter().map(|s| &s.segment_id).collect();
    let mut fields = vec![
        (VERSION.to_owned(), journey.version.to_string()),
        (STATUS.to_owned(), journey.status.to_string()),
        (HEADER.to_owned(), Value::Object(header).to_string()),
        (
            SEGMENTS.to_owned(),
            serde_json::to_string(&ids).map_err(bad)?,
        ),
    ];
    for segment in &journey.segments {
        let Value::Object(mut data) = serde_json::to_value(segment).map_err(bad)? else {
            return Err(corrupt(&key, "a segment must serialize to an object"));
        };
        data.remove(STATUS);
        fields.push((
            segment_field(&segment.segment_id),
            Value::Object(data).to_string(),
        ));
        fields.push((
            segment_status_field(&segment.segment_id),
            segment.status.to_string(),
        ));
    }
    Ok(fields)
}

/// Reassembles a journey from a consistent HGETALL snapshot.
///
/// The stored fragments are spliced into one JSON text (the status fields and the version
/// added to their objects) and decoded once, straight into a [`Journey`]: no intermediate
/// `serde_json::Value` tree, which cost the hash strategy's `GET` a third of its decoding time.
/// A fragment that is not a JSON object, or that already holds a field the splice adds, is
/// refused as corrupt by that one decode.
pub(crate) fn from_fields<K, V>(
    key: &str,
    id: &JourneyId,
    fields: &HashMap<K, V>,
) -> Result<Journey, StoreError>
where
    K: std::borrow::Borrow<str> + std::hash::Hash + Eq,
    V: AsRef<str>,
{
    let field = |name: &str| {
        fields
            .get(name)
            .map(AsRef::as_ref)
            .ok_or_else(|| corrupt(key, format!("missing field {name}")))
    };
    let quoted = |text: &str| serde_json::to_string(text).map_err(|e| corrupt(key, e));
    let version: u64 = field(VERSION)?.parse().map_err(|e| corrupt(key, e))?;
    let ids: Vec<SegmentId> =
        serde_json::from_str(field(SEGMENTS)?).map_err(|e| corrupt(key, e))?;
    let mut segments = String::from("[");
    for (n, sid) in ids.iter().enumerate() {
        if n > 0 {
            segments.push(',');
        }
        let status = quoted(field(&segment_status_field(sid))?)?;
        splice(
            &mut segments,
            field(&segment_field(sid))?,
            &[(STATUS, &status)],
        )
        .ok_or_else(|| corrupt(key, format!("segment {sid} is not an object")))?;
    }
    segments.push(']');
    let (status, version) = (quoted(field(STATUS)?)?, version.to_string());
    let mut text = String::with_capacity(segments.len() + field(HEADER)?.len() + 64);
    splice(
        &mut text,
        field(HEADER)?,
        &[
            (STATUS, &status),
            (VERSION, &version),
            (SEGMENTS, &segments),
        ],
    )
    .ok_or_else(|| corrupt(key, "field header is not an object"))?;
    let journey: Journey = serde_json::from_str(&text).map_err(|e| corrupt(key, e))?;
    if &journey.id != id {
        return Err(corrupt(key, format!("holds journey {}", journey.id)));
    }
    Ok(journey)
}
