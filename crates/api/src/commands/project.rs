//! `flyrtech project`: the bus' changes into the PostgreSQL projection, exactly once and in
//! per-journey order, until SIGTERM or, with `--drain`, until every change on the bus is
//! projected. The machinery is `flyrtech_infrastructure::projection`.

use std::time::Duration;

use clap::Args;
use flyrtech_infrastructure::events::nats::{JetStream, StreamSettings};
use flyrtech_infrastructure::projection::{
    self, PartitionedProjector, ProjectorSettings, ProjectorStats,
};

use super::{DONE, shutdown_signal};
use crate::config::Settings;

/// Runs `flyrtech project`.
///
/// # Errors
/// Either server unreachable, or the schema cannot be applied.
pub async fn run(args: &ProjectArgs, _settings: Settings) -> anyhow::Result<i32> {
    project(args, shutdown_signal()).await?;
    Ok(DONE)
}

/// Options of `flyrtech project`.
#[derive(Debug, Clone, Args)]
pub struct ProjectArgs {
    /// The JetStream server the relay publishes to (`nats://host:port`).
    #[arg(long, env = "FLYRTECH_BUS")]
    pub bus: String,
    /// The projection's database (`postgres://user@host:port/db`); its tables are created from
    /// docs/outbox/SCHEMA.sql when missing.
    #[arg(long, env = "FLYRTECH_PROJECTION")]
    pub postgres: String,
    /// Stop once every change on the bus is projected (instead of running until SIGTERM).
    #[arg(long)]
    pub drain: bool,
    /// Changes applied per transaction.
    #[arg(long, default_value_t = 512)]
    pub batch: usize,
    /// The durable consumer's name.
    #[arg(long, default_value = "projection")]
    pub consumer: String,
    /// How long a delivered change may stay unacknowledged before JetStream redelivers it
    /// (a projector killed mid-batch: how long the rest of its last batch waits for whoever
    /// takes its partition over), in milliseconds.
    #[arg(long, default_value_t = 5_000)]
    pub ack_wait_ms: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`): `projector_changes_total` by
    /// outcome, `projector_lag_seconds` (commit in Redis to commit here), and
    /// `projector_owned_partitions`.
    #[arg(long)]
    pub metrics_listen: Option<std::net::SocketAddr>,
}

/// Connects both ends and joins the projectors sharing the stream's partitions.
///
/// # Errors
/// Either server unreachable, or the schema cannot be applied.
pub async fn projector(
    bus: &str,
    postgres: &str,
    settings: ProjectorSettings,
) -> anyhow::Result<PartitionedProjector> {
    if settings.batch == 0 {
        anyhow::bail!("--batch must be at least 1");
    }
    let bus = JetStream::connect(bus, StreamSettings::default()).await?;
    let client = projection::connect(postgres).await?;
    Ok(PartitionedProjector::join(&bus, client, settings).await?)
}

/// Runs the projector until `shutdown` (or, with `--drain`, until caught up).
///
/// # Errors
/// A server fails; what was committed stays, what was not is redelivered on restart.
pub async fn project(
    args: &ProjectArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ProjectorStats> {
    super::serve_metrics(args.metrics_listen, "projector").await?;
    let mut projector = projector(
        &args.bus,
        &args.postgres,
        ProjectorSettings {
            consumer: args.consumer.clone(),
            batch: args.batch,
            ack_wait: Duration::from_millis(args.ack_wait_ms),
            ..ProjectorSettings::default()
        },
    )
    .await?;
    tracing::info!(consumer = %args.consumer, drain = args.drain, "projecting the bus into PostgreSQL");
    tokio::pin!(shutdown);
    loop {
        let applied = tokio::select! {
            applied = projector.step() => applied?,
            () = &mut shutdown => break,
        };
        if applied.stats.received == 0 && args.drain && projector.caught_up().await? {
            break;
        }
    }
    let stats = projector.stats().clone();
    tracing::info!(
        applied = stats.changes.applied,
        duplicates = stats.changes.duplicates,
        held = stats.changes.held,
        stale = stats.changes.stale,
        rejected = stats.rejected,
        "projector stopped"
    );
    Ok(stats)
}
