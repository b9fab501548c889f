//! `flyrtech`: the command line. Parses, wires, and reports errors with their cause chain.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use flyrtech_api::config::{CommonArgs, ServeArgs, ServeSettings, Settings};
use flyrtech_api::commands::migrate::{self as dataset, ImportArgs, MigrateArgs, MigrateBenchArgs};
use flyrtech_api::deployment::{Deployment, Private};
use flyrtech_api::http::{Application, ServeConfig};
use flyrtech_api::lab::report::{self, LabReport, Machine};
use flyrtech_api::lab::{self, Comparison, Knobs, Scenario, chart};
use flyrtech_api::commands::relay::{self as outbox, AuditArgs, BacklogArgs, RelayArgs};
use flyrtech_infrastructure::{
    LockSettings, Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy,
    dataset as stored_dataset,
};
use tracing_subscriber::EnvFilter;

/// glibc's allocator spent a fifth of `serve`'s CPU under load (arena locks, consolidation;
/// measured with perf, docs/results/http.md); mimalloc's thread-local free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "flyrtech",
    version,
    about = "The FlyrTech Journey Service and its concurrency lab"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the journey HTTP API with one strategy (--strategy; default lua).
    Serve(ServeArgs),
    /// Run strategies side by side on the same Redis: lost updates, throughput, latency,
    /// retries, and each strategy's Redis ceiling (docs/lab.md).
    Compare(CompareArgs),
    /// Publish the outbox's events to the bus, at least once and in per-journey order
    /// (docs/outbox/SCHEMA.md). Runs until SIGTERM, or with --drain until the outbox is empty.
    Relay(RelayArgs),
    /// Replay the published events and compare them with the stored journeys: lost updates,
    /// version gaps, unpublished events. Exits with status 1 when it finds any.
    Audit(AuditArgs),
    /// Measure how fast one relay drains a backlog of outbox entries (default 1,000,000).
    Backlog(BacklogArgs),
    /// Move every journey to another layout, online and resumably (docs/migration.md). Exits
    /// with status 3 when some journeys could not be converted (each is listed).
    Migrate(MigrateArgs),
    /// Bring the original .NET service's journeys into this Redis, in the configured
    /// strategy's layout, never overwriting one that exists. Exits with status 3 when some were
    /// skipped (each is listed with the reason).
    ImportLegacy(ImportArgs),
    /// Apply the bus' changes (NATS JetStream, `relay --bus`) to the PostgreSQL projection,
    /// each exactly once and in per-journey order (docs/outbox/SCHEMA.md). Runs until SIGTERM,
    /// or with --drain until every change on the bus is projected.
    Project(flyrtech_api::commands::project::ProjectArgs),
    /// Measure the events' way out: end-to-end lag (commit to projection) under the spread
    /// scenario, and the drain of a backlog (default 1,000,000) into JetStream and PostgreSQL,
    /// on private nats-server and PostgreSQL unless URLs are given.
    ProjectBench(flyrtech_api::commands::project::ProjectBenchArgs),
    /// Measure the migration: create journeys (default 1,000,000) on an empty Redis, move them
    /// to the hash layout and back, and report the rates.
    MigrateBench(MigrateBenchArgs),
}

#[derive(Debug, Args)]
struct CompareArgs {
    /// Comma-separated strategy names, or `all` (the default, unless --strategy,
    /// FLYRTECH_STRATEGY or the config file names one).
    #[arg(long)]
    strategies: Option<String>,
    /// Comma-separated scenarios (incident, hot-journey, spread, mixed, same-segment,
    /// scaling, collision) or `all`.
    #[arg(long, default_value = "incident")]
    scenario: String,
    /// Concurrent writers [default: per scenario].
    #[arg(long)]
    writers: Option<usize>,
    /// Service instances the writers are spread over, each with its own connections and, for
    /// local-lock, its own lock table [default: 2].
    #[arg(long)]
    instances: Option<usize>,
    /// Journeys created per run [default: per scenario].
    #[arg(long)]
    journeys: Option<usize>,
    /// Segments per journey [default: per scenario].
    #[arg(long)]
    segments: Option<usize>,
    /// Updates sent per run [default: per scenario].
    #[arg(long, conflicts_with = "duration_secs")]
    updates: Option<usize>,
    /// Run each measurement for this many seconds instead of a number of updates.
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Seed of the writers' random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Writers start at uniform random offsets within this many milliseconds (the arrival
    /// process of the collision model) [default: 100 for collision, else all at once].
    #[arg(long)]
    arrival_window_ms: Option<u64>,
    /// Repeat each measurement this many times on fresh journeys and sum the results
    /// [default: 20 for collision, else 1].
    #[arg(long)]
    repeats: Option<usize>,
    /// Write the JSON report here (schema: docs/lab.md).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write the scaling charts here, as .svg and .png.
    #[arg(long)]
    chart: Option<PathBuf>,
    /// Drive running `flyrtech serve` instances (comma-separated base URLs) instead of the
    /// library; their strategy is the one they were started with.
    #[arg(long, value_delimiter = ',')]
    http: Vec<String>,
    /// Start a private 3-master cluster instead of one server (when no Redis URL is set).
    #[arg(long)]
    cluster: bool,
    /// After each run, drain the outbox and audit the run's journeys from their published
    /// events; the audit's lost-update count is printed beside the lab's.
    #[arg(long)]
    audit: bool,
}

/// Exit statuses: 0 done; 1 a failure (`error: …` on stderr with its causes), or the audit found
/// something; 2 a usage error (clap's); 3 partial work ([`dataset::INCOMPLETE`]: some journeys
/// were left out, each listed with the reason).
fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // An operator's error reads like a CLI's: one line with its causes, never a stack
            // backtrace, whatever RUST_BACKTRACE says (panics keep theirs).
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> anyhow::Result<i32> {
    // Log lines are written by a thread of their own, batched into one write when several are
    // waiting: under load, one `write(2)` per line on the request path cost `serve` about 7 % of
    // its CPU (perf, docs/results/http.md). Not lossy: a full queue slows logging callers down
    // rather than dropping lines. The guard flushes what is left when this function returns.
    let (log, _log_guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("flyrtech-log")
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(log)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let settings = Settings::resolve(&cli.common)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the Tokio runtime")?;
    // Everything, a private redis-server included, is dropped before the status is returned.
    runtime.block_on(run(cli.command, settings))
}

/// Runs a command; the exit status on success (the audit's 1 when it finds something).
async fn run(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Serve(args) => serve(&args, settings).await.map(|()| 0),
        Command::Compare(args) => compare(args, settings).await.map(|()| 0),
        Command::Relay(args) => {
            let (_deployment, redis) = connect(&settings, "relay").await?;
            // The relay reads only the outbox, which both layouts share: it serves any dataset.
            // Its entries carry no TTL either: refuse a Redis that may evict them.
            flyrtech_infrastructure::plumbing::server::check(&redis, settings.allow_eviction)
                .await?;
            let state = stored_dataset::state(&redis).await?;
            tracing::info!(dataset = %state, "relaying the outbox");
            outbox::relay(&args, redis, shutdown_signal()).await?;
            Ok(0)
        }
        Command::Audit(args) => {
            let (_deployment, redis) = connect(&settings, "audit").await?;
            // The audit only reads, and reads a journey in whichever layout it is: it records
            // nothing and refuses no strategy.
            let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
            let state = stored_dataset::state(&redis).await?;
            tracing::info!(dataset = %state, "auditing");
            let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?;
            let clean = match &args.projection {
                Some(url) => flyrtech_api::commands::project::audit_projection(
                    url,
                    &store,
                    args.json.as_ref(),
                    args.limit,
                )
                .await?
                .is_clean(),
                None => outbox::run_audit(&args, &store, &redis).await?.is_clean(),
            };
            Ok(if clean { 0 } else { 1 })
        }
        Command::Project(args) => {
            flyrtech_api::commands::project::project(&args, shutdown_signal()).await?;
            Ok(0)
        }
        Command::ProjectBench(args) => {
            let (deployment, redis) = connect(&settings, "project-bench").await?;
            let report = tokio::select! {
                report = flyrtech_api::commands::project::bench(&args, &deployment.url, redis) => report?,
                () = shutdown_signal() => bail!("interrupted"),
            };
            let json = serde_json::to_string_pretty(&report)?;
            if let Some(path) = &args.json {
                std::fs::write(path, &json)?;
            }
            #[allow(clippy::print_stdout)]
            {
                println!("{json}");
            }
            Ok(0)
        }
        Command::Migrate(args) => {
            let (_deployment, redis) = connect(&settings, "migrate").await?;
            tokio::select! {
                code = dataset::migrate(&args, &redis, settings.replicas) => code,
                () = shutdown_signal() => bail!(
                    "interrupted: every journey converted so far is complete; run the same \
                     command again to finish"
                ),
            }
        }
        Command::MigrateBench(args) => {
            let (_deployment, redis) = connect(&settings, "migrate-bench").await?;
            let report = tokio::select! {
                report = dataset::migrate_bench(&args, &redis) => report?,
                () = shutdown_signal() => bail!("interrupted"),
            };
            emit(&report, args.json.as_deref())?;
            Ok(if report.differing == 0 { 0 } else { 1 })
        }
        Command::ImportLegacy(args) => {
            let (_deployment, redis) = connect(&settings, "import-legacy").await?;
            let store = admitted_store(&settings, &redis).await?;
            tokio::select! {
                code = dataset::import_legacy(&args, &redis, &store) => code,
                () = shutdown_signal() => bail!(
                    "interrupted: journeys imported so far are complete; run the same command \
                     again to finish (existing journeys are kept)"
                ),
            }
        }
        Command::Backlog(args) => {
            let (_deployment, redis) = connect(&settings, "backlog").await?;
            let report = tokio::select! {
                report = outbox::backlog(&args, redis) => report?,
                () = shutdown_signal() => bail!("interrupted"),
            };
            emit(&report, args.json.as_deref())?;
            Ok(0)
        }
    }
}

/// Prints a measurement's report as JSON, and writes it to `path` when given.
fn emit(report: &impl serde::Serialize, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)?;
    if let Some(path) = path {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{text}");
    }
    Ok(())
}

/// A store for the configured strategy, admitted by the dataset's layout guard (which records
/// the layout on an empty Redis). Without a configured strategy: the default one of the
/// dataset's layout.
async fn admitted_store(settings: &Settings, redis: &Redis) -> anyhow::Result<RedisJourneyStore> {
    let strategy = match settings.strategy {
        Some(strategy) => strategy,
        None => match stored_dataset::state(redis).await?.layout {
            Some(flyrtech_infrastructure::Layout::Hash) => Strategy::Hash,
            _ => DEFAULT_SERVE_STRATEGY,
        },
    };
    let state = stored_dataset::admit(redis, strategy).await?;
    tracing::info!(dataset = %state, %strategy, "admitted by the dataset's layout");
    Ok(RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?)
}

/// The configured Redis, or a private one. The operator commands on a private, empty server do
/// nothing useful, so they say so.
async fn connect(settings: &Settings, command: &str) -> anyhow::Result<(Deployment, Redis)> {
    if settings.redis_url.is_none()
        && matches!(command, "relay" | "audit" | "migrate" | "import-legacy")
    {
        tracing::warn!(
            "no Redis URL configured: {command} runs against a private, empty redis-server"
        );
    }
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), Private::Throwaway)?;
    let redis = Redis::connect(&RedisSettings::new(deployment.url.clone())).await?;
    Ok((deployment, redis))
}

async fn compare(args: CompareArgs, settings: Settings) -> anyhow::Result<()> {
    let strategies = match (&args.strategies, settings.strategy) {
        (Some(list), _) => parse_strategies(list)?,
        (None, Some(configured)) => vec![configured],
        (None, None) => Strategy::ALL.to_vec(),
    };
    let scenarios = parse_scenarios(&args.scenario)?;
    for (name, value) in [
        ("--writers", args.writers),
        ("--instances", args.instances),
        ("--journeys", args.journeys),
        ("--segments", args.segments),
        ("--updates", args.updates),
        ("--repeats", args.repeats),
    ] {
        if value == Some(0) {
            bail!("{name} must be at least 1");
        }
    }
    let duration = match args.duration_secs {
        Some(secs) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(_) => bail!("--duration-secs must be a positive number"),
        None => None,
    };
    let comparison = Comparison {
        strategies,
        scenarios,
        knobs: Knobs {
            writers: args.writers,
            instances: args.instances,
            journeys: args.journeys,
            segments: args.segments,
            updates: args.updates,
            duration,
            processing_delay: settings.processing_delay,
            seed: args.seed,
            arrival_window: args.arrival_window_ms.map(Duration::from_millis),
            repeats: args.repeats,
        },
        http: args.http.clone(),
        // An explicit Redis URL beside --http names the servers' Redis.
        http_redis: settings.redis_url.clone().filter(|_| !args.http.is_empty()),
        audit: args.audit,
        replicas: settings.replicas,
    };
    let private = match (args.cluster, settings.replicas) {
        (true, _) => Private::Cluster,
        // Waiting for replicas needs some: a private primary with as many as are waited for.
        (false, Some(wait)) => Private::Replicated(wait.replicas as usize),
        (false, None) => Private::Throwaway,
    };
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), private)?;
    let started_at = chrono::Utc::now().to_rfc3339();
    // Ctrl-c or SIGTERM ends the comparison cleanly, so the private redis-server is stopped.
    let runs = tokio::select! {
        runs = lab::compare(&deployment.url, &comparison) => runs?,
        () = shutdown_signal() => bail!("interrupted"),
    };
    let targets = report::targets(&runs);
    #[allow(clippy::print_stdout)]
    {
        println!("{}", report::table(&runs));
        for r in &runs {
            println!("{}", r.summary_line());
        }
        println!("{}", report::targets_table(&targets));
    }
    if let Some(path) = &args.json {
        let deployment_kind = if !args.http.is_empty() {
            "http"
        } else if args.cluster || deployment.url.contains(',') {
            "cluster"
        } else {
            "standalone"
        };
        LabReport {
            schema_version: report::SCHEMA_VERSION,
            command: std::env::args().collect::<Vec<_>>().join(" "),
            started_at,
            machine: Machine::detect(lab::redis_version(&deployment.url).await),
            deployment: deployment_kind.to_owned(),
            runs: runs.clone(),
            targets,
        }
        .write(path)?;
        tracing::info!(path = %path.display(), "wrote the JSON report");
    }
    if let Some(path) = &args.chart {
        for written in chart::write(&runs, path)? {
            tracing::info!(path = %written.display(), "wrote a chart");
        }
    }
    Ok(())
}

fn parse_scenarios(list: &str) -> anyhow::Result<Vec<Scenario>> {
    if list.trim() == "all" {
        return Ok(Scenario::ALL.to_vec());
    }
    list.split(',')
        .map(|s| s.parse::<Scenario>().map_err(anyhow::Error::from))
        .collect()
}

fn parse_strategies(list: &str) -> anyhow::Result<Vec<Strategy>> {
    if list.trim() == "all" {
        return Ok(Strategy::ALL.to_vec());
    }
    list.split(',')
        .map(|s| s.parse::<Strategy>().map_err(anyhow::Error::from))
        .collect()
}

/// The strategy `serve` uses when none is configured: atomic, fast, and it keeps the original's
/// document layout (docs/strategies.md).
const DEFAULT_SERVE_STRATEGY: Strategy = Strategy::Lua;

async fn serve(args: &ServeArgs, settings: Settings) -> anyhow::Result<()> {
    let serve = ServeSettings::resolve(args, &settings.file)?;
    let seed = serve.seed.load()?;
    let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
    // The embedded default persists: a restart keeps every acknowledged update.
    let private = if args.cluster {
        Private::Cluster
    } else {
        Private::Persistent {
            dir: serve.data_dir.clone(),
            fsync: serve.fsync,
        }
    };
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), private)?;
    let mut store = StoreConfig::new(strategy);
    store.processing_delay = settings.processing_delay.unwrap_or_default();
    store.lock = LockSettings {
        urls: settings.lock_urls,
        ..LockSettings::default()
    };
    store.replicas = settings.replicas;
    let mut config = ServeConfig::new(serve.listen, &deployment.url, store);
    config.seed = seed;
    config.request_timeout = serve.request_timeout;
    config.allow_eviction = settings.allow_eviction;
    let app = Application::build(config).await?;
    let seeded = app.seeded();
    tracing::info!(
        created = seeded.created,
        kept = seeded.kept,
        "seeded journeys (existing journeys are never overwritten)"
    );
    app.run(shutdown_signal()).await?;
    Ok(())
}

/// Resolves on ctrl-c or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}
