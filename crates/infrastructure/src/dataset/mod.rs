//! The service's dataset: which layout its journeys are in, whether a migration is under way,
//! and the operator jobs that move them (the online migration, the import from the original
//! service). The index that lists the journeys is the store's ([`crate::store::index`]).
//!
//! # The record
//! `journeys:dataset` is a hash with `layout` (`document` or `hash`) and, while a migration
//! runs, `migrating_to`. Every command that serves or reads the service's journeys asks
//! [`admit`] at start-up (`serve`, `relay`, `audit`, `migrate`, `import-legacy`): a strategy of
//! the other layout is refused with the exact command that fixes it, except while a migration is
//! under way, when instances of both layouts serve side by side (see `crate::store::strategy` for how
//! each change still lands on the one live copy). A Redis with no record and no journeys takes
//! the layout of the first strategy admitted (`HSETNX`, so two instances starting at once agree);
//! one with journeys but no record (written before layouts were recorded) is inspected, and a
//! mix of both layouts is refused until `migrate` has settled it.
//!
//! # Migration
//! [`migrate`] records `migrating_to`, converts every listed journey with one compare-and-swap
//! each ([`crate::store::layout`]) — batched: for each partition (one slot) of a scanned batch, one
//! pipeline reads both copies and one sends the conversions, many partitions at a time — then
//! records the new layout and sweeps the index once more for journeys created in
//! the old layout while it ran. Interrupted at any point (ctrl-c, SIGKILL), it has converted
//! some journeys atomically and none half-way; run again, it skips those already converted.

pub mod legacy;

use std::collections::HashMap;
use std::time::Instant;

use flyrtech_core::{JourneyId, StoreError};
use futures::StreamExt;
use redis::AsyncCommands;
use serde::Serialize;

use crate::connection::error::{RedisResultExt, corrupt};
use crate::connection::handle::{Conn, Redis};
use crate::keys::dataset_field::{HASH_FORM, LAYOUT, MIGRATING_TO};
use crate::keys::{self, OutboxShard};
use crate::store::conversion::{Conversion, ConversionError, Converter};
use crate::store::hash_fields::{COMPACT, WriteForm, unknown_form};
use crate::store::layout::Layout;
use crate::store::strategy::Strategy;

/// What the dataset record says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct DatasetState {
    /// The layout the journeys are in; `None` for a Redis nobody has served yet.
    pub layout: Option<Layout>,
    /// The layout a migration under way is moving them to.
    pub migrating_to: Option<Layout>,
}

impl DatasetState {
    /// Whether a strategy writing `layout` may serve the dataset now.
    pub fn serves(&self, layout: Layout) -> bool {
        match (self.layout, self.migrating_to) {
            (_, Some(_)) | (None, None) => true,
            (Some(settled), None) => settled == layout,
        }
    }
}

impl std::fmt::Display for DatasetState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.layout, self.migrating_to) {
            (None, None) => f.write_str("no layout recorded yet"),
            (Some(l), None) => write!(f, "layout {l}"),
            (Some(l), Some(to)) => write!(f, "migrating from {l} to {to}"),
            (None, Some(to)) => write!(f, "migrating to {to}"),
        }
    }
}

/// Why a command may not serve this dataset with its strategy.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DatasetError {
    /// The dataset is in the other layout and no migration is under way.
    #[error(
        "this Redis holds its journeys in the `{dataset}` layout, but strategy `{strategy}` \
         writes the `{wanted}` layout. Move them first with `flyrtech migrate --to {wanted}` \
         (online: instances of both layouts may serve while it runs), or run a strategy of the \
         `{dataset}` layout: {strategies}",
        wanted = strategy.layout(),
        strategies = Strategy::writing(*dataset)
    )]
    WrongLayout {
        /// The dataset's layout.
        dataset: Layout,
        /// The strategy that was refused.
        strategy: Strategy,
    },
    /// Journeys of both layouts, and no record of a migration: written before layouts were
    /// recorded, by instances of both layouts.
    #[error(
        "this Redis holds journeys in both layouts ({documents} of those sampled in `document`, \
         {hashes} in `hash`) and no migration is recorded; settle them with \
         `flyrtech migrate --to {wanted}`",
        wanted = strategy.layout()
    )]
    Mixed {
        /// Sampled journeys in the document layout.
        documents: usize,
        /// Sampled journeys in the hash layout.
        hashes: usize,
        /// The strategy that was refused.
        strategy: Strategy,
    },
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Reads the dataset record.
///
/// # Errors
/// [`StoreError::Unavailable`]; [`StoreError::Corrupt`] when it names no known layout.
pub async fn state(redis: &Redis) -> Result<DatasetState, StoreError> {
    let fields: HashMap<String, String> =
        redis.shared().hgetall(keys::DATASET).await.store_err()?;
    let layout = |name: &str| {
        fields
            .get(name)
            .map(|raw| raw.parse::<Layout>().map_err(|e| corrupt(keys::DATASET, e)))
            .transpose()
    };
    Ok(DatasetState {
        layout: layout(LAYOUT)?,
        migrating_to: layout(MIGRATING_TO)?,
    })
}

/// The start-up guard: may `strategy` serve this Redis' journeys? Records its layout when the
/// Redis has none yet.
///
/// # Errors
/// [`DatasetError`] saying why not, and what to run.
pub async fn admit(redis: &Redis, strategy: Strategy) -> Result<DatasetState, DatasetError> {
    let mut current = state(redis).await?;
    if current.layout.is_none() {
        current = settle(redis, strategy).await?;
    }
    match current.layout {
        Some(dataset) if !current.serves(strategy.layout()) => {
            Err(DatasetError::WrongLayout { dataset, strategy })
        }
        _ => Ok(current),
    }
}

/// How many listed journeys [`settle`] looks at to tell an unrecorded dataset's layout.
const SAMPLE: usize = 256;

/// Records the layout of a dataset that has no record: the journeys' own layout if they have
/// one, else `strategy`'s. `HSETNX`: whoever records first wins, and everyone reads that.
async fn settle(redis: &Redis, strategy: Strategy) -> Result<DatasetState, DatasetError> {
    let mut conn = redis.shared();
    let sample: Vec<String> = redis::cmd("SRANDMEMBER")
        .arg(keys::JOURNEY_INDEX)
        .arg(SAMPLE)
        .query_async(&mut conn)
        .await
        .store_err()?;
    let (mut documents, mut hashes) = (0, 0);
    for raw in sample {
        let Ok(id) = JourneyId::parse(raw) else {
            continue;
        };
        let (document, hash) = layouts_present(&mut conn, &id).await?;
        documents += usize::from(document);
        hashes += usize::from(hash);
    }
    let layout = match (documents, hashes) {
        (0, 0) => strategy.layout(),
        (_, 0) => Layout::Document,
        (0, _) => Layout::Hash,
        _ => {
            return Err(DatasetError::Mixed {
                documents,
                hashes,
                strategy,
            });
        }
    };
    // A dataset with no journeys yet has no instance of a build that reads only the hash
    // layout's split form: its hashes are compact from the start (`hash_fields::WriteForm`).
    let mut record = redis::pipe();
    record
        .atomic()
        .hset_nx(keys::DATASET, LAYOUT, layout.name())
        .ignore();
    if (documents, hashes) == (0, 0) {
        record.hset_nx(keys::DATASET, HASH_FORM, COMPACT).ignore();
    }
    let () = record.query_async(&mut conn).await.store_err()?;
    Ok(state(redis).await?)
}

/// Whether the journey's document and hash exist.
async fn layouts_present(conn: &mut Conn, id: &JourneyId) -> Result<(bool, bool), StoreError> {
    redis::pipe()
        .exists(keys::journey_document(id))
        .exists(keys::journey_hash(id))
        .query_async(conn)
        .await
        .store_err()
}

/// One journey the migration could not convert, and why. Nothing was written for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The journey (or the raw index member, when it is not a valid id).
    pub journey: String,
    /// Why.
    pub reason: String,
}

/// What a migration did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct MigrationReport {
    /// The target layout.
    pub to: Option<Layout>,
    /// Journeys listed in the index when the migration started.
    pub listed: u64,
    /// Moved to the target layout.
    pub converted: u64,
    /// Held in both layouts, one copy at version 0 dropped (see [`Conversion::Deduplicated`]).
    pub deduplicated: u64,
    /// Already in the target layout.
    pub already_there: u64,
    /// Hashes rewritten from the split form in the compact one (see [`Conversion::Compacted`]).
    pub compacted: u64,
    /// Listed, but in neither layout.
    pub absent: u64,
    /// Created in the old layout while the migration ran, converted by its final sweep.
    pub swept: u64,
    /// Not converted, with the reason.
    pub failed: Vec<Failure>,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Journeys looked at per second.
    pub rate_per_second: f64,
}

impl MigrationReport {
    /// True when every journey is in the target layout (the command's exit status 0).
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }
}

/// Knobs of a migration.
#[derive(Debug, Clone, Copy)]
pub struct MigrationSettings {
    /// Partitions converted at once, each with its own pipelines (a cluster pipeline stays in
    /// one slot).
    pub concurrency: usize,
    /// Replicas that must confirm each conversion (`--wait-replicas`).
    pub replicas: Option<crate::store::strategy::ReplicaWait>,
    /// Ids fetched from the index per `SSCAN`.
    pub batch: usize,
}

impl Default for MigrationSettings {
    fn default() -> Self {
        Self {
            concurrency: 64,
            replicas: None,
            batch: 10_000,
        }
    }
}

/// Moves every journey of the service's dataset to layout `to`, online. `progress` is told
/// `(journeys looked at, journeys listed)` after every batch.
///
/// # Errors
/// [`StoreError`] when Redis fails outside one journey's conversion (those are reported in
/// [`MigrationReport::failed`]).
pub async fn migrate(
    redis: &Redis,
    to: Layout,
    settings: MigrationSettings,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<MigrationReport, StoreError> {
    let started = Instant::now();
    let mut conn = redis.shared();
    let listed: u64 = conn.scard(keys::JOURNEY_INDEX).await.store_err()?;
    let mut report = MigrationReport {
        to: Some(to),
        listed,
        ..MigrationReport::default()
    };
    let current = state(redis).await?;
    if to == Layout::Hash {
        record_compact(redis).await?;
    }
    if current.layout == Some(to) && current.migrating_to.is_none() {
        // Nothing recorded to do: one quick look for stragglers (journeys created in the old
        // layout by an instance that outlived the last migration) and done.
        (report.already_there, report.absent) =
            sweep(redis, to, settings, &mut report, progress).await?;
        return Ok(finish_report(report, started));
    }
    // Record the migration first: from now on instances of both layouts are admitted.
    let _: () = redis::pipe()
        .hset_nx(keys::DATASET, LAYOUT, to.other().name())
        .ignore()
        .hset(keys::DATASET, MIGRATING_TO, to.name())
        .ignore()
        .query_async(&mut conn)
        .await
        .store_err()?;
    let converter = converter(redis, settings);
    converter.load(&mut conn).await?;
    let mut scan = IndexScan::default();
    let mut looked_at = 0;
    while let Some(ids) = scan.next(&mut conn, settings.batch).await? {
        looked_at += ids.len() as u64;
        let resumed = current.migrating_to == Some(to);
        for (raw, outcome) in
            convert_all(redis, &converter, ids, to, settings.concurrency, resumed).await
        {
            match outcome {
                Ok(Conversion::Converted) => report.converted += 1,
                Ok(Conversion::Deduplicated) => report.deduplicated += 1,
                Ok(Conversion::AlreadyThere) => report.already_there += 1,
                Ok(Conversion::Compacted) => report.compacted += 1,
                Ok(Conversion::Absent) => report.absent += 1,
                Err(reason) => report.failed.push(Failure {
                    journey: raw,
                    reason,
                }),
            }
        }
        progress(looked_at.min(listed), listed);
    }
    if report.is_complete() {
        let _: () = redis::pipe()
            .hset(keys::DATASET, LAYOUT, to.name())
            .ignore()
            .hdel(keys::DATASET, MIGRATING_TO)
            .ignore()
            .query_async(&mut conn)
            .await
            .store_err()?;
        sweep(redis, to, settings, &mut report, progress).await?;
    }
    Ok(finish_report(report, started))
}

/// Records that new hashes are compact, from now on and for good, and when that is news, waits
/// until every instance has seen it ([`WriteForm::RECHECK`]): a hash created split after that
/// would stay split past the migration's sweep. The operator runs this once every instance is on
/// a build that reads the compact form (docs/migration.md).
async fn record_compact(redis: &Redis) -> Result<(), StoreError> {
    // One round trip: recorded now or not, and what the record says either way.
    let (recorded, form): (bool, String) = redis::pipe()
        .atomic()
        .hset_nx(keys::DATASET, HASH_FORM, COMPACT)
        .hget(keys::DATASET, HASH_FORM)
        .query_async(&mut redis.shared())
        .await
        .store_err()?;
    if form != COMPACT {
        return Err(unknown_form(&form));
    }
    if recorded {
        tokio::time::sleep(WriteForm::RECHECK).await;
    }
    Ok(())
}

fn finish_report(mut report: MigrationReport, started: Instant) -> MigrationReport {
    report.seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let looked_at = report.listed as f64;
    report.rate_per_second = looked_at / report.seconds.max(1e-9);
    report
}

/// The conversion script, its writes confirmed by `settings.replicas` when set.
fn converter(redis: &Redis, settings: MigrationSettings) -> Converter {
    Converter::new(settings.replicas.map(|wait| {
        std::sync::Arc::new(crate::replication::Replication::new(
            std::sync::Arc::clone(redis.nodes()),
            wait,
        ))
    }))
}

/// Converts whatever is still in the old layout; counted as swept. Returns how many journeys
/// were already in the target layout, and how many were absent.
async fn sweep(
    redis: &Redis,
    to: Layout,
    settings: MigrationSettings,
    report: &mut MigrationReport,
    progress: &(dyn Fn(u64, u64) + Sync),
) -> Result<(u64, u64), StoreError> {
    let mut settled = (0, 0);
    let converter = converter(redis, settings);
    let mut conn = redis.shared();
    converter.load(&mut conn).await?;
    let mut scan = IndexScan::default();
    while let Some(ids) = scan.next(&mut conn, settings.batch).await? {
        for (raw, outcome) in
            convert_all(redis, &converter, ids, to, settings.concurrency, true).await
        {
            match outcome {
                Ok(Conversion::Converted | Conversion::Deduplicated) => report.swept += 1,
                Ok(Conversion::AlreadyThere) => settled.0 += 1,
                Ok(Conversion::Compacted) => report.compacted += 1,
                Ok(Conversion::Absent) => settled.1 += 1,
                Err(reason) => report.failed.push(Failure {
                    journey: raw,
                    reason,
                }),
            }
        }
    }
    progress(report.listed, report.listed);
    Ok(settled)
}

/// A walk over the ids listed in the index (`SSCAN`: online, and every id listed for the whole
/// walk is seen at least once; one seen twice is converted once and then found there).
#[derive(Debug, Default)]
struct IndexScan {
    cursor: u64,
    finished: bool,
}

impl IndexScan {
    async fn next(
        &mut self,
        conn: &mut Conn,
        batch: usize,
    ) -> Result<Option<Vec<String>>, StoreError> {
        if self.finished {
            return Ok(None);
        }
        let (next, ids): (u64, Vec<String>) = redis::cmd("SSCAN")
            .arg(keys::JOURNEY_INDEX)
            .arg(self.cursor)
            .arg("COUNT")
            .arg(batch)
            .query_async(conn)
            .await
            .store_err()?;
        self.cursor = next;
        self.finished = next == 0;
        Ok(Some(ids))
    }
}

/// Converts `ids`, grouped by partition (one slot each), with `concurrency` partitions' pipelines
/// in flight; each raw id with its outcome or the reason it failed. `precheck`: see
/// [`Converter::convert_slot`].
async fn convert_all(
    redis: &Redis,
    converter: &Converter,
    ids: Vec<String>,
    to: Layout,
    concurrency: usize,
    precheck: bool,
) -> Vec<(String, Result<Conversion, String>)> {
    let mut results = Vec::with_capacity(ids.len());
    let mut slots: HashMap<OutboxShard, Vec<JourneyId>> = HashMap::new();
    for raw in ids {
        match JourneyId::parse(raw.as_str()) {
            Ok(id) => slots.entry(OutboxShard::of(&id)).or_default().push(id),
            Err(e) => results.push((raw, Err(e.to_string()))),
        }
    }
    let converted: Vec<_> = futures::stream::iter(slots.into_values())
        .map(|ids| async move {
            converter
                .convert_slot(&mut redis.shared(), ids, to, precheck)
                .await
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.extend(converted.into_iter().flatten().map(|(id, outcome)| {
        (
            id.to_string(),
            outcome.map_err(|e: ConversionError| e.to_string()),
        )
    }));
    results
}
