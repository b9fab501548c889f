//! Import from the original .NET service's Redis (its format: docs/migration.md,
//! "`flyrtech import-legacy`").
//!
//! The original kept each journey at `journey:{journeyId}` as one JSON document written by
//! `System.Text.Json` with default options (PascalCase names, decimals with their scale, dates as
//! ISO 8601 with `Z`, an offset, or no zone at all) and the list of ids at `journey:ids` (a JSON
//! array). Nothing validated what it stored, so real data holds statuses of any case or none we
//! know, repeated segment ids, ids listed without a key and keys not listed, and empty strings.
//!
//! What the import guarantees:
//! - It only reads the source: no source key is written or deleted, and cache keys (any key
//!   that is not `journey:…`) are never read at all.
//! - Both `journey:ids` and a `SCAN` of `journey:*` are read, since either may be incomplete;
//!   our own keys (`journey:{P}:…`, which the original could never have written, since its ids
//!   come from URLs it never braced) are left out when both live in one Redis.
//! - A journey that already exists in our keyspace, in either layout, is never overwritten
//!   (`crate::store::layout::create`), so a re-run after live updates keeps the updates.
//! - A journey that cannot be imported (not JSON, a missing or malformed field, an id our rules
//!   reject, a status we do not know and no `--map-status` maps, a segment id repeated) is
//!   skipped and reported with the reason; the rest is imported.
//! - Imported journeys start at version 0 with no event: their state is where their history
//!   starts, so the audit finds nothing missing.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, NaiveDateTime, Utc};
use flyrtech_core::{
    Journey, JourneyId, JourneyStatus, JourneyStore, Money, Segment, SegmentId, SegmentStatus,
    Status, StoreError,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;
use crate::store::strategy::RedisJourneyStore;

/// The original's list of journey ids.
pub const LEGACY_IDS: &str = "journey:ids";
const LEGACY_PREFIX: &str = "journey:";

/// Status names to rename before parsing (`--map-status FROM=TO`), matched without regard to
/// case. Our own status names are always recognised, in any case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusMap(Vec<(String, String)>);

impl StatusMap {
    /// Parses `FROM=TO` pairs.
    ///
    /// # Errors
    /// A message naming the pair that has no `=` or an empty side.
    pub fn parse<S: AsRef<str>>(pairs: &[S]) -> Result<Self, String> {
        pairs
            .iter()
            .map(|pair| {
                let pair = pair.as_ref();
                match pair.split_once('=') {
                    Some((from, to)) if !from.trim().is_empty() && !to.trim().is_empty() => {
                        Ok((from.trim().to_owned(), to.trim().to_owned()))
                    }
                    _ => Err(format!("--map-status {pair:?} is not FROM=TO")),
                }
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }

    fn status<S: Status>(&self, raw: &str) -> Result<S, String> {
        let name = self
            .0
            .iter()
            .find(|(from, _)| from.eq_ignore_ascii_case(raw.trim()))
            .map_or(raw, |(_, to)| to.as_str());
        S::parse(name).map_err(|_| {
            format!(
                "unknown {} {raw:?} (map it with --map-status {raw}=<one of {}>)",
                S::KIND,
                S::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// A journey as the original stored it. Every field optional, so that a missing one is
/// reported by name rather than as a parse error.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacyJourney {
    id: Option<String>,
    passenger_name: Option<String>,
    passenger_email: Option<String>,
    booking_date: Option<String>,
    status: Option<String>,
    total_price: Option<serde_json::Number>,
    segments: Option<Vec<LegacySegment>>,
    metadata: Option<BTreeMap<String, Option<String>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LegacySegment {
    segment_id: Option<String>,
    origin: Option<String>,
    destination: Option<String>,
    departure_time: Option<String>,
    arrival_time: Option<String>,
    flight_number: Option<String>,
    carrier: Option<String>,
    status: Option<String>,
    price: Option<serde_json::Number>,
}

fn required<T>(field: &str, value: Option<T>) -> Result<T, String> {
    value.ok_or_else(|| format!("missing field {field}"))
}

/// A .NET `DateTime` as `System.Text.Json` writes it: with `Z`, with an offset (converted to
/// UTC), or with no zone (taken as UTC, as the original's seed data meant it).
fn time(field: &str, raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.to_utc())
        .or_else(|_| {
            NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc())
        })
        .map_err(|_| format!("{field} {raw:?} is not an ISO 8601 date and time"))
}

fn money(field: &str, raw: &serde_json::Number) -> Result<Money, String> {
    let amount: rust_decimal::Decimal = raw
        .to_string()
        .parse()
        .map_err(|_| format!("{field} {raw} is not a decimal amount"))?;
    Money::new(amount).map_err(|e| format!("{field}: {}", e.reason))
}

/// Maps one stored document of the original onto a journey, or says why it cannot be.
///
/// # Errors
/// The reason, phrased for the import report.
pub fn map_journey(key_id: &str, raw: &str, statuses: &StatusMap) -> Result<Journey, String> {
    let legacy: LegacyJourney =
        serde_json::from_str(raw).map_err(|e| format!("not a journey document: {e}"))?;
    let id = required("Id", legacy.id)?;
    if id != key_id {
        return Err(format!("key journey:{key_id} holds journey {id:?}"));
    }
    let id = JourneyId::parse(id).map_err(|e| e.to_string())?;
    let segments = required("Segments", legacy.segments)?
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let field = |name: &str| format!("Segments[{i}].{name}");
            let text = |name: &str, v: Option<String>| required(&field(name), v);
            Ok(Segment {
                segment_id: SegmentId::parse(text("SegmentId", s.segment_id)?)
                    .map_err(|e| format!("{}: {}", field("SegmentId"), e.reason))?,
                origin: text("Origin", s.origin)?,
                destination: text("Destination", s.destination)?,
                departure_time: time(
                    &field("DepartureTime"),
                    &text("DepartureTime", s.departure_time)?,
                )?,
                arrival_time: time(&field("ArrivalTime"), &text("ArrivalTime", s.arrival_time)?)?,
                flight_number: text("FlightNumber", s.flight_number)?,
                carrier: text("Carrier", s.carrier)?,
                status: statuses.status::<SegmentStatus>(&text("Status", s.status)?)?,
                price: money(&field("Price"), &required(&field("Price"), s.price)?)?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let journey = Journey {
        id,
        passenger_name: required("PassengerName", legacy.passenger_name)?,
        passenger_email: required("PassengerEmail", legacy.passenger_email)?,
        booking_date: time(
            "BookingDate",
            &required("BookingDate", legacy.booking_date)?,
        )?,
        status: statuses.status::<JourneyStatus>(&required("Status", legacy.status)?)?,
        total_price: money("TotalPrice", &required("TotalPrice", legacy.total_price)?)?,
        segments,
        metadata: legacy
            .metadata
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.unwrap_or_default()))
            .collect(),
        version: flyrtech_core::JourneyVersion::INITIAL,
        events: Default::default(),
    };
    journey.validate_new().map_err(|e| e.to_string())?;
    Ok(journey)
}

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Status renames.
    pub statuses: StatusMap,
    /// Report what would happen, write nothing.
    pub dry_run: bool,
    /// Journeys read and created at once.
    pub concurrency: usize,
}

/// One journey that was not imported, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Skipped {
    /// The id as the original had it.
    pub journey: String,
    /// Why it was skipped.
    pub reason: String,
}

/// What an import did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    /// Ids in `journey:ids`.
    pub listed: usize,
    /// `journey:*` keys of the original found by `SCAN`.
    pub scanned: usize,
    /// Journeys found (the union of both).
    pub found: usize,
    /// Created in our keyspace (would be, with `dry_run`).
    pub imported: usize,
    /// Already in our keyspace, left exactly as they are.
    pub kept: usize,
    /// Not imported, with the reason.
    pub skipped: Vec<Skipped>,
    /// What was wrong with `journey:ids` itself, if anything (the scan still found the keys).
    pub index_problem: Option<String>,
    /// Whether nothing was written.
    pub dry_run: bool,
}

impl ImportReport {
    /// True when every journey found was imported or kept.
    pub fn is_complete(&self) -> bool {
        self.skipped.is_empty()
    }
}

/// Every journey id the original's Redis knows: `journey:ids` and a scan of `journey:*`.
async fn legacy_ids(source: &Redis, report: &mut ImportReport) -> Result<Vec<String>, StoreError> {
    let mut conn = source.shared();
    let mut ids = BTreeSet::new();
    let listed: Option<String> = redis::cmd("GET")
        .arg(LEGACY_IDS)
        .query_async(&mut conn)
        .await
        .or_else(|e| {
            if e.code() == Some("WRONGTYPE") {
                report.index_problem = Some(format!("{LEGACY_IDS} is not a string"));
                Ok(None)
            } else {
                Err(e)
            }
        })
        .store_err()?;
    match listed.map(|raw| serde_json::from_str::<Vec<serde_json::Value>>(&raw)) {
        None if report.index_problem.is_none() => {
            report.index_problem = Some(format!("{LEGACY_IDS} does not exist"));
        }
        None => {}
        Some(Err(e)) => {
            report.index_problem = Some(format!("{LEGACY_IDS} is not a JSON array: {e}"))
        }
        Some(Ok(values)) => {
            for value in values {
                match value {
                    serde_json::Value::String(id) => {
                        report.listed += 1;
                        ids.insert(id);
                    }
                    other => {
                        report.index_problem =
                            Some(format!("{LEGACY_IDS} holds {other}, which is not an id"));
                    }
                }
            }
        }
    }
    let mut cursor: u64 = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{LEGACY_PREFIX}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .store_err()?;
        for key in keys {
            let Some(id) = key.strip_prefix(LEGACY_PREFIX) else {
                continue;
            };
            // `journey:ids`, and our own keys (`journey:{P}:…`) when both live in one Redis.
            if key == LEGACY_IDS || id.starts_with('{') {
                continue;
            }
            report.scanned += 1;
            ids.insert(id.to_owned());
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    report.found = ids.len();
    Ok(ids.into_iter().collect())
}

/// What happened to one journey.
enum Imported {
    Created,
    Kept,
    Skipped(String),
}

async fn import_one(
    source: &Redis,
    store: &RedisJourneyStore,
    options: &ImportOptions,
    id: &str,
) -> Result<Imported, StoreError> {
    let raw: Option<String> = match redis::cmd("GET")
        .arg(format!("{LEGACY_PREFIX}{id}"))
        .query_async(&mut source.shared())
        .await
    {
        Ok(raw) => raw,
        Err(e) if e.code() == Some("WRONGTYPE") => {
            return Ok(Imported::Skipped(format!(
                "{LEGACY_PREFIX}{id} is not a string"
            )));
        }
        Err(e) => return Err(crate::connection::error::from_redis(e)),
    };
    let Some(raw) = raw else {
        return Ok(Imported::Skipped(format!(
            "listed in {LEGACY_IDS}, but {LEGACY_PREFIX}{id} does not exist"
        )));
    };
    let journey = match map_journey(id, &raw, &options.statuses) {
        Ok(journey) => journey,
        Err(reason) => return Ok(Imported::Skipped(reason)),
    };
    if options.dry_run {
        return match store.get(&journey.id).await {
            Ok(_) => Ok(Imported::Kept),
            Err(StoreError::JourneyNotFound(_)) => Ok(Imported::Created),
            Err(e) => Err(e),
        };
    }
    match store.create(&journey).await {
        Ok(()) => Ok(Imported::Created),
        Err(StoreError::AlreadyExists(_)) => Ok(Imported::Kept),
        Err(StoreError::InvalidInput(e)) => Ok(Imported::Skipped(e.to_string())),
        Err(e) => Err(e),
    }
}

/// Imports the original's journeys from `source` through `store` (so in its layout).
/// `progress` is told `(journeys done, journeys found)` as it goes.
///
/// # Errors
/// [`StoreError`] when either Redis fails; [`StoreError::InvalidInput`] when `source` is a
/// cluster (the original ran on one server).
pub async fn import(
    source: &Redis,
    store: &RedisJourneyStore,
    options: &ImportOptions,
    progress: &(dyn Fn(usize, usize) + Sync),
) -> Result<ImportReport, StoreError> {
    if source.is_cluster() {
        return Err(StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
            "--from",
            "names a Redis Cluster; the original service ran on one Redis server",
        )));
    }
    let mut report = ImportReport {
        dry_run: options.dry_run,
        ..ImportReport::default()
    };
    let ids = legacy_ids(source, &mut report).await?;
    let found = ids.len();
    let mut outcomes = futures::stream::iter(ids)
        .map(|id| async move {
            let outcome = import_one(source, store, options, &id).await;
            (id, outcome)
        })
        .buffer_unordered(options.concurrency.max(1));
    let mut done = 0;
    while let Some((id, outcome)) = outcomes.next().await {
        match outcome? {
            Imported::Created => report.imported += 1,
            Imported::Kept => report.kept += 1,
            Imported::Skipped(reason) => report.skipped.push(Skipped {
                journey: id,
                reason,
            }),
        }
        done += 1;
        if done % 256 == 0 || done == found {
            progress(done, found);
        }
    }
    report.skipped.sort_by(|a, b| a.journey.cmp(&b.journey));
    Ok(report)
}
