//! `flyrtech`: the command line. Parses, wires, and reports errors with their cause chain.

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use flyrtech_api::config::{CommonArgs, ServeArgs, ServeSettings, Settings};
use flyrtech_api::deployment::Deployment;
use flyrtech_api::http::{Application, ServeConfig};
use flyrtech_api::lab::{self, Params, Scenario};
use flyrtech_infrastructure::{LockSettings, StoreConfig, Strategy};
use tracing_subscriber::EnvFilter;

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
    /// Run strategies side by side on the same Redis and count lost updates.
    Compare {
        /// Comma-separated strategy names, or `all` (the default, unless --strategy,
        /// FLYRTECH_STRATEGY or the config file names one).
        #[arg(long)]
        strategies: Option<String>,
        /// Scenario name (incident).
        #[arg(long, default_value = "incident")]
        scenario: String,
        /// Concurrent writers (one per segment in the incident).
        #[arg(long, default_value_t = 20)]
        writers: usize,
        /// Service instances the writers are spread over, each with its own connections and,
        /// for local-lock, its own lock table.
        #[arg(long, default_value_t = 2)]
        instances: usize,
        /// Start a private 3-master cluster instead of one server (when no Redis URL is set).
        #[arg(long)]
        cluster: bool,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let settings = Settings::resolve(&cli.common)?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the Tokio runtime")?;
    runtime.block_on(run(cli.command, settings))
}

async fn run(command: Command, settings: Settings) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(&args, settings).await,
        Command::Compare {
            strategies,
            scenario,
            writers,
            instances,
            cluster,
        } => {
            let strategies = match (strategies, settings.strategy) {
                (Some(list), _) => parse_strategies(&list)?,
                (None, Some(configured)) => vec![configured],
                (None, None) => Strategy::ALL.to_vec(),
            };
            let scenario: Scenario = scenario.parse().map_err(anyhow::Error::msg)?;
            if writers == 0 {
                bail!("--writers must be at least 1");
            }
            // The incident's default delay is the original test's 10 ms unless configured.
            let processing_delay =
                if settings.processing_delay.is_zero() && scenario == Scenario::Incident {
                    std::time::Duration::from_millis(10)
                } else {
                    settings.processing_delay
                };
            let deployment = Deployment::resolve(settings.redis_url.as_deref(), cluster)?;
            let params = Params {
                writers,
                instances,
                processing_delay,
            };
            let mut runs = Vec::new();
            for strategy in strategies {
                let report = lab::run(&deployment.url, strategy, scenario, params)
                    .await
                    .with_context(|| format!("running {} with {strategy}", scenario.name()))?;
                runs.push(report);
            }
            #[allow(clippy::print_stdout)]
            {
                println!("{}", lab::report::table(&runs));
                for r in &runs {
                    println!(
                        "{}: {} of {} updates applied, {} lost",
                        r.strategy,
                        r.acknowledged - r.lost,
                        r.attempted,
                        r.lost
                    );
                }
            }
            Ok(())
        }
    }
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
    let serve = ServeSettings::resolve(args, &settings.file);
    let seed = serve.seed.load()?;
    let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), args.cluster)?;
    let mut store = StoreConfig::new(strategy);
    store.processing_delay = settings.processing_delay;
    store.lock = LockSettings {
        urls: settings.lock_urls,
        ..LockSettings::default()
    };
    let mut config = ServeConfig::new(serve.listen, &deployment.url, store);
    config.seed = seed;
    config.request_timeout = serve.request_timeout;
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
