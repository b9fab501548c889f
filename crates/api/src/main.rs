//! `flyrtech`: the command line. Parses it, calls the subcommand's `run` (one file each under
//! [`flyrtech_api::commands`]), and reports errors with their cause chain.

use anyhow::Context;
use clap::{Parser, Subcommand};
use flyrtech_api::commands::{
    api_key, audit, import_legacy, migrate, project, redis_acl, relay, serve,
};
use flyrtech_api::telemetry::{Telemetry, TraceSettings};
use flyrtech_cli::config::{self, CommonArgs, Settings};

/// glibc's allocator spent a fifth of `serve`'s CPU under load (arena locks, consolidation;
/// measured with perf: docs/lab.md, "The HTTP path and its ceiling"); mimalloc's thread-local free lists do not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "flyrtech",
    version,
    about = "The FlyrTech Journey Service (its lab is `flyrtech-lab`)"
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
    Serve(flyrtech_cli::config::ServeArgs),
    /// Publish the outbox's events to the bus, at least once and in per-journey order
    /// (docs/outbox/SCHEMA.md). Runs until SIGTERM, or with --drain until the outbox is empty.
    Relay(flyrtech_cli::config::RelayArgs),
    /// Replay the published events and compare them with the stored journeys: lost updates,
    /// version gaps, unpublished events. Exits with status 1 when it finds any.
    Audit(audit::AuditArgs),
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
    Project(flyrtech_cli::config::ProjectArgs),
    /// Make API keys for `serve --api-keys` (docs/security.md).
    ApiKey(api_key::ApiKeyArgs),
    /// Print the `ACL SETUSER` line a command needs on Redis: least privilege (docs/security.md).
    RedisAcl(redis_acl::RedisAclArgs),
}

/// Exit statuses (`flyrtech_api::commands`): 0 done; 1 a failure (`error: …` on stderr with its
/// causes) or an audit that found something; 2 a usage error (clap's); 3 partial work (some
/// journeys left out, each listed with the reason).
fn main() -> std::process::ExitCode {
    flyrtech_api::commands::exit_status(run_main())
}

fn run_main() -> anyhow::Result<i32> {
    let (cli, settings) = config::parse(|cli: &mut Cli| &mut cli.common)?;
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

impl Command {
    /// The subcommand's name, as typed: the process' service name is `flyrtech-<name>`.
    fn name(&self) -> &'static str {
        match self {
            Self::Serve(_) => "serve",
            Self::Relay(_) => "relay",
            Self::Audit(_) => "audit",
            Self::Migrate(_) => "migrate",
            Self::ImportLegacy(_) => "import-legacy",
            Self::Project(_) => "project",
            Self::ApiKey(_) => "api-key",
            Self::RedisAcl(_) => "redis-acl",
        }
    }
}

/// Runs a command; the exit status on success.
async fn run(command: Command, settings: Settings) -> anyhow::Result<i32> {
    match command {
        Command::Serve(args) => serve::run(&settings.layer(args)?, settings).await,
        Command::Relay(args) => relay::run(&settings.layer(args)?, settings).await,
        Command::Audit(args) => audit::run(&settings.layer(args)?, settings).await,
        Command::Migrate(args) => migrate::run(&settings.layer(args)?, settings).await,
        Command::ImportLegacy(args) => import_legacy::run(&settings.layer(args)?, settings).await,
        Command::Project(args) => project::run(&settings.layer(args)?, settings).await,
        Command::ApiKey(args) => api_key::run(&settings.layer(args)?, settings).await,
        Command::RedisAcl(args) => redis_acl::run(&settings.layer(args)?, settings).await,
    }
}
