//! The subcommands of `flyrtech`, the service, one file each: its arguments (clap) and its `run`, which
//! connects what it needs, does the work and returns the process' exit status. `main.rs` parses
//! the command line and calls one `run`; what several commands share lives here.
//!
//! # Exit statuses
//! [`DONE`] (0); 1 for a failure (`error: …` on stderr with its causes, from `main.rs`) or an
//! audit that found something ([`FOUND`]); 2 for a usage error (clap's); [`INCOMPLETE`] (3) for
//! partial work (some journeys left out, each listed with the reason).
//!
//! # What it may import
//! The HTTP service, the configuration and the deployment, and the infrastructure. Nothing in
//! this crate imports the commands but `main.rs`; the lab's binary (`flyrtech-lab`) shares the
//! helpers below (the exit statuses, the report's output, the connection).

pub mod api_key;
pub mod audit;
pub mod import_legacy;
pub mod migrate;
pub mod project;
pub mod redis_acl;
pub mod relay;
pub mod serve;

use flyrtech_infrastructure::telemetry::health::Dependencies;
use flyrtech_infrastructure::{Layout, Redis, RedisJourneyStore, StoreConfig, Strategy, dataset};

use flyrtech_cli::config::Settings;

pub use flyrtech_cli::command::{
    DONE, FOUND, INCOMPLETE, connect, emit, exit_status, redis_settings, shutdown_signal,
    write_report,
};

/// A store for the configured strategy, admitted by the dataset's layout guard (which records
/// the layout on an empty Redis). Without a configured strategy: the default one of the
/// dataset's layout.
pub(crate) async fn admitted_store(
    settings: &Settings,
    redis: &Redis,
) -> anyhow::Result<RedisJourneyStore> {
    let strategy = match settings.strategy {
        Some(strategy) => strategy,
        None => match dataset::state(redis).await?.layout {
            Some(Layout::Hash) => Strategy::Hash,
            _ => flyrtech_cli::config::DEFAULT_SERVE_STRATEGY,
        },
    };
    let state = dataset::admit(redis, strategy).await?;
    tracing::info!(dataset = %state, %strategy, "admitted by the dataset's layout");
    Ok(RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?)
}

/// How far a long operator command has come (`migrate`, `import-legacy`), as log lines: one at
/// most every [`Progress::EVERY`], and one at the end. A log line, not a terminal bar: the
/// commands run in jobs and pods as often as in a terminal, and a log line reads the same in
/// both.
#[derive(Debug)]
pub(crate) struct Progress {
    what: &'static str,
    last: std::sync::Mutex<std::time::Instant>,
}

impl Progress {
    /// The longest time between two lines.
    pub(crate) const EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    pub(crate) fn new(what: &'static str) -> Self {
        Self {
            what,
            last: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// `done` of `total`: logged when the last line is older than [`Self::EVERY`].
    pub(crate) fn update(&self, done: u64, total: u64) {
        let mut last = self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.elapsed() >= Self::EVERY {
            *last = std::time::Instant::now();
            tracing::info!(done, total, "{}: {done} of {total}", self.what);
        }
    }
}

/// Serves a worker's operations endpoints at `addr` (`--metrics-listen` of `relay` and
/// `project`), from a task of its own: its Prometheus metrics on `GET /metrics`, `GET /health`
/// (200 while the process runs) and `GET /ready` (200 while every dependency in `health`
/// answers, else 503; both with the dependencies as JSON). Without an address the recorder
/// is installed all the same, so that gauges are kept.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_metrics(
    addr: Option<std::net::SocketAddr>,
    what: &str,
    health: Dependencies,
) -> anyhow::Result<()> {
    use axum::http::StatusCode;
    use axum::routing::get;
    let handle = crate::http::prometheus();
    let Some(addr) = addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let ready = health.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .route(
            "/health",
            get(move || {
                let readiness = health.readiness();
                async move { axum::Json(readiness) }
            }),
        )
        .route(
            "/ready",
            get(move || {
                let readiness = ready.readiness();
                let status = if readiness.ready() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                async move { (status, axum::Json(readiness)) }
            }),
        );
    tracing::info!(%addr, "serving {what} metrics on /metrics, and /health and /ready");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
