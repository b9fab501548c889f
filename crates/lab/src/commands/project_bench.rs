//! `flyrtech-lab project-bench`: the events' way out measured: end-to-end lag (commit to
//! projection) under the spread scenario, and the drain of a backlog into JetStream and
//! PostgreSQL, on private nats-server and PostgreSQL unless URLs are given. The relay and the
//! projectors are the service's own processes (`flyrtech relay`, `flyrtech project`, found beside
//! this binary or named by `--service-bin`), as an operator runs them; the lab writes the load
//! and reads the lag from what the projection recorded (`status_history`: `projected_at` less
//! `occurred_at`, every projected event).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use flyrtech_infrastructure::events::nats::{JetStream, StreamSettings};
use flyrtech_infrastructure::events::relay::RelayStats;
use flyrtech_infrastructure::projection::{self, ProjectorSettings};
use flyrtech_infrastructure::{LocalNats, LocalPostgres, Redis};
use serde::Serialize;

use super::{DONE, connect, emit, shutdown_signal};
use crate::process::Process;
use flyrtech_cli::config::Settings;

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
    /// Projectors sharing the stream's partitions in both measurements (each a `flyrtech
    /// project` process).
    #[arg(long, default_value_t = 1)]
    pub projectors: usize,
    /// The service's binary, which runs the relay and the projectors [default: `flyrtech`
    /// beside this binary].
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
}

/// The longest one phase (the relay's drain, the projectors' catching up) may take before the
/// measurement gives up.
const PHASE_BOUND: Duration = Duration::from_secs(3600);

/// What `flyrtech-lab project-bench` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ProjectBenchReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::compare::report::Machine,
    /// End-to-end lag, from the change's occurred-at (taken just before its commit) to the
    /// start of the transaction that projected it (`status_history.projected_at`), under the
    /// spread scenario with the relay and the projectors running.
    pub lag: Lag,
    /// The backlog: published into JetStream by one relay process, then projected by the
    /// projector processes.
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
    let service = Service {
        bin: super::service_binary(args.service_bin.as_deref())?,
        dir: tempfile::tempdir()?,
        redis_url: url.to_owned(),
        bus: bus_url,
        postgres: pg_url,
    };
    let lag = measure_lag(
        &service,
        &redis,
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
    let drain = measure_drain(args, &service, &redis).await?;
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

/// The deployment the service's processes run against, and where their logs go.
struct Service {
    bin: PathBuf,
    dir: tempfile::TempDir,
    redis_url: String,
    bus: String,
    postgres: String,
}

impl Service {
    /// `flyrtech relay` into JetStream, polling every 5 ms; `extra` are more of its options.
    fn relay(&self, extra: &[&str]) -> anyhow::Result<Process> {
        let mut line = vec!["relay", "--bus", &self.bus, "--poll-ms", "5"];
        line.extend_from_slice(extra);
        Process::spawn(&self.bin, "relay", &line, &self.redis_url, self.dir.path())
    }

    /// `count` `flyrtech project` processes sharing the stream's partitions.
    fn projectors(&self, count: usize, extra: &[&str]) -> anyhow::Result<Vec<Process>> {
        (0..count)
            .map(|n| {
                let mut line = vec!["project", "--bus", &self.bus, "--postgres", &self.postgres];
                line.extend_from_slice(extra);
                let name = format!("project-{n}");
                Process::spawn(&self.bin, &name, &line, &self.redis_url, self.dir.path())
            })
            .collect()
    }

    fn logs(&self) -> &Path {
        self.dir.path()
    }
}

/// Whether every partition's durable consumer has delivered everything on the stream and seen
/// it acknowledged (`None` while a consumer does not exist yet).
async fn caught_up(bus: &JetStream) -> anyhow::Result<Option<bool>> {
    let consumer = ProjectorSettings::default().consumer;
    for partition in 0..bus.partitions() {
        let name = format!("{consumer}-p{partition}");
        let Ok(info) = bus.stream().consumer_info(&name).await else {
            return Ok(None);
        };
        if info.num_pending != 0 || info.num_ack_pending != 0 {
            return Ok(Some(false));
        }
    }
    Ok(Some(true))
}

/// Polls `done` every `every` until it holds, with every process still running, for at most
/// `bound`. Asking JetStream for its consumers' state is not free: polled every few
/// milliseconds, it took a core from nats-server and slowed the projectors it was waiting for.
async fn until<F>(
    what: &str,
    processes: &mut [Process],
    (every, bound): (Duration, Duration),
    mut done: impl FnMut() -> F,
) -> anyhow::Result<()>
where
    F: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + bound;
    loop {
        if done().await? {
            return Ok(());
        }
        for process in processes.iter_mut() {
            process.check()?;
        }
        anyhow::ensure!(Instant::now() < deadline, "{what} after {bound:?}");
        tokio::time::sleep(every).await;
    }
}

/// The spread scenario (hash, 50 writers, 10,000 journeys) for `window`, with the relay into
/// JetStream and the projectors into PostgreSQL running beside it; every projected event's lag,
/// read from the projection once it has caught up.
async fn measure_lag(
    service: &Service,
    redis: &Redis,
    window: Duration,
    writers: Option<usize>,
    projectors: usize,
) -> anyhow::Result<Lag> {
    use crate::compare::{Driver, Knobs, Scenario};
    let strategy = flyrtech_infrastructure::Strategy::Hash;
    let bus = JetStream::connect(&service.bus, StreamSettings::default()).await?;
    let mut processes = vec![service.relay(&[])?];
    processes.extend(service.projectors(projectors, &[])?);
    // The projectors have joined once every partition has its consumer.
    let joined = || async { Ok(caught_up(&bus).await?.is_some()) };
    let join_bound = (Duration::from_millis(100), Duration::from_secs(60));
    until(
        "no consumer for every partition",
        &mut processes,
        join_bound,
        joined,
    )
    .await?;
    let since = chrono::Utc::now();
    let config = flyrtech_infrastructure::StoreConfig {
        index: crate::compare::LAB_INDEX.to_owned(),
        ..flyrtech_infrastructure::StoreConfig::new(strategy)
    };
    let driver = std::sync::Arc::new(Driver::library(&service.redis_url, &config, 2).await?);
    let knobs = Knobs {
        duration: Some(window),
        writers,
        ..Knobs::default()
    };
    let params = Scenario::Spread.plan(&knobs).remove(0);
    let report = crate::compare::run(&driver, Scenario::Spread, params).await?;
    // Everything the writers committed is on the bus once the outbox is empty, and projected
    // once every consumer has had all of it acknowledged.
    let published = || async {
        Ok(flyrtech_infrastructure::events::backlog::depth(redis)
            .await?
            .entries
            == 0)
    };
    let poll = (Duration::from_millis(100), PHASE_BOUND);
    until("the outbox is not empty", &mut processes, poll, published).await?;
    let projected = || async { Ok(caught_up(&bus).await? == Some(true)) };
    let poll = (Duration::from_millis(500), PHASE_BOUND);
    until("the projection is behind", &mut processes, poll, projected).await?;
    drop(processes);
    let client = projection::connect(&service.postgres).await?;
    let lags = "SELECT (extract(epoch FROM projected_at - occurred_at) * 1000)::float8 AS lag, \
                projected_at FROM status_history WHERE projected_at >= $1";
    let totals = client
        .query_one(
            &format!(
                "SELECT count(*)::bigint, \
                 COALESCE(percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), 0), \
                 COALESCE(percentile_cont(0.99) WITHIN GROUP (ORDER BY lag), 0), \
                 COALESCE(max(lag), 0) FROM ({lags}) t"
            ),
            &[&since],
        )
        .await?;
    let slots = client
        .query(
            &format!(
                "SELECT floor(extract(epoch FROM projected_at - $1) / 10)::bigint AS slot, \
                 percentile_cont(0.99) WITHIN GROUP (ORDER BY lag) \
                 FROM ({lags}) t GROUP BY slot ORDER BY slot"
            ),
            &[&since],
        )
        .await?;
    Ok(Lag {
        projectors,
        p99_ms_by_10s: slots.iter().map(|row| row.get::<_, f64>(1)).collect(),
        strategy: strategy.name().into(),
        writers: report.params.writers,
        updates: report.acknowledged as u64,
        updates_per_second: report.throughput,
        projected: u64::try_from(totals.get::<_, i64>(0)).unwrap_or(0),
        p50_ms: totals.get(1),
        p99_ms: totals.get(2),
        max_ms: totals.get(3),
    })
}

/// `entries` outbox entries published into JetStream by `flyrtech relay --drain`, then projected
/// by the projectors with `--drain`, each phase timed from the processes' start to their exit.
async fn measure_drain(
    args: &ProjectBenchArgs,
    service: &Service,
    redis: &Redis,
) -> anyhow::Result<Drain> {
    let nonce = format!(
        "{:06x}",
        rand::RngExt::random::<u32>(&mut rand::rng()) & 0xff_ffff
    );
    let fill = Instant::now();
    super::backlog::fill_outbox(redis, args.entries, args.journeys, &nonce).await?;
    let fill_seconds = fill.elapsed().as_secs_f64();
    let report = service.logs().join("relay.json");
    let report_arg = report.display().to_string();
    let publish = Instant::now();
    service
        .relay(&["--drain", "--json", &report_arg])?
        .finish(PHASE_BOUND)
        .await?;
    let publish_seconds = publish.elapsed().as_secs_f64();
    let published = serde_json::from_slice::<RelayStats>(&std::fs::read(&report)?)?.published;
    tracing::info!(published, publish_seconds, "backlog published; projecting");
    let project = Instant::now();
    for projector in service.projectors(args.projectors, &["--drain"])? {
        projector.finish(PHASE_BOUND).await?;
    }
    let project_seconds = project.elapsed().as_secs_f64();
    let partitions = JetStream::connect(&service.bus, StreamSettings::default())
        .await?
        .partitions();
    let client = projection::connect(&service.postgres).await?;
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
