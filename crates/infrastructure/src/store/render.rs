//! The journey as JSON text for readers (`GET /api/journeys/{id}`), remembered by exactly what
//! Redis returned.
//!
//! Decoding a stored journey and encoding it again as the response was a third of what a `GET`
//! cost `serve` (perf): the same few hundred bytes parsed (dates, decimals, every
//! segment) and printed again on every read, though a journey is read far more often than it
//! changes. [`RenderMemo`] keeps, per journey, the raw read (the document's text, or the hash
//! layout's fields in the order Redis sent them) and the JSON made from it.
//!
//! # Why it is never stale
//! It is not a cache of the journey: every read still asks Redis, in the same one round trip as
//! before. The memo only skips the decoding and encoding when the bytes Redis returned are *the
//! same bytes* it rendered before, compared in full; rendering is a pure function of them. A
//! change, a migration to the other layout, a journey re-created with the same id and version,
//! or a foreign writer that changed a field without a new version: each returns other bytes, and
//! is rendered from them. The journey a reader gets is therefore exactly what decoding the read
//! would give (the test suite compares both), including a 500 for a stored journey that cannot be
//! decoded, which is never remembered.
//!
//! # The hash layout's reads
//! A hash journey's first read is one `HGETALL`: its 10 items (for two segments; 16 in the split
//! form) cost the client's reply parser about 1,240 instructions each. Once rendered,
//! the memo knows the journey's field names, and its next read asks for their values only
//! (`HMGET`, half the items, the command itself built once with the names and kept beside them):
//! the same atomic snapshot of every field the decoding reads. Any value missing
//! (the journey gone or moved) or a decoding that needs a field not asked for (its segment list
//! changed behind the service's back) sends the read back to `HGETALL`, so the answer is always
//! the one a full read would give.
//!
//! # What it bounds
//! At most [`RenderMemo::MAX_BYTES`] of reads and renderings together; a journey larger than an
//! eighth of that is rendered every time and not kept. When an entry does not fit, entries are
//! forgotten (whichever the table yields first) until it does: a forgotten journey costs one
//! decoding on its next read, nothing else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use flyrtech_core::{Journey, JourneyId, JourneyVersion, StoreError};

use crate::store::hash_fields::{self, FieldNames, Form};

/// A journey's JSON text (the `serde_json` encoding of [`Journey`]) and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The journey's version (its `ETag`).
    pub version: JourneyVersion,
    /// `serde_json::to_string(&journey)`.
    pub json: Arc<str>,
}

impl Rendered {
    /// Encodes `journey`.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] if the journey cannot be encoded (it always can).
    pub fn of(journey: &Journey) -> Result<Self, StoreError> {
        let json = serde_json::to_string(journey).map_err(|e| StoreError::Corrupt {
            key: journey.id.to_string(),
            reason: e.to_string(),
        })?;
        Ok(Self {
            version: journey.version,
            json: json.into(),
        })
    }
}

/// What one read of a journey returned, byte for byte.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Raw {
    /// The document layout's JSON text.
    Document(String),
    /// The hash layout's fields: `HGETALL`'s reply as Redis sent it.
    Fields(redis::Value),
    /// The hash layout's values of the fields `names` (`HMGET`'s reply), names the memo gave.
    Selected {
        /// The fields asked for.
        names: FieldNames,
        /// Their values, in order.
        values: redis::Value,
    },
}

impl Raw {
    fn size(&self) -> usize {
        match self {
            Self::Document(text) => text.len(),
            Self::Fields(fields) => value_size(fields),
            Self::Selected { names, values } => names.size() + value_size(values),
        }
    }
}

/// The bytes a reply holds (its strings' lengths, and a word for each other item).
fn value_size(value: &redis::Value) -> usize {
    match value {
        redis::Value::BulkString(bytes) => bytes.len(),
        redis::Value::SimpleString(text) => text.len(),
        redis::Value::Array(items) | redis::Value::Set(items) => items.iter().map(value_size).sum(),
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(k, v)| value_size(k) + value_size(v))
            .sum(),
        _ => std::mem::size_of::<redis::Value>(),
    }
}

/// Renderings by journey, keyed by the read they were made from.
#[derive(Debug, Default)]
pub(crate) struct RenderMemo {
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    entries: HashMap<JourneyId, Entry>,
    bytes: usize,
}

/// A journey's last rendering, the read it was made from, and for a hash journey the fields
/// its decoding read.
#[derive(Debug)]
struct Entry {
    raw: Raw,
    rendered: Rendered,
    names: Option<FieldNames>,
}

impl Entry {
    fn footprint(&self, id: &JourneyId) -> usize {
        id.as_str().len()
            + self.raw.size()
            + self.rendered.json.len()
            + self.names.as_ref().map_or(0, FieldNames::size)
    }
}

impl RenderMemo {
    /// The most the memo holds: reads and renderings together.
    pub(crate) const MAX_BYTES: usize = 8 * 1024 * 1024;

    /// The rendering of `raw` for `id`, decoding it with `decode` unless these very bytes were
    /// rendered before.
    ///
    /// # Errors
    /// What `decode` returns (a journey that cannot be decoded is not remembered).
    pub(crate) fn render(
        &self,
        id: &JourneyId,
        raw: Raw,
        decode: impl FnOnce(&Raw) -> Result<Journey, StoreError>,
    ) -> Result<Rendered, StoreError> {
        if let Some(rendered) = self.recall(id, &raw) {
            return Ok(rendered);
        }
        let journey = decode(&raw)?;
        let rendered = Rendered::of(&journey)?;
        // For a read by name, most often the list asked for: that one is kept, so the next
        // comparison of the two is of one address.
        let names = match &raw {
            Raw::Document(_) => None,
            Raw::Fields(reply) => Some(hash_fields::read_by(&journey, Form::of_reply(reply), None)),
            Raw::Selected { names, .. } => {
                let form = Form::of_names(names.as_slice().iter().map(String::as_str));
                Some(hash_fields::read_by(&journey, form, Some(names)))
            }
        };
        self.remember(
            id,
            Entry {
                raw,
                rendered: rendered.clone(),
                names,
            },
        );
        Ok(rendered)
    }

    /// The fields the last rendering of hash journey `id` was decoded from, to ask for by name.
    pub(crate) fn names(&self, id: &JourneyId) -> Option<FieldNames> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        table.entries.get(id).and_then(|entry| entry.names.clone())
    }

    fn recall(&self, id: &JourneyId, raw: &Raw) -> Option<Rendered> {
        let table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.entries.get(id) {
            Some(entry) if entry.raw == *raw => Some(entry.rendered.clone()),
            _ => None,
        }
    }

    fn remember(&self, id: &JourneyId, entry: Entry) {
        let size = entry.footprint(id);
        if size > Self::MAX_BYTES / 8 {
            return;
        }
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let table = &mut *table;
        if let Some(old) = table.entries.remove(id) {
            table.bytes -= old.footprint(id);
        }
        while table.bytes + size > Self::MAX_BYTES {
            let Some(victim) = table.entries.keys().next().cloned() else {
                break;
            };
            if let Some(old) = table.entries.remove(&victim) {
                table.bytes -= old.footprint(&victim);
            }
        }
        table.bytes += size;
        table.entries.insert(id.clone(), entry);
    }

    /// Bytes held now.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::Cell;

    use super::*;

    fn journey(id: &str, version: u64) -> Journey {
        let mut j: Journey = serde_json::from_str(&format!(
            r#"{{"id":"{id}","passengerName":"A","passengerEmail":"a@example.com",
               "bookingDate":"2025-12-01T10:30:00Z","status":"Confirmed","totalPrice":1.00,
               "segments":[]}}"#
        ))
        .unwrap();
        j.version = JourneyVersion::new(version);
        j
    }

    #[test]
    fn the_same_bytes_are_decoded_once_and_other_bytes_again() {
        let memo = RenderMemo::default();
        let id = JourneyId::parse("JRN-1").unwrap();
        let decodes = Cell::new(0);
        let read = |raw: &str, version| {
            memo.render(&id, Raw::Document(raw.to_owned()), |_| {
                decodes.set(decodes.get() + 1);
                Ok(journey("JRN-1", version))
            })
            .unwrap()
        };
        let first = read("v1", 1);
        let again = read("v1", 1);
        assert_eq!(first, again);
        assert_eq!(decodes.get(), 1);
        // Other bytes, even at the same version, are decoded.
        let changed = read("v1 changed", 1);
        assert_eq!(decodes.get(), 2);
        assert_eq!(changed, Rendered::of(&journey("JRN-1", 1)).unwrap());
        assert_eq!(first.json, Rendered::of(&journey("JRN-1", 1)).unwrap().json);
    }

    #[test]
    fn a_read_that_cannot_be_decoded_is_not_remembered() {
        let memo = RenderMemo::default();
        let id = JourneyId::parse("JRN-1").unwrap();
        let corrupt = || StoreError::Corrupt {
            key: "k".into(),
            reason: "bad".into(),
        };
        for _ in 0..2 {
            let raw = Raw::Document("{".into());
            assert!(memo.render(&id, raw, |_| Err(corrupt())).is_err());
        }
        assert_eq!(memo.bytes(), 0);
    }

    #[test]
    fn a_hash_rendering_knows_the_fields_its_decoding_read() {
        let memo = RenderMemo::default();
        let id = JourneyId::parse("JRN-1").unwrap();
        memo.render(&id, Raw::Document("{}".into()), |_| Ok(journey("JRN-1", 1)))
            .unwrap();
        assert_eq!(memo.names(&id), None, "a document is read whole");
        let split = redis::Value::Array(vec![]);
        memo.render(&id, Raw::Fields(split), |_| Ok(journey("JRN-1", 2)))
            .unwrap();
        assert_eq!(
            memo.names(&id).unwrap().as_slice(),
            ["version", "status", "header", "segments"],
            "a hash in the split form is read by its names"
        );
        let fields = redis::Value::Array(
            ["journey", "{}"]
                .map(|text| redis::Value::BulkString(text.as_bytes().to_vec()))
                .to_vec(),
        );
        memo.render(&id, Raw::Fields(fields), |_| Ok(journey("JRN-1", 2)))
            .unwrap();
        let names = memo.names(&id).unwrap();
        assert_eq!(
            names.as_slice(),
            ["version", "status", "journey"],
            "no segments, no segment fields"
        );
        let mut hmget = redis::cmd("HMGET");
        hmget
            .arg(crate::keys::journey_hash(&id))
            .arg(names.as_slice());
        assert_eq!(
            names.read().get_packed_command(),
            hmget.get_packed_command(),
            "a read by name is the HMGET of the journey's hash"
        );
        // A read of those fields by name, rendered: the same list is kept, and the same
        // values again are not decoded again.
        let values = redis::Value::Array(vec![redis::Value::BulkString(b"2".to_vec())]);
        let selected = || Raw::Selected {
            names: names.clone(),
            values: values.clone(),
        };
        memo.render(&id, selected(), |_| Ok(journey("JRN-1", 2)))
            .unwrap();
        assert!(memo.names(&id).unwrap().same(&names));
        let again = memo.render(&id, selected(), |_| panic!("decoded again"));
        assert_eq!(again.unwrap().version, JourneyVersion::new(2));
    }

    #[test]
    fn it_holds_at_most_its_bound() {
        let memo = RenderMemo::default();
        let big = "x".repeat(RenderMemo::MAX_BYTES / 16);
        for n in 0..64 {
            let id = JourneyId::parse(format!("JRN-{n}")).unwrap();
            let raw = Raw::Fields(redis::Value::Array(vec![
                redis::Value::BulkString(b"header".to_vec()),
                redis::Value::BulkString(big.clone().into_bytes()),
            ]));
            memo.render(&id, raw, |_| Ok(journey(id.as_str(), 0)))
                .unwrap();
            assert!(memo.bytes() <= RenderMemo::MAX_BYTES, "{}", memo.bytes());
        }
        assert!(memo.bytes() > RenderMemo::MAX_BYTES / 2);
        // Larger than an eighth: rendered, not kept.
        let id = JourneyId::parse("JRN-huge").unwrap();
        let before = memo.bytes();
        let raw = Raw::Document("y".repeat(RenderMemo::MAX_BYTES / 4));
        memo.render(&id, raw, |_| Ok(journey("JRN-huge", 0)))
            .unwrap();
        assert_eq!(memo.bytes(), before);
    }
}
