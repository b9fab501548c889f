//! The lab: runs strategies side by side on the same Redis and measures what each one loses.
//!
//! A run creates a fresh journey per strategy (ids prefixed `LAB-`, so a shared Redis is never
//! disturbed), releases its writers together with a barrier, then reads the final state and
//! counts every acknowledged change that is missing from it: a lost update.

pub mod report;

use std::sync::Arc;
use std::time::{Duration, Instant};

use flyrtech_core::{
    InvalidInput, Journey, JourneyId, JourneyStatus, JourneyStore, JourneyVersion, Money, Segment,
    SegmentId, SegmentStatus, StoreError,
};
use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy};
use tokio::sync::Barrier;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scenario {
    /// The original test: one journey, one writer per segment, all at once, with processing.
    Incident,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Self; 1] = [Self::Incident];

    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incident => "incident",
        }
    }
}

impl std::str::FromStr for Scenario {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s)
            .ok_or_else(|| {
                let valid: Vec<_> = Self::ALL.iter().map(|sc| sc.name()).collect();
                format!(
                    "unknown scenario {s:?}; valid scenarios: {}",
                    valid.join(", ")
                )
            })
    }
}

/// Knobs of one run.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Concurrent writers.
    pub writers: usize,
    /// Service instances the writers are spread over, each with its own connections.
    pub instances: usize,
    /// Processing between read and write.
    pub processing_delay: Duration,
}

/// What one strategy did in one run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub strategy: Strategy,
    pub scenario: Scenario,
    pub params: Params,
    /// Updates sent.
    pub attempted: usize,
    /// Updates the store acknowledged as applied.
    pub acknowledged: usize,
    /// Updates the store refused or failed, by error message.
    pub rejected: usize,
    /// Acknowledged updates missing from the final state.
    pub lost: usize,
    pub elapsed: Duration,
    /// Tries summed over all updates (1 per update when nothing collided).
    pub attempts: u64,
    /// Redis round trips summed over all instances.
    pub round_trips: u64,
}

/// Runs `scenario` for `strategy` against the Redis at `url`.
///
/// # Errors
/// [`StoreError`] when Redis cannot be reached or the scenario's journey cannot be created.
pub async fn run(
    url: &str,
    strategy: Strategy,
    scenario: Scenario,
    params: Params,
) -> Result<RunReport, StoreError> {
    match scenario {
        Scenario::Incident => incident(url, strategy, params).await,
    }
}

async fn instances(
    url: &str,
    strategy: Strategy,
    params: Params,
) -> Result<Vec<(Redis, Arc<RedisJourneyStore>)>, StoreError> {
    let config = StoreConfig {
        processing_delay: params.processing_delay,
        ..StoreConfig::new(strategy)
    };
    let mut out = Vec::with_capacity(params.instances);
    for _ in 0..params.instances.max(1) {
        let redis = Redis::connect(&RedisSettings::new(url)).await?;
        let store = RedisJourneyStore::new(redis.clone(), &config).await?;
        out.push((redis, Arc::new(store)));
    }
    Ok(out)
}

async fn incident(url: &str, strategy: Strategy, params: Params) -> Result<RunReport, StoreError> {
    let instances = instances(url, strategy, params).await?;
    let id = lab_journey_id(strategy)?;
    instances[0]
        .1
        .create(&synthetic_journey(&id, params.writers)?)
        .await?;
    let barrier = Arc::new(Barrier::new(params.writers));
    let started = Instant::now();
    let tasks: Vec<_> = (0..params.writers)
        .map(|i| {
            let store = Arc::clone(&instances[i % instances.len()].1);
            let (barrier, id) = (Arc::clone(&barrier), id.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let segment = synthetic_segment_id(i)?;
                store
                    .update_segment_status(&id, &segment, SegmentStatus::Departed, None)
                    .await
            })
        })
        .collect();
    let (mut acknowledged, mut rejected, mut attempts) = (0, 0, 0);
    for task in tasks {
        match task.await {
            Ok(Ok(outcome)) => {
                acknowledged += usize::from(outcome.changed);
                attempts += u64::from(outcome.attempts);
            }
            Ok(Err(error)) => {
                tracing::warn!(%strategy, %error, "update failed");
                rejected += 1;
            }
            Err(join) => return Err(StoreError::unavailable("a writer task failed", join)),
        }
    }
    let elapsed = started.elapsed();
    let state = instances[0].1.get(&id).await?;
    let lost = acknowledged.saturating_sub(
        state
            .segments
            .iter()
            .filter(|s| s.status == SegmentStatus::Departed)
            .count(),
    );
    Ok(RunReport {
        strategy,
        scenario: Scenario::Incident,
        params,
        attempted: params.writers,
        acknowledged,
        rejected,
        lost,
        elapsed,
        attempts,
        round_trips: instances.iter().map(|(r, _)| r.round_trips()).sum(),
    })
}

/// The id of segment `i` of a [`synthetic_journey`]: `SEG-0000`, `SEG-0001`, ...
///
/// # Errors
/// Never for realistic `i`; [`InvalidInput`] past the id length limit.
pub fn synthetic_segment_id(i: usize) -> Result<SegmentId, InvalidInput> {
    SegmentId::parse(format!("SEG-{i:04}"))
}

fn lab_journey_id(strategy: Strategy) -> Result<JourneyId, StoreError> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    Ok(JourneyId::parse(format!("LAB-{strategy}-{nanos}"))?)
}

/// A confirmed journey with `segments` scheduled segments, used by the lab and the test suite.
///
/// # Errors
/// [`InvalidInput`] when `segments` is so large that the total price exceeds [`Money`]'s bound.
pub fn synthetic_journey(id: &JourneyId, segments: usize) -> Result<Journey, InvalidInput> {
    let departure = chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(20_437);
    let price = Money::from_cents(10_000)?;
    Ok(Journey {
        id: id.clone(),
        passenger_name: "Lab Passenger".into(),
        passenger_email: "lab@flyrtech.example".into(),
        booking_date: departure - chrono::Duration::days(14),
        status: JourneyStatus::Confirmed,
        total_price: Money::from_cents(
            i64::try_from(segments)
                .unwrap_or(i64::MAX)
                .saturating_mul(10_000),
        )?,
        segments: (0..segments)
            .map(|i| {
                Ok(Segment {
                    segment_id: synthetic_segment_id(i)?,
                    origin: "MAD".into(),
                    destination: "BCN".into(),
                    departure_time: departure,
                    arrival_time: departure + chrono::Duration::minutes(90),
                    flight_number: format!("FT{i:04}"),
                    carrier: "FlyrTech Air".into(),
                    status: SegmentStatus::Scheduled,
                    price,
                })
            })
            .collect::<Result<_, InvalidInput>>()?,
        metadata: Default::default(),
        version: JourneyVersion::INITIAL,
    })
}
