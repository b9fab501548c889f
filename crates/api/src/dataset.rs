//! `flyrtech migrate` and `flyrtech import-legacy`: the operator commands that move journeys
//! between layouts and bring them over from the original service (docs/migration.md).
//!
//! Each parses its arguments, calls `flyrtech_infrastructure::{dataset, legacy}`, shows a
//! progress bar when stderr is a terminal (a plain summary otherwise), and says with its exit
//! status whether everything was done: 0 when it was, [`INCOMPLETE`] when some journeys were
//! not converted or imported (each is listed with the reason).

use std::path::PathBuf;

use clap::Args;
use flyrtech_infrastructure::dataset::{self, MigrationReport, MigrationSettings};
use flyrtech_infrastructure::legacy::{self, ImportOptions, ImportReport, StatusMap};
use flyrtech_infrastructure::{Layout, Redis, RedisJourneyStore, RedisSettings};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The exit status when some journeys were left out (listed in the output with the reason).
pub const INCOMPLETE: i32 = 3;

/// Options of `flyrtech migrate`.
#[derive(Debug, Clone, Args)]
pub struct MigrateArgs {
    /// The layout to move every journey to: `hash` (for the hash strategy) or `document`
    /// (for naive, local-lock, optimistic, redlock and lua).
    #[arg(long)]
    pub to: Layout,
    /// Journeys converted at once.
    #[arg(long, default_value_t = MigrationSettings::default().concurrency)]
    pub concurrency: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Options of `flyrtech import-legacy`.
#[derive(Debug, Clone, Args)]
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

/// A progress bar on stderr when it is a terminal; hidden otherwise.
fn progress_bar(what: &str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_json(path: Option<&PathBuf>, report: &impl serde::Serialize) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Runs `flyrtech migrate`; the exit status.
///
/// # Errors
/// Redis unreachable, or the report cannot be written.
pub async fn migrate(args: &MigrateArgs, redis: &Redis) -> anyhow::Result<i32> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let before = dataset::state(redis).await?;
    tracing::info!(dataset = %before, to = %args.to, "migrating");
    let bar = progress_bar("journeys");
    let settings = MigrationSettings {
        concurrency: args.concurrency,
        ..MigrationSettings::default()
    };
    let report = dataset::migrate(redis, args.to, settings, &|done, listed| {
        bar.set_length(listed);
        bar.set_position(done);
    })
    .await?;
    bar.finish_and_clear();
    write_json(args.json.as_ref(), &report)?;
    print_migration(&report);
    Ok(if report.is_complete() { 0 } else { INCOMPLETE })
}

#[allow(clippy::print_stdout)]
fn print_migration(report: &MigrationReport) {
    let to = report.to.map_or("?", Layout::name);
    println!(
        "migrate --to {to}: {} listed; {} converted, {} already there, {} deduplicated, {} absent, \
         {} swept, {} failed ({:.1} s, {:.0} journeys/s)",
        report.listed,
        report.converted,
        report.already_there,
        report.deduplicated,
        report.absent,
        report.swept,
        report.failed.len(),
        report.seconds,
        report.rate_per_second,
    );
    for failure in &report.failed {
        println!("  failed {}: {}", failure.journey, failure.reason);
    }
    if report.is_complete() {
        println!("every journey is in the {to} layout; the dataset records layout {to}");
    } else {
        println!("the migration is still recorded as under way; run the same command again");
    }
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
    let bar = progress_bar("journeys");
    let report = legacy::import(&source, store, &options, &|done, found| {
        bar.set_length(found as u64);
        bar.set_position(done as u64);
    })
    .await?;
    bar.finish_and_clear();
    write_json(args.json.as_ref(), &report)?;
    print_import(&report, store);
    Ok(if report.is_complete() { 0 } else { INCOMPLETE })
}

#[allow(clippy::print_stdout)]
fn print_import(report: &ImportReport, store: &RedisJourneyStore) {
    let verb = if report.dry_run {
        "would import"
    } else {
        "imported"
    };
    println!(
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
        println!("  note: {problem}");
    }
    for skipped in &report.skipped {
        println!("  skipped {}: {}", skipped.journey, skipped.reason);
    }
}
