//! The audit: replays the published events of each journey and compares them with the stored
//! journey, which finds the lost updates that the original service could not see.
//!
//! Every acknowledged change leaves exactly one outbox entry, written atomically with it, so the
//! published envelopes are the list of acknowledged changes. Against the stored journey:
//! - **Lost update, version taken**: two changes committed the same version. A correct store
//!   gives every change its own version; the naive read-modify-write lets concurrent writers
//!   all write "version n+1", and only one of them can be in the state. The one the state
//!   reflects is kept; every other one is reported.
//! - **Lost update, overwritten**: the latest change of a segment (or of the journey's status)
//!   is not the status stored.
//! - **Lost update, ahead of state**: a change's version is beyond the stored version (the
//!   state was rolled back, e.g. by a failover that lost writes the outbox kept).
//! - **Version gap**: a stored version with no published change: still pending in the outbox
//!   (not yet published), parked, or missing altogether.
//! - **Unpublished**: outbox entries not (yet) on the bus.
//!
//! The replay goes through the idempotent consumer ([`flyrtech_core::consumer`]), which also
//! counts the duplicate deliveries the bus carries.

use std::collections::{BTreeMap, HashMap, HashSet};

use flyrtech_core::consumer::{Consumer, StatusHistory};
use flyrtech_core::{
    BusError, Envelope, Journey, JourneyId, JourneyStore, JourneyVersion, Status, StoreError,
};
use serde::Serialize;

use super::read_stream;
use crate::connection::handle::Redis;
use crate::events::publisher::read_bus;
use crate::keys::OutboxShard;
use crate::store::outbox::decode;

/// Why the audit could not run: one of the two sides it compares could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The stored journeys or the outbox.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The bus.
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Why a change counts as lost.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "reason")]
pub enum LostReason {
    /// Another change committed the same version, and the state reflects that one.
    VersionTaken,
    /// The stored status of the target is not what its latest change set.
    Overwritten { stored: String },
    /// The change's version is beyond the stored version.
    AheadOfState { stored_version: JourneyVersion },
}

/// One acknowledged change missing from the state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LostUpdate {
    pub journey: JourneyId,
    pub version: JourneyVersion,
    /// The segment it changed, or `None` for the journey's own status.
    pub segment: Option<String>,
    /// The status it set.
    pub to: String,
    #[serde(flatten)]
    pub reason: LostReason,
}

/// Where the change of a gap's version is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GapCause {
    /// In the outbox, not yet published.
    Unpublished,
    /// Parked after failing too often.
    Parked,
    /// Nowhere: neither published, pending nor parked.
    Missing,
}

/// A stored version without a published change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionGap {
    pub journey: JourneyId,
    pub version: JourneyVersion,
    pub cause: GapCause,
}

/// What the audit found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuditReport {
    /// Journeys compared.
    pub journeys: usize,
    /// Distinct changes published for them.
    pub changes_published: u64,
    /// Deliveries on the bus that repeated a change (absorbed by the consumer).
    pub duplicate_deliveries: u64,
    /// Outbox entries for them not yet published.
    pub unpublished: u64,
    /// Outbox entries for them parked.
    pub parked: u64,
    /// Acknowledged changes missing from the state.
    pub lost_updates: Vec<LostUpdate>,
    /// Stored versions without a published change.
    pub version_gaps: Vec<VersionGap>,
}

impl AuditReport {
    /// True when nothing was lost and every stored version was published.
    pub fn is_clean(&self) -> bool {
        self.lost_updates.is_empty() && self.version_gaps.is_empty()
    }
}

/// Audits `journeys` (all listed journeys when `None`): the state read through `store`, the
/// published envelopes from the bus stream `bus_stream` on `bus`, the outbox on `redis`.
///
/// # Errors
/// [`AuditError`] from any read.
pub async fn audit<S: JourneyStore>(
    store: &S,
    redis: &Redis,
    bus: &Redis,
    bus_stream: &str,
    journeys: Option<&[JourneyId]>,
) -> Result<AuditReport, AuditError> {
    let ids: Vec<JourneyId> = match journeys {
        Some(ids) => ids.to_vec(),
        None => store.list_ids().await?,
    };
    let wanted: HashSet<&JourneyId> = ids.iter().collect();

    // The published history, through the idempotent consumer.
    let mut consumer = Consumer::new(StatusHistory::default());
    let mut claims: HashMap<&JourneyId, BTreeMap<JourneyVersion, Vec<Envelope>>> = HashMap::new();
    let mut published_ids = HashSet::new();
    let bus_entries = read_bus(bus, bus_stream).await?;
    for (_, envelope) in &bus_entries {
        let Some(id) = wanted.get(&envelope.journey_id) else {
            continue;
        };
        consumer.receive(envelope.clone());
        if published_ids.insert(envelope.id()) {
            claims
                .entry(*id)
                .or_default()
                .entry(envelope.version)
                .or_default()
                .push(envelope.clone());
        }
    }
    let stats = consumer.stats();

    // What is still in the outbox, or parked.
    let partitions: HashSet<OutboxShard> = ids.iter().map(OutboxShard::of).collect();
    let mut pending: HashMap<JourneyId, HashSet<JourneyVersion>> = HashMap::new();
    let mut parked: HashMap<JourneyId, HashSet<JourneyVersion>> = HashMap::new();
    let mut report = AuditReport {
        journeys: ids.len(),
        duplicate_deliveries: stats.duplicates,
        ..AuditReport::default()
    };
    for p in partitions {
        for envelope in read_outbox(redis, &p.outbox()).await? {
            if wanted.contains(&envelope.journey_id) && !published_ids.contains(&envelope.id()) {
                report.unpublished += 1;
                pending
                    .entry(envelope.journey_id.clone())
                    .or_default()
                    .insert(envelope.version);
            }
        }
        for envelope in read_outbox(redis, &p.parked()).await? {
            if wanted.contains(&envelope.journey_id) {
                report.parked += 1;
                parked
                    .entry(envelope.journey_id.clone())
                    .or_default()
                    .insert(envelope.version);
            }
        }
    }

    for id in &ids {
        let stored = match store.get(id).await {
            Ok(j) => Some(j),
            Err(StoreError::JourneyNotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        let versions = claims.remove(id).unwrap_or_default();
        report.changes_published += versions.values().map(|c| c.len() as u64).sum::<u64>();
        let stored_version = stored
            .as_ref()
            .map_or(JourneyVersion::INITIAL, |j| j.version);
        compare(id, stored.as_ref(), &versions, &mut report.lost_updates);
        for v in 1..=stored_version.get() {
            let v = JourneyVersion::new(v);
            if !versions.contains_key(&v) {
                let cause = if pending.get(id).is_some_and(|s| s.contains(&v)) {
                    GapCause::Unpublished
                } else if parked.get(id).is_some_and(|s| s.contains(&v)) {
                    GapCause::Parked
                } else {
                    GapCause::Missing
                };
                report.version_gaps.push(VersionGap {
                    journey: id.clone(),
                    version: v,
                    cause,
                });
            }
        }
    }
    Ok(report)
}

/// The lost updates of one journey.
fn compare(
    id: &JourneyId,
    stored: Option<&Journey>,
    versions: &BTreeMap<JourneyVersion, Vec<Envelope>>,
    lost: &mut Vec<LostUpdate>,
) {
    let stored_status = |segment: Option<&flyrtech_core::SegmentId>| -> Option<&'static str> {
        let journey = stored?;
        Some(match segment {
            Some(s) => journey.segment(s)?.status.as_str(),
            None => journey.status.as_str(),
        })
    };
    let record = |e: &Envelope, reason: LostReason, lost: &mut Vec<LostUpdate>| {
        let (segment, to) = e.change().unwrap_or((None, ""));
        lost.push(LostUpdate {
            journey: id.clone(),
            version: e.version,
            segment: segment.map(ToString::to_string),
            to: to.to_owned(),
            reason,
        });
    };
    let in_state = |e: &Envelope| {
        e.change()
            .is_some_and(|(segment, to)| stored_status(segment) == Some(to))
    };
    let stored_version = stored.map_or(JourneyVersion::INITIAL, |j| j.version);
    // The latest surviving change of each target.
    let mut latest: BTreeMap<Option<&flyrtech_core::SegmentId>, &Envelope> = BTreeMap::new();
    for (version, claimants) in versions {
        if *version > stored_version {
            for e in claimants {
                record(e, LostReason::AheadOfState { stored_version }, lost);
            }
            continue;
        }
        let survivor = claimants
            .iter()
            .position(in_state)
            .unwrap_or(claimants.len() - 1);
        for (i, e) in claimants.iter().enumerate() {
            if i == survivor {
                if let Some((target, _)) = e.change() {
                    latest.insert(target, e);
                }
            } else {
                record(e, LostReason::VersionTaken, lost);
            }
        }
    }
    for (target, e) in latest {
        if !in_state(e) {
            let stored = stored_status(target).unwrap_or("absent").to_owned();
            record(e, LostReason::Overwritten { stored }, lost);
        }
    }
}

/// The envelopes in an outbox or parked stream (undecodable entries are skipped: the relay
/// parks them and the audit counts them there).
async fn read_outbox(redis: &Redis, key: &str) -> Result<Vec<Envelope>, StoreError> {
    Ok(read_stream(redis, key)
        .await?
        .into_iter()
        .filter_map(|(_, fields)| decode(&fields).ok())
        .collect())
}
