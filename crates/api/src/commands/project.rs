//! `flyrtech project`: the bus' changes into the PostgreSQL projection, exactly once and in
//! per-journey order, until SIGTERM or, with `--drain`, until every change on the bus is
//! projected, riding out restarts of either server. The machinery is `flyrtech_infrastructure::projection`; the settings are
//! [`ProjectArgs`], flags over the file's `[project]`.

use flyrtech_infrastructure::events::nats::{JetStream, StreamSettings};
use flyrtech_infrastructure::projection::{
    self, PartitionedProjector, ProjectionError, ProjectorSettings, ProjectorStats,
};
use flyrtech_infrastructure::telemetry::health::{Backoff, Dependencies, Dependency};

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
) -> Result<PartitionedProjector, ProjectionError> {
    let bus = JetStream::connect(bus, StreamSettings::default()).await?;
    let client = projection::connect(postgres).await?;
    PartitionedProjector::join(&bus, client, settings).await
}

/// Runs the projector until `shutdown` (or, with `--drain`, until caught up).
///
/// A lost dependency never ends it: a failed step marks PostgreSQL or NATS unreachable on
/// `/ready` and in `dependency_reachable`, waits a [`Backoff`] and tries again; a lost
/// PostgreSQL session (its partition leases gone with it) is replaced by a new projector that
/// joins again. What the failed step had fetched and not committed is redelivered, so nothing
/// is skipped and nothing applied twice (`flyrtech_infrastructure::projection`).
///
/// # Errors
/// Bad settings, the metrics listener, or a failure no retry mends (a corrupt held change).
pub async fn project(
    args: &ProjectArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<ProjectorStats> {
    let (bus, postgres) = args.endpoints()?;
    let settings = args.settings()?;
    let health = Dependencies::watch(&[Dependency::Nats, Dependency::Postgres]);
    super::serve_metrics(args.metrics_listen, "projector", health.clone()).await?;
    let consumer = settings.consumer.clone();
    tracing::info!(%consumer, drain = args.drain, "projecting the bus into PostgreSQL");
    tokio::pin!(shutdown);
    let mut current: Option<PartitionedProjector> = None;
    // The totals of projectors replaced after their session was lost.
    let mut earlier = ProjectorStats::default();
    let mut backoff = Backoff::default();
    loop {
        let step = async {
            let projector = match &mut current {
                Some(projector) => projector,
                None => current.insert(projector(bus, postgres, settings.clone()).await?),
            };
            let applied = projector.step().await?;
            Ok::<_, ProjectionError>(
                applied.stats.received == 0 && args.drain && projector.caught_up().await?,
            )
        };
        let result = tokio::select! {
            result = step => result,
            () = &mut shutdown => break,
        };
        match result {
            Ok(done) => {
                health.up(Dependency::Nats);
                health.up(Dependency::Postgres);
                backoff.reset();
                if done {
                    break;
                }
            }
            Err(e) => {
                let Some(dependency) = e.dependency() else {
                    return Err(e.into());
                };
                health.down(dependency, &e);
                let pause = backoff.next_delay();
                tracing::warn!(%dependency, error = %e, retry_in = ?pause, "projector step failed; retrying");
                if let Some(lost) = current.take_if(|p| p.session_lost()) {
                    tracing::warn!("the PostgreSQL session is gone; joining again with a new one");
                    earlier += lost.stats().clone();
                }
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    () = &mut shutdown => break,
                }
            }
        }
    }
    let mut stats = earlier;
    if let Some(projector) = &current {
        stats += projector.stats().clone();
    }
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
