//! The hash layout's codec: a journey as the fields of `journey:{P}:ID:hash`, and back.
//!
//! Layout (documented in `docs/hash-layout.md`):
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
//! One status per field is what lets `hash_update.lua` change a segment by touching one field;
//! the reads decode a consistent HGETALL snapshot. It sits beside `document.rs` (the document
//! layout's codec) and is used by the `hash` strategy and by the migration (`layout.rs`).

use std::collections::HashMap;
use std::sync::Arc;

use flyrtech_core::{Journey, JourneyId, SegmentId, StoreError};
use serde_json::Value;

use crate::plumbing::error::corrupt;
use crate::plumbing::keys;

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

/// The hash fields a journey's decoding reads, in the order they are asked for, and the `HMGET`
/// that asks for them: built once per rendering and sent as it is by every read after it (the
/// command's nine arguments cost a `GET` 1,900 instructions to write, its key 1,500 more).
#[derive(Debug, Clone)]
pub(crate) struct FieldNames(Arc<Selection>);

#[derive(Debug)]
struct Selection {
    names: Vec<String>,
    read: redis::Cmd,
    size: usize,
}

impl FieldNames {
    /// The fields `names` of the hash `key`.
    pub(crate) fn new(key: &str, names: Vec<String>) -> Self {
        let mut read = redis::cmd("HMGET");
        read.arg(key).arg(&names);
        // The names are held twice (the list and the command), the key once.
        let size = 2 * names.iter().map(String::len).sum::<usize>() + key.len();
        Self(Arc::new(Selection { names, read, size }))
    }

    pub(crate) fn as_slice(&self) -> &[String] {
        &self.0.names
    }

    /// `HMGET key names...`.
    pub(crate) fn read(&self) -> &redis::Cmd {
        &self.0.read
    }

    /// The bytes it holds.
    pub(crate) fn size(&self) -> usize {
        self.0.size
    }

    /// The same allocation (the list a read was asked with, kept).
    #[cfg(test)]
    pub(crate) fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl PartialEq for FieldNames {
    /// The same list of the same hash, most often the same allocation.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
            || (self.0.names == other.0.names
                && self.0.read.get_packed_command() == other.0.read.get_packed_command())
    }
}

impl Eq for FieldNames {}

/// The fields [`from_fields`] reads to reassemble `journey`: what a read of it by name asks for
/// (`crate::store::render`). `known`, when it names those very fields, is what is returned: the
/// list a read was asked with is kept, and no command is built again.
pub(crate) fn read_by(journey: &Journey, known: Option<&FieldNames>) -> FieldNames {
    let mut names = Vec::with_capacity(4 + 2 * journey.segments.len());
    names.extend([VERSION, STATUS, HEADER, SEGMENTS].map(str::to_owned));
    for segment in &journey.segments {
        names.push(segment_field(&segment.segment_id));
        names.push(segment_status_field(&segment.segment_id));
    }
    match known {
        Some(known) if known.as_slice() == names.as_slice() => known.clone(),
        _ => FieldNames::new(&keys::journey_hash(&journey.id), names),
    }
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
