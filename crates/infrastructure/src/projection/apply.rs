//! One batch of changes applied to the projection in one transaction (the rules are the
//! room's, [`super`]).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use flyrtech_core::consumer::{Offered, Sequence};
use flyrtech_core::{Envelope, EventKind, JourneyVersion};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient};
use uuid::Uuid;

use super::ProjectionError;

/// What became of one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied now (released: it had been held).
    Applied,
    /// Seen before: nothing changed.
    Duplicate,
    /// Ahead of the journey's position: held until its predecessor arrives.
    Held,
    /// At or below the journey's position: ignored. No longer decided (an unseen change at an
    /// applied version replaces what was there); kept for the rows of earlier projectors.
    Stale,
    /// Applied in place of another change at the same version, which it superseded.
    Replaced,
    /// Applied once, then undone: the store gave its version to another change.
    Superseded,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Held => "held",
            Self::Stale => "stale",
            Self::Replaced => "replaced",
            Self::Superseded => "superseded",
        }
    }
}

/// Counts over batches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchStats {
    /// Changes received.
    pub received: u64,
    /// Applied, released held ones included.
    pub applied: u64,
    /// Of those, applied after waiting in `held_events`.
    pub released: u64,
    pub duplicates: u64,
    pub held: u64,
    pub stale: u64,
    /// Applied in place of a change at the same version (counted in `applied` too).
    pub replaced: u64,
    /// Applied (or held) earlier, then undone because the store gave their version to another
    /// change.
    pub superseded: u64,
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.applied += o.applied;
        self.released += o.released;
        self.duplicates += o.duplicates;
        self.held += o.held;
        self.stale += o.stale;
        self.replaced += o.replaced;
        self.superseded += o.superseded;
    }
}

/// The changes a batch applied, for the lag measurement: when each happened.
#[derive(Debug, Default)]
pub struct AppliedBatch {
    pub stats: BatchStats,
    /// The occurred-at of every change applied by the batch.
    pub occurred_at: Vec<DateTime<Utc>>,
}

/// A change's identity: its first event's id.
fn change_id(envelope: &Envelope) -> Option<Uuid> {
    envelope.events.first().map(|e| e.id.as_uuid())
}

/// Applies a batch of changes in one transaction (see the module docs). Changes without events
/// are not changes and are skipped (the caller rejects them).
///
/// # Errors
/// [`ProjectionError`]; then nothing of the batch was committed.
pub async fn apply_batch(
    client: &mut Client,
    batch: &[Envelope],
) -> Result<AppliedBatch, ProjectionError> {
    let tx = client.transaction().await?;
    let applied = apply_in(&tx, batch).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn apply_in(
    tx: &impl GenericClient,
    batch: &[Envelope],
) -> Result<AppliedBatch, ProjectionError> {
    let mut stats = BatchStats {
        received: batch.len() as u64,
        ..BatchStats::default()
    };
    // 1. Idempotency: the changes not seen before (also within this batch).
    let mut seen_here = HashSet::new();
    let candidates: Vec<(Uuid, &Envelope)> = batch
        .iter()
        .filter_map(|e| change_id(e).map(|id| (id, e)))
        .filter(|(id, _)| seen_here.insert(*id))
        .collect();
    let (ids, journeys, versions): (Vec<Uuid>, Vec<String>, Vec<i64>) = candidates
        .iter()
        .map(|(id, e)| (*id, e.journey_id.to_string(), version(e)))
        .fold(
            (vec![], vec![], vec![]),
            |(mut a, mut b, mut c), (x, y, z)| {
                a.push(x);
                b.push(y);
                c.push(z);
                (a, b, c)
            },
        );
    let fresh: HashSet<Uuid> = tx
        .query(
            "INSERT INTO processed_events (event_id, journey_id, version, outcome) \
             SELECT id, j, v, 'applied' FROM unnest($1::uuid[], $2::text[], $3::bigint[]) AS u(id, j, v) \
             ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
            &[&ids, &journeys, &versions],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    stats.duplicates = stats.received - fresh.len() as u64;
    let fresh: Vec<&Envelope> = candidates
        .iter()
        .filter(|(id, _)| fresh.contains(id))
        .map(|(_, e)| *e)
        .collect();
    if fresh.is_empty() {
        return Ok(AppliedBatch {
            stats,
            occurred_at: Vec::new(),
        });
    }

    // 2. The positions of the journeys concerned, locked in a fixed order (no deadlock between
    // projectors), and their held changes.
    let mut touched: Vec<String> = fresh.iter().map(|e| e.journey_id.to_string()).collect();
    touched.sort();
    touched.dedup();
    tx.execute(
        "INSERT INTO journey_positions (journey_id) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        &[&touched],
    )
    .await?;
    let positions: HashMap<String, i64> = tx
        .query(
            "SELECT journey_id, last_version FROM journey_positions \
             WHERE journey_id = ANY($1) ORDER BY journey_id FOR UPDATE",
            &[&touched],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Each journey's place: its position and the changes held in PostgreSQL (`true`: stored).
    let mut sequences: HashMap<String, Sequence<(Envelope, bool)>> = HashMap::new();
    for (journey, position) in &positions {
        sequences.insert(journey.clone(), Sequence::new(as_version(*position)));
    }
    for row in tx
        .query(
            "SELECT journey_id, version, envelope FROM held_events WHERE journey_id = ANY($1)",
            &[&touched],
        )
        .await?
    {
        let (journey, version): (String, i64) = (row.get(0), row.get(1));
        let envelope: Envelope =
            serde_json::from_value(row.get(2)).map_err(|e| ProjectionError::Corrupt {
                journey: journey.clone(),
                version,
                reason: e.to_string(),
            })?;
        if let Some(sequence) = sequences.get_mut(&journey) {
            sequence.restore(as_version(version), (envelope, true));
        }
    }

    // 3. Decide (flyrtech_core::consumer::decide), per journey in version order: apply what
    // follows the position and what it releases, hold what is beyond it. A change not seen
    // before at a version already applied or held replaces what is there (module docs, "A
    // version given twice"): the changes from that version on are undone, and it is offered
    // again.
    let mut fresh = fresh;
    fresh.sort_by_key(|e| (e.journey_id.as_str(), version(e)));
    let mut outcomes: HashMap<Uuid, Outcome> = HashMap::new();
    let mut to_apply: Vec<Envelope> = Vec::new();
    let mut released: Vec<(String, i64)> = Vec::new();
    // Journeys whose stored changes from a version on are undone, and held changes replaced.
    let mut rewinds: BTreeMap<String, i64> = BTreeMap::new();
    let mut unheld: Vec<(String, i64)> = Vec::new();
    for envelope in fresh {
        let journey = envelope.journey_id.to_string();
        let Some(sequence) = sequences.get_mut(&journey) else {
            continue;
        };
        let v = envelope.version;
        let mut replacing = false;
        let offered = match sequence.offer(v, (envelope.clone(), false)) {
            Offered::Stale((again, _)) => {
                replacing = true;
                stats.replaced += 1;
                if v > sequence.applied() {
                    // Another change waits at this version: this one takes its place.
                    if let Some((old, was_held)) = sequence.unpark(v) {
                        if was_held {
                            unheld.push((journey.clone(), version(&old)));
                        }
                        outcomes.extend(change_id(&old).map(|id| (id, Outcome::Superseded)));
                        stats.superseded += 1;
                    }
                } else {
                    // Undo what this batch applied from `v` on, and what the database holds.
                    let (kept, undone): (Vec<Envelope>, Vec<Envelope>) = to_apply
                        .into_iter()
                        .partition(|e| e.journey_id != envelope.journey_id || e.version < v);
                    to_apply = kept;
                    for e in &undone {
                        outcomes.extend(change_id(e).map(|id| (id, Outcome::Superseded)));
                    }
                    stats.superseded += undone.len() as u64;
                    if positions
                        .get(&journey)
                        .is_some_and(|p| *p >= version(&again))
                    {
                        let from = rewinds.entry(journey.clone()).or_insert(i64::MAX);
                        *from = (*from).min(version(&again));
                    }
                    sequence.rewind(JourneyVersion::new(v.get().saturating_sub(1)));
                }
                sequence.offer(v, (again, false))
            }
            other => other,
        };
        match offered {
            Offered::Stale((stale, _)) => {
                // Not reached: a rewound or unparked version is free. Kept as the rule says.
                outcomes.extend(change_id(&stale).map(|id| (id, Outcome::Stale)));
                stats.stale += 1;
            }
            Offered::Parked => {}
            Offered::Applied(ready) => {
                for (change, was_held) in ready {
                    if was_held {
                        released.push((change.journey_id.to_string(), version(&change)));
                        stats.released += 1;
                    }
                    let outcome = if replacing && change_id(&change) == change_id(envelope) {
                        Outcome::Replaced
                    } else {
                        Outcome::Applied
                    };
                    outcomes.extend(change_id(&change).map(|id| (id, outcome)));
                    to_apply.push(change);
                }
            }
        }
    }
    let mut newly_held: Vec<&Envelope> = Vec::new();
    let mut new_positions: Vec<(String, i64)> = Vec::new();
    for (journey, sequence) in &sequences {
        for (_, (envelope, was_held)) in sequence.parked() {
            if !was_held {
                newly_held.push(envelope);
                outcomes.extend(change_id(envelope).map(|id| (id, Outcome::Held)));
                stats.held += 1;
            }
        }
        let last = version_number(sequence.applied());
        if positions.get(journey) != Some(&last) {
            new_positions.push((journey.clone(), last));
        }
    }
    stats.applied = to_apply.len() as u64;

    // 4. Write it all: first what is undone, so that what replaces it finds its place free.
    for (journey, from) in &rewinds {
        stats.superseded += rewind(tx, journey, *from, &ids).await?;
    }
    if !unheld.is_empty() {
        let (journeys, versions): (Vec<String>, Vec<i64>) = unheld.into_iter().unzip();
        tx.execute(
            "DELETE FROM held_events h USING unnest($1::text[], $2::bigint[]) AS u(j, v) \
             WHERE h.journey_id = u.j AND h.version = u.v",
            &[&journeys, &versions],
        )
        .await?;
    }
    project(tx, &to_apply).await?;
    if !newly_held.is_empty() {
        let journeys: Vec<String> = newly_held
            .iter()
            .map(|e| e.journey_id.to_string())
            .collect();
        let versions: Vec<i64> = newly_held.iter().map(|e| version(e)).collect();
        let bodies: Vec<serde_json::Value> = newly_held
            .iter()
            .map(|e| serde_json::to_value(e).unwrap_or(serde_json::Value::Null))
            .collect();
        tx.execute(
            "INSERT INTO held_events (journey_id, version, envelope) \
             SELECT * FROM unnest($1::text[], $2::bigint[], $3::jsonb[]) ON CONFLICT DO NOTHING",
            &[&journeys, &versions, &bodies],
        )
        .await?;
    }
    if !released.is_empty() {
        let (journeys, versions): (Vec<String>, Vec<i64>) = released.into_iter().unzip();
        tx.execute(
            "DELETE FROM held_events h USING unnest($1::text[], $2::bigint[]) AS u(j, v) \
             WHERE h.journey_id = u.j AND h.version = u.v",
            &[&journeys, &versions],
        )
        .await?;
    }
    let (ids, names): (Vec<Uuid>, Vec<&str>) =
        outcomes.iter().map(|(id, o)| (*id, o.name())).unzip();
    tx.execute(
        "UPDATE processed_events p SET outcome = u.o FROM unnest($1::uuid[], $2::text[]) AS u(id, o) \
         WHERE p.event_id = u.id AND p.outcome <> u.o",
        &[&ids, &names],
    )
    .await?;
    if !new_positions.is_empty() {
        let (journeys, versions): (Vec<String>, Vec<i64>) = new_positions.into_iter().unzip();
        tx.execute(
            "UPDATE journey_positions p SET last_version = u.v, updated_at = now() \
             FROM unnest($1::text[], $2::bigint[]) AS u(j, v) WHERE p.journey_id = u.j",
            &[&journeys, &versions],
        )
        .await?;
    }
    let occurred_at = to_apply
        .iter()
        .filter_map(|e| e.events.first().map(|ev| ev.occurred_at))
        .collect();
    Ok(AppliedBatch { stats, occurred_at })
}

/// Undoes the changes of `journey` the projection applied at `from` and later (those of
/// earlier batches: not `batch`, the ids this one received): their history rows go, their
/// `processed_events` rows say `superseded` (a redelivery stays a duplicate), and each status
/// they set is what the remaining history last set (no row when none did, as before any
/// change). Answers how many changes were undone.
pub(super) async fn rewind(
    tx: &impl GenericClient,
    journey: &str,
    from: i64,
    batch: &[Uuid],
) -> Result<u64, ProjectionError> {
    let undone = tx
        .execute(
            "UPDATE processed_events SET outcome = 'superseded' \
             WHERE journey_id = $1 AND version >= $2 AND outcome IN ('applied', 'replaced') \
               AND NOT event_id = ANY($3)",
            &[&journey, &from, &batch],
        )
        .await?;
    let completed_undone: bool = tx
        .query_one(
            "WITH gone AS (DELETE FROM status_history WHERE journey_id = $1 AND version >= $2 \
                           RETURNING event_type) \
             SELECT count(*) FILTER (WHERE event_type = 'JourneyCompleted') > 0 FROM gone",
            &[&journey, &from],
        )
        .await?
        .get(0);
    // Each segment and the journey itself: the last status the remaining history set.
    tx.execute(
        "WITH last AS (SELECT DISTINCT ON (segment_id) segment_id, to_status, version, occurred_at \
                       FROM status_history \
                       WHERE journey_id = $1 AND event_type = 'SegmentStatusChanged' \
                       ORDER BY segment_id, version DESC, position DESC) \
         UPDATE projected_segments s \
            SET status = last.to_status, version = last.version, updated_at = last.occurred_at \
           FROM last WHERE s.journey_id = $1 AND s.segment_id = last.segment_id AND s.version >= $2",
        &[&journey, &from],
    )
    .await?;
    tx.execute(
        "DELETE FROM projected_segments WHERE journey_id = $1 AND version >= $2",
        &[&journey, &from],
    )
    .await?;
    tx.execute(
        "WITH last AS (SELECT to_status, version, occurred_at FROM status_history \
                       WHERE journey_id = $1 AND event_type = 'JourneyStatusChanged' \
                       ORDER BY version DESC, position DESC LIMIT 1) \
         UPDATE projected_journeys j \
            SET status = last.to_status, version = last.version, updated_at = last.occurred_at \
           FROM last WHERE j.journey_id = $1 AND j.version >= $2",
        &[&journey, &from],
    )
    .await?;
    tx.execute(
        "DELETE FROM projected_journeys WHERE journey_id = $1 AND version >= $2",
        &[&journey, &from],
    )
    .await?;
    if completed_undone {
        tx.execute(
            "UPDATE projected_journeys \
                SET completed_at = NULL, customer_id = NULL, total_amount_cents = NULL \
              WHERE journey_id = $1",
            &[&journey],
        )
        .await?;
    }
    Ok(undone)
}

fn version(envelope: &Envelope) -> i64 {
    version_number(envelope.version)
}

/// A version as PostgreSQL's `bigint`.
fn version_number(version: JourneyVersion) -> i64 {
    i64::try_from(version.get()).unwrap_or(i64::MAX)
}

/// A `bigint` version read back (a negative one, never written, reads as 0).
fn as_version(number: i64) -> JourneyVersion {
    JourneyVersion::new(u64::try_from(number).unwrap_or(0))
}

/// Writes the effects of changes that are being applied, in version order per journey: the
/// history rows, and each journey's and segment's latest status.
async fn project(tx: &impl GenericClient, changes: &[Envelope]) -> Result<(), ProjectionError> {
    if changes.is_empty() {
        return Ok(());
    }
    #[derive(Default)]
    struct History {
        id: Vec<Uuid>,
        journey: Vec<String>,
        version: Vec<i64>,
        position: Vec<i16>,
        kind: Vec<&'static str>,
        segment: Vec<Option<String>>,
        from: Vec<Option<String>>,
        to: Vec<Option<String>>,
        at: Vec<DateTime<Utc>>,
        payload: Vec<serde_json::Value>,
        trace: Vec<Option<String>>,
    }
    let mut h = History::default();
    // Latest per target, by version (the batch is in version order per journey, but keep the
    // rule explicit).
    let mut segments: BTreeMap<(String, String), (String, i64, DateTime<Utc>)> = BTreeMap::new();
    let mut journeys: BTreeMap<String, (String, i64, DateTime<Utc>)> = BTreeMap::new();
    let mut completions: BTreeMap<String, (DateTime<Utc>, String, i64)> = BTreeMap::new();
    for change in changes {
        let v = version(change);
        let trace = change
            .trace
            .as_deref()
            .and_then(crate::telemetry::trace_context::trace_id);
        for (position, event) in change.events.iter().enumerate() {
            let journey = change.journey_id.to_string();
            let (segment, from, to) = match &event.kind {
                EventKind::SegmentStatusChanged {
                    segment_id,
                    from,
                    to,
                } => {
                    let key = (journey.clone(), segment_id.to_string());
                    if segments.get(&key).is_none_or(|(_, seen, _)| *seen < v) {
                        segments.insert(key, (to.to_string(), v, event.occurred_at));
                    }
                    (
                        Some(segment_id.to_string()),
                        Some(from.to_string()),
                        Some(to.to_string()),
                    )
                }
                EventKind::JourneyStatusChanged { from, to } => {
                    if journeys.get(&journey).is_none_or(|(_, seen, _)| *seen < v) {
                        journeys.insert(journey.clone(), (to.to_string(), v, event.occurred_at));
                    }
                    (None, Some(from.to_string()), Some(to.to_string()))
                }
                EventKind::JourneyCompleted {
                    customer_id,
                    total_amount_cents,
                    completed_at,
                } => {
                    completions.insert(
                        journey.clone(),
                        (*completed_at, customer_id.clone(), *total_amount_cents),
                    );
                    (None, None, None)
                }
                _ => (None, None, None),
            };
            h.id.push(event.id.as_uuid());
            h.journey.push(journey);
            h.version.push(v);
            h.position.push(i16::try_from(position).unwrap_or(i16::MAX));
            h.kind.push(event.kind.name());
            h.segment.push(segment);
            h.from.push(from);
            h.to.push(to);
            h.at.push(event.occurred_at);
            h.payload
                .push(serde_json::to_value(event).unwrap_or(serde_json::Value::Null));
            h.trace.push(trace.clone());
        }
    }
    tx.execute(
        "INSERT INTO status_history \
           (event_id, journey_id, version, position, event_type, segment_id, from_status, to_status, occurred_at, payload, trace_id) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::smallint[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[], $11::text[]) \
         ON CONFLICT DO NOTHING",
        &[
            &h.id, &h.journey, &h.version, &h.position, &h.kind, &h.segment, &h.from, &h.to,
            &h.at, &h.payload, &h.trace,
        ],
    )
    .await?;
    if !segments.is_empty() {
        let mut rows = SegmentRows::default();
        for ((journey, segment), (status, v, at)) in segments {
            rows.journey.push(journey);
            rows.segment.push(segment);
            rows.status.push(status);
            rows.version.push(v);
            rows.at.push(at);
        }
        tx.execute(
            "INSERT INTO projected_segments (journey_id, segment_id, status, version, updated_at) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::timestamptz[]) \
             ON CONFLICT (journey_id, segment_id) DO UPDATE \
               SET status = EXCLUDED.status, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at \
               WHERE projected_segments.version < EXCLUDED.version",
            &[&rows.journey, &rows.segment, &rows.status, &rows.version, &rows.at],
        )
        .await?;
    }
    if !journeys.is_empty() {
        let mut rows = JourneyRows::default();
        for (journey, (status, v, at)) in journeys {
            let done = completions.get(&journey);
            rows.completed_at.push(done.map(|d| d.0));
            rows.customer.push(done.map(|d| d.1.clone()));
            rows.total.push(done.map(|d| d.2));
            rows.journey.push(journey);
            rows.status.push(status);
            rows.version.push(v);
            rows.at.push(at);
        }
        tx.execute(
            "INSERT INTO projected_journeys \
               (journey_id, status, version, updated_at, completed_at, customer_id, total_amount_cents) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::timestamptz[], \
                                  $5::timestamptz[], $6::text[], $7::bigint[]) \
             ON CONFLICT (journey_id) DO UPDATE \
               SET status = EXCLUDED.status, version = EXCLUDED.version, updated_at = EXCLUDED.updated_at, \
                   completed_at = COALESCE(EXCLUDED.completed_at, projected_journeys.completed_at), \
                   customer_id = COALESCE(EXCLUDED.customer_id, projected_journeys.customer_id), \
                   total_amount_cents = COALESCE(EXCLUDED.total_amount_cents, projected_journeys.total_amount_cents) \
               WHERE projected_journeys.version < EXCLUDED.version",
            &[
                &rows.journey,
                &rows.status,
                &rows.version,
                &rows.at,
                &rows.completed_at,
                &rows.customer,
                &rows.total,
            ],
        )
        .await?;
    }
    Ok(())
}

/// Columns of `projected_segments` rows, one array each (for `unnest`).
#[derive(Default)]
struct SegmentRows {
    journey: Vec<String>,
    segment: Vec<String>,
    status: Vec<String>,
    version: Vec<i64>,
    at: Vec<DateTime<Utc>>,
}

/// Columns of `projected_journeys` rows.
#[derive(Default)]
struct JourneyRows {
    journey: Vec<String>,
    status: Vec<String>,
    version: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    completed_at: Vec<Option<DateTime<Utc>>>,
    customer: Vec<Option<String>>,
    total: Vec<Option<i64>>,
}
