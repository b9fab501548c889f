//! `flyrtech`: the command line. Parses it, calls the subcommand's `run` (one file each under
//! [`flyrtech_api::commands`]), and reports errors with their cause chain.

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use flyrtech_api::commands::{
    api_key, audit, backlog, compare, import_legacy, migrate, migrate_bench, project,
    project_bench, redis_acl, relay, serve, soak, verify,
};
use flyrtech_api::config::{CommonArgs, Settings, tools};
use flyrtech_api::telemetry::{Telemetry, TraceSettings};

/// glibc's allocator spent a fifth of `serve`'s CPU under load (arena locks, consolidation;
/// measured with perf: docs/lab.md, "The HTTP path and its ceiling"); mimalloc's thread-local free lists do not.
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
    Serve(flyrtech_api::config::ServeArgs),
    /// Run strategies side by side on the same Redis: lost updates, throughput, latency,
    /// retries, and each strategy's Redis ceiling (docs/lab.md).
    Compare(compare::CompareArgs),
    /// Drive running instances from clients of its own, record every answer, and check the
    /// history for linearizability. Exits 0 linearizable, 1 not, 3 undecided.
    Verify(verify::VerifyArgs),
    /// Publish the outbox's events to the bus, at least once and in per-journey order
    /// (docs/outbox/SCHEMA.md). Runs until SIGTERM, or with --drain until the outbox is empty.
    Relay(flyrtech_api::config::RelayArgs),
    /// Replay the published events and compare them with the stored journeys: lost updates,
    /// version gaps, unpublished events. Exits with status 1 when it finds any.
    Audit(audit::AuditArgs),
    /// Measure how fast one relay drains a backlog of outbox entries (default 1,000,000).
    Backlog(backlog::BacklogArgs),
    /// Move every journey to another layout, online and resumably (docs/migration.md). Exits
    /// with status 3 when some journeys could not be converted (each is listed).
    Migrate(migrate::MigrateArgs),
    /// Bring the original .NET service's journeys into this Redis, in the configured
    /// strategy's layout, never overwriting one that exists. Exits with status 3 when some were
    /// skipped (each is listed with the reason).
    ImportLegacy(import_legacy::ImportArgs),
    /// Apply the bus' changes (NATS JetStream, `relay --bus`) to the PostgreSQL projection,
    /// each exactly once and in per-journey order (docs/outbox/SCHEMA.md). Runs until SIGTERM,
    /// or with --drain until every change on the bus is projected.
    Project(flyrtech_api::config::ProjectArgs),
    /// Measure the events' way out: end-to-end lag (commit to projection) under the spread
    /// scenario, and the drain of a backlog (default 1,000,000) into JetStream and PostgreSQL,
    /// on private nats-server and PostgreSQL unless URLs are given.
    ProjectBench(project_bench::ProjectBenchArgs),
    /// Measure the migration: create journeys (default 1,000,000) on an empty Redis, move them
    /// to the hash layout and back, and report the rates.
    MigrateBench(migrate_bench::MigrateBenchArgs),
    /// Run serve, the relay and a load for a while (default 10 minutes) and record every
    /// process' memory, Redis' memory, the event stream and the outbox backlog (docs/reliability.md).
    /// Exits with status 1 when a resource kept growing.
    Soak(soak::SoakArgs),
    /// Make API keys for `serve --api-keys` (docs/security.md).
    ApiKey(api_key::ApiKeyArgs),
    /// Print the `ACL SETUSER` line a command needs on Redis: least privilege (docs/security.md).
    RedisAcl(redis_acl::RedisAclArgs),
}

/// Exit statuses (`flyrtech_api::commands`): 0 done; 1 a failure (`error: …` on stderr with its
/// causes) or an audit that found something; 2 a usage error (clap's); 3 partial work (some
/// journeys left out, each listed with the reason).
fn main() -> std::process::ExitCode {
    match run_main() {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            // An operator's error reads like a CLI's: one line with its causes, never a stack
            // backtrace, whatever RUST_BACKTRACE says (panics keep theirs).
            // Redacted as a last line of defence: whatever an error quotes (a URL that did not
            // parse, a line of a config file), no password reaches the terminal.
            let message = flyrtech_infrastructure::plumbing::secret::redact_text(&format!("{e:#}"));
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_main() -> anyhow::Result<i32> {
    let (cli, settings) = parse()?;
    let runtime = tokio::runtime::Runtime::new().context("cannot start the Tokio runtime")?;
    // Inside the runtime: a gRPC trace exporter's client lives there.
    let telemetry = {
        let _inside = runtime.enter();
        Telemetry::install(cli.command.name(), &TraceSettings::from_env())?
    };
    // Everything, a private redis-server included, is dropped before the status is returned.
    let status = runtime.block_on(run(cli.command, settings));
    // The last spans are exported while the runtime still runs.
    telemetry.shutdown();
    status
}

/// The command line, and the shared settings. A one-shot tool's table in the config file is put
/// in front of the tool's own flags and the line parsed again (`config::tools`), so the file
/// sets its options too and a flag typed wins.
fn parse() -> anyhow::Result<(Cli, Settings)> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let matches = Cli::command().get_matches_from(&argv);
    let cli = Cli::from_arg_matches(&matches)?;
    let settings = Settings::resolve(&cli.common)?;
    let Some(name) = matches.subcommand_name() else {
        return Ok((cli, settings));
    };
    let Some(table) = settings.file.tool(name) else {
        return Ok((cli, settings));
    };
    let command = Cli::command().mut_subcommand(name, |s| s.args_override_self(true));
    let tool = command
        .find_subcommand(name)
        .context("the subcommand just parsed")?;
    let argv = tools::with_file_options(&argv, name, tool, table)?;
    let cli = Cli::from_arg_matches(&command.get_matches_from(argv))?;
    Ok((cli, settings))
}

impl Command {
    /// The subcommand's name, as typed: the process' service name is `flyrtech-<name>`.
    fn name(&self) -> &'static str {
        match self {
            Self::Serve(_) => "serve",
            Self::Compare(_) => "compare",
            Self::Verify(_) => "verify",
            Self::Relay(_) => "relay",
            Self::Audit(_) => "audit",
            Self::Backlog(_) => "backlog",
            Self::Migrate(_) => "migrate",
            Self::ImportLegacy(_) => "import-legacy",
            Self::Project(_) => "project",
            Self::ProjectBench(_) => "project-bench",
            Self::MigrateBench(_) => "migrate-bench",
            Self::Soak(_) => "soak",
            Self::ApiKey(_) => "api-key",
            Self::RedisAcl(_) => "redis-acl",
        }
    }
}

/// Runs a command; the exit status on success.
async fn run(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Serve(args) => serve::run(&args, settings).await,
        Command::Compare(args) => compare::run(&args, settings).await,
        Command::Verify(args) => verify::run(&args, settings).await,
        Command::Relay(args) => relay::run(&args, settings).await,
        Command::Audit(args) => audit::run(&args, settings).await,
        Command::Backlog(args) => backlog::run(&args, settings).await,
        Command::Migrate(args) => migrate::run(&args, settings).await,
        Command::ImportLegacy(args) => import_legacy::run(&args, settings).await,
        Command::Project(args) => project::run(&args, settings).await,
        Command::ProjectBench(args) => project_bench::run(&args, settings).await,
        Command::MigrateBench(args) => migrate_bench::run(&args, settings).await,
        Command::Soak(args) => soak::run(&args, settings).await,
        Command::ApiKey(args) => api_key::run(&args, settings).await,
        Command::RedisAcl(args) => redis_acl::run(&args, settings).await,
    }
}
