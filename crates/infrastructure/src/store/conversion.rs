//! Moving one journey between the layouts ([`super::layout`]): the compare-and-swap conversion
//! script, applied per slot in pipelines by the online migration (`crate::dataset`).
//!
//! A conversion writes the target copy and deletes the source in one script, and only if neither
//! copy changed since it was read: a change made meanwhile by any strategy makes it fail
//! harmlessly and read again. Every field and the version are carried over exactly as read; the
//! outbox is not touched and no domain event is raised. Converting to `hash` also rewrites a
//! hash still in the split form in the compact one, by the same compare-and-swap
//! ([`Conversion::Compacted`]).

use std::sync::Arc;

use flyrtech_core::{JourneyId, JourneyVersion, StoreError};

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::Conn;
use crate::keys;
use crate::replication::Replication;
use crate::replication::script::LuaScript;
use crate::store::document;
use crate::store::hash_fields::{self, Form};
use crate::store::layout::{Copies, Layout};

/// What converting one journey did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// Moved to the target layout.
    Converted,
    /// Both layouts held it, one copy at version 0 (never changed, e.g. seeded twice by
    /// instances of both layouts before layouts were recorded): that copy was dropped and the
    /// other one is now the journey, in the target layout. No acknowledged change is lost.
    Deduplicated,
    /// It already was in the target layout.
    AlreadyThere,
    /// It was in the hash layout's split form (written before the compact form existed) and is
    /// now in the compact one (`crate::store::hash_fields`); nothing else changed.
    Compacted,
    /// Listed in the index, but in neither layout: nothing to convert.
    Absent,
}

/// Why one journey could not be converted. Nothing was written for it.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// Both layouts hold the journey and both copies have acknowledged changes: which one is
    /// right is a decision for a person.
    #[error(
        "both layouts hold this journey with changes (document at version {document}, hash at \
         version {hash}); keep one by hand, then run the migration again"
    )]
    BothChanged {
        /// The document copy's version.
        document: JourneyVersion,
        /// The hash copy's version.
        hash: JourneyVersion,
    },
    /// It kept changing under the conversion; the next run will try again.
    #[error("it changed under the conversion {0} times in a row")]
    Contended(u32),
    /// Redis failed, or a copy cannot be decoded.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The compare-and-swap conversion script, and the replicas its writes wait for.
#[derive(Debug)]
pub(crate) struct Converter {
    script: LuaScript,
    replication: Option<Arc<Replication>>,
}

impl Converter {
    /// A converter whose writes are confirmed by replicas when `replication` is given.
    pub(crate) fn new(replication: Option<Arc<Replication>>) -> Self {
        Self {
            script: LuaScript::new(include_str!("scripts/convert.lua")),
            replication,
        }
    }

    /// Sends conversion calls of one slot: one pipeline on `conn`, or one replica-confirmed
    /// write. Each call's reply, or `None` when the whole write failed.
    async fn send(
        &self,
        conn: &mut Conn,
        calls: Vec<redis::Cmd>,
    ) -> Option<Vec<Result<i64, StoreError>>> {
        let key = keys_of(&calls)?;
        match &self.replication {
            Some(replication) => {
                let values = replication
                    .write(&key, calls, Some(self.script.source()))
                    .await
                    .ok()?;
                Some(
                    values
                        .into_iter()
                        .map(crate::connection::error::decode)
                        .collect(),
                )
            }
            None => {
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for call in calls {
                    pipe.add_command(call);
                }
                let replies = pipe
                    .query_async::<Vec<redis::RedisResult<i64>>>(conn)
                    .await
                    .ok()?;
                Some(replies.into_iter().map(RedisResultExt::store_err).collect())
            }
        }
    }
}

/// The first key of the first call (`EVALSHA sha numkeys key …`): the slot they all write.
fn keys_of(calls: &[redis::Cmd]) -> Option<String> {
    let arg = calls.first()?.args_iter().nth(3)?;
    match arg {
        redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        _ => None,
    }
}

/// How often one journey may change under its conversion before it is reported.
const CONVERSION_TRIES: u32 = 16;

/// What to do with one journey, decided from what was read.
enum Plan {
    /// Nothing to write.
    Done(Conversion),
    /// Send the conversion script with these keys and arguments; it does `outcome` if neither
    /// copy changed since the read.
    Send {
        keys: [String; 3],
        args: Vec<String>,
        outcome: Conversion,
    },
}

impl Converter {
    /// Loads the script on every master (a cluster routes `SCRIPT LOAD` to all nodes), so that
    /// pipelines can call it by SHA. A master that lost it (a failover) answers NOSCRIPT, and
    /// the journeys concerned go through [`Converter::convert`], which reloads it.
    pub(crate) async fn load(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(self.script.source())
            .query_async(conn)
            .await
            .store_err()?;
        Ok(())
    }

    /// Decides what converting journey `id` to `to` takes, from both copies as read.
    fn plan(id: &JourneyId, copies: &Copies, to: Layout) -> Result<Plan, ConversionError> {
        let [document, hash] = copies.decoded(id)?;
        let (source, target) = match to {
            Layout::Document => (hash, document),
            Layout::Hash => (document, hash),
        };
        // The target's value to write, or `None` to keep the target's copy as it is.
        let (value, outcome) = match (source, target) {
            (None, None) => return Ok(Plan::Done(Conversion::Absent)),
            (None, Some(hash))
                if to == Layout::Hash
                    && Form::of_names(copies.hash.keys().map(String::as_str)) == Form::Split =>
            {
                (Some(hash), Conversion::Compacted)
            }
            (None, Some(_)) => return Ok(Plan::Done(Conversion::AlreadyThere)),
            (Some(source), None) => (Some(source), Conversion::Converted),
            (Some(source), Some(target)) if target.version.is_initial() => {
                (Some(source), Conversion::Deduplicated)
            }
            (Some(source), Some(_)) if source.version.is_initial() => {
                (None, Conversion::Deduplicated)
            }
            (Some(source), Some(target)) => {
                let (document, hash) = match to {
                    Layout::Document => (target.version, source.version),
                    Layout::Hash => (source.version, target.version),
                };
                return Err(ConversionError::BothChanged { document, hash });
            }
        };
        let mut args = vec![
            to.name().to_owned(),
            copies.document.clone().unwrap_or_default(),
            copies.hash.get("version").cloned().unwrap_or_default(),
        ];
        match (value, to) {
            // `migrate --to hash` records the compact form before it converts anything.
            (Some(journey), Layout::Hash) => {
                for (field, value) in hash_fields::to_fields(&journey, Form::Compact)? {
                    args.push(field);
                    args.push(value);
                }
            }
            (Some(journey), Layout::Document) => args.push(document::encode(&journey)?),
            (None, _) => {}
        }
        Ok(Plan::Send {
            keys: [
                keys::journey_document(id),
                keys::journey_hash(id),
                keys::journey_fence(id),
            ],
            args,
            outcome,
        })
    }

    /// Interprets the script's reply: `Some` when done, `None` when a copy changed meanwhile.
    fn done(
        id: &JourneyId,
        reply: i64,
        outcome: Conversion,
    ) -> Result<Option<Conversion>, ConversionError> {
        match reply {
            1 => Ok(Some(outcome)),
            0 => Ok(None),
            other => Err(corrupt(
                &keys::journey_document(id),
                format!("conversion script replied {other}"),
            )
            .into()),
        }
    }

    /// Puts journey `id` in layout `to`, atomically, on its own (the batched path's fallback
    /// for a journey that changed under its batch). Idempotent.
    ///
    /// # Errors
    /// [`ConversionError`]; nothing was written for the journey then.
    pub(crate) async fn convert(
        &self,
        conn: &mut Conn,
        id: &JourneyId,
        to: Layout,
    ) -> Result<Conversion, ConversionError> {
        for _ in 0..CONVERSION_TRIES {
            let copies = Copies::read(conn, id).await?;
            let (keys, args, outcome) = match Self::plan(id, &copies, to)? {
                Plan::Done(done) => return Ok(done),
                Plan::Send {
                    keys,
                    args,
                    outcome,
                } => (keys, args, outcome),
            };
            let call = self.script.call(&keys, &args).cmd;
            let reply = match self.send(conn, vec![call]).await {
                Some(mut replies) if replies.len() == 1 => replies.remove(0)?,
                _ => {
                    // Loaded again (a failover may have emptied the script cache), then once more.
                    self.load(conn).await?;
                    let call = self.script.call(&keys, &args).cmd;
                    match self.send(conn, vec![call]).await {
                        Some(mut replies) if replies.len() == 1 => replies.remove(0)?,
                        _ => {
                            return Err(StoreError::unavailable(
                                "the conversion could not be sent",
                                format!("journey {id}"),
                            )
                            .into());
                        }
                    }
                }
            };
            if let Some(done) = Self::done(id, reply, outcome)? {
                return Ok(done);
            }
        }
        Err(ConversionError::Contended(CONVERSION_TRIES))
    }

    /// Converts journeys of one slot (one partition) with one read pipeline and one write
    /// pipeline (a cluster pipeline may not cross slots). A journey the batch did not convert (a
    /// copy changed after the read, a master that lost the script, an error) goes through
    /// [`Converter::convert`] on its own. With `precheck`, one more pipeline first asks which
    /// journeys still have a copy in the source layout: worth it where most are expected to be
    /// converted already (a sweep, a resumed or repeated run), a wasted round trip where not.
    pub(crate) async fn convert_slot(
        &self,
        conn: &mut Conn,
        mut ids: Vec<JourneyId>,
        to: Layout,
        precheck: bool,
    ) -> Vec<(JourneyId, Result<Conversion, ConversionError>)> {
        let mut results = Vec::with_capacity(ids.len());
        if precheck {
            // Is there a source copy; is the target copy there, and for a hash in its compact
            // form (one in the split form is not there yet: it is compacted)?
            let mut exists = redis::pipe();
            for id in &ids {
                exists.exists(to.other().key(id));
                match to {
                    Layout::Document => exists.exists(to.key(id)),
                    Layout::Hash => exists.hexists(to.key(id), hash_fields::JOURNEY),
                };
            }
            if let Ok(found) = exists.query_async::<Vec<bool>>(conn).await
                && found.len() == 2 * ids.len()
            {
                let mut left = Vec::new();
                for (id, pair) in ids.into_iter().zip(found.chunks(2)) {
                    match pair {
                        [false, true] => results.push((id, Ok(Conversion::AlreadyThere))),
                        [false, false] if to == Layout::Document => {
                            results.push((id, Ok(Conversion::Absent)));
                        }
                        _ => left.push(id),
                    }
                }
                ids = left;
            }
        }
        if ids.is_empty() {
            return self.confirm(results).await;
        }
        let mut read = redis::pipe();
        for id in &ids {
            read.get(keys::journey_document(id))
                .hgetall(keys::journey_hash(id));
        }
        let replies: Result<Vec<redis::Value>, _> = read.query_async(conn).await;
        let Ok(replies) = replies else {
            for id in ids {
                let outcome = self.convert(conn, &id, to).await;
                results.push((id, outcome));
            }
            return results;
        };
        let mut write = Vec::new();
        let mut sent = Vec::new();
        let mut alone = Vec::new();
        for (id, pair) in ids.into_iter().zip(replies.chunks(2)) {
            let copies = match pair {
                [document, hash] => redis::from_redis_value_ref(document)
                    .and_then(|document| Ok((document, redis::from_redis_value_ref(hash)?)))
                    .map(|(document, hash)| Copies { document, hash }),
                _ => {
                    alone.push(id);
                    continue;
                }
            };
            let Ok(copies) = copies else {
                alone.push(id);
                continue;
            };
            match Self::plan(&id, &copies, to) {
                Ok(Plan::Done(done)) => results.push((id, Ok(done))),
                Err(e) => results.push((id, Err(e))),
                Ok(Plan::Send {
                    keys,
                    args,
                    outcome,
                }) => {
                    write.push(self.script.call(&keys, &args).cmd);
                    sent.push((id, outcome));
                }
            }
        }
        if !sent.is_empty() {
            match self.send(conn, write).await {
                Some(replies) if replies.len() == sent.len() => {
                    for ((id, outcome), reply) in sent.into_iter().zip(replies) {
                        match reply.map(|r| Self::done(&id, r, outcome)) {
                            Ok(Ok(Some(done))) => results.push((id, Ok(done))),
                            Ok(Err(e)) => results.push((id, Err(e))),
                            Ok(Ok(None)) | Err(_) => alone.push(id),
                        }
                    }
                }
                _ => alone.extend(sent.into_iter().map(|(id, _)| id)),
            }
        }
        for id in alone {
            let outcome = self.convert(conn, &id, to).await;
            results.push((id, outcome));
        }
        self.confirm(results).await
    }

    /// With replicas required: one confirmation after the slot's conversions, so that what was
    /// found already converted (by an earlier run whose confirmation failed) is on the replicas
    /// too before it counts as done; every outcome becomes that failure otherwise.
    async fn confirm(
        &self,
        mut results: Vec<(JourneyId, Result<Conversion, ConversionError>)>,
    ) -> Vec<(JourneyId, Result<Conversion, ConversionError>)> {
        let (Some(replication), Some((id, _))) = (&self.replication, results.first()) else {
            return results;
        };
        if let Err(e) = replication.confirm(&keys::journey_document(id)).await {
            let reason = e.to_string();
            for (_, outcome) in &mut results {
                if outcome.is_ok() {
                    *outcome = Err(StoreError::unavailable("not confirmed", reason.clone()).into());
                }
            }
        }
        results
    }
}
