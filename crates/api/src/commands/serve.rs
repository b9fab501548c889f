//! `flyrtech serve`: the journey HTTP API with one strategy (default [`DEFAULT_SERVE_STRATEGY`]),
//! on the configured Redis or a private, persistent redis-server. The service is
//! [`crate::http`].

use flyrtech_infrastructure::{LockSettings, StoreConfig};

use super::{DEFAULT_SERVE_STRATEGY, DONE, shutdown_signal};
use crate::config::{ServeArgs, ServeSettings, Settings};
use crate::deployment::{Deployment, Private};
use crate::http::auth::{Access, ApiKeys};
use crate::http::{Application, ServeConfig};

/// Runs `flyrtech serve` until ctrl-c or SIGTERM.
///
/// # Errors
/// Bad settings, Redis unreachable or refused by the start-up guards, or the listener fails.
pub async fn run(args: &ServeArgs, settings: Settings) -> anyhow::Result<i32> {
    serve(args, settings).await.map(|()| DONE)
}

async fn serve(args: &ServeArgs, settings: Settings) -> anyhow::Result<()> {
    let serve = ServeSettings::resolve(args, &settings.file)?;
    let seed = serve.seed.load()?;
    let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
    // The embedded default persists: a restart keeps every acknowledged update.
    let private = if args.cluster {
        Private::Cluster
    } else {
        Private::Persistent {
            dir: serve.data_dir.clone(),
            fsync: serve.fsync,
        }
    };
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), private)?;
    let mut store = StoreConfig::new(strategy);
    store.processing_delay = settings.processing_delay.unwrap_or_default();
    store.lock = LockSettings {
        urls: settings.lock_urls,
        ..LockSettings::default()
    };
    store.replicas = settings.replicas;
    let mut config = ServeConfig::new(serve.listen, &deployment.url, store);
    config.seed = seed;
    config.request_timeout = serve.request_timeout;
    config.allow_eviction = settings.allow_eviction;
    config.backlog = serve.backlog;
    config.access = Access {
        keys: match &serve.api_keys {
            Some(path) => {
                let keys = ApiKeys::load(path)?;
                tracing::info!(file = %path.display(), open_reads = serve.open_reads, "requests need an API key");
                Some(keys)
            }
            None => {
                tracing::warn!(
                    listen = %serve.listen,
                    "no API keys (--api-keys): every request is allowed; serving on a loopback \
                     address only unless --insecure-no-auth"
                );
                None
            }
        },
        open_reads: serve.open_reads,
    };
    config.insecure_no_auth = serve.insecure_no_auth;
    config.cache = serve.cache;
    config.redis_ca = match &settings.redis_ca {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            anyhow::anyhow!("cannot read the Redis CA file {}: {e}", path.display())
        })?),
        None => None,
    };
    config.rate_limit = serve.rate_limit;
    config.quotas = serve.quotas;
    config.trusted_proxies = serve.trusted_proxies;
    config.max_journey_bytes = serve.max_journey_bytes;
    config.connections = serve.connections;
    let app = Application::build(config).await?;
    let seeded = app.seeded();
    tracing::info!(
        created = seeded.created,
        kept = seeded.kept,
        "seeded journeys (existing journeys are never overwritten)"
    );
    app.run(shutdown_signal()).await?;
    Ok(())
}
