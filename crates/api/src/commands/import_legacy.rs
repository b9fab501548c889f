//! `flyrtech import-legacy`: brings the original .NET service's journeys into this Redis, in
//! the configured strategy's layout, never overwriting one that exists (docs/migration.md).
//! Exits with [`INCOMPLETE`] when some were skipped (each is listed with the reason).

use flyrtech_cli::outln;
use std::path::PathBuf;

use clap::Args;
use flyrtech_infrastructure::dataset::legacy::{self, ImportOptions, ImportReport, StatusMap};
use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings};

use super::{DONE, INCOMPLETE, admitted_store, connect, shutdown_signal, write_report};
use flyrtech_cli::config::Settings;

/// Runs `flyrtech import-legacy`; the exit status.
///
/// # Errors
/// Redis unreachable, a dataset in another layout, the report cannot be written, or
/// interrupted (what was imported stays).
pub async fn run(args: &ImportArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "import-legacy").await?;
    let store = admitted_store(&settings, &redis).await?;
    tokio::select! {
        code = import_legacy(args, &redis, &store) => code,
        () = shutdown_signal() => anyhow::bail!(
            "interrupted: journeys imported so far are complete; run the same command \
             again to finish (existing journeys are kept)"
        ),
    }
}

/// Options of `flyrtech import-legacy`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct ImportArgs {
    /// The original service's Redis [default: the configured Redis itself; the original's keys
    /// and ours cannot collide].
    #[arg(long)]
    pub from: Option<String>,
    /// Rename a status before it is parsed, e.g. `--map-status Landed=Arrived` (case-insensitive;
    /// repeat for more). Our own status names are recognised in any case without it.
    #[arg(long = "map-status", value_name = "FROM=TO")]
    pub map_status: Vec<String>,
    /// Report what would be imported, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Journeys read and created at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Runs `flyrtech import-legacy` into `store`'s layout; the exit status.
///
/// # Errors
/// A bad `--map-status`, either Redis unreachable, or the report cannot be written.
pub async fn import_legacy(
    args: &ImportArgs,
    redis: &Redis,
    store: &RedisJourneyStore,
) -> anyhow::Result<i32> {
    let statuses = StatusMap::parse(&args.map_status).map_err(anyhow::Error::msg)?;
    let source = match &args.from {
        Some(url) => Redis::connect(&RedisSettings::new(url)).await?,
        None => redis.clone(),
    };
    let options = ImportOptions {
        statuses,
        dry_run: args.dry_run,
        concurrency: args.concurrency.max(1),
    };
    let progress = super::Progress::new("journeys imported");
    let report = legacy::import(&source, store, &options, &|done, found| {
        progress.update(done as u64, found as u64);
    })
    .await?;
    write_report(&report, args.json.as_deref())?;
    print_import(&report, store);
    Ok(if report.is_complete() {
        DONE
    } else {
        INCOMPLETE
    })
}
fn print_import(report: &ImportReport, store: &RedisJourneyStore) {
    let verb = if report.dry_run {
        "would import"
    } else {
        "imported"
    };
    outln!(
        "import-legacy{}: {} found ({} listed in journey:ids, {} keys scanned); {verb} {} in the \
         {} layout, {} kept (already here), {} skipped",
        if report.dry_run { " --dry-run" } else { "" },
        report.found,
        report.listed,
        report.scanned,
        report.imported,
        store.layout(),
        report.kept,
        report.skipped.len(),
    );
    if let Some(problem) = &report.index_problem {
        outln!("  note: {problem}");
    }
    for skipped in &report.skipped {
        outln!("  skipped {}: {}", skipped.journey, skipped.reason);
    }
}
