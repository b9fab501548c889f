//! `flyrtech-lab compare`: strategies side by side on the same Redis (lost updates, throughput,
//! latency, retries, each strategy's Redis ceiling), printed as tables and optionally written as
//! JSON and charts (docs/lab.md). The machinery is the lab ([`crate::compare`]).

use flyrtech_cli::outln;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use flyrtech_infrastructure::{Confirmation, Redis, Strategy};

use super::{DONE, shutdown_signal};
use crate::compare::report::{self, LabReport, Machine};
use crate::compare::{Comparison, Knobs, Scenario, chart};
use flyrtech_cli::config::Settings;
use flyrtech_cli::deployment::{Deployment, Private};

/// Runs `flyrtech-lab compare`.
///
/// # Errors
/// Bad flags, Redis unreachable, a report that cannot be written, or interrupted.
pub async fn run(args: &CompareArgs, settings: Settings) -> anyhow::Result<i32> {
    compare(args, settings).await.map(|()| DONE)
}

#[derive(Debug, Args, serde::Serialize, serde::Deserialize)]
pub struct CompareArgs {
    /// Comma-separated strategy names, or `all` (the default, unless --strategy,
    /// FLYRTECH_STRATEGY or the config file names one).
    #[arg(long)]
    pub strategies: Option<String>,
    /// Comma-separated scenarios (incident, hot-journey, spread, mixed, same-segment,
    /// scaling, collision) or `all`.
    #[arg(long, default_value = "incident")]
    pub scenario: String,
    /// Concurrent writers [default: per scenario].
    #[arg(long)]
    pub writers: Option<usize>,
    /// Service instances the writers are spread over, each with its own connections and, for
    /// local-lock, its own lock table [default: 1 for collision, else 2].
    #[arg(long)]
    pub instances: Option<usize>,
    /// Journeys created per run [default: per scenario].
    #[arg(long)]
    pub journeys: Option<usize>,
    /// Segments per journey [default: per scenario].
    #[arg(long)]
    pub segments: Option<usize>,
    /// Updates sent per run [default: per scenario].
    #[arg(long, conflicts_with = "duration_secs")]
    pub updates: Option<usize>,
    /// Run each measurement for this many seconds instead of a number of updates.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Seed of the writers' random choices.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Writers start at uniform random offsets within this many milliseconds (the arrival
    /// process of the collision model) [default: 100 for collision, else all at once].
    #[arg(long)]
    pub arrival_window_ms: Option<u64>,
    /// Repeat each measurement this many times on fresh journeys and sum the results
    /// [default: 20 for collision, else 1].
    #[arg(long)]
    pub repeats: Option<usize>,
    /// Write the JSON report here (schema: docs/lab.md).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the scaling charts here, as .svg and .png.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Write the comparison here as one self-contained HTML page (the figures of --json, as
    /// verdicts, charts and tables; nothing fetched, readable offline).
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Drive running `flyrtech serve` instances (comma-separated base URLs) instead of the
    /// library; their strategy is the one they were started with.
    #[arg(long, value_delimiter = ',')]
    pub http: Vec<String>,
    /// With --http: the floor of the stack (`cargo run --release --example floor REDIS_URL
    /// ADDR`) on the servers' Redis; after each run `/health`, `GET` and `PUT` are measured on
    /// it and on the first server, and service / floor is judged (docs/lab.md).
    #[arg(long, requires = "http")]
    pub http_floor: Option<String>,
    /// Print every column of the runs' table (the default fits 120 columns).
    #[arg(long)]
    pub wide: bool,
    /// Start a private 3-master cluster instead of one server (when no Redis URL is set).
    #[arg(long)]
    pub cluster: bool,
    /// After each run, drain the outbox with the service's relay (`flyrtech relay --drain`) and
    /// audit the run's journeys from their published events; the audit's lost-update count is
    /// printed beside the lab's.
    #[arg(long)]
    pub audit: bool,
    /// The service's binary, whose relay `--audit` runs [default: `flyrtech` beside this binary].
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
}

async fn compare(args: &CompareArgs, settings: Settings) -> anyhow::Result<()> {
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
        http_floor: args.http_floor.clone(),
        // An explicit Redis URL beside --http names the servers' Redis.
        http_redis: settings.redis_url.clone().filter(|_| !args.http.is_empty()),
        audit: match args.audit {
            true => Some(super::service_binary(args.service_bin.as_deref())?),
            false => None,
        },
        replicas: settings.replicas,
    };
    let private = match (args.cluster, settings.replicas) {
        (true, _) => Private::Cluster,
        // Waiting for replicas needs some: a private primary with as many as are waited for.
        (false, Some(wait)) => Private::Replicated(wait.replicas as usize),
        (false, None) => Private::Throwaway,
    };
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), private)?;
    if settings
        .replicas
        .is_some_and(|w| w.confirmation == Confirmation::OnDisk)
    {
        // As serve does: refused in one line where WAITAOF cannot keep its promise.
        let redis = Redis::connect(&super::redis_settings(&settings, &deployment.url)?).await?;
        flyrtech_infrastructure::connection::server::facts(&redis)
            .await?
            .can_wait_aof()?;
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    // Ctrl-c or SIGTERM ends the comparison cleanly, so the private redis-server is stopped.
    let runs = tokio::select! {
        runs = crate::compare::compare(&deployment.url, &comparison) => runs?,
        () = shutdown_signal() => bail!("interrupted"),
    };
    let targets = report::targets(&runs);
    outln!("{}", report::table(&runs, args.wide));
    for r in &runs {
        outln!("{}", r.summary_line());
    }
    let targets_table = report::targets_table(&targets);
    if !targets_table.is_empty() {
        outln!("{targets_table}");
    }
    if args.json.is_some() || args.html.is_some() {
        let deployment_kind = if !args.http.is_empty() {
            "http"
        } else if args.cluster || deployment.url.contains(',') {
            "cluster"
        } else {
            "standalone"
        };
        let report = LabReport {
            schema_version: report::SCHEMA_VERSION,
            command: crate::compare::report::command_line(),
            started_at,
            machine: Machine::detect(crate::compare::redis_version(&deployment.url).await),
            deployment: deployment_kind.to_owned(),
            runs: runs.clone(),
            targets,
        };
        if let Some(path) = &args.json {
            report.write(path)?;
            tracing::info!(path = %path.display(), "wrote the JSON report");
        }
        if let Some(path) = &args.html {
            crate::compare::html::write(&report, path)?;
            tracing::info!(path = %path.display(), "wrote the HTML report");
        }
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
