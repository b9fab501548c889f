//! `flyrtech-lab migrate-bench`: creates journeys (default 1,000,000) on an empty Redis, moves them
//! to the hash layout and back, and reports the rates (docs/results/migration.json).

use std::path::PathBuf;

use clap::Args;
use flyrtech_infrastructure::dataset::{MigrationReport, MigrationSettings};
use flyrtech_infrastructure::{Layout, Redis, RedisJourneyStore, dataset};

use super::{DONE, FOUND, connect, emit, progress_bar, shutdown_signal};
use flyrtech_cli::config::Settings;

/// Runs `flyrtech-lab migrate-bench`; [`FOUND`] when a journey came back different.
///
/// # Errors
/// A Redis that already holds journeys, Redis failures, or interrupted.
pub async fn run(args: &MigrateBenchArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "migrate-bench").await?;
    let report = tokio::select! {
        report = migrate_bench(args, &redis) => report?,
        () = shutdown_signal() => anyhow::bail!("interrupted"),
    };
    emit(&report, args.json.as_deref())?;
    Ok(if report.differing == 0 { DONE } else { FOUND })
}

/// Options of `flyrtech-lab migrate-bench`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
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

/// What `flyrtech-lab migrate-bench` measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MigrateBenchReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::compare::report::Machine,
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
        .arg(flyrtech_infrastructure::keys::JOURNEY_INDEX)
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
                let journey = crate::compare::synthetic_journey(&id(n)?, args.segments)?;
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
        let expected = crate::compare::synthetic_journey(&id(n)?, args.segments)?;
        verified += 1;
        differing += usize::from(store.get(&expected.id).await? != expected);
    }
    Ok(MigrateBenchReport {
        schema_version: 1,
        command: crate::compare::report::command_line(),
        started_at,
        machine: crate::compare::report::Machine::detect(
            crate::compare::redis_version_of(redis).await,
        ),
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
