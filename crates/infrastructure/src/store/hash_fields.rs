//! The hash layout's codec: a journey as the fields of `journey:{P}:ID:hash`, and back.
//!
//! Layout (documented in `docs/hash-layout.md`), in its compact form:
//!
//! | field | value |
//! |---|---|
//! | `version` | the journey version, an integer |
//! | `status` | the journey status |
//! | `journey` | JSON of the whole journey as it was when the hash was written whole (created, or converted by a migration) |
//! | `segment:<id>:status` | the segment's status |
//!
//! The `version`, `status` and `segment:<id>:status` fields are the current values: they
//! supersede the version and statuses inside `journey`, which no update touches. Everything else
//! in a journey never changes after creation, so it is one field, and a read of a two-segment
//! journey is 5 values (redis-rs' reply parser costs about 1,240 instructions an item).
//!
//! Hashes written by builds before 2026-12-06, and by later ones until the dataset records the
//! compact form (below), are in the *split* form, which every read and update accepts: `header` (the journey fields but status, version and segments), `segments` (the ids,
//! in order), and `segment:<id>` (a segment's fields but its status) beside the same status
//! fields.
//!
//! # Which form a write makes: expand, then contract
//! Builds before this one read only the split form, so a dataset they may still serve during a
//! rolling deploy must not get compact hashes. [`WriteForm`] makes new hashes compact only once
//! the dataset record (`journeys:dataset`) says `hash_form compact`, and split until then. A new
//! dataset records it with its layout; an existing one when the operator, every instance now on
//! this build or later, runs `flyrtech migrate --to hash`, which also rewrites its split hashes
//! compact (`crate::store::conversion`). Once recorded, it is never taken back.
//!
//! One status per field is what lets `hash_update.lua` change a segment by touching one field;
//! the reads decode a consistent HGETALL (or `HMGET`) snapshot. It sits beside `document.rs` (the
//! document layout's codec) and is used by the `hash` strategy and by the migration
//! (`layout.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flyrtech_core::{Journey, JourneyId, JourneyVersion, SegmentId, StoreError};

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Redis;
use crate::keys::{self, dataset_field};

const VERSION: &str = "version";
const STATUS: &str = "status";
/// The compact form's one field of the journey's fixed data; its presence marks the form.
pub(crate) const JOURNEY: &str = "journey";
const HEADER: &str = "header";
const SEGMENTS: &str = "segments";

fn segment_field(id: &SegmentId) -> String {
    format!("segment:{id}")
}

fn segment_status_field(id: &SegmentId) -> String {
    format!("segment:{id}:status")
}

/// The dataset record's `hash_form` when new hashes are compact (its only value so far).
pub(crate) const COMPACT: &str = "compact";

/// Which form this process writes new hashes in: [`Form::Compact`] once the dataset record says
/// so (and from then on without asking again: it is never taken back), [`Form::Split`] before,
/// asking again at most every [`WriteForm::RECHECK`].
#[derive(Debug, Default)]
pub(crate) struct WriteForm {
    compact: AtomicBool,
    /// When the record last said split.
    split_seen: Mutex<Option<Instant>>,
}

impl WriteForm {
    /// How long a process may go on writing the split form after the record said compact.
    /// `migrate --to hash` waits this long after recording it, before it looks for split hashes.
    pub(crate) const RECHECK: Duration = Duration::from_secs(1);

    /// The form to write a new hash in.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] for a form this build does not know
    /// (a later build's): nothing is written then.
    pub(crate) async fn get(&self, redis: &Redis) -> Result<Form, StoreError> {
        if self.compact.load(Ordering::Acquire) {
            return Ok(Form::Compact);
        }
        let fresh = |seen: &Option<Instant>| seen.is_some_and(|at| at.elapsed() < Self::RECHECK);
        if fresh(
            &self
                .split_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        ) {
            return Ok(Form::Split);
        }
        let (layout, form): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(keys::DATASET)
            .arg(dataset_field::LAYOUT)
            .arg(dataset_field::HASH_FORM)
            .query_async(&mut redis.shared())
            .await
            .store_err()?;
        match (layout, form.as_deref()) {
            // A Redis nobody has recorded a layout in has no instance of an earlier build.
            (None, None) | (_, Some(COMPACT)) => {
                self.compact.store(true, Ordering::Release);
                Ok(Form::Compact)
            }
            (Some(_), None) => {
                *self
                    .split_seen
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                Ok(Form::Split)
            }
            (_, Some(other)) => Err(unknown_form(other)),
        }
    }
}

/// The error for a dataset record whose `hash_form` is `form`, which this build does not know.
pub(crate) fn unknown_form(form: &str) -> StoreError {
    corrupt(
        keys::DATASET,
        format!(
            "{} {form:?} is not a form this build writes",
            dataset_field::HASH_FORM
        ),
    )
}

/// Which form a journey's hash is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `version`, `status`, `journey` and a status field per segment: new hashes, once the
    /// dataset records it ([`WriteForm`]).
    Compact,
    /// The first form, `header`, `segments` and two fields per segment: always read, and
    /// written until the dataset records the compact one.
    Split,
}

impl Form {
    /// The form of a hash whose field names are `names`.
    pub(crate) fn of_names<'a>(mut names: impl Iterator<Item = &'a str>) -> Self {
        if names.any(|name| name == JOURNEY) {
            Self::Compact
        } else {
            Self::Split
        }
    }

    /// The form of a hash as `HGETALL` returned it (an array of names and values, or a map).
    pub(crate) fn of_reply(reply: &redis::Value) -> Self {
        let is_mark = |name: &redis::Value| matches!(name, redis::Value::BulkString(bytes) if bytes == JOURNEY.as_bytes());
        let compact = match reply {
            redis::Value::Array(items) => items.iter().step_by(2).any(is_mark),
            redis::Value::Map(pairs) => pairs.iter().any(|(name, _)| is_mark(name)),
            _ => false,
        };
        if compact { Self::Compact } else { Self::Split }
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

/// Splits a journey into hash fields, in `form`.
///
/// # Errors
/// [`StoreError::Corrupt`] if the journey cannot be encoded (it always can).
pub(crate) fn to_fields(
    journey: &Journey,
    form: Form,
) -> Result<Vec<(String, String)>, StoreError> {
    let key = keys::journey_hash(&journey.id);
    let bad = |e: serde_json::Error| corrupt(&key, e);
    let mut fields = Vec::with_capacity(4 + 2 * journey.segments.len());
    fields.extend([
        (VERSION.to_owned(), journey.version.to_string()),
        (STATUS.to_owned(), journey.status.to_string()),
    ]);
    if form == Form::Compact {
        fields.push((
            JOURNEY.to_owned(),
            serde_json::to_string(journey).map_err(bad)?,
        ));
        fields.extend(journey.segments.iter().map(|segment| {
            (
                segment_status_field(&segment.segment_id),
                segment.status.to_string(),
            )
        }));
        return Ok(fields);
    }
    // The split form: each fragment is its object's JSON without the fields kept apart.
    let fragment = |value: serde_json::Value, drop: &[&str]| {
        let serde_json::Value::Object(mut object) = value else {
            return Err(corrupt(
                &key,
                "a journey and its segments encode as objects",
            ));
        };
        for name in drop {
            object.remove(*name);
        }
        Ok(serde_json::Value::Object(object).to_string())
    };
    let ids: Vec<&SegmentId> = journey.segments.iter().map(|s| &s.segment_id).collect();
    fields.extend([
        (
            HEADER.to_owned(),
            fragment(
                serde_json::to_value(journey).map_err(bad)?,
                &[STATUS, VERSION, SEGMENTS],
            )?,
        ),
        (
            SEGMENTS.to_owned(),
            serde_json::to_string(&ids).map_err(bad)?,
        ),
    ]);
    for segment in &journey.segments {
        let data = fragment(serde_json::to_value(segment).map_err(bad)?, &[STATUS])?;
        fields.push((segment_field(&segment.segment_id), data));
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

/// The fields [`from_fields`] reads to reassemble `journey` from a hash in `form`: what a read of
/// it by name asks for (`crate::store::render`). `known`, when it names those very fields, is
/// what is returned: the list a read was asked with is kept, and no command is built again.
pub(crate) fn read_by(journey: &Journey, form: Form, known: Option<&FieldNames>) -> FieldNames {
    let mut names = Vec::with_capacity(4 + 2 * journey.segments.len());
    match form {
        Form::Compact => names.extend([VERSION, STATUS, JOURNEY].map(str::to_owned)),
        Form::Split => names.extend([VERSION, STATUS, HEADER, SEGMENTS].map(str::to_owned)),
    }
    for segment in &journey.segments {
        if form == Form::Split {
            names.push(segment_field(&segment.segment_id));
        }
        names.push(segment_status_field(&segment.segment_id));
    }
    match known {
        Some(known) if known.as_slice() == names.as_slice() => known.clone(),
        _ => FieldNames::new(&keys::journey_hash(&journey.id), names),
    }
}

/// Reassembles a journey from a consistent snapshot of its hash's fields, in either form.
///
/// # Errors
/// [`StoreError::Corrupt`] for a field missing or not what the form says, or a hash that holds
/// another journey.
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
    let journey = if fields.contains_key(JOURNEY) {
        from_compact(key, &field)?
    } else {
        from_split(key, &field)?
    };
    if &journey.id != id {
        return Err(corrupt(key, format!("holds journey {}", journey.id)));
    }
    Ok(journey)
}

/// The compact form: the journey as written whole, with the current version and statuses set
/// from their fields.
fn from_compact<'a>(
    key: &str,
    field: &impl Fn(&str) -> Result<&'a str, StoreError>,
) -> Result<Journey, StoreError> {
    let mut journey: Journey =
        serde_json::from_str(field(JOURNEY)?).map_err(|e| corrupt(key, e))?;
    journey.version = JourneyVersion::new(field(VERSION)?.parse().map_err(|e| corrupt(key, e))?);
    journey.status = field(STATUS)?.parse().map_err(|e| corrupt(key, e))?;
    for segment in &mut journey.segments {
        segment.status = field(&segment_status_field(&segment.segment_id))?
            .parse()
            .map_err(|e| corrupt(key, e))?;
    }
    Ok(journey)
}

/// The split form: its fragments spliced into one JSON text (the status fields and the version
/// added to their objects) and decoded once, straight into a [`Journey`] (no intermediate
/// `serde_json::Value` tree). A fragment that is not a JSON object, or that already holds a
/// field the splice adds, is refused as corrupt by that one decode.
fn from_split<'a>(
    key: &str,
    field: &impl Fn(&str) -> Result<&'a str, StoreError>,
) -> Result<Journey, StoreError> {
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
    serde_json::from_str(&text).map_err(|e| corrupt(key, e))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use flyrtech_core::{JourneyStatus, SegmentStatus};

    use super::*;
    use crate::store::fixtures::journey;

    fn decode(fields: &[(String, String)]) -> Result<Journey, StoreError> {
        let map: HashMap<&str, &str> = fields
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str()))
            .collect();
        let id = JourneyId::parse("JRN-1").unwrap();
        from_fields(&keys::journey_hash(&id), &id, &map)
    }

    fn set(fields: &mut [(String, String)], name: &str, value: &str) {
        let field = fields.iter_mut().find(|(n, _)| n == name).unwrap();
        value.clone_into(&mut field.1);
    }

    #[test]
    fn each_form_is_written_with_its_fields_and_read_back_whole() {
        let mut journey = journey();
        journey.version = JourneyVersion::new(4);
        journey.segments[1].status = SegmentStatus::Departed;
        let fixed: &[&str] = &["header", "segments", "segment:SEG-1", "segment:SEG-2"];
        for (form, expected) in [
            (
                Form::Compact,
                &[
                    "version",
                    "status",
                    "journey",
                    "segment:SEG-1:status",
                    "segment:SEG-2:status",
                ][..],
            ),
            (
                Form::Split,
                &[
                    "version",
                    "status",
                    "header",
                    "segments",
                    "segment:SEG-1",
                    "segment:SEG-1:status",
                    "segment:SEG-2",
                    "segment:SEG-2:status",
                ][..],
            ),
        ] {
            let fields = to_fields(&journey, form).unwrap();
            let names: Vec<&str> = fields.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(names, expected, "{form:?}");
            // The split form's fragments leave out what the status fields hold.
            for (name, value) in &fields {
                if fixed.contains(&name.as_str()) {
                    assert!(!value.contains("status"), "{name}: {value}");
                }
            }
            assert_eq!(decode(&fields).unwrap(), journey, "{form:?}");
            let read = read_by(&journey, form, None);
            assert_eq!(
                read.as_slice(),
                names,
                "a read by name asks for every field"
            );
            assert_eq!(Form::of_names(names.into_iter()), form);
        }
    }

    #[test]
    fn the_status_fields_supersede_what_the_journey_field_was_written_with() {
        let mut fields = to_fields(&journey(), Form::Compact).unwrap();
        set(&mut fields, "version", "7");
        set(&mut fields, "status", "Completed");
        set(&mut fields, "segment:SEG-2:status", "Arrived");
        let read = decode(&fields).unwrap();
        assert_eq!(read.version, JourneyVersion::new(7));
        assert_eq!(read.status, JourneyStatus::Completed);
        assert_eq!(
            read.segments.iter().map(|s| s.status).collect::<Vec<_>>(),
            [SegmentStatus::Scheduled, SegmentStatus::Arrived]
        );
        // A status field missing or not a status: corrupt, not the written one.
        set(&mut fields, "segment:SEG-1:status", "Sideways");
        assert!(matches!(decode(&fields), Err(StoreError::Corrupt { .. })));
        fields.retain(|(n, _)| n != "segment:SEG-1:status");
        let err = decode(&fields).unwrap_err().to_string();
        assert!(err.contains("segment:SEG-1:status"), "{err}");
    }

    #[test]
    fn the_form_of_a_reply_is_read_from_its_names_only() {
        let bulk = |text: &str| redis::Value::BulkString(text.as_bytes().to_vec());
        let compact = redis::Value::Array(vec![
            bulk("version"),
            bulk("1"),
            bulk("journey"),
            bulk("{}"),
        ]);
        assert_eq!(Form::of_reply(&compact), Form::Compact);
        let map = redis::Value::Map(vec![(bulk("journey"), bulk("{}"))]);
        assert_eq!(Form::of_reply(&map), Form::Compact);
        // "journey" as a value, not a name, marks nothing.
        let split = redis::Value::Array(vec![bulk("header"), bulk("journey")]);
        assert_eq!(Form::of_reply(&split), Form::Split);
    }

    /// Two lists are one when they name the same fields of the same hash, whether or not they
    /// share an allocation; a different field or a different hash makes another.
    #[test]
    fn field_lists_are_equal_by_their_names_and_their_hash() {
        let journey = journey();
        let names = |key: &str, extra: &str| {
            let mut names: Vec<String> = [VERSION, STATUS, JOURNEY].map(str::to_owned).to_vec();
            names.push(extra.to_owned());
            FieldNames::new(key, names)
        };
        let key = keys::journey_hash(&journey.id);
        let one = names(&key, "segment:SEG-1:status");
        assert_eq!(one, one.clone());
        assert_eq!(one, names(&key, "segment:SEG-1:status"));
        assert_ne!(one, names(&key, "segment:SEG-2:status"));
        assert_ne!(one, names("journey:{x}:JRN-2:hash", "segment:SEG-1:status"));
    }

    /// A read asked with the very fields a journey needs keeps that list; a list for another
    /// shape of the journey (a segment more or less, the other form) is not reused.
    #[test]
    fn a_known_field_list_is_kept_only_when_it_names_the_same_fields() {
        let journey = journey();
        let compact = read_by(&journey, Form::Compact, None);
        assert!(read_by(&journey, Form::Compact, Some(&compact)).same(&compact));
        let split = read_by(&journey, Form::Split, Some(&compact));
        assert!(!split.same(&compact));
        assert_ne!(split, compact);
        let mut shorter = journey.clone();
        shorter.segments.pop();
        let fewer = read_by(&shorter, Form::Compact, Some(&compact));
        assert!(!fewer.same(&compact));
        assert_eq!(fewer.as_slice().len() + 1, compact.as_slice().len());
    }
}
