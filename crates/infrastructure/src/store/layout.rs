//! The two layouts a journey can be stored in, and both copies of one journey as one atomic
//! read finds them; moving a journey between them is [`super::conversion`].
//!
//! | layout | key | written by |
//! |---|---|---|
//! | `document` | `journey:{P}:ID`, one JSON string | `naive`, `local-lock`, `optimistic`, `redlock`, `lua` |
//! | `hash` | `journey:{P}:ID:hash`, one field per segment status | `hash` |
//!
//! Both keys of a journey carry the journey's partition tag, so they share a slot and one script
//! sees both. That is what keeps every journey in exactly one layout at every instant:
//! - creation refuses when either copy exists (`scripts/create.lua`);
//! - a conversion is one compare-and-swap script (`scripts/convert.lua`) that writes the target
//!   and deletes the source in the same step, and only if neither copy changed since it was
//!   read — a change made meanwhile by any strategy makes it fail harmlessly and read again;
//! - every write of every strategy checks, inside its own atomic step, that its copy still
//!   exists (the update scripts answer `moved`, the fenced write and the naive commit refuse,
//!   `optimistic` WATCHes the key), so no write ever lands in a copy a migration has retired.
//!
//! A conversion changes nothing else: every field and the version are carried over exactly as
//! read, the outbox is not touched and no domain event is raised — nothing happened to the
//! journey as far as the business is concerned.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use flyrtech_core::{Journey, JourneyId, StoreError};

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Conn;
use crate::keys;
use crate::replication::script::LuaScript;
use crate::store::document;
use crate::store::hash_fields;

/// How a journey is laid out in Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// One JSON document per journey, as in the original service.
    Document,
    /// One hash per journey with a field per segment status.
    Hash,
}

impl Layout {
    /// Both layouts.
    pub const ALL: [Self; 2] = [Self::Document, Self::Hash];

    /// The name used in configuration, commands and the dataset record.
    pub fn name(self) -> &'static str {
        match self {
            Self::Document => "document",
            Self::Hash => "hash",
        }
    }

    /// Where `id`'s state lives in this layout.
    pub fn key(self, id: &JourneyId) -> String {
        match self {
            Self::Document => keys::journey_document(id),
            Self::Hash => keys::journey_hash(id),
        }
    }

    /// The other layout.
    pub fn other(self) -> Self {
        match self {
            Self::Document => Self::Hash,
            Self::Hash => Self::Document,
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A layout name that is neither `document` nor `hash`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layout {0:?}; the layouts are document and hash")]
pub struct UnknownLayout(pub String);

impl FromStr for Layout {
    type Err = UnknownLayout;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownLayout(s.to_owned()))
    }
}

/// Both copies of one journey, as one atomic read found them (normally exactly one exists).
#[derive(Debug, Default)]
pub(crate) struct Copies {
    /// The document copy's raw JSON, if any.
    pub(crate) document: Option<String>,
    /// The hash copy's fields (empty when there is none).
    pub(crate) hash: HashMap<String, String>,
}

impl Copies {
    /// Reads both copies in one MULTI/EXEC: a consistent snapshot, even mid-migration.
    pub(crate) async fn read(conn: &mut Conn, id: &JourneyId) -> Result<Self, StoreError> {
        let (document, hash): (Option<String>, HashMap<String, String>) = redis::pipe()
            .atomic()
            .get(keys::journey_document(id))
            .hgetall(keys::journey_hash(id))
            .query_async(conn)
            .await
            .store_err()?;
        Ok(Self { document, hash })
    }

    /// Both copies decoded: `[document, hash]`.
    pub(crate) fn decoded(&self, id: &JourneyId) -> Result<[Option<Journey>; 2], StoreError> {
        let document = self
            .document
            .as_deref()
            .map(|raw| document::decode(id, raw))
            .transpose()?;
        let hash = if self.hash.is_empty() {
            None
        } else {
            Some(hash_fields::from_fields(
                &keys::journey_hash(id),
                id,
                &self.hash,
            )?)
        };
        Ok([document, hash])
    }

    /// The journey, from whichever copy holds it (the newer one, should both exist).
    ///
    /// # Errors
    /// [`StoreError::JourneyNotFound`] when neither does; [`StoreError::Corrupt`].
    pub(crate) fn journey(&self, id: &JourneyId) -> Result<Journey, StoreError> {
        let [document, hash] = self.decoded(id)?;
        match (document, hash) {
            (Some(d), Some(h)) if h.version > d.version => Ok(h),
            (Some(d), _) => Ok(d),
            (None, Some(h)) => Ok(h),
            (None, None) => Err(StoreError::JourneyNotFound(id.clone())),
        }
    }
}

/// Creates `journey` in `layout` unless it exists in either layout (`scripts/create.lua`), then
/// lists it in the dataset's `index` (see [`super::index`] for why listing is a second step). A
/// hash is written in the form `form` says (see [`hash_fields::WriteForm`]).
///
/// # Errors
/// [`StoreError::AlreadyExists`] (the index is still repaired), [`StoreError::InvalidInput`],
/// [`StoreError::Unavailable`].
pub(crate) async fn create(
    ctx: &crate::store::write::WriteContext,
    index: &str,
    journey: &Journey,
    layout: Layout,
    form: &hash_fields::WriteForm,
) -> Result<(), StoreError> {
    static SCRIPT: std::sync::LazyLock<LuaScript> =
        std::sync::LazyLock::new(|| LuaScript::new(include_str!("scripts/create.lua")));
    journey.validate_new()?;
    let keys = [
        keys::journey_document(&journey.id),
        keys::journey_hash(&journey.id),
    ];
    let mut args = vec![layout.name().to_owned()];
    match layout {
        Layout::Document => args.push(document::encode(journey)?),
        Layout::Hash => {
            let form = form.get(&ctx.redis).await?;
            for (field, value) in hash_fields::to_fields(journey, form)? {
                args.push(field);
                args.push(value);
            }
        }
    }
    let created: i64 = ctx.run(SCRIPT.call(&keys, &args)).await?;
    super::index::add_to_index(ctx, index, &journey.id).await?;
    if created == 1 {
        Ok(())
    } else {
        Err(StoreError::AlreadyExists(journey.id.clone()))
    }
}
