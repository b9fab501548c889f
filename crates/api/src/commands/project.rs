//! `flyrtech project`: the bus' changes into the PostgreSQL projection, exactly once and in
//! per-journey order, until SIGTERM or, with `--drain`, until every change on the bus is
//! projected. The machinery is `flyrtech_infrastructure::projection`; the settings are
//! [`ProjectArgs`], flags over the file's `[project]`.

use flyrtech_infrastructure::events::nats::{JetStream, StreamSettings};
use flyrtech_infrastructure::projection::{
    self, PartitionedProjector, ProjectorSettings, ProjectorStats,
};

use super::{DONE, shutdown_signal};
use flyrtech_cli::config::{ProjectArgs, Settings};

/// Runs `flyrtech project`.
///
/// # Errors
/// Either server unreachable, or the schema cannot be applied.
pub async fn run(args: &ProjectArgs, _settings: Settings) -> anyhow::Result<i32> {
    project(args, shutdown_signal()).await?;
    Ok(DONE)
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
    let (bus, postgres) = args.endpoints()?;
    let settings = args.settings()?;
    super::serve_metrics(args.metrics_listen, "projector").await?;
    let consumer = settings.consumer.clone();
    let mut projector = projector(bus, postgres, settings).await?;
    tracing::info!(%consumer, drain = args.drain, "projecting the bus into PostgreSQL");
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
        replaced = stats.changes.replaced,
        superseded = stats.changes.superseded,
        rejected = stats.rejected,
        "projector stopped"
    );
    Ok(stats)
}
