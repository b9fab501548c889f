//! The lab: runs strategies side by side on the same Redis and measures what each one loses
//! and what it costs.
//!
//! A run creates fresh journeys (ids `LAB-<scenario>-<strategy>-<nonce>-<n>`, so a shared Redis
//! is never disturbed), releases its writers together behind a barrier, records every
//! acknowledged write with the version the store reported, then reads the final state and
//! checks it against every acknowledged write ([`verify`]): an acknowledged change missing from
//! the state is a lost update.
//!
//! # Layout
//! - this module: scenarios, their parameters, and [`run`].
//! - [`driver`]: where updates go: the library (one store per simulated service instance) or
//!   running `flyrtech serve` instances over HTTP.
//! - [`workload`]: the writers, the operations they send, and the measurements (HDR histogram).
//! - [`verify`]: lost updates and last-writer checks against the final state.
//! - [`ceiling`]: redis-benchmark on the same server, same concurrency, same commands.
//! - [`report`]: the terminal table, the JSON report (schema in docs/lab.md), the targets.
//! - [`chart`]: throughput and p99 against writers and document size, SVG and PNG.

pub mod audit;
pub mod ceiling;
pub mod chart;
pub mod collision;
pub mod driver;
pub mod html;
pub mod report;
pub mod verify;
pub mod workload;

use std::time::Duration;

use flyrtech_core::{
    InvalidInput, Journey, JourneyId, JourneyStatus, JourneyVersion, Money, Segment, SegmentId,
    SegmentStatus, StoreError,
};
use serde::Serialize;

pub use driver::Driver;
pub use report::RunReport;

/// A named workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Scenario {
    /// The original test: one journey with 20 segments, 20 writers each setting its own
    /// segment, 10 ms of processing.
    Incident,
    /// One journey, many writers, no processing delay: pure contention.
    HotJourney,
    /// Many journeys (10,000), uniform writers: throughput without contention.
    Spread,
    /// Segment and journey status updates interleaved on 100 journeys.
    Mixed,
    /// Many writers on one segment: conflicts, retries, last-writer semantics.
    SameSegment,
    /// Sweeps over writers (1 to 256) and document size (2, 20, 200 segments).
    Scaling,
    /// The probability model of ANALYSIS.md measured: N writers arriving at random over a
    /// 100 ms period, each with a read-to-write window w, repeated; reports the model's
    /// prediction next to the measured loss.
    Collision,
}

impl Scenario {
    /// Every scenario, in the order `all` runs them.
    pub const ALL: [Self; 7] = [
        Self::Incident,
        Self::HotJourney,
        Self::Spread,
        Self::Mixed,
        Self::SameSegment,
        Self::Scaling,
        Self::Collision,
    ];

    /// The name used on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Incident => "incident",
            Self::HotJourney => "hot-journey",
            Self::Spread => "spread",
            Self::Mixed => "mixed",
            Self::SameSegment => "same-segment",
            Self::Scaling => "scaling",
            Self::Collision => "collision",
        }
    }

    /// What the scenario does, in a sentence (the reports' words).
    pub fn describe(self) -> &'static str {
        match self {
            Self::Incident => {
                "The original test: one journey of 20 segments, 20 writers each setting its own \
                 segment at once, 10 ms of processing between read and write."
            }
            Self::HotJourney => "One journey, many writers, no processing delay: pure contention.",
            Self::Spread => {
                "Writers spread uniformly over 10,000 journeys: throughput without contention."
            }
            Self::Mixed => "Segment and journey status updates interleaved on 100 journeys.",
            Self::SameSegment => {
                "Many writers on one segment: conflicts, retries, last-writer semantics."
            }
            Self::Scaling => {
                "Sweeps over writers (1 to 256) and document size (2, 20, 200 segments)."
            }
            Self::Collision => {
                "Writers arriving at random over 100 ms, each with a read-to-write window, \
                 repeated: the probability model's prediction beside the measured loss."
            }
        }
    }

    /// The runs this scenario consists of, with `knobs` overriding the defaults.
    pub fn plan(self, knobs: &Knobs) -> Vec<Params> {
        // A throughput measurement runs for a fixed time (`timed`), long enough for the fastest
        // strategy; --updates or --duration-secs override.
        let base =
            |writers, journeys, segments, updates, timed: Option<u64>, delay_ms, pattern| Params {
                writers: knobs.writers.unwrap_or(writers),
                instances: knobs.instances.unwrap_or(2),
                journeys: knobs.journeys.unwrap_or(journeys),
                segments: knobs.segments.unwrap_or(segments),
                updates: knobs.updates.unwrap_or(updates),
                duration: knobs.duration.or_else(|| {
                    timed
                        .filter(|_| knobs.updates.is_none())
                        .map(Duration::from_secs)
                }),
                processing_delay: knobs
                    .processing_delay
                    .unwrap_or(Duration::from_millis(delay_ms)),
                pattern,
                seed: knobs.seed,
                arrival_window: knobs.arrival_window,
                repeats: knobs.repeats.unwrap_or(1).max(1),
            };
        match self {
            Self::Incident => {
                let mut p = base(20, 1, 20, 20, None, 10, Pattern::OwnSegment);
                // One writer per segment, one update each, whatever was overridden.
                p.segments = knobs.segments.unwrap_or(p.writers);
                p.updates = p.segments;
                p.journeys = 1;
                p.duration = None;
                vec![p]
            }
            Self::HotJourney => vec![base(32, 1, 20, 2_000, None, 0, Pattern::Random)],
            Self::Spread => vec![base(50, 10_000, 20, 20_000, Some(3), 0, Pattern::Random)],
            Self::Mixed => vec![base(32, 100, 20, 5_000, None, 0, Pattern::Mixed)],
            Self::SameSegment => vec![base(32, 1, 20, 2_000, None, 0, Pattern::SameSegment)],
            Self::Scaling => {
                let point = |writers, segments| Params {
                    writers,
                    segments,
                    ..base(writers, 1_000, segments, 5_000, Some(1), 0, Pattern::Random)
                };
                let mut plan: Vec<Params> = SCALING_WRITERS
                    .iter()
                    .map(|&w| point(w, SCALING_FIXED_SEGMENTS))
                    .collect();
                plan.extend(
                    SCALING_SEGMENTS
                        .iter()
                        .map(|&s| point(SCALING_FIXED_WRITERS, s)),
                );
                plan
            }
            Self::Collision => {
                let mut plan = Vec::new();
                let writers = knobs
                    .writers
                    .map_or(COLLISION_WRITERS.to_vec(), |w| vec![w]);
                let windows = knobs.processing_delay.map_or_else(
                    || COLLISION_WINDOWS_MS.map(Duration::from_millis).to_vec(),
                    |d| vec![d],
                );
                for &n in &writers {
                    for &window in &windows {
                        let mut p = base(n, 1, n, n, None, 0, Pattern::OwnSegment);
                        p.writers = n;
                        p.segments = n;
                        p.updates = n;
                        p.journeys = 1;
                        p.duration = None;
                        p.processing_delay = window;
                        p.instances = knobs.instances.unwrap_or(1);
                        p.arrival_window = Some(knobs.arrival_window.unwrap_or(COLLISION_PERIOD));
                        p.repeats = knobs.repeats.unwrap_or(COLLISION_REPEATS).max(1);
                        plan.push(p);
                    }
                }
                plan
            }
        }
    }
}

/// Writers of the `collision` grid.
pub const COLLISION_WRITERS: [usize; 5] = [2, 5, 10, 20, 50];
/// Read-to-write windows (processing delays) of the `collision` grid, in milliseconds.
pub const COLLISION_WINDOWS_MS: [u64; 3] = [1, 5, 10];
/// The period over which `collision` writers arrive, uniformly at random.
pub const COLLISION_PERIOD: Duration = Duration::from_millis(100);
/// Repetitions of each `collision` point.
pub const COLLISION_REPEATS: usize = 20;

/// Writers swept by `scaling` (at [`SCALING_FIXED_SEGMENTS`] segments).
pub const SCALING_WRITERS: [usize; 5] = [1, 4, 16, 64, 256];
/// Document sizes swept by `scaling` (at [`SCALING_FIXED_WRITERS`] writers).
pub const SCALING_SEGMENTS: [usize; 3] = [2, 20, 200];
/// Segments per journey while writers are swept.
pub const SCALING_FIXED_SEGMENTS: usize = 20;
/// Writers while document size is swept: 50, the count the scaling target is stated for.
pub const SCALING_FIXED_WRITERS: usize = 50;

impl std::fmt::Display for Scenario {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A scenario name that is not one of [`Scenario::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario {0:?}; valid scenarios: incident, hot-journey, spread, mixed, same-segment, scaling, collision, all"
)]
pub struct UnknownScenario(pub String);

impl std::str::FromStr for Scenario {
    type Err = UnknownScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|sc| sc.name() == s.trim())
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// Which operations writers send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Pattern {
    /// Update `k` sets segment `k` of the one journey to Departed (the incident).
    OwnSegment,
    /// A random journey, a random segment, Scheduled or Delayed at random.
    Random,
    /// As `Random`, but one update in ten sets the journey's own status (InProgress or
    /// Completed at random; the transition table refuses some, which count as rejected).
    Mixed,
    /// Segment 0 of journey 0, Scheduled or Delayed at random.
    SameSegment,
}

/// Command-line overrides of a scenario's defaults; `None` keeps the default.
#[derive(Debug, Clone, Default)]
pub struct Knobs {
    pub writers: Option<usize>,
    pub instances: Option<usize>,
    pub journeys: Option<usize>,
    pub segments: Option<usize>,
    pub updates: Option<usize>,
    pub duration: Option<Duration>,
    pub processing_delay: Option<Duration>,
    pub seed: u64,
    /// Writers start at uniform random offsets within this period after the barrier.
    pub arrival_window: Option<Duration>,
    /// Repetitions of each measurement (fresh journeys each time; results are summed).
    pub repeats: Option<usize>,
}

/// The parameters of one run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Params {
    /// Concurrent writers.
    pub writers: usize,
    /// Service instances the writers are spread over (writer `i` uses instance `i % n`), each
    /// with its own connections and, for local-lock, its own lock table.
    pub instances: usize,
    /// Journeys created for the run.
    pub journeys: usize,
    /// Segments per journey.
    pub segments: usize,
    /// Updates sent in all (ignored when `duration` is set).
    pub updates: usize,
    /// Run for this long instead of a number of updates.
    #[serde(rename = "duration_ms", serialize_with = "report::millis_opt")]
    pub duration: Option<Duration>,
    /// Processing between read and write.
    #[serde(rename = "processing_delay_ms", serialize_with = "report::millis")]
    pub processing_delay: Duration,
    /// Which operations are sent.
    pub pattern: Pattern,
    /// Seed of the writers' random choices.
    pub seed: u64,
    /// Writers start at uniform random offsets within this period (the arrival process of
    /// the collision model); `None`: all at the barrier.
    #[serde(rename = "arrival_window_ms", serialize_with = "report::millis_opt")]
    pub arrival_window: Option<Duration>,
    /// Repetitions summed into this report.
    pub repeats: usize,
}

/// Why a lab run could not complete (lost updates are a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// The store failed outside the measured updates (connect, create, final read).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A running server could not be reached or answered unexpectedly.
    #[error("{url}: {message}")]
    Http {
        /// The request URL.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// redis-benchmark ran but its output could not be used.
    #[error("redis-benchmark: {0}")]
    Benchmark(String),
    /// A report or chart could not be written.
    #[error("cannot write {path}: {message}")]
    Output {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// A writer task panicked or was cancelled.
    #[error("a writer task failed: {0}")]
    Task(String),
    /// Invalid parameters.
    #[error(transparent)]
    Invalid(#[from] InvalidInput),
}

/// Runs one parameter set of `scenario` through `driver` and verifies the result.
///
/// # Errors
/// [`LabError`] when the run cannot be set up, executed or read back.
pub async fn run(
    driver: &std::sync::Arc<Driver>,
    scenario: Scenario,
    params: Params,
) -> Result<RunReport, LabError> {
    run_with(driver, scenario, params, None).await
}

/// [`run`], then, with `audit` and an in-process driver, the outbox drained and the run's
/// journeys audited after each repetition.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    driver: &std::sync::Arc<Driver>,
    scenario: Scenario,
    params: Params,
    audit: Option<&std::path::Path>,
) -> Result<RunReport, LabError> {
    if params.writers == 0 || params.journeys == 0 || params.segments == 0 {
        return Err(InvalidInput::new(
            "lab parameters",
            "writers, journeys and segments must each be at least 1",
        )
        .into());
    }
    let mut total: Option<(workload::Outcome, verify::Check, workload::Journeys)> = None;
    let mut audits: Option<crate::compare::audit::AuditSummary> = None;
    let before = driver.round_trips();
    for repeat in 0..params.repeats.max(1) {
        let ids = workload::create_journeys(driver, scenario, &params).await?;
        let seeded = Params {
            seed: params.seed.wrapping_add(repeat as u64),
            ..params
        };
        let outcome = workload::execute(driver, &ids, &seeded).await?;
        let check = verify::check(driver, &ids, &outcome.acks).await?;
        if let (Some(service), Driver::Library { url, strategy, .. }) = (audit, driver.as_ref()) {
            let found = crate::compare::audit::drain_and_audit(url, *strategy, &ids.ids, service)
                .await
                .map_err(|e| LabError::Task(format!("audit: {e:#}")))?;
            audits = Some(audits.unwrap_or_default() + found);
        }
        total = Some(match total {
            None => (outcome, check, ids),
            Some((mut sum, sum_check, _)) => {
                sum.merge(outcome)?;
                (sum, sum_check + check, ids)
            }
        });
    }
    let round_trips = driver.round_trips().saturating_sub(before);
    let Some((outcome, check, ids)) = total else {
        return Err(LabError::Task("no repetition ran".into()));
    };
    let seconds = outcome.elapsed.as_secs_f64();
    let ceiling_requests = (outcome.acks.len() as f64 / seconds.max(1e-3) * 2.0) as usize;
    let ceiling = ceiling::measure(
        driver.redis_side(),
        scenario,
        &params,
        &ids,
        ceiling_requests,
    )
    .await;
    // As long as the run, within bounds: long enough to be steady, short beside the run.
    let http_window = outcome.elapsed.clamp(HTTP_CEILING_MIN, HTTP_CEILING_MAX);
    let http_ceiling = driver.http_ceiling(params.writers, http_window).await;
    let floor_journey = JourneyId::parse(format!("LAB-floor-{}", rand::random::<u64>()))
        .map_err(|e| LabError::Task(e.to_string()))?;
    let floor = driver
        .floor_ratios(params.writers, HTTP_CEILING_MIN, &floor_journey)
        .await?;
    let mut report = RunReport::new(
        driver.strategy_name(),
        scenario,
        params,
        &outcome,
        check,
        driver.measures_round_trips().then_some(round_trips),
        ceiling,
    );
    report.audit = audits;
    report.floor = floor;
    Ok(report.with_http_ceiling(http_ceiling))
}

/// The id of segment `i` of a [`synthetic_journey`]: `SEG-0000`, `SEG-0001`, ...
///
/// # Errors
/// Never for realistic `i`; [`InvalidInput`] past the id length limit.
pub fn synthetic_segment_id(i: usize) -> Result<SegmentId, InvalidInput> {
    SegmentId::parse(format!("SEG-{i:04}"))
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
        events: flyrtech_core::events::EventRaiser::default(),
    })
}

/// What `flyrtech-lab compare` runs.
#[derive(Debug, Clone)]
pub struct Comparison {
    /// In-process strategies (ignored with `http`).
    pub strategies: Vec<flyrtech_infrastructure::Strategy>,
    /// Scenarios, each expanded by [`Scenario::plan`].
    pub scenarios: Vec<Scenario>,
    /// Overrides of the scenarios' defaults.
    pub knobs: Knobs,
    /// Base URLs of running servers to drive instead of the library.
    pub http: Vec<String>,
    /// The Redis those servers use, when known: their strategy's Redis ceiling is measured
    /// on it.
    pub http_redis: Option<String>,
    /// The floor of the stack on the same Redis (`crates/lab/examples/floor.rs`): after each
    /// run its routes are measured beside the first server's.
    pub http_floor: Option<String>,
    /// After each in-process run, drain the outbox with this service binary's relay and audit
    /// the run's journeys ([`crate::compare::audit::drain_and_audit`]).
    pub audit: Option<std::path::PathBuf>,
    /// Also run every strategy with this replica wait (`--wait-replicas`), right after the run
    /// without it, labelled `STRATEGY +waitN`: the cost of replica-confirmed writes, side by side.
    pub replicas: Option<flyrtech_infrastructure::ReplicaWait>,
}

/// Bounds on how long the HTTP ceiling (`GET /health`) is driven after an HTTP run.
const HTTP_CEILING_MIN: Duration = Duration::from_secs(2);
const HTTP_CEILING_MAX: Duration = Duration::from_secs(10);

/// The set that lists the lab's journeys, apart from the service's `journeys:index`.
pub const LAB_INDEX: &str = "lab:journeys:index";

/// Runs every scenario's plan for every strategy (or once over HTTP), in that order, on the
/// Redis at `url`.
///
/// # Errors
/// The first run that cannot complete.
pub async fn compare(url: &str, comparison: &Comparison) -> Result<Vec<RunReport>, LabError> {
    let http = if comparison.http.is_empty() {
        None
    } else {
        let driver = Driver::http(comparison.http.clone())
            .await?
            .with_floor(comparison.http_floor.clone());
        let driver = match &comparison.http_redis {
            Some(redis_url) => driver.with_redis(redis_url).await?,
            None => driver,
        };
        Some(std::sync::Arc::new(driver))
    };
    let mut reports = Vec::new();
    for &scenario in &comparison.scenarios {
        for params in scenario.plan(&comparison.knobs) {
            if let Some(driver) = &http {
                reports.push(run_with(driver, scenario, params, None).await?);
                continue;
            }
            let waits = std::iter::once(None).chain(comparison.replicas.map(Some));
            let waits: Vec<_> = waits.collect();
            for &strategy in &comparison.strategies {
                for &replicas in &waits {
                    let config = flyrtech_infrastructure::StoreConfig {
                        processing_delay: params.processing_delay,
                        // The lab's journeys stay out of the service's listing and dataset: it
                        // can run beside a served dataset of either layout without touching it.
                        index: LAB_INDEX.to_owned(),
                        replicas,
                        ..flyrtech_infrastructure::StoreConfig::new(strategy)
                    };
                    let driver =
                        std::sync::Arc::new(Driver::library(url, &config, params.instances).await?);
                    tracing::info!(
                        %scenario, %strategy, writers = params.writers, segments = params.segments,
                        journeys = params.journeys, wait_replicas = replicas.map(|r| r.replicas),
                        "running"
                    );
                    let mut report =
                        run_with(&driver, scenario, params, comparison.audit.as_deref()).await?;
                    if let Some(wait) = replicas {
                        let how = match wait.confirmation {
                            flyrtech_infrastructure::Confirmation::Received => "wait",
                            flyrtech_infrastructure::Confirmation::OnDisk => "aof",
                        };
                        report.strategy = format!("{} +{how}{}", report.strategy, wait.replicas);
                    }
                    reports.push(report);
                }
            }
        }
    }
    Ok(reports)
}

/// The server's `redis_version`, for the report.
pub async fn redis_version(url: &str) -> Option<String> {
    let redis =
        flyrtech_infrastructure::Redis::connect(&flyrtech_infrastructure::RedisSettings::new(url))
            .await
            .ok()?;
    redis_version_of(&redis).await
}

/// The `redis_version` of the server behind a handle.
pub async fn redis_version_of(redis: &flyrtech_infrastructure::Redis) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut redis.shared())
        .await
        .ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("redis_version:"))
        .map(|v| v.trim().to_owned())
}
