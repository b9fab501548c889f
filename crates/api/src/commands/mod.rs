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

/// `println!` for what a command reports on standard output, through [`output::line`]: a reader
/// that goes away early (`flyrtech migrate --to hash | head -1`) is not a panic.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::commands::output::line(format_args!($($arg)*))
    };
}

pub mod api_key;
pub mod audit;
pub mod import_legacy;
pub mod migrate;
pub mod output;
pub mod project;
pub mod redis_acl;
pub mod relay;
pub mod serve;

use std::path::Path;

use anyhow::Context;
use flyrtech_infrastructure::{
    Layout, Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy, dataset,
};

use crate::config::Settings;
use crate::deployment::{Deployment, Private};

/// The exit status of a command that did everything.
pub const DONE: i32 = 0;
/// The exit status of an audit that found lost updates, gaps or differences.
pub const FOUND: i32 = 1;
/// The exit status when some journeys were left out (listed in the output with the reason).
pub const INCOMPLETE: i32 = 3;

/// The process' exit status for what a command's `run` returned; an error is printed as
/// `error: …` with its causes on one line, never a stack backtrace, whatever RUST_BACKTRACE says
/// (panics keep theirs), and redacted as a last line of defence: whatever an error quotes (a URL
/// that did not parse, a line of a config file), no password reaches the terminal.
pub fn exit_status(result: anyhow::Result<i32>) -> std::process::ExitCode {
    match result {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            let message = flyrtech_infrastructure::secrets::redact_text(&format!("{e:#}"));
            eprintln!("error: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The configured Redis, or a private one. The operator commands on a private, empty server do
/// nothing useful, so they say so.
pub async fn connect(settings: &Settings, command: &str) -> anyhow::Result<(Deployment, Redis)> {
    if settings.redis_url.is_none()
        && matches!(command, "relay" | "audit" | "migrate" | "import-legacy")
    {
        tracing::warn!(
            "no Redis URL configured: {command} runs against a private, empty redis-server"
        );
    }
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), Private::Throwaway)?;
    let redis = Redis::connect(&redis_settings(settings, &deployment.url)?).await?;
    Ok((deployment, redis))
}

/// How to reach `url`: with the configured authorities for `rediss://` (`--redis-ca`).
///
/// # Errors
/// The CA file cannot be read.
pub fn redis_settings(settings: &Settings, url: &str) -> anyhow::Result<RedisSettings> {
    let redis = RedisSettings::new(url).waiting(settings.replicas.map(|w| w.timeout));
    Ok(match &settings.redis_ca {
        Some(path) => redis
            .with_ca_file(path)
            .with_context(|| format!("cannot read the Redis CA file {}", path.display()))?,
        None => redis,
    })
}

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
            _ => crate::config::DEFAULT_SERVE_STRATEGY,
        },
    };
    let state = dataset::admit(redis, strategy).await?;
    tracing::info!(dataset = %state, %strategy, "admitted by the dataset's layout");
    Ok(RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?)
}

/// Writes a report as pretty JSON to `path`, when one is given.
pub fn write_report(report: &impl serde::Serialize, path: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(report)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// Prints a measurement's report as JSON, and writes it to `path` when given.
pub fn emit(report: &impl serde::Serialize, path: Option<&Path>) -> anyhow::Result<()> {
    write_report(report, path)?;
    outln!("{}", serde_json::to_string_pretty(report)?);
    Ok(())
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

/// Resolves on ctrl-c or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested: finishing in-flight requests");
}

/// Serves the process' Prometheus metrics on `GET /metrics` at `addr` (`--metrics-listen` of
/// `relay` and `project`), from a task of its own; without an address the recorder is installed
/// all the same, so that gauges are kept.
///
/// # Errors
/// The address cannot be bound.
pub async fn serve_metrics(addr: Option<std::net::SocketAddr>, what: &str) -> anyhow::Result<()> {
    let handle = crate::http::prometheus();
    let Some(addr) = addr else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let handle = handle.clone();
            async move { handle.render() }
        }),
    );
    tracing::info!(%addr, "serving {what} metrics on /metrics");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(())
}
