//! The projection compared with the stored journeys: every change applied once, every status
//! the stored one, nothing held (`flyrtech audit --projection`).

use std::collections::HashMap;

use flyrtech_core::{Journey, JourneyId, JourneyStore};
use serde::Serialize;
use tokio_postgres::Client;

use super::ProjectionError;

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
pub async fn reconcile<S: JourneyStore>(
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

/// Brings back to the store the journeys of `ids` that the projection holds at a version the
/// store never reached: a failover discarded their last changes after they were published, and
/// no later change of theirs came to replace them (module docs, "A version given twice"). Each
/// is undone down to the stored version, in a transaction that holds its position. Answers the
/// journeys repaired.
///
/// # Errors
/// [`ProjectionError`] when either side cannot be read or written.
pub async fn repair_ahead<S: JourneyStore>(
    store: &S,
    client: &mut Client,
    ids: &[JourneyId],
) -> Result<Vec<JourneyId>, ProjectionError> {
    let mut repaired = Vec::new();
    for id in ids {
        let stored = i64::try_from(store.get(id).await?.version.get()).unwrap_or(i64::MAX);
        let tx = client.transaction().await?;
        let position: Option<i64> = tx
            .query_opt(
                "SELECT last_version FROM journey_positions WHERE journey_id = $1 FOR UPDATE",
                &[&id.to_string()],
            )
            .await?
            .map(|r| r.get(0));
        if position.is_some_and(|p| p > stored) {
            super::apply::rewind(&tx, id.as_str(), stored + 1, &[]).await?;
            tx.execute(
                "UPDATE journey_positions SET last_version = $2, updated_at = now() \
                 WHERE journey_id = $1",
                &[&id.to_string(), &stored],
            )
            .await?;
            repaired.push(id.clone());
        }
        tx.commit().await?;
    }
    Ok(repaired)
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
