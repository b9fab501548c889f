//! `flyrtech-lab`: the command line of the lab. Parses it, calls the subcommand's `run` (one
//! file each under [`flyrtech_lab::commands`]), and reports errors with their cause chain.

use anyhow::Context;
use clap::{Parser, Subcommand};
use flyrtech_cli::config::{self, CommonArgs, Settings};
use flyrtech_lab::commands::{backlog, compare, migrate_bench, project_bench, soak, verify};

#[derive(Debug, Parser)]
#[command(
    name = "flyrtech-lab",
    version,
    about = "The FlyrTech Journey Service's lab: the strategies side by side, a deployment's \
             answers checked, the soak and the benches"
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run strategies side by side on the same Redis: lost updates, throughput, latency,
    /// retries, and each strategy's Redis ceiling (docs/lab.md).
    Compare(compare::CompareArgs),
    /// Drive running instances from clients of its own, record every answer, and check the
    /// history for linearizability. Exits 0 linearizable, 1 not, 3 undecided.
    Verify(verify::VerifyArgs),
    /// Measure how fast one relay drains a backlog of outbox entries (default 1,000,000).
    Backlog(backlog::BacklogArgs),
    /// Measure the events' way out: end-to-end lag (commit to projection) under the spread
    /// scenario, and the drain of a backlog (default 1,000,000) into JetStream and PostgreSQL,
    /// on private nats-server and PostgreSQL unless URLs are given.
    ProjectBench(project_bench::ProjectBenchArgs),
    /// Measure the migration: create journeys (default 1,000,000) on an empty Redis, move them
    /// to the hash layout and back, and report the rates.
    MigrateBench(migrate_bench::MigrateBenchArgs),
    /// Run the service (`flyrtech serve`, the relay) and a load for a while (default 10
    /// minutes) and record every process' memory, Redis' memory, the event stream and the outbox
    /// backlog (docs/reliability.md). Exits with status 1 when a resource kept growing.
    Soak(soak::SoakArgs),
}

fn main() -> std::process::ExitCode {
    flyrtech_cli::command::exit_status(run_main())
}

fn run_main() -> anyhow::Result<i32> {
    let (cli, settings) = config::parse(|cli: &mut Cli| &mut cli.common)?;
    logs();
    tracing::debug!(command = cli.command.name(), "starting");
    let runtime = tokio::runtime::Runtime::new().context("cannot start the Tokio runtime")?;
    // Everything, a private redis-server included, is dropped before the status is returned.
    runtime.block_on(run(cli.command, settings))
}

/// Log lines on stderr, filtered by `RUST_LOG` (default `info`). The lab exports no traces: it
/// measures the service, whose own traces say what a request did.
fn logs() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

impl Command {
    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Self::Compare(_) => "compare",
            Self::Verify(_) => "verify",
            Self::Backlog(_) => "backlog",
            Self::ProjectBench(_) => "project-bench",
            Self::MigrateBench(_) => "migrate-bench",
            Self::Soak(_) => "soak",
        }
    }
}

/// Runs a command; the exit status on success.
async fn run(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Compare(args) => compare::run(&settings.layer(args)?, settings).await,
        Command::Verify(args) => verify::run(&settings.layer(args)?, settings).await,
        Command::Backlog(args) => backlog::run(&settings.layer(args)?, settings).await,
        Command::ProjectBench(args) => project_bench::run(&settings.layer(args)?, settings).await,
        Command::MigrateBench(args) => migrate_bench::run(&settings.layer(args)?, settings).await,
        Command::Soak(args) => soak::run(&settings.layer(args)?, settings).await,
    }
}
