//! `flyrtech-lab project-bench`: the events' way out measured: end-to-end lag (commit to
//! projection) under the spread scenario, and the drain of a backlog into JetStream and
//! PostgreSQL, on private nats-server and PostgreSQL unless URLs are given.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use flyrtech_infrastructure::events::nats::{JetStream, JetStreamPublisher, StreamSettings};
use flyrtech_infrastructure::events::publisher::Bus;
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings};
use flyrtech_infrastructure::projection::{self, ProjectorSettings};
use flyrtech_infrastructure::{LocalNats, LocalPostgres, Redis};
use hdrhistogram::Histogram;
use serde::Serialize;

use super::{DONE, connect, emit, shutdown_signal};
use flyrtech_cli::config::Settings;
use flyrtech_infrastructure::projection::PartitionedProjector;

/// Runs `flyrtech-lab project-bench` and prints (and with `--json` writes) its report.
///
/// # Errors
/// A server unreachable, or interrupted.
pub async fn run(args: &ProjectBenchArgs, settings: Settings) -> anyhow::Result<i32> {
    let (deployment, redis) = connect(&settings, "project-bench").await?;
    let report = tokio::select! {
        report = bench(args, &deployment.url, redis) => report?,
        () = shutdown_signal() => anyhow::bail!("interrupted"),
    };
    emit(&report, args.json.as_deref())?;
    Ok(DONE)
}

/// Options of `flyrtech-lab project-bench`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct ProjectBenchArgs {
    /// Outbox entries in the backlog drained into JetStream and then PostgreSQL.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Journeys the backlog is spread over.
    #[arg(long, default_value_t = 10_000)]
    pub journeys: usize,
    /// How long the lag is measured under the spread scenario, in seconds.
    #[arg(long, default_value_t = 5.0)]
    pub lag_secs: f64,
    /// Writers of the spread scenario while the lag is measured [default: the scenario's 50].
    #[arg(long)]
    pub lag_writers: Option<usize>,
    /// A running JetStream server [default: a private nats-server -js].
    #[arg(long)]
    pub bus: Option<String>,
    /// A running PostgreSQL [default: a private one, initdb in a temporary directory].
    #[arg(long)]
    pub postgres: Option<String>,
    /// Write the JSON report here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Projectors sharing the stream's partitions in both measurements (each with its own
    /// PostgreSQL session, in this process).
    #[arg(long, default_value_t = 1)]
    pub projectors: usize,
}

/// What `flyrtech-lab project-bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectBenchReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::compare::report::Machine,
    /// End-to-end lag, from the change's occurred-at (taken just before its commit) to the
    /// commit of its projection, under the spread scenario with the relay and the projector
    /// running.
    pub lag: Lag,
    /// The backlog: published into JetStream by one relay, then projected by one projector.
    pub drain: Drain,
}

/// Lag percentiles, milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Lag {
    pub strategy: String,
    pub writers: usize,
    pub updates: u64,
    pub updates_per_second: f64,
    pub projected: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Projectors sharing the partitions.
    pub projectors: usize,
    /// The p99 of the changes projected in each 10 s of the run (by when they were applied):
    /// flat when the projection keeps up, rising when it falls behind.
    pub p99_ms_by_10s: Vec<f64>,
}

/// The backlog's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Drain {
    pub entries: usize,
    pub journeys: usize,
    pub fill_seconds: f64,
    pub publish_seconds: f64,
    pub publish_rate_per_second: f64,
    pub project_seconds: f64,
    pub project_rate_per_second: f64,
    /// Sum of the journeys' projected positions: `entries` when every change was applied once.
    pub projected_versions: i64,
    /// Projectors sharing the partitions.
    pub projectors: usize,
    /// The stream's partition count.
    pub partitions: u32,
}

/// Runs both measurements on private servers unless URLs are given.
///
/// # Errors
/// A server cannot be started or fails.
pub async fn bench(
    args: &ProjectBenchArgs,
    url: &str,
    redis: Redis,
) -> anyhow::Result<ProjectBenchReport> {
    if args.entries == 0
        || args.journeys == 0
        || args.projectors == 0
        || !args.lag_secs.is_finite()
        || args.lag_secs <= 0.0
    {
        anyhow::bail!("--entries, --journeys, --projectors and --lag-secs must be positive");
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    let nats = match &args.bus {
        Some(_) => None,
        None => Some(LocalNats::start()?),
    };
    let postgres = match &args.postgres {
        Some(_) => None,
        None => Some(LocalPostgres::start()?),
    };
    let bus_url = args
        .bus
        .clone()
        .or_else(|| nats.as_ref().map(LocalNats::url))
        .unwrap_or_default();
    let pg_url = args
        .postgres
        .clone()
        .or_else(|| postgres.as_ref().map(LocalPostgres::url))
        .unwrap_or_default();
    let lag = measure_lag(
        url,
        &redis,
        &bus_url,
        &pg_url,
        Duration::from_secs_f64(args.lag_secs),
        args.lag_writers,
        args.projectors,
    )
    .await?;
    tracing::info!(
        p50_ms = lag.p50_ms,
        p99_ms = lag.p99_ms,
        "lag measured; filling the backlog"
    );
    let drain = measure_drain(args, &redis, &bus_url, &pg_url).await?;
    Ok(ProjectBenchReport {
        schema_version: 1,
        command: crate::compare::report::command_line(),
        started_at,
        machine: crate::compare::report::Machine::detect(
            crate::compare::redis_version_of(&redis).await,
        ),
        lag,
        drain,
    })
}

fn relay_settings() -> RelaySettings {
    RelaySettings {
        poll_interval: Duration::from_millis(5),
        ..RelaySettings::new()
    }
}

async fn jetstream_relay(redis: &Redis, bus_url: &str) -> anyhow::Result<Relay<Bus>> {
    let bus = Bus::JetStream(Box::new(JetStreamPublisher::new(
        JetStream::connect(bus_url, StreamSettings::default()).await?,
    )));
    Ok(Relay::new(redis.clone(), bus, relay_settings()).await?)
}

/// The spread scenario (hash, 50 writers, 10,000 journeys) for `window`, with a relay into
/// JetStream and a projector into PostgreSQL running beside it; every applied change's lag.
async fn measure_lag(
    url: &str,
    redis: &Redis,
    bus_url: &str,
    pg_url: &str,
    window: Duration,
    writers: Option<usize>,
    projectors: usize,
) -> anyhow::Result<Lag> {
    use crate::compare::{Driver, Knobs, Scenario};
    let strategy = flyrtech_infrastructure::Strategy::Hash;
    let relay = jetstream_relay(redis, bus_url).await?;
    let group = join(projectors, bus_url, pg_url).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // The relay and the projector run beside the writers, in this task (the writers are tasks
    // of their own); the relay drains what is left once the writers are done, then both stop.
    let relay_runs = {
        let mut stop = stop_rx.clone();
        relay.run(async move {
            let _ = stop.wait_for(|s| *s).await;
        })
    };
    let projector_runs = run_group(group, stop_rx, Instant::now());
    let config = flyrtech_infrastructure::StoreConfig {
        index: crate::compare::LAB_INDEX.to_owned(),
        ..flyrtech_infrastructure::StoreConfig::new(strategy)
    };
    let driver = std::sync::Arc::new(Driver::library(url, &config, 2).await?);
    let knobs = Knobs {
        duration: Some(window),
        writers,
        ..Knobs::default()
    };
    let params = Scenario::Spread.plan(&knobs).remove(0);
    let writers = async {
        let report = crate::compare::run(&driver, Scenario::Spread, params).await;
        // Everything the writers committed is on the bus once the outbox is empty.
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline
            && flyrtech_infrastructure::events::backlog::depth(redis)
                .await
                .is_ok_and(|d| d.entries > 0)
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = stop_tx.send(true);
        report
    };
    let (_, lags, report) = tokio::join!(relay_runs, projector_runs, writers);
    let (slots, report) = (lags?, report?);
    let mut lags = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for slot in &slots {
        lags.add(slot)?;
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(Lag {
        projectors,
        p99_ms_by_10s: slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(|s| ms(s.value_at_quantile(0.99)))
            .collect(),
        strategy: strategy.name().into(),
        writers: report.params.writers,
        updates: report.acknowledged as u64,
        updates_per_second: report.throughput,
        projected: lags.len(),
        p50_ms: ms(lags.value_at_quantile(0.5)),
        p99_ms: ms(lags.value_at_quantile(0.99)),
        max_ms: ms(lags.max()),
    })
}

/// `entries` outbox entries relayed into JetStream, then projected into PostgreSQL.
async fn measure_drain(
    args: &ProjectBenchArgs,
    redis: &Redis,
    bus_url: &str,
    pg_url: &str,
) -> anyhow::Result<Drain> {
    let nonce = format!(
        "{:06x}",
        rand::RngExt::random::<u32>(&mut rand::rng()) & 0xff_ffff
    );
    let fill = Instant::now();
    super::backlog::fill_outbox(redis, args.entries, args.journeys, &nonce).await?;
    let fill_seconds = fill.elapsed().as_secs_f64();
    let relay = jetstream_relay(redis, bus_url).await?;
    let publish = Instant::now();
    let published = relay.drain().await?.published;
    let publish_seconds = publish.elapsed().as_secs_f64();
    tracing::info!(published, publish_seconds, "backlog published; projecting");
    let group = join(args.projectors, bus_url, pg_url).await?;
    let partitions = JetStream::connect(bus_url, StreamSettings::default())
        .await?
        .partitions();
    let project = Instant::now();
    // Nothing more is coming: every projector stops once every partition is caught up.
    let (_done, stop) = tokio::sync::watch::channel(true);
    run_group(group, stop, project).await?;
    let project_seconds = project.elapsed().as_secs_f64();
    let client = projection::connect(pg_url).await?;
    let prefix = format!("BACKLOG-{nonce}-%");
    let projected_versions: i64 = client
        .query_one(
            "SELECT COALESCE(sum(last_version), 0)::bigint FROM journey_positions WHERE journey_id LIKE $1",
            &[&prefix],
        )
        .await?
        .get(0);
    let rate = |n: usize, s: f64| n as f64 / s.max(1e-9);
    Ok(Drain {
        entries: args.entries,
        journeys: args.journeys,
        fill_seconds,
        publish_seconds,
        publish_rate_per_second: rate(usize::try_from(published).unwrap_or(0), publish_seconds),
        project_seconds,
        project_rate_per_second: rate(args.entries, project_seconds),
        projected_versions,
        projectors: args.projectors,
        partitions,
    })
}

/// `count` projectors joining the stream's projectors, each with its own PostgreSQL session.
async fn join(
    count: usize,
    bus_url: &str,
    pg_url: &str,
) -> anyhow::Result<Vec<PartitionedProjector>> {
    let mut group = Vec::with_capacity(count);
    for _ in 0..count {
        let bus = JetStream::connect(bus_url, StreamSettings::default()).await?;
        let client = projection::connect(pg_url).await?;
        group.push(PartitionedProjector::join(&bus, client, ProjectorSettings::default()).await?);
    }
    Ok(group)
}

/// Runs `group` side by side until `stop` is true and every partition is caught up; the lag
/// of every change applied, in one histogram per 10 s since `since`.
async fn run_group(
    group: Vec<PartitionedProjector>,
    stop: tokio::sync::watch::Receiver<bool>,
    since: Instant,
) -> anyhow::Result<Vec<Histogram<u64>>> {
    const SLOT: Duration = Duration::from_secs(10);
    let runs = group.into_iter().map(|mut projector| {
        let stop = stop.clone();
        async move {
            let mut slots: Vec<Histogram<u64>> = Vec::new();
            loop {
                let applied = projector.step().await?;
                let now = chrono::Utc::now();
                let slot = usize::try_from(since.elapsed().as_secs() / SLOT.as_secs())
                    .unwrap_or(usize::MAX);
                while slots.len() <= slot {
                    slots.push(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?);
                }
                for at in applied.occurred_at {
                    let us = (now - at).num_microseconds().unwrap_or(i64::MAX).max(1);
                    slots[slot].saturating_record(u64::try_from(us).unwrap_or(u64::MAX));
                }
                if *stop.borrow() && applied.stats.received == 0 && projector.caught_up().await? {
                    return anyhow::Ok(slots);
                }
            }
        }
    });
    let mut merged: Vec<Histogram<u64>> = Vec::new();
    for slots in futures::future::try_join_all(runs).await? {
        for (n, slot) in slots.iter().enumerate() {
            while merged.len() <= n {
                merged.push(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?);
            }
            merged[n].add(slot)?;
        }
    }
    Ok(merged)
}
