//! What every command of both binaries shares: the exit statuses, how an error is reported,
//! the Redis a command connects to, its JSON report, and the shutdown signal.
//!
//! # Exit statuses
//! [`DONE`] (0); 1 for a failure (`error: …` on stderr with its causes, [`exit_status`]) or a
//! finding ([`FOUND`]: an audit that found lost updates, a history that is not linearizable, a
//! resource that kept growing); 2 for a usage error: a command line clap refuses, or
//! a configuration that cannot work ([`crate::config::ConfigError`]); [`INCOMPLETE`] (3) for partial or
//! undecided work (some journeys left out, each listed with the reason; a check out of budget).

use std::path::Path;

use anyhow::Context;
use flyrtech_infrastructure::{Redis, RedisSettings};

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
            let usage = e.chain().any(|cause| {
                cause
                    .downcast_ref::<crate::config::ConfigError>()
                    .is_some_and(|c| !matches!(c, crate::config::ConfigError::Internal(_)))
            });
            std::process::ExitCode::from(if usage { 2 } else { 1 })
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
