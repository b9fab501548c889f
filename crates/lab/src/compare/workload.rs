//! The writers: what they send, how they are released together, and what is measured.
//!
//! Writers are Tokio tasks released by one barrier, so their first requests overlap by
//! construction. Each draws operations from a shared counter (or runs until a deadline), picks
//! targets with its own seeded RNG (runs are reproducible with `--seed`), times every update into
//! an HDR histogram, and records every acknowledged write with the version the store reported;
//! [`super::verify`] checks those against the final state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use flyrtech_core::{JourneyId, JourneyStatus, SegmentStatus, StatusChange};
use futures::StreamExt;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::Barrier;

use super::{Driver, LabError, Params, Pattern, Scenario, synthetic_journey, synthetic_segment_id};

/// Concurrent creations and final reads.
const SETUP_CONCURRENCY: usize = 64;

/// Latencies are recorded in microseconds, up to 10 minutes, with 3 significant digits.
const LATENCY_MAX_US: u64 = 600_000_000;

/// The journeys of one run: ids are `<prefix>-<n, 12 digits>`, the shape redis-benchmark's
/// `__rand_int__` produces, so the ceiling can address the very same documents.
#[derive(Debug, Clone)]
pub struct Journeys {
    /// `LAB-<scenario>-<strategy>-<nonce>`.
    pub prefix: String,
    /// The ids, `ids[n]` ends in `n` as 12 digits.
    pub ids: Arc<Vec<JourneyId>>,
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// Index into [`Journeys::ids`].
    pub journey: usize,
    /// The segment index, or `None` for the journey's own status.
    pub target: Option<usize>,
    /// The status written.
    pub status: &'static str,
    /// The version the store reported after the write.
    pub version: u64,
    /// False for a no-op (the status already was the target).
    pub changed: bool,
}

/// What the writers did.
#[derive(Debug)]
pub struct Outcome {
    /// Updates sent.
    pub attempted: usize,
    /// Every acknowledged write.
    pub acks: Vec<Ack>,
    /// Refused or failed updates by kind.
    pub errors: BTreeMap<String, usize>,
    /// From the barrier to the last answer.
    pub elapsed: Duration,
    /// Latency of every update, acknowledged or not, in microseconds.
    pub latency: Histogram<u64>,
    /// Tries summed over all updates.
    pub attempts: u64,
    /// Tries lost to concurrent writers (attempts beyond the first).
    pub conflicts: u64,
    /// Lock wait summed over all updates.
    pub lock_wait: Duration,
}

impl Outcome {
    fn empty() -> Result<Self, LabError> {
        Ok(Self {
            attempted: 0,
            acks: Vec::new(),
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency: histogram()?,
            attempts: 0,
            conflicts: 0,
            lock_wait: Duration::ZERO,
        })
    }

    /// Adds another writer's or repetition's results (elapsed times add up).
    ///
    /// # Errors
    /// When the histograms cannot be merged.
    pub fn merge(&mut self, other: Self) -> Result<(), LabError> {
        self.attempted += other.attempted;
        self.acks.extend(other.acks);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.elapsed += other.elapsed;
        self.latency
            .add(&other.latency)
            .map_err(|e| LabError::Task(e.to_string()))?;
        self.attempts += other.attempts;
        self.conflicts += other.conflicts;
        self.lock_wait += other.lock_wait;
        Ok(())
    }
}

/// Creates the run's journeys, concurrently.
///
/// # Errors
/// The first creation that fails.
pub async fn create_journeys(
    driver: &Driver,
    scenario: Scenario,
    params: &Params,
) -> Result<Journeys, LabError> {
    let label = driver.strategy().map_or("http", |s| s.name());
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let prefix = format!("LAB-{scenario}-{label}-{nonce}");
    let ids = (0..params.journeys)
        .map(|n| JourneyId::parse(format!("{prefix}-{n:012}")))
        .collect::<Result<Vec<_>, _>>()?;
    let results: Vec<Result<(), LabError>> = futures::stream::iter(&ids)
        .map(|id| async move {
            let journey = synthetic_journey(id, params.segments)?;
            driver.create(&journey).await
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(Journeys {
        prefix,
        ids: Arc::new(ids),
    })
}

/// One operation.
struct Op {
    journey: usize,
    target: Option<usize>,
    change: StatusChange,
}

fn pick(pattern: Pattern, k: usize, rng: &mut StdRng, p: &Params) -> Result<Op, LabError> {
    let segment = |rng: &mut StdRng, journey: usize, s: usize| -> Result<Op, LabError> {
        let status = if rng.random_bool(0.5) {
            SegmentStatus::Delayed
        } else {
            SegmentStatus::Scheduled
        };
        Ok(Op {
            journey,
            target: Some(s),
            change: StatusChange::Segment {
                segment_id: synthetic_segment_id(s)?,
                status,
            },
        })
    };
    match pattern {
        Pattern::OwnSegment => {
            let s = k % p.segments;
            Ok(Op {
                journey: 0,
                target: Some(s),
                change: StatusChange::Segment {
                    segment_id: synthetic_segment_id(s)?,
                    status: SegmentStatus::Departed,
                },
            })
        }
        Pattern::Random => {
            let (j, s) = (
                rng.random_range(0..p.journeys),
                rng.random_range(0..p.segments),
            );
            segment(rng, j, s)
        }
        Pattern::Mixed => {
            let j = rng.random_range(0..p.journeys);
            if rng.random_ratio(1, 10) {
                let status = if rng.random_bool(0.5) {
                    JourneyStatus::InProgress
                } else {
                    JourneyStatus::Completed
                };
                Ok(Op {
                    journey: j,
                    target: None,
                    change: StatusChange::Journey { status },
                })
            } else {
                let s = rng.random_range(0..p.segments);
                segment(rng, j, s)
            }
        }
        Pattern::SameSegment => segment(rng, 0, 0),
    }
}

/// Runs the writers and collects what they saw.
///
/// # Errors
/// [`LabError::Task`] when a writer panics; an invalid parameter.
pub async fn execute(
    driver: &Arc<Driver>,
    journeys: &Journeys,
    params: &Params,
) -> Result<Outcome, LabError> {
    let barrier = Arc::new(Barrier::new(params.writers + 1));
    let next = Arc::new(AtomicUsize::new(0));
    let progress = progress_bar(params);
    let mut tasks = Vec::with_capacity(params.writers);
    for w in 0..params.writers {
        let (driver, ids, barrier, next, progress, params) = (
            Arc::clone(driver),
            Arc::clone(&journeys.ids),
            Arc::clone(&barrier),
            Arc::clone(&next),
            progress.clone(),
            *params,
        );
        tasks.push(tokio::spawn(async move {
            writer(w, &driver, &ids, &barrier, &next, &progress, &params).await
        }));
    }
    barrier.wait().await;
    let started = Instant::now();
    let mut outcome = Outcome::empty()?;
    for task in tasks {
        outcome.merge(task.await.map_err(|e| LabError::Task(e.to_string()))??)?;
    }
    outcome.elapsed = started.elapsed();
    progress.finish_and_clear();
    Ok(outcome)
}

async fn writer(
    w: usize,
    driver: &Driver,
    ids: &[JourneyId],
    barrier: &Barrier,
    next: &AtomicUsize,
    progress: &ProgressBar,
    params: &Params,
) -> Result<Outcome, LabError> {
    let mut rng =
        StdRng::seed_from_u64(params.seed ^ (w as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut log = Outcome::empty()?;
    barrier.wait().await;
    // With an arrival window, each writer makes its own share of the updates and no more: a
    // writer that arrived early must not take the updates of those still to arrive, which
    // would crowd them into the start of the window and make the collisions denser than the
    // model's uniform arrivals.
    let mut share = usize::MAX;
    if let Some(window) = params.arrival_window.filter(|w| !w.is_zero()) {
        // The modelled arrival process: this writer's first update starts at a uniform
        // random offset within the window.
        tokio::time::sleep(rng.random_range(Duration::ZERO..window)).await;
        share = params.updates.div_ceil(params.writers.max(1)).max(1);
    }
    let deadline = params.duration.map(|d| Instant::now() + d);
    for _ in 0..share {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let more = match deadline {
            Some(deadline) => Instant::now() < deadline,
            None => k < params.updates,
        };
        if !more {
            break;
        }
        let op = pick(params.pattern, k, &mut rng, params)?;
        let started = Instant::now();
        let result = driver.update(w, &ids[op.journey], &op.change).await;
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        log.latency
            .saturating_record(micros.clamp(1, LATENCY_MAX_US));
        log.attempted += 1;
        match result {
            Ok(outcome) => {
                log.attempts += u64::from(outcome.attempts);
                log.conflicts += u64::from(outcome.attempts.saturating_sub(1));
                log.lock_wait += outcome.lock_wait;
                log.acks.push(Ack {
                    journey: op.journey,
                    target: op.target,
                    status: op.change.target_status(),
                    version: outcome.version.get(),
                    changed: outcome.changed,
                });
            }
            Err(e) => {
                log.attempts += u64::from(e.attempts);
                if e.kind == "conflict" {
                    log.conflicts += u64::from(e.attempts);
                }
                tracing::debug!(kind = %e.kind, message = %e.message, "update refused");
                *log.errors.entry(e.kind).or_default() += 1;
            }
        }
        progress.inc(1);
    }
    Ok(log)
}

fn histogram() -> Result<Histogram<u64>, LabError> {
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 3).map_err(|e| LabError::Task(e.to_string()))
}

/// A progress bar on stderr for runs long enough to want one; hidden when stderr is not a
/// terminal (CI, pipes).
fn progress_bar(params: &Params) -> ProgressBar {
    let long =
        params.duration.is_some_and(|d| d >= Duration::from_secs(2)) || params.updates >= 2_000;
    if !long {
        return ProgressBar::hidden();
    }
    let bar = match params.duration {
        Some(_) => ProgressBar::new_spinner(),
        None => ProgressBar::new(params.updates as u64),
    };
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:40}] {pos}/{len} updates")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
