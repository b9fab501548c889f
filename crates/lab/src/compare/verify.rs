//! Lost updates, verified by reading the final state against every acknowledged write.
//!
//! Two checks per journey, both exact for the correct strategies and both violated by the
//! read-modify-write race:
//! - **Lost updates**: every applied change adds exactly one to the journey's version, and the
//!   run's journeys start at version 0. So the acknowledged changes of a journey missing from its
//!   final version were overwritten: `lost = acknowledged changes - final version`.
//! - **Last writer**: for each target (a segment, or the journey's status), the final status must
//!   be the one written by the acknowledged write with the highest reported version. A target
//!   where it is not is a *stale target*: an older write overwrote a newer one.

use std::collections::{BTreeMap, BTreeSet};

use flyrtech_core::Status;
use futures::StreamExt;

use super::workload::{Ack, Journeys};
use super::{Driver, LabError, synthetic_segment_id};

/// What the final state says about the acknowledged writes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Check {
    /// Acknowledged changes missing from the final versions.
    pub lost: usize,
    /// Targets whose final status is not the last acknowledged write's.
    pub stale_targets: usize,
    /// Acknowledged writes that changed something.
    pub changed: usize,
    /// Acknowledged no-ops.
    pub unchanged: usize,
}

impl std::ops::Add for Check {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            lost: self.lost + o.lost,
            stale_targets: self.stale_targets + o.stale_targets,
            changed: self.changed + o.changed,
            unchanged: self.unchanged + o.unchanged,
        }
    }
}

/// Reads every journey the writers touched and checks it.
///
/// # Errors
/// When a journey cannot be read back.
pub async fn check(driver: &Driver, journeys: &Journeys, acks: &[Ack]) -> Result<Check, LabError> {
    let mut by_journey: BTreeMap<usize, Vec<&Ack>> = BTreeMap::new();
    for ack in acks {
        by_journey.entry(ack.journey).or_default().push(ack);
    }
    let results: Vec<Result<Check, LabError>> = futures::stream::iter(by_journey)
        .map(|(journey, acks)| async move {
            let state = driver.get(&journeys.ids[journey]).await?;
            let changed = acks.iter().filter(|a| a.changed).count();
            let mut check = Check {
                lost: changed
                    .saturating_sub(usize::try_from(state.version.get()).unwrap_or(usize::MAX)),
                stale_targets: 0,
                changed,
                unchanged: acks.len() - changed,
            };
            // For each target: the highest reported version and the statuses written at it
            // (a naive writer can report a version another write also reported).
            let mut last: BTreeMap<Option<usize>, (u64, BTreeSet<&str>)> = BTreeMap::new();
            for ack in &acks {
                let entry = last.entry(ack.target).or_insert((0, BTreeSet::new()));
                if ack.version > entry.0 {
                    *entry = (ack.version, BTreeSet::new());
                }
                if ack.version == entry.0 {
                    entry.1.insert(ack.status);
                }
            }
            for (target, (_, statuses)) in last {
                let actual = match target {
                    None => Some(state.status.as_str()),
                    Some(s) => {
                        let id = synthetic_segment_id(s)?;
                        state.segment(&id).map(|seg| seg.status.as_str())
                    }
                };
                if !actual.is_some_and(|a| statuses.contains(a)) {
                    check.stale_targets += 1;
                }
            }
            Ok(check)
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results
        .into_iter()
        .try_fold(Check::default(), |total, c| Ok(total + c?))
}
