//! `flyrtech audit`: replays the published events and compares them with the stored journeys
//! (lost updates, version gaps, unpublished events), or with `--projection` compares the
//! PostgreSQL projection with them. Exits with [`FOUND`] when it finds anything. The machinery
//! is `flyrtech_infrastructure::events::{audit, projection}`.

use flyrtech_cli::outln;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use flyrtech_core::JourneyStore;
use flyrtech_infrastructure::events::audit::{AuditReport, audit};
use flyrtech_infrastructure::projection;
use flyrtech_infrastructure::{Redis, RedisJourneyStore, StoreConfig, dataset};

use super::{DONE, FOUND, connect};
use flyrtech_cli::config::BusArgs;
use flyrtech_cli::config::DEFAULT_SERVE_STRATEGY;
use flyrtech_cli::config::Settings;

/// Runs `flyrtech audit`; [`FOUND`] when it finds anything.
///
/// # Errors
/// Redis or PostgreSQL unreachable, or the JSON report cannot be written.
pub async fn run(args: &AuditArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "audit").await?;
    // The audit only reads, and reads a journey in whichever layout it is: it records
    // nothing and refuses no strategy.
    let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
    let state = dataset::state(&redis).await?;
    tracing::info!(dataset = %state, "auditing");
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?;
    let (clean, findings) = match &args.projection {
        Some(url) => {
            let report =
                audit_projection(url, &store, args.json.as_ref(), args.limit, args.repair).await?;
            (
                report.is_clean(),
                vec![("audit_projection_differences", report.differences.len())],
            )
        }
        None => {
            let report = run_audit(args, &store, &redis).await?;
            (
                report.is_clean(),
                vec![
                    ("audit_lost_updates", report.lost_updates.len()),
                    ("audit_version_gaps", report.version_gaps.len()),
                ],
            )
        }
    };
    if let Some(path) = &args.metrics_file {
        write_metrics(path, &findings)?;
    }
    Ok(if clean { DONE } else { FOUND })
}

/// Writes the findings as Prometheus gauges, for node_exporter's textfile collector (an
/// operator runs the audit from cron; the rules in `deploy/prometheus/alerts.yml` alert on the
/// file's values). Written beside `path` and renamed over it, so a scrape never reads half.
///
/// # Errors
/// The file cannot be written.
fn write_metrics(path: &std::path::Path, findings: &[(&'static str, usize)]) -> anyhow::Result<()> {
    use flyrtech_infrastructure::telemetry;
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    metrics::with_local_recorder(&recorder, || {
        telemetry::describe();
        for (name, found) in findings {
            #[allow(clippy::cast_precision_loss)]
            metrics::gauge!(*name).set(*found as f64);
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        metrics::gauge!("audit_last_run_timestamp_seconds").set(now.floor());
    });
    let partial = path.with_extension("prom.partial");
    std::fs::write(&partial, recorder.handle().render())
        .with_context(|| format!("cannot write {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::info!(path = %path.display(), "wrote the audit's findings as metrics");
    Ok(())
}

/// Options of `flyrtech audit`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct AuditArgs {
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Also write the findings as Prometheus gauges to this file (`audit_lost_updates`, …), for
    /// node_exporter's textfile collector: the alert rules read them (docs/operations.md).
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Findings listed in the terminal output (all are in the JSON).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Compare the PostgreSQL projection at this URL (`flyrtech project`) with the stored
    /// journeys, instead of replaying the bus.
    #[arg(long, env = "FLYRTECH_PROJECTION")]
    pub projection: Option<String>,
    /// With --projection: first undo, down to the stored version, every journey the projection
    /// holds at a version the store never reached (changes a failover discarded after they were
    /// published), then compare.
    #[arg(long, requires = "projection")]
    pub repair: bool,
    #[command(flatten)]
    #[serde(flatten)]
    pub bus: BusArgs,
}

/// Audits every listed journey and prints the findings.
///
/// # Errors
/// Redis unreachable, or the JSON report cannot be written.
pub async fn run_audit<S: JourneyStore>(
    args: &AuditArgs,
    store: &S,
    redis: &Redis,
) -> anyhow::Result<AuditReport> {
    if let Some(url) = &args.bus.bus {
        anyhow::bail!(
            "audit replays a Redis-stream bus; the JetStream bus {url} is audited through its \
             projection: project it (flyrtech project) and run audit --projection"
        );
    }
    let bus = args.bus.redis(redis).await?;
    let report = audit(store, redis, &bus, args.bus.events_stream(), None).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        tracing::info!(path = %path.display(), "wrote the audit report");
    }
    outln!("{}", audit_line(&report));
    for lost in report.lost_updates.iter().take(args.limit) {
        outln!(
            "lost update: journey {} version {} set {} to {} ({})",
            lost.journey,
            lost.version,
            lost.segment.as_deref().unwrap_or("the journey status"),
            lost.to,
            serde_json::to_value(&lost.reason)
                .ok()
                .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                .unwrap_or_default()
        );
    }
    for gap in report.version_gaps.iter().take(args.limit) {
        outln!(
            "version gap: journey {} version {} ({:?})",
            gap.journey,
            gap.version,
            gap.cause
        );
    }
    Ok(report)
}

/// The audit's summary, one line: every count named.
pub fn audit_line(report: &AuditReport) -> String {
    format!(
        "audit: {} journeys, {} changes published, {} duplicate deliveries, {} lost updates, \
         {} version gaps, {} unpublished, {} parked",
        report.journeys,
        report.changes_published,
        report.duplicate_deliveries,
        report.lost_updates.len(),
        report.version_gaps.len(),
        report.unpublished,
        report.parked,
    )
}

/// Compares the projection with every listed journey and prints the differences.
///
/// # Errors
/// Either side unreachable, or the JSON report cannot be written.
pub async fn audit_projection<S: JourneyStore>(
    url: &str,
    store: &S,
    json: Option<&PathBuf>,
    limit: usize,
    repair: bool,
) -> anyhow::Result<projection::ProjectionReport> {
    let mut client = projection::connect(url).await?;
    let ids = store.list_ids().await?;
    if repair {
        let repaired = projection::repair_ahead(store, &mut client, &ids).await?;
        outln!(
            "projection repair: {} journeys were ahead of the store and are back at its version",
            repaired.len()
        );
        for id in repaired.iter().take(limit) {
            outln!("repaired: journey {id}");
        }
    }
    let report = projection::reconcile(store, &client, &ids).await?;
    if let Some(path) = json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
    }
    outln!(
        "projection audit: {} journeys, {} changes projected, {} differences",
        report.journeys,
        report.changes_projected,
        report.differences.len()
    );
    for d in report.differences.iter().take(limit) {
        outln!(
            "difference: journey {} {}: stored {}, projected {}",
            d.journey,
            d.what,
            d.stored,
            d.projected
        );
    }
    Ok(report)
}
