//! `flyrtech migrate`: moves every journey to another layout, online and resumably
//! (docs/migration.md), logging its progress every few seconds and printing a summary. Exits with [`INCOMPLETE`] when some journeys could not be converted (each is
//! listed with the reason).

use flyrtech_cli::outln;
use std::path::PathBuf;

use clap::Args;
use flyrtech_infrastructure::dataset::{self, MigrationReport, MigrationSettings};
use flyrtech_infrastructure::{Layout, Redis, ReplicaWait};

use super::{DONE, INCOMPLETE, connect, shutdown_signal, write_report};
use flyrtech_cli::config::Settings;

/// Runs `flyrtech migrate`; the exit status.
///
/// # Errors
/// Redis unreachable, the report cannot be written, or interrupted (what was converted stays).
pub async fn run(args: &MigrateArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "migrate").await?;
    tokio::select! {
        code = migrate(args, &redis, settings.replicas) => code,
        () = shutdown_signal() => anyhow::bail!(
            "interrupted: every journey converted so far is complete; run the same \
             command again to finish"
        ),
    }
}

/// Options of `flyrtech migrate`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct MigrateArgs {
    /// The layout to move every journey to: `hash` (for the hash strategy) or `document`
    /// (for naive, local-lock, optimistic, redlock and lua).
    #[arg(long)]
    #[serde(with = "flyrtech_cli::config::text")]
    pub to: Layout,
    /// Partitions converted at once, each with its own pipelines.
    #[arg(long, default_value_t = MigrationSettings::default().concurrency)]
    pub concurrency: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `flyrtech migrate`; the exit status.
///
/// # Errors
/// Redis unreachable, or the report cannot be written.
pub async fn migrate(
    args: &MigrateArgs,
    redis: &Redis,
    replicas: Option<ReplicaWait>,
) -> anyhow::Result<i32> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let before = dataset::state(redis).await?;
    tracing::info!(dataset = %before, to = %args.to, "migrating");
    let progress = super::Progress::new("journeys migrated");
    let settings = MigrationSettings {
        concurrency: args.concurrency,
        replicas,
        ..MigrationSettings::default()
    };
    let report = dataset::migrate(redis, args.to, settings, &|done, listed| {
        progress.update(done, listed);
    })
    .await?;
    write_report(&report, args.json.as_deref())?;
    print_migration(&report);
    Ok(if report.is_complete() {
        DONE
    } else {
        INCOMPLETE
    })
}
fn print_migration(report: &MigrationReport) {
    let to = report.to.map_or("?", Layout::name);
    outln!(
        "migrate --to {to}: {} listed; {} converted, {} already there, {} compacted, {} deduplicated, \
         {} absent, {} swept, {} failed ({:.1} s, {:.0} journeys/s)",
        report.listed,
        report.converted,
        report.already_there,
        report.compacted,
        report.deduplicated,
        report.absent,
        report.swept,
        report.failed.len(),
        report.seconds,
        report.rate_per_second,
    );
    for failure in &report.failed {
        outln!("  failed {}: {}", failure.journey, failure.reason);
    }
    if report.is_complete() {
        outln!("every journey is in the {to} layout; the dataset records layout {to}");
    } else {
        outln!("the migration is still recorded as under way; run the same command again");
    }
}
