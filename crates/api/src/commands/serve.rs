//! `flyrtech serve`: the journey HTTP API with one strategy (default
//! [`flyrtech_cli::config::DEFAULT_SERVE_STRATEGY`]), on the configured Redis or a private, persistent
//! redis-server. The service is [`crate::http`]; its settings, [`ServeSettings`], are made once
//! from the layers and handed to it whole.

use super::{DONE, shutdown_signal};
use crate::http::Application;
use flyrtech_cli::config::{ServeArgs, ServeSettings, Settings};
use flyrtech_cli::deployment::Deployment;

/// Runs `flyrtech serve` until ctrl-c or SIGTERM.
///
/// # Errors
/// Bad settings, Redis unreachable or refused by the start-up guards, or the listener fails.
pub async fn run(args: &ServeArgs, settings: Settings) -> anyhow::Result<i32> {
    let serve = ServeSettings::resolve(args, &settings)?;
    // The embedded default persists: a restart keeps every acknowledged update.
    let deployment = Deployment::resolve(serve.redis_url.as_deref(), serve.private.clone())?;
    let app = Application::build(serve, &deployment.url).await?;
    let seeded = app.seeded();
    tracing::info!(
        created = seeded.created,
        kept = seeded.kept,
        "seeded journeys (existing journeys are never overwritten)"
    );
    app.run(shutdown_signal()).await?;
    Ok(DONE)
}
