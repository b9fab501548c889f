//! `flyrtech migrate` and `flyrtech import-legacy`: the operator commands that move journeys
//! between layouts and bring them over from the original service (docs/migration.md).
//!
//! Each parses its arguments, calls `flyrtech_infrastructure::{dataset, legacy}`, shows a
//! progress bar when stderr is a terminal (a plain summary otherwise), and says with its exit
//! status whether everything was done: 0 when it was, [`INCOMPLETE`] when some journeys were
//! not converted or imported (each is listed with the reason).

use std::path::PathBuf;

use clap::Args;
use flyrtech_infrastructure::dataset::legacy::{self, ImportOptions, ImportReport, StatusMap};
use flyrtech_infrastructure::dataset::{self, MigrationReport, MigrationSettings};
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
    /// Partitions converted at once, each with its own pipelines.
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
pub async fn migrate(
    args: &MigrateArgs,
    redis: &Redis,
    replicas: Option<flyrtech_infrastructure::ReplicaWait>,
) -> anyhow::Result<i32> {
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency must be at least 1");
    }
    let before = dataset::state(redis).await?;
    tracing::info!(dataset = %before, to = %args.to, "migrating");
    let bar = progress_bar("journeys");
    let settings = MigrationSettings {
        concurrency: args.concurrency,
        replicas,
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

/// Options of `flyrtech migrate-bench`.
#[derive(Debug, Clone, Args)]
pub struct MigrateBenchArgs {
    /// Journeys to create, then migrate to the hash layout and back.
    #[arg(long, default_value_t = 1_000_000)]
    pub journeys: usize,
    /// Segments per journey (the sample journeys have 1 to 3).
    #[arg(long, default_value_t = 3)]
    pub segments: usize,
    /// Partitions converted at once, each with its own pipelines.
    #[arg(long, default_value_t = MigrationSettings::default().concurrency)]
    pub concurrency: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// What `flyrtech migrate-bench` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateBenchReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::lab::report::Machine,
    pub journeys: usize,
    pub segments: usize,
    pub concurrency: usize,
    /// Seconds to create the journeys (document layout).
    pub fill_seconds: f64,
    /// document → hash.
    pub to_hash: MigrationReport,
    /// hash → document (the rollback).
    pub to_document: MigrationReport,
    /// A second `--to document` with nothing left to do.
    pub no_op: MigrationReport,
    /// Journeys read back after the round trip and compared with what was created.
    pub verified: usize,
    /// How many of those differed (must be 0).
    pub differing: usize,
}

/// Creates `--journeys` synthetic journeys on an empty Redis, migrates them to the hash layout
/// and back, and reports the rates (docs/results/migration.json).
///
/// # Errors
/// A Redis that already holds journeys, Redis failures, or an incomplete migration.
pub async fn migrate_bench(
    args: &MigrateBenchArgs,
    redis: &Redis,
) -> anyhow::Result<MigrateBenchReport> {
    use flyrtech_core::{JourneyId, JourneyStore};
    use flyrtech_infrastructure::{StoreConfig, Strategy};
    use futures::StreamExt;

    if args.journeys == 0 || args.concurrency == 0 {
        anyhow::bail!("--journeys and --concurrency must each be at least 1");
    }
    let listed: u64 = redis::cmd("SCARD")
        .arg(flyrtech_infrastructure::plumbing::keys::JOURNEY_INDEX)
        .query_async(&mut redis.shared())
        .await?;
    if listed > 0 {
        anyhow::bail!(
            "this Redis already lists {listed} journeys; run the benchmark on an empty Redis"
        );
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    dataset::admit(redis, Strategy::Lua).await?;
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(Strategy::Lua)).await?;
    let id = |n: usize| JourneyId::parse(format!("BENCH-{n:09}"));
    let fill = std::time::Instant::now();
    let bar = progress_bar("journeys created");
    bar.set_length(args.journeys as u64);
    let created: Vec<anyhow::Result<()>> = futures::stream::iter(0..args.journeys)
        .map(|n| {
            let (store, bar) = (&store, &bar);
            async move {
                let journey = crate::lab::synthetic_journey(&id(n)?, args.segments)?;
                store.create(&journey).await?;
                bar.inc(1);
                Ok(())
            }
        })
        .buffer_unordered(args.concurrency)
        .collect()
        .await;
    created.into_iter().collect::<anyhow::Result<()>>()?;
    bar.finish_and_clear();
    let fill_seconds = fill.elapsed().as_secs_f64();
    tracing::info!(
        journeys = args.journeys,
        fill_seconds,
        "journeys created; migrating"
    );

    let settings = MigrationSettings {
        concurrency: args.concurrency,
        ..MigrationSettings::default()
    };
    let run = async |to| -> anyhow::Result<MigrationReport> {
        let bar = progress_bar(&format!("journeys to {to}"));
        let report = dataset::migrate(redis, to, settings, &|done, listed| {
            bar.set_length(listed);
            bar.set_position(done);
        })
        .await?;
        bar.finish_and_clear();
        if !report.is_complete() {
            anyhow::bail!(
                "the migration to {to} left {} journeys",
                report.failed.len()
            );
        }
        tracing::info!(%to, seconds = report.seconds, rate = report.rate_per_second, "migrated");
        Ok(report)
    };
    let to_hash = run(Layout::Hash).await?;
    let to_document = run(Layout::Document).await?;
    let no_op = run(Layout::Document).await?;

    // Spot-check the round trip: every 1000th journey is exactly what was created.
    let mut verified = 0;
    let mut differing = 0;
    for n in (0..args.journeys).step_by(1000) {
        let expected = crate::lab::synthetic_journey(&id(n)?, args.segments)?;
        verified += 1;
        differing += usize::from(store.get(&expected.id).await? != expected);
    }
    Ok(MigrateBenchReport {
        schema_version: 1,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at,
        machine: crate::lab::report::Machine::detect(crate::lab::redis_version_of(redis).await),
        journeys: args.journeys,
        segments: args.segments,
        concurrency: args.concurrency,
        fill_seconds,
        to_hash,
        to_document,
        no_op,
        verified,
        differing,
    })
}
