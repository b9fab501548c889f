//! `compare --audit`: after each run, the outbox is drained to the default bus by the service's
//! own relay (`flyrtech relay --drain`, a process of its own) and the run's journeys are audited
//! from their published events, so the audit's count of lost updates is printed beside the
//! lab's own.

use std::path::Path;
use std::time::Duration;

use flyrtech_core::JourneyId;
use flyrtech_infrastructure::events::audit::{AuditError, audit};
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::{Redis, RedisSettings};
use serde::Serialize;

use crate::process::Process;

/// The longest the relay may take to drain one run's outbox.
const DRAIN_BOUND: Duration = Duration::from_secs(600);

/// The audit's counts, as the lab reports them beside its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub lost_updates: usize,
    pub version_gaps: usize,
    pub changes_published: u64,
    pub unpublished: u64,
}

impl std::ops::Add for AuditSummary {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            lost_updates: self.lost_updates + o.lost_updates,
            version_gaps: self.version_gaps + o.version_gaps,
            changes_published: self.changes_published + o.changes_published,
            unpublished: self.unpublished + o.unpublished,
        }
    }
}

/// Drains the outbox to the default bus on the same Redis with `service`'s relay, then audits
/// `ids`, reading them with `strategy`'s layout: what the lab's `--audit` does after each run.
/// Uses connections of its own, so the run's round-trip counts stay the run's.
///
/// # Errors
/// The relay failed, or Redis did.
pub async fn drain_and_audit(
    url: &str,
    strategy: flyrtech_infrastructure::Strategy,
    ids: &[JourneyId],
    service: &Path,
) -> anyhow::Result<AuditSummary> {
    let logs = tempfile::tempdir()?;
    Process::spawn(service, "relay", &["relay", "--drain"], url, logs.path())?
        .finish(DRAIN_BOUND)
        .await?;
    Ok(audit_published(url, strategy, ids).await?)
}

/// Audits `ids` from what the default bus holds, reading them with `strategy`'s layout.
///
/// # Errors
/// [`AuditError`] from Redis.
pub async fn audit_published(
    url: &str,
    strategy: flyrtech_infrastructure::Strategy,
    ids: &[JourneyId],
) -> Result<AuditSummary, AuditError> {
    let redis = Redis::connect(&RedisSettings::new(url)).await?;
    let store = flyrtech_infrastructure::RedisJourneyStore::new(
        redis.clone(),
        &flyrtech_infrastructure::StoreConfig::new(strategy),
    )
    .await?;
    let report = audit(&store, &redis, &redis, keys::EVENTS, Some(ids)).await?;
    Ok(AuditSummary {
        lost_updates: report.lost_updates.len(),
        version_gaps: report.version_gaps.len(),
        changes_published: report.changes_published,
        unpublished: report.unpublished,
    })
}
