//! `flyrtech serve`: the HTTP API (FlyrTech.Api), with the strategy chosen at start-up.
//!
//! [`Application::build`] connects to Redis, builds the store for the configured strategy,
//! seeds the sample journeys without overwriting any, and binds the listener; [`Application::run`]
//! serves until the shutdown future resolves, then stops accepting and finishes the requests in
//! flight. Building and running are separate so tests bind port 0 and read the address.
//!
//! # What protects an acknowledged write
//! Every update goes through the configured strategy's atomic step; `If-Match` is checked inside
//! that step. A request that fails is answered with a problem (see [`problem`]) and changed
//! nothing, except 503, which says Redis could not confirm the write: retrying the same status
//! change is safe because it is idempotent.
//!
//! # Layout
//! - [`gate`]: what every request passes around its handler, in one middleware: the rate limit,
//!   the key check, the deadline, the request metrics and log lines.
//! - [`auth`]: API keys and their scopes, checked before any handler.
//! - [`limit`]: the per-client rate limit.
//! - [`quota`]: per-client shares of what every client shares (journeys, cache, outbox).
//! - [`journeys`], [`cache`], [`ops`]: the handlers.
//! - [`problem`]: the one mapping from errors to `application/problem+json`.
//! - [`server`]: the accept loop: header and idle timeouts, the connection cap, the bounded
//!   drain at shutdown.
//! - [`etag`]: versions as entity tags, `If-Match`, `If-None-Match`.
//! - [`openapi`]: the OpenAPI document behind `/swagger-ui`.

pub mod auth;
pub mod cache;
pub mod etag;
pub mod gate;
pub mod journeys;
pub mod limit;
pub mod openapi;
pub mod ops;
pub mod problem;
pub mod quota;
pub mod server;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use auth::{Access, ApiKeys};
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use cache::CacheLimits;
use flyrtech_core::StoreError;
use flyrtech_infrastructure::events::backlog::BacklogWatch;
use flyrtech_infrastructure::secrets::redact;
use flyrtech_infrastructure::store::quota::JourneyQuota;
use flyrtech_infrastructure::{
    Confirmation, DatasetError, Redis, RedisCache, RedisJourneyStore, RedisSettings, SeedReport,
    dataset,
};
use limit::Limiter;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use utoipa_swagger_ui::SwaggerUi;

use self::problem::ApiError;
use flyrtech_cli::config::{ConfigError, Connections, ServeSettings, TrustedProxies};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Redis could not be reached, or the strategy could not be set up.
    #[error("cannot set up the journey store on {url}")]
    Store {
        /// The configured URL, its password replaced by `***`.
        url: String,
        /// The cause.
        #[source]
        source: StoreError,
    },
    /// Redis may evict journeys (see `flyrtech_infrastructure::connection::server`).
    #[error(transparent)]
    Server(#[from] flyrtech_infrastructure::connection::server::CheckError),
    /// The dataset's layout is not the strategy's (see `flyrtech_infrastructure::dataset`).
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Seeding the sample journeys failed.
    #[error("cannot seed the journeys")]
    Seed(#[source] StoreError),
    /// A file the settings name (the seed) cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The API keys file cannot be read.
    #[error(transparent)]
    Keys(#[from] auth::KeysError),
    /// The Redis CA file cannot be read.
    #[error("cannot read the Redis CA file {path}")]
    RedisCa {
        /// The configured file.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// No keys on an address others can reach.
    #[error(transparent)]
    Exposed(#[from] auth::Exposed),
    /// A rate limit of zero.
    #[error(transparent)]
    RateLimit(#[from] limit::BadLimit),
    /// The listen address is unusable.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A route template the gate's labels cannot hold (a bug: axum would refuse it too).
    #[error("route template {template}")]
    Route {
        /// The template.
        template: &'static str,
        /// The cause.
        #[source]
        source: matchit::InsertError,
    },
}

/// The state every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Shared {
    /// The journey store, writing with the configured strategy.
    pub store: RedisJourneyStore,
    /// The namespaced cache.
    pub cache: RedisCache,
    /// What the cache accepts.
    pub cache_limits: CacheLimits,
    /// Largest journey document created, in bytes.
    pub max_journey_bytes: usize,
    /// The ceiling on journeys each client creates; `None` for none.
    pub journey_quota: Option<JourneyQuota>,
    /// Each client's changes waiting in the outbox; `None` when there is no share to keep.
    pub outbox_shares: Option<quota::OutboxShares>,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// `/health`'s body, the same for the life of the process.
    up: axum::body::Bytes,
    in_flight: Arc<AtomicUsize>,
    allow_eviction: bool,
    /// The engine as read at start-up, for `/ready`.
    engine: String,
    backlog: BacklogWatch,
}

impl Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl Shared {
    /// Whether the dataset is still in a layout this instance serves: after a migration to the
    /// other layout has finished, an instance left on the old one is not ready and takes no new
    /// journeys (its updates stay correct: see `flyrtech_infrastructure::store::strategy`).
    ///
    /// # Errors
    /// [`ApiError`] 503 saying why, or Redis' own unavailability.
    pub async fn check_layout(&self) -> Result<(), ApiError> {
        let state = dataset::state(self.store.redis()).await?;
        let own = self.store.layout();
        match state.layout {
            Some(settled) if !state.serves(own) => Err(ApiError::wrong_layout(format!(
                "the journeys have been migrated to the {settled} layout; this instance's \
                 strategy {} writes the {own} layout. Restart it with a strategy of the \
                 {settled} layout: {}",
                self.store.strategy(),
                flyrtech_infrastructure::Strategy::writing(settled)
            ))),
            _ => Ok(()),
        }
    }

    /// Whether every primary written to has the replicas `--wait-replicas` requires. A primary
    /// that lacks them is named; journeys of other primaries are served as usual.
    ///
    /// # Errors
    /// [`ApiError`] 503 naming each primary, what it confirmed and for how long.
    pub fn check_replicas(&self) -> Result<(), ApiError> {
        let shortfalls = self.store.replica_shortfalls();
        if shortfalls.is_empty() {
            return Ok(());
        }
        let named: Vec<String> = shortfalls
            .iter()
            .map(|s| {
                format!(
                    "primary {} ({} of {} replicas confirmed, for {} ms)",
                    s.primary,
                    s.confirmed,
                    s.required,
                    s.since.as_millis()
                )
            })
            .collect();
        Err(ApiError::replicas_missing(format!(
            "writes to the journeys of {} are refused until a replica confirms again: {}",
            if named.len() == 1 {
                "this primary"
            } else {
                "these primaries"
            },
            named.join("; ")
        )))
    }

    /// Whether Redis may now evict journeys (someone changed `maxmemory-policy` since start-up).
    ///
    /// # Errors
    /// [`ApiError`] 503 naming the setting, or Redis' own unavailability.
    pub async fn check_server(&self) -> Result<(), ApiError> {
        use flyrtech_infrastructure::connection::server::{CheckError, check};
        match check(self.store.redis(), self.allow_eviction).await {
            Ok(_) => Ok(()),
            Err(CheckError::Eviction(risk)) => Err(ApiError::eviction_risk(risk.to_string())),
            Err(CheckError::Store(e)) => Err(e.into()),
            Err(other) => Err(ApiError::eviction_risk(other.to_string())),
        }
    }

    /// Whether the outbox has room for another update's entry.
    ///
    /// # Errors
    /// [`ApiError`] 503 `outbox-full` with the backlog and the cap.
    pub fn check_outbox(&self) -> Result<(), ApiError> {
        match self.backlog.full() {
            None => Ok(()),
            Some(full) => Err(ApiError::outbox_full(format!(
                "{} outbox entries wait for the relay (the cap is {}): updates are refused until \
                 a relay (`flyrtech relay`) has published the backlog, so that the outbox cannot \
                 fill Redis; nothing was changed",
                full.entries, full.cap
            ))),
        }
    }

    /// Whether `client`'s changes waiting in the outbox leave room for another.
    ///
    /// # Errors
    /// [`ApiError`] 429 `outbox-quota`.
    pub fn check_outbox_share(&self, client: &limit::Client) -> Result<(), ApiError> {
        match &self.outbox_shares {
            Some(shares) => shares.admit(client, self.backlog.oldest_age()),
            None => Ok(()),
        }
    }

    /// Counts an acknowledged change of `client`'s towards its outbox share.
    pub fn record_change(&self, client: &limit::Client) {
        if let Some(shares) = &self.outbox_shares {
            shares.record(client, self.backlog.oldest_age());
        }
    }

    /// The cache, written on behalf of `client` within its quota of entries.
    pub fn cache_for(&self, client: &limit::Client) -> RedisCache {
        self.cache
            .owned_by(client.to_string(), self.cache_limits.max_entries_per_client)
    }

    /// What `/ready` names without failing: an outbox no relay keeps up with.
    fn warnings(&self) -> Vec<String> {
        self.backlog
            .stale()
            .map(|age| {
                format!(
                    "the oldest outbox entry is {} s old (named past {} s): is `flyrtech relay` \
                     running? {} entries wait",
                    age.as_secs(),
                    self.backlog.limits().stale_after.as_secs(),
                    self.backlog.entries()
                )
            })
            .into_iter()
            .collect()
    }

    /// `/ready`'s answer: up, and what an operator should look at.
    fn ready(&self) -> ops::Health {
        ops::Health {
            status: "ready",
            engine: Some(self.engine.clone()),
            warnings: self.warnings(),
            ..ops::Health::up(&self.store)
        }
    }
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    /// The router behind the gate.
    service: gate::GateService<Router>,
    /// How connections are bounded.
    connections: Connections,
    /// Whose connections carry many clients (exempt from a client's share of them).
    proxies: TrustedProxies,
    state: AppState,
    seeded: SeedReport,
}

impl Application {
    /// Reads the files the settings name (keys, CA, seed), connects to `redis_url` (the
    /// settings' own, or the private server `serve` started), seeds and binds.
    ///
    /// # Errors
    /// [`ServeError`] naming the step that failed.
    pub async fn build(config: ServeSettings, redis_url: &str) -> Result<Self, ServeError> {
        let access = Access {
            keys: match &config.api_keys {
                Some(path) => {
                    let keys = ApiKeys::load(path)?;
                    tracing::info!(file = %path.display(), open_reads = config.open_reads, "requests need an API key");
                    Some(keys)
                }
                None => {
                    tracing::warn!(
                        listen = %config.listen,
                        "no API keys (--api-keys): every request is allowed; serving on a \
                         loopback address only unless --insecure-no-auth"
                    );
                    None
                }
            },
            open_reads: config.open_reads,
        };
        auth::check_exposure(config.listen, &access, config.insecure_no_auth)?;
        let redis_ca = match &config.redis_ca {
            Some(path) => Some(std::fs::read(path).map_err(|source| ServeError::RedisCa {
                path: path.clone(),
                source,
            })?),
            None => None,
        };
        let seed = config.seed.load()?;
        let store_err = |source| ServeError::Store {
            url: redact(redis_url),
            source,
        };
        let mut settings =
            RedisSettings::new(redis_url).waiting(config.store.replicas.map(|w| w.timeout));
        settings.tls_ca = redis_ca;
        // The recorder first: what is recorded while starting (the backlog's limits) is kept.
        let metrics = prometheus();
        let redis = Redis::connect(&settings).await.map_err(store_err)?;
        let store = RedisJourneyStore::new(redis.clone(), &config.store)
            .await
            .map_err(store_err)?;
        // Before the first write: refuses a Redis that may evict journeys, and says so when it
        // keeps nothing on disk.
        let facts =
            flyrtech_infrastructure::connection::server::check(&redis, config.allow_eviction)
                .await?;
        tracing::info!(engine = %facts, "Redis as read at start-up");
        if config
            .store
            .replicas
            .is_some_and(|w| w.confirmation == Confirmation::OnDisk)
        {
            facts.can_wait_aof()?;
        }
        if facts.keeps_nothing_on_disk() {
            tracing::warn!(
                "Redis keeps nothing on disk (no AOF, no RDB snapshot): a restart of redis-server loses every journey"
            );
        }
        // Refuses a strategy of the other layout, records ours on an empty Redis.
        let admitted = dataset::admit(&redis, config.store.strategy).await?;
        tracing::info!(dataset = %admitted, strategy = %config.store.strategy, "dataset admitted the strategy");
        let seeded = store.seed(&seed).await.map_err(ServeError::Seed)?;
        // The watch has connections of its own: its 256 XLENs a second never queue in front of
        // the requests on the shared connection, which matters most while a primary fails over.
        let backlog = BacklogWatch::start(
            Redis::connect(&settings).await.map_err(store_err)?,
            config.backlog,
        )
        .await;
        let up = serde_json::to_vec(&ops::Health::up(&store)).unwrap_or_default();
        let journey_quota = config
            .quotas
            .journeys
            .map(|limit| JourneyQuota::new(redis.clone(), limit));
        let outbox_shares = quota::OutboxShares::new(&config.quotas, &backlog);
        let state = AppState(Arc::new(Shared {
            journey_quota,
            outbox_shares,
            up: up.into(),
            store,
            cache: RedisCache::new(redis, config.cache.max_entries),
            cache_limits: config.cache,
            max_journey_bytes: config.max_journey_bytes,
            metrics,
            in_flight: Arc::new(AtomicUsize::new(0)),
            allow_eviction: config.allow_eviction,
            engine: facts.to_string(),
            backlog,
        }));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let document = openapi::document(&access);
        let (router, routes) = router(state.clone(), config.body_limit, document)?;
        let gate = gate::Gate {
            in_flight: Arc::clone(&state.in_flight),
            limiter: config
                .rate_limit
                .map(Limiter::new)
                .transpose()?
                .map(Arc::new),
            access,
            proxies: config.trusted_proxies.clone(),
            request_timeout: config.request_timeout,
            body_limit: config.body_limit,
            metrics: gate::RouteMetrics::default(),
            routes,
        };
        Ok(Self {
            connections: config.connections,
            proxies: config.trusted_proxies,
            service: gate::GateService::new(gate, router),
            listener,
            state,
            seeded,
        })
    }

    /// The bound address (the real port when port 0 was asked for).
    ///
    /// # Errors
    /// When the socket cannot report its address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What seeding did at start-up.
    pub fn seeded(&self) -> SeedReport {
        self.seeded
    }

    /// Requests being handled right now; shared with the running server.
    pub fn in_flight(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.state.in_flight)
    }

    /// Serves until `shutdown` resolves, then stops accepting connections and waits for the
    /// requests in flight to finish, at most the shutdown grace ([`server`]).
    ///
    /// # Errors
    /// An I/O error of the listener.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let addr = self.listener.local_addr()?;
        tracing::info!(
            %addr,
            strategy = %self.state.store.strategy(),
            cluster = self.state.store.redis().is_cluster(),
            "serving the journey API (Swagger UI at /swagger-ui)"
        );
        server::serve(
            self.listener,
            self.service,
            self.connections,
            self.proxies,
            shutdown,
        )
        .await?;
        tracing::info!("all in-flight requests finished; stopped");
        Ok(())
    }
}

/// The routes. The body limit goes on the routes that take a body only: it travels in each
/// request's extensions, and a fourth extension grows the map (a rehash) on every request.
///
/// Returns the router with the templates of its routes: the gate, outside the router, labels
/// each request with the one it matches ([`gate::RouteTemplates`]).
fn router(
    state: AppState,
    body_limit: usize,
    document: serde_json::Value,
) -> Result<(Router, gate::RouteTemplates), ServeError> {
    let limit = || DefaultBodyLimit::max(body_limit);
    let mut api = Routes::default()
        .route(
            "/api/journeys",
            get(journeys::list).post(journeys::create).layer(limit()),
        )?
        .route("/api/journeys/{id}", get(journeys::get))?
        .route(
            "/api/journeys/{id}/segments/{segmentId}/status",
            axum::routing::put(journeys::update_segment).layer(limit()),
        )?
        .route(
            "/api/journeys/{id}/status",
            axum::routing::put(journeys::update_journey).layer(limit()),
        )?
        .route("/health", get(ops::health))?
        .route("/ready", get(ops::ready))?
        .route("/metrics", get(ops::metrics))?;
    if state.cache_limits.enabled {
        api = api
            .route(
                "/api/cache/demo",
                get(cache::demo)
                    .post(cache::set_demo)
                    .delete(cache::remove_demo)
                    .layer(limit()),
            )?
            .route(
                "/api/cache/{key}",
                get(cache::get)
                    .post(cache::set)
                    .delete(cache::remove)
                    .layer(limit()),
            )?;
    }
    // The routes `SwaggerUi` adds (utoipa-swagger-ui's axum router): its page, its page's
    // redirect, its files, and the document.
    for template in [
        "/swagger-ui",
        "/swagger-ui/",
        "/swagger-ui/{*rest}",
        "/api-docs/openapi.json",
    ] {
        api.template(template)?;
    }
    let Routes { router, templates } = api;
    let api = router
        .fallback(|| async { ApiError::not_found("no such route", "Not found") })
        .with_state(state);
    let router = Router::new()
        .merge(
            SwaggerUi::new("/swagger-ui")
                .external_url_unchecked("/api-docs/openapi.json", document),
        )
        .merge(api);
    Ok((router, templates))
}

/// A router being built, with its routes' templates kept beside it.
#[derive(Default)]
struct Routes {
    router: Router<AppState>,
    templates: gate::RouteTemplates,
}

impl Routes {
    fn route(
        mut self,
        template: &'static str,
        method_router: axum::routing::MethodRouter<AppState>,
    ) -> Result<Self, ServeError> {
        self.template(template)?;
        self.router = self.router.route(template, method_router);
        Ok(self)
    }

    fn template(&mut self, template: &'static str) -> Result<(), ServeError> {
        self.templates
            .insert(template)
            .map_err(|source| ServeError::Route { template, source })
    }
}

/// How often the exporter's upkeep runs when nobody scrapes `/metrics`.
pub const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Runs the exporter's upkeep every `every`, for as long as the process lives, on a thread of
/// its own; returns how many upkeeps have run.
///
/// The race it closes is with memory, not with writers: metrics-exporter-prometheus keeps every
/// histogram sample until an upkeep drains it into the histogram's buckets, and a recorder made
/// with `build_recorder()` runs none by itself (metrics-rs/metrics #467). Left to the `/metrics`
/// handler, a service nobody scrapes grows by every request's samples (about 18 bytes a request
/// measured under wrk) and never gives them back.
pub fn keep_up(handle: PrometheusHandle, every: Duration) -> Arc<std::sync::atomic::AtomicU64> {
    let runs = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counted = Arc::clone(&runs);
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                handle.run_upkeep();
                counted.fetch_add(1, Ordering::Release);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep; histogram samples accumulate until /metrics is scraped");
    }
    runs
}

/// The process-wide Prometheus recorder, installed on first use. Every [`Application`] in the
/// process (tests run several) reports into it.
pub(crate) fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("journey_update_attempts".to_owned()),
                    &[
                        1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0, 34.0, 55.0, 89.0, 144.0, 200.0,
                    ],
                )
                .and_then(|b| {
                    b.set_buckets(&[
                        0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                        2.5, 5.0, 10.0,
                    ])
                })
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "metric buckets rejected; using summaries");
                    PrometheusBuilder::new()
                })
                .build_recorder();
            let handle = recorder.handle();
            keep_up(handle.clone(), METRICS_UPKEEP);
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("another metrics recorder is installed; /metrics will be empty");
            }
            // Every metric's help text (promtool check metrics wants one on each).
            flyrtech_infrastructure::telemetry::describe();
            handle
        })
        .clone()
}
