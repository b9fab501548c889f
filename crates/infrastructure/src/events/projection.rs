//! The PostgreSQL projection: each journey's current journey and segment statuses and their
//! history, built from the changes on the bus, exactly once each and in per-journey order.
//!
//! Delivery is at least once and a redelivered or reclaimed change can overtake a newer one, so
//! every change (an [`Envelope`], identified by its first event's id) goes through the rules of
//! [`flyrtech_core::consumer`], made durable (tables in `docs/outbox/SCHEMA.sql`):
//! - **duplicates**: a change whose id is in `processed_events` changes nothing;
//! - **in order**: version n of a journey is applied only when `journey_positions.last_version`
//!   is n - 1; the position row is locked (`FOR UPDATE`) for that decision, so two projectors
//!   cannot both apply n;
//! - **early**: a later version waits in `held_events` and is applied, in order, by the
//!   transaction that applies its predecessor;
//! - **stale**: a version at or below the position (never from a correct store: two changes
//!   committed the same version, which is a lost update) is recorded and ignored.
//!
//! A batch of changes is decided and written in **one transaction**: the `processed_events`
//! rows, the position, the projected statuses, the history and the held changes commit
//! together or not at all. The bus messages are acknowledged only after the commit, so a
//! projector killed at any point leaves either nothing of a batch (redelivered, applied then)
//! or all of it (redelivered, dropped as duplicates): restarted, the projection ends equal to
//! one application of each change. Each statement covers the whole batch (`UNNEST` of arrays),
//! so a batch costs about ten round trips however many changes it holds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use flyrtech_core::{Envelope, EventKind, Journey, JourneyId, JourneyStore, StoreError};
use serde::Serialize;
use tokio_postgres::{Client, GenericClient, NoTls};
use uuid::Uuid;

/// The schema, applied at start-up when its tables are missing.
pub const SCHEMA_SQL: &str = include_str!("../../../../docs/outbox/SCHEMA.sql");

/// The tables `flyrtech project` needs.
const TABLES: [&str; 6] = [
    "processed_events",
    "journey_positions",
    "held_events",
    "projected_journeys",
    "projected_segments",
    "status_history",
];

/// Why the projection could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProjectionError {
    /// PostgreSQL refused or could not be reached; nothing of the batch was committed.
    #[error("PostgreSQL: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    /// A stored held change cannot be decoded (a foreign writer).
    #[error("held change of journey {journey} version {version} cannot be decoded: {reason}")]
    Corrupt {
        journey: String,
        version: i64,
        reason: String,
    },
    /// The journey store failed while auditing.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Connects to PostgreSQL (`postgres://user@host:port/db`); the connection is driven by a task
/// of its own until the client is dropped.
///
/// # Errors
/// [`ProjectionError::Postgres`] when the server cannot be reached.
pub async fn connect(url: &str) -> Result<Client, ProjectionError> {
    let mut config: tokio_postgres::Config = url.parse()?;
    config.connect_timeout(Duration::from_secs(5));
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "the PostgreSQL connection ended");
        }
    });
    Ok(client)
}

/// Applies [`SCHEMA_SQL`] when any of its consumer tables is missing; answers whether it did.
///
/// # Errors
/// [`ProjectionError::Postgres`].
pub async fn ensure_schema(client: &Client) -> Result<bool, ProjectionError> {
    let missing = || async {
        let row = client
            .query_one(
                "SELECT count(*) FROM unnest($1::text[]) AS t(name) WHERE to_regclass(t.name) IS NULL",
                &[&TABLES.to_vec()],
            )
            .await?;
        Ok::<i64, ProjectionError>(row.get(0))
    };
    if missing().await? == 0 {
        return Ok(false);
    }
    // Projectors started together would each create the tables, and PostgreSQL's CREATE ...
    // IF NOT EXISTS is not safe against a concurrent one (a duplicate key in its catalog): one
    // at a time, under a session lock that a dead projector's session releases.
    let lock = namespace("flyrtech:schema");
    client
        .execute("SELECT pg_advisory_lock($1)", &[&i64::from(lock)])
        .await?;
    let applied = match missing().await {
        Ok(0) => Ok(false),
        Ok(_) => client
            .batch_execute(SCHEMA_SQL)
            .await
            .map(|()| true)
            .map_err(Into::into),
        Err(e) => Err(e),
    };
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&i64::from(lock)])
        .await?;
    applied
}

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
    /// At or below the journey's position: ignored.
    Stale,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Self::Applied => "applied",
            Self::Duplicate => "duplicate",
            Self::Held => "held",
            Self::Stale => "stale",
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
}

impl std::ops::AddAssign for BatchStats {
    fn add_assign(&mut self, o: Self) {
        self.received += o.received;
        self.applied += o.applied;
        self.released += o.released;
        self.duplicates += o.duplicates;
        self.held += o.held;
        self.stale += o.stale;
    }
}

/// The changes a batch applied, for the lag measurement: when each happened.
#[derive(Debug, Default)]
pub struct Applied {
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
) -> Result<Applied, ProjectionError> {
    let tx = client.transaction().await?;
    let applied = apply_in(&tx, batch).await?;
    tx.commit().await?;
    Ok(applied)
}

async fn apply_in(tx: &impl GenericClient, batch: &[Envelope]) -> Result<Applied, ProjectionError> {
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
        return Ok(Applied {
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
    let mut positions: HashMap<String, i64> = tx
        .query(
            "SELECT journey_id, last_version FROM journey_positions \
             WHERE journey_id = ANY($1) ORDER BY journey_id FOR UPDATE",
            &[&touched],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let mut queued: HashMap<String, BTreeMap<i64, (Envelope, bool)>> = HashMap::new();
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
        queued
            .entry(journey)
            .or_default()
            .insert(version, (envelope, true));
    }

    // 3. Decide, per journey in version order: apply what follows the position, hold what is
    // beyond it, drop what is at or below it.
    let mut outcomes: Vec<(Uuid, Outcome)> = Vec::new();
    for envelope in fresh {
        let queue = queued.entry(envelope.journey_id.to_string()).or_default();
        match queue.entry(version(envelope)) {
            // Another change already claims this version (held before): this one is stale.
            std::collections::btree_map::Entry::Occupied(_) => {
                outcomes.extend(change_id(envelope).map(|id| (id, Outcome::Stale)));
                stats.stale += 1;
            }
            std::collections::btree_map::Entry::Vacant(slot) => {
                slot.insert((envelope.clone(), false));
            }
        }
    }
    let mut to_apply: Vec<Envelope> = Vec::new();
    let mut released: Vec<(String, i64)> = Vec::new();
    let mut newly_held: Vec<&Envelope> = Vec::new();
    let mut new_positions: Vec<(String, i64)> = Vec::new();
    for (journey, queue) in &queued {
        let Some(last) = positions.get_mut(journey) else {
            continue;
        };
        let start = *last;
        for (&v, (envelope, was_held)) in queue {
            if v <= *last {
                if !was_held {
                    outcomes.extend(change_id(envelope).map(|id| (id, Outcome::Stale)));
                    stats.stale += 1;
                }
            } else if v == *last + 1 {
                *last = v;
                if *was_held {
                    released.push((journey.clone(), v));
                    stats.released += 1;
                }
                outcomes.extend(change_id(envelope).map(|id| (id, Outcome::Applied)));
                to_apply.push(envelope.clone());
            } else if !was_held {
                newly_held.push(envelope);
                outcomes.extend(change_id(envelope).map(|id| (id, Outcome::Held)));
                stats.held += 1;
            }
        }
        if *last != start {
            new_positions.push((journey.clone(), *last));
        }
    }
    stats.applied = to_apply.len() as u64;

    // 4. Write it all.
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
    Ok(Applied { stats, occurred_at })
}

fn version(envelope: &Envelope) -> i64 {
    i64::try_from(envelope.version.get()).unwrap_or(i64::MAX)
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
    }
    let mut h = History::default();
    // Latest per target, by version (the batch is in version order per journey, but keep the
    // rule explicit).
    let mut segments: BTreeMap<(String, String), (String, i64, DateTime<Utc>)> = BTreeMap::new();
    let mut journeys: BTreeMap<String, (String, i64, DateTime<Utc>)> = BTreeMap::new();
    let mut completions: BTreeMap<String, (DateTime<Utc>, String, i64)> = BTreeMap::new();
    for change in changes {
        let v = version(change);
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
        }
    }
    tx.execute(
        "INSERT INTO status_history \
           (event_id, journey_id, version, position, event_type, segment_id, from_status, to_status, occurred_at, payload) \
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::bigint[], $4::smallint[], $5::text[], \
                              $6::text[], $7::text[], $8::text[], $9::timestamptz[], $10::jsonb[]) \
         ON CONFLICT DO NOTHING",
        &[
            &h.id, &h.journey, &h.version, &h.position, &h.kind, &h.segment, &h.from, &h.to,
            &h.at, &h.payload,
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

/// One difference between the projection and the stored journeys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub journey: JourneyId,
    /// `version`, `journey status`, `segment SEG-1 status`, `held changes`.
    pub what: String,
    /// In Redis.
    pub stored: String,
    /// In PostgreSQL.
    pub projected: String,
}

/// What the projection audit found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectionReport {
    /// Journeys compared.
    pub journeys: usize,
    /// Changes the projection has applied, over those journeys.
    pub changes_projected: u64,
    pub differences: Vec<Difference>,
}

impl ProjectionReport {
    /// True when the projection matches the stored journeys exactly.
    pub fn is_clean(&self) -> bool {
        self.differences.is_empty()
    }
}

/// Compares the projection with the journeys `ids` as `store` reads them now: the position must
/// be the stored version (every change applied, none twice), every projected status the stored
/// one, and nothing may be held.
///
/// # Errors
/// [`ProjectionError`] when either side cannot be read.
pub async fn audit<S: JourneyStore>(
    store: &S,
    client: &Client,
    ids: &[JourneyId],
) -> Result<ProjectionReport, ProjectionError> {
    let mut report = ProjectionReport {
        journeys: ids.len(),
        ..ProjectionReport::default()
    };
    for chunk in ids.chunks(1000) {
        let names: Vec<String> = chunk.iter().map(ToString::to_string).collect();
        let positions: HashMap<String, i64> = rows(
            client,
            "SELECT journey_id, last_version FROM journey_positions WHERE journey_id = ANY($1)",
            &names,
        )
        .await?;
        let held: HashMap<String, i64> = rows(client, "SELECT journey_id, count(*) FROM held_events WHERE journey_id = ANY($1) GROUP BY journey_id", &names).await?;
        let statuses: HashMap<String, String> = rows(
            client,
            "SELECT journey_id, status FROM projected_journeys WHERE journey_id = ANY($1)",
            &names,
        )
        .await?;
        let mut segments: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for row in client
            .query(
                "SELECT journey_id, segment_id, status FROM projected_segments WHERE journey_id = ANY($1)",
                &[&names],
            )
            .await?
        {
            segments
                .entry(row.get(0))
                .or_default()
                .push((row.get(1), row.get(2)));
        }
        for id in chunk {
            let journey = store.get(id).await?;
            let key = id.to_string();
            let position = positions.get(&key).copied().unwrap_or(0);
            report.changes_projected += u64::try_from(position).unwrap_or(0);
            compare(
                &mut report.differences,
                &journey,
                position,
                held.get(&key).copied(),
                statuses.get(&key),
                segments.get(&key),
            );
        }
    }
    Ok(report)
}

async fn rows<V: for<'a> tokio_postgres::types::FromSql<'a>>(
    client: &Client,
    sql: &str,
    names: &[String],
) -> Result<HashMap<String, V>, ProjectionError> {
    Ok(client
        .query(sql, &[&names])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect())
}

fn compare(
    out: &mut Vec<Difference>,
    journey: &Journey,
    position: i64,
    held: Option<i64>,
    status: Option<&String>,
    segments: Option<&Vec<(String, String)>>,
) {
    let mut differ = |what: String, stored: String, projected: String| {
        out.push(Difference {
            journey: journey.id.clone(),
            what,
            stored,
            projected,
        });
    };
    let stored_version = journey.version.get();
    if u64::try_from(position).ok() != Some(stored_version) {
        differ(
            "version".into(),
            stored_version.to_string(),
            position.to_string(),
        );
    }
    if let Some(n) = held {
        differ("held changes".into(), "0".into(), n.to_string());
    }
    if let Some(status) = status
        && *status != journey.status.to_string()
    {
        differ(
            "journey status".into(),
            journey.status.to_string(),
            status.clone(),
        );
    }
    for (segment, projected) in segments.into_iter().flatten() {
        let stored = journey
            .segments
            .iter()
            .find(|s| s.segment_id.as_str() == segment)
            .map_or_else(|| "(no such segment)".to_owned(), |s| s.status.to_string());
        if stored != *projected {
            differ(
                format!("segment {segment} status"),
                stored,
                projected.clone(),
            );
        }
    }
}

/// How `flyrtech project` consumes the bus.
#[derive(Debug, Clone)]
pub struct ProjectorSettings {
    /// The durable JetStream consumer's name: restarts resume where it left off.
    pub consumer: String,
    /// Changes fetched and applied per transaction.
    pub batch: usize,
    /// How long an empty fetch waits for messages.
    pub idle_wait: Duration,
    /// How long an applied but unacknowledged message stays with this projector before
    /// JetStream redelivers it (a projector killed mid-batch).
    pub ack_wait: Duration,
}

impl Default for ProjectorSettings {
    fn default() -> Self {
        Self {
            consumer: "projection".into(),
            batch: 512,
            idle_wait: Duration::from_millis(200),
            ack_wait: Duration::from_secs(5),
        }
    }
}

type PullConsumer =
    async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>;

/// [`ensure_schema`], saying so when it applied the schema.
async fn prepare_schema(client: &Client) -> Result<(), ProjectionError> {
    if ensure_schema(client).await? {
        tracing::info!("applied docs/outbox/SCHEMA.sql: the projection's tables were missing");
    }
    Ok(())
}

/// The durable pull consumer `name` on `bus` (every subject when `filter` is empty), created if
/// absent: explicit acks, from the stream's start, redelivery after `settings.ack_wait`.
async fn durable_consumer(
    bus: &crate::events::nats::JetStream,
    name: &str,
    filter: String,
    settings: &ProjectorSettings,
) -> Result<PullConsumer, ProjectionError> {
    use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
    let consumer = bus
        .stream()
        .get_or_create_consumer(
            name,
            pull::Config {
                durable_name: Some(name.to_owned()),
                filter_subject: filter,
                ack_policy: AckPolicy::Explicit,
                deliver_policy: DeliverPolicy::All,
                ack_wait: settings.ack_wait,
                max_ack_pending: i64::try_from(settings.batch.saturating_mul(4))
                    .unwrap_or(i64::MAX),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| StoreError::unavailable("cannot create the JetStream consumer", e))?;
    Ok(consumer)
}

/// Fetches up to `batch` messages from `consumer` (waiting at most `wait` for them), applies the
/// changes among them in one transaction on `client`, and acknowledges them after the commit.
async fn fetch_and_apply(
    consumer: &PullConsumer,
    client: &mut Client,
    batch: usize,
    wait: Duration,
    stats: &mut ProjectorStats,
) -> Result<Applied, ProjectionError> {
    use futures::StreamExt;
    let unavailable = |e: &dyn std::fmt::Display| {
        ProjectionError::Store(StoreError::unavailable(
            "JetStream fetch failed",
            e.to_string(),
        ))
    };
    let mut messages = consumer
        .fetch()
        .max_messages(batch)
        .expires(wait)
        .messages()
        .await
        .map_err(|e| unavailable(&e))?;
    let mut received = Vec::new();
    while let Some(message) = messages.next().await {
        received.push(message.map_err(|e| unavailable(&e))?);
    }
    let mut changes = Vec::with_capacity(received.len());
    let mut keep = Vec::with_capacity(received.len());
    for message in received {
        match serde_json::from_slice::<Envelope>(&message.payload) {
            Ok(envelope) if !envelope.events.is_empty() => {
                changes.push(envelope);
                keep.push(message);
            }
            other => {
                tracing::warn!(subject = %message.subject, error = ?other.err().map(|e| e.to_string()), "not a change; terminated");
                stats.rejected += 1;
                let _ = message.ack_with(async_nats::jetstream::AckKind::Term).await;
            }
        }
    }
    if changes.is_empty() {
        return Ok(Applied::default());
    }
    let applied = apply_batch(client, &changes).await?;
    // Committed: now (and only now) the messages may go. A lost ack is a redelivery, which
    // the processed_events rows turn into a no-op.
    for message in &keep {
        if let Err(e) = message.ack().await {
            tracing::debug!(error = %e, "ack not sent; the change will be redelivered as a duplicate");
        }
    }
    stats.changes += applied.stats;
    stats.batches += 1;
    record(&applied);
    Ok(applied)
}

/// The projector's metrics for one applied batch: `projector_changes_total` by outcome and
/// `projector_lag_seconds` (commit in Redis to commit in PostgreSQL) of each applied change.
fn record(applied: &Applied) {
    let s = applied.stats;
    for (outcome, n) in [
        ("applied", s.applied),
        ("duplicate", s.duplicates),
        ("held", s.held),
        ("stale", s.stale),
    ] {
        if n > 0 {
            metrics::counter!("projector_changes_total", "outcome" => outcome).increment(n);
        }
    }
    let now = Utc::now();
    let lag = metrics::histogram!("projector_lag_seconds");
    for at in &applied.occurred_at {
        lag.record((now - *at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6);
    }
}

/// Totals of a projector's run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProjectorStats {
    #[serde(flatten)]
    pub changes: BatchStats,
    /// Messages that are not changes (undecodable, no events): terminated, never redelivered.
    pub rejected: u64,
    /// Transactions committed.
    pub batches: u64,
}

/// The durable consumer that feeds the projection.
#[derive(Debug)]
pub struct Projector {
    consumer:
        async_nats::jetstream::consumer::Consumer<async_nats::jetstream::consumer::pull::Config>,
    client: Client,
    settings: ProjectorSettings,
    stats: ProjectorStats,
}

impl Projector {
    /// Creates (or resumes) the durable consumer on `bus` and makes sure the schema exists.
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL fails; [`StoreError::Unavailable`] (inside
    /// [`ProjectionError::Store`]) when JetStream does.
    pub async fn new(
        bus: &crate::events::nats::JetStream,
        client: Client,
        settings: ProjectorSettings,
    ) -> Result<Self, ProjectionError> {
        prepare_schema(&client).await?;
        let consumer = durable_consumer(bus, &settings.consumer, String::new(), &settings).await?;
        Ok(Self {
            consumer,
            client,
            settings,
            stats: ProjectorStats::default(),
        })
    }

    /// Totals so far.
    pub fn stats(&self) -> &ProjectorStats {
        &self.stats
    }

    /// Fetches and applies one batch; answers what it applied (empty when the bus had nothing).
    ///
    /// # Errors
    /// [`ProjectionError`]: nothing of the batch was committed or acknowledged (JetStream
    /// redelivers it).
    pub async fn step(&mut self) -> Result<Applied, ProjectionError> {
        fetch_and_apply(
            &self.consumer,
            &mut self.client,
            self.settings.batch,
            self.settings.idle_wait,
            &mut self.stats,
        )
        .await
    }

    /// Whether the consumer has delivered everything in the stream and nothing awaits an
    /// acknowledgement.
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when JetStream cannot say.
    pub async fn caught_up(&mut self) -> Result<bool, ProjectionError> {
        let info = self
            .consumer
            .info()
            .await
            .map_err(|e| StoreError::unavailable("cannot read the consumer's state", e))?;
        Ok(info.num_pending == 0 && info.num_ack_pending == 0)
    }
}

/// How often a [`PartitionedProjector`] counts the projectors and takes or gives up partitions.
pub const BALANCE_EVERY: Duration = Duration::from_secs(1);

/// One of several projectors sharing a partitioned stream (`crate::events::nats`, "Partitions")
/// without anyone assigning the partitions.
///
/// # Leases
/// A projector owns a partition while its PostgreSQL session holds the advisory lock of that
/// partition (`pg_try_advisory_lock(<partitions namespace>, <partition>)`, the namespace derived
/// from the consumer's name), and fetches only from the partition's own durable JetStream
/// consumer (`<consumer>-p<partition>`, filtered on `journeys.<partition>.>`). Every projector
/// also holds a member lock (`<members namespace>, <random id>`) for as long as its session
/// lives, so the live projectors are counted from `pg_locks`, with no table to clean up.
///
/// Every [`BALANCE_EVERY`] a projector computes its fair share, `ceil(partitions / projectors)`:
/// above it, it gives up its highest partitions (between batches, so it holds no unacknowledged
/// message of them); below it, it takes free partitions. Shutting down ends the session, which
/// releases every lock. A projector that dies (SIGKILL, a lost machine) loses its session with
/// its process: PostgreSQL drops its locks when the connection closes, and within a balance
/// period the others take its partitions over; the changes it had fetched but not committed are
/// redelivered by JetStream after the consumer's `ack_wait` ([`ProjectorSettings::ack_wait`]).
///
/// # Why a takeover applies nothing twice and skips nothing
/// The leases only share the work; correctness stays with the projection's rules (module docs):
/// a change applied by the dead projector is in `processed_events` (a redelivery is a
/// duplicate), one it had not committed is redelivered, and a journey's versions are applied
/// in order whatever order they arrive in. Two projectors briefly fetching one partition (a
/// session that PostgreSQL has not yet noticed is gone) is therefore safe too.
#[derive(Debug)]
pub struct PartitionedProjector {
    bus: crate::events::nats::JetStream,
    /// One session: it holds the leases and applies the changes.
    client: Client,
    settings: ProjectorSettings,
    members_namespace: i32,
    partitions_namespace: i32,
    owned: BTreeMap<u32, PullConsumer>,
    /// Where the round robin over the owned partitions continues.
    next: u32,
    balanced_at: Option<std::time::Instant>,
    stats: ProjectorStats,
}

/// A positive lock namespace for `name` (FNV-1a, as the partitions).
fn namespace(name: &str) -> i32 {
    let n = crate::events::nats::partition_of(name, i32::MAX.unsigned_abs());
    i32::try_from(n).unwrap_or(i32::MAX)
}

impl PartitionedProjector {
    /// Joins the projectors of `settings.consumer` on `bus`: makes sure the schema and every
    /// partition's consumer exist, and takes the member lock. Partitions are taken by the first
    /// [`PartitionedProjector::step`].
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL fails; [`StoreError::Unavailable`] (inside
    /// [`ProjectionError::Store`]) when JetStream does.
    pub async fn join(
        bus: &crate::events::nats::JetStream,
        client: Client,
        settings: ProjectorSettings,
    ) -> Result<Self, ProjectionError> {
        prepare_schema(&client).await?;
        let members_namespace = namespace(&format!("flyrtech:{}:members", settings.consumer));
        let partitions_namespace = namespace(&format!("flyrtech:{}:partitions", settings.consumer));
        // A member id no live projector holds: try until one is free.
        loop {
            let id = rand::random::<i32>() & i32::MAX;
            let row = client
                .query_one(
                    "SELECT pg_try_advisory_lock($1, $2)",
                    &[&members_namespace, &id],
                )
                .await?;
            if row.get::<_, bool>(0) {
                break;
            }
        }
        let projector = Self {
            bus: bus.clone(),
            client,
            settings,
            members_namespace,
            partitions_namespace,
            owned: BTreeMap::new(),
            next: 0,
            balanced_at: None,
            stats: ProjectorStats::default(),
        };
        for partition in 0..bus.partitions() {
            projector.consumer(partition).await?;
        }
        Ok(projector)
    }

    /// The durable consumer of one partition, created if absent.
    async fn consumer(&self, partition: u32) -> Result<PullConsumer, ProjectionError> {
        let name = format!("{}-p{partition}", self.settings.consumer);
        let filter = self.bus.partition_subjects(partition);
        durable_consumer(&self.bus, &name, filter, &self.settings).await
    }

    /// Totals so far.
    pub fn stats(&self) -> &ProjectorStats {
        &self.stats
    }

    /// The partitions this projector owns now.
    pub fn owned(&self) -> Vec<u32> {
        self.owned.keys().copied().collect()
    }

    /// Counts the projectors and takes or gives up partitions to hold its fair share.
    ///
    /// # Errors
    /// [`ProjectionError`] when PostgreSQL or JetStream fails.
    pub async fn balance(&mut self) -> Result<(), ProjectionError> {
        // The advisory locks of a namespace held now (two-key locks: objsubid 2).
        const HELD: &str = "SELECT pid, objid::int8 FROM pg_locks WHERE locktype = 'advisory' \
                            AND classid = $1::int8::oid AND objsubid = 2 AND granted";
        let members = self
            .client
            .query(HELD, &[&i64::from(self.members_namespace)])
            .await?
            .iter()
            .map(|row| row.get::<_, i32>(0))
            .collect::<HashSet<i32>>()
            .len();
        let partitions = self.bus.partitions();
        let members = u32::try_from(members.max(1)).unwrap_or(u32::MAX);
        let share = usize::try_from(partitions.div_ceil(members)).unwrap_or(usize::MAX);
        while self.owned.len() > share {
            let Some((partition, _)) = self.owned.pop_last() else {
                break;
            };
            self.client
                .query_one(
                    "SELECT pg_advisory_unlock($1, $2)",
                    &[
                        &self.partitions_namespace,
                        &i32::try_from(partition).unwrap_or(0),
                    ],
                )
                .await?;
            tracing::info!(partition, share, members, "gave up a partition");
        }
        if self.owned.len() < share {
            let held: HashSet<i64> = self
                .client
                .query(HELD, &[&i64::from(self.partitions_namespace)])
                .await?
                .iter()
                .map(|row| row.get(1))
                .collect();
            // Start somewhere different in each projector, so that they do not all race for
            // partition 0 first.
            let start = rand::random::<u32>() % partitions.max(1);
            for k in 0..partitions {
                if self.owned.len() >= share {
                    break;
                }
                let partition = (start + k) % partitions;
                if held.contains(&i64::from(partition)) {
                    continue;
                }
                let taken: bool = self
                    .client
                    .query_one(
                        "SELECT pg_try_advisory_lock($1, $2)",
                        &[
                            &self.partitions_namespace,
                            &i32::try_from(partition).unwrap_or(0),
                        ],
                    )
                    .await?
                    .get(0);
                if taken {
                    let consumer = self.consumer(partition).await?;
                    self.owned.insert(partition, consumer);
                    tracing::info!(partition, share, members, "took a partition");
                }
            }
        }
        metrics::gauge!("projector_owned_partitions").set(self.owned.len() as f64);
        self.balanced_at = Some(std::time::Instant::now());
        Ok(())
    }

    /// Balances when it is time, then fetches and applies one batch of the next owned
    /// partition in turn; answers what it applied (empty when that partition had nothing, or
    /// when this projector owns none: then it waits `idle_wait` first).
    ///
    /// # Errors
    /// [`ProjectionError`]: nothing of the batch was committed or acknowledged (JetStream
    /// redelivers it).
    pub async fn step(&mut self) -> Result<Applied, ProjectionError> {
        if self
            .balanced_at
            .is_none_or(|at| at.elapsed() >= BALANCE_EVERY)
        {
            self.balance().await?;
        }
        let Some((&partition, consumer)) = self
            .owned
            .range(self.next..)
            .next()
            .or_else(|| self.owned.iter().next())
        else {
            tokio::time::sleep(self.settings.idle_wait).await;
            return Ok(Applied::default());
        };
        self.next = partition + 1;
        // Each owned partition waits its share of the idle wait, so a round over them all
        // takes about one idle wait when the bus is quiet.
        let count = u32::try_from(self.owned.len()).unwrap_or(u32::MAX).max(1);
        let wait = (self.settings.idle_wait / count).max(Duration::from_millis(10));
        fetch_and_apply(
            consumer,
            &mut self.client,
            self.settings.batch,
            wait,
            &mut self.stats,
        )
        .await
    }

    /// Whether every partition's consumer has delivered everything and nothing awaits an
    /// acknowledgement (all partitions, owned by this projector or not).
    ///
    /// # Errors
    /// [`ProjectionError::Store`] when JetStream cannot say.
    pub async fn caught_up(&mut self) -> Result<bool, ProjectionError> {
        for partition in 0..self.bus.partitions() {
            let name = format!("{}-p{partition}", self.settings.consumer);
            let info = self
                .bus
                .stream()
                .consumer_info(&name)
                .await
                .map_err(|e| StoreError::unavailable("cannot read the consumer's state", e))?;
            if info.num_pending != 0 || info.num_ack_pending != 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }
}
