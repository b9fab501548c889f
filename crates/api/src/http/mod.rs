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
//! - [`auth`]: API keys and their scopes, checked before any handler.
//! - [`limit`]: the per-client rate limit.
//! - [`journeys`], [`cache`], [`ops`]: the handlers.
//! - [`problem`]: the one mapping from errors to `application/problem+json`.
//! - [`etag`]: versions as entity tags, `If-Match`, `If-None-Match`.
//! - [`openapi`]: the OpenAPI document behind `/swagger-ui`.

pub mod auth;
pub mod cache;
pub mod etag;
pub mod journeys;
pub mod limit;
pub mod openapi;
pub mod ops;
pub mod problem;

use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use auth::Access;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cache::CacheLimits;
use flyrtech_core::{Journey, StoreError};
use flyrtech_infrastructure::events::backlog::{BacklogLimits, BacklogWatch};
use flyrtech_infrastructure::plumbing::secret::redact;
use flyrtech_infrastructure::{
    DatasetError, Redis, RedisCache, RedisJourneyStore, RedisSettings, SeedReport, StoreConfig,
    dataset,
};
use limit::{Limiter, RateLimit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;
use utoipa_swagger_ui::SwaggerUi;

use self::problem::ApiError;

/// Everything `serve` needs, already merged from flags, environment and file.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The Redis deployment (one URL, or comma-separated cluster seeds).
    pub redis_url: String,
    /// The strategy and its knobs.
    pub store: StoreConfig,
    /// Journeys created at start-up when they do not exist yet.
    pub seed: Vec<Journey>,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Serve even though Redis' maxmemory-policy can evict journeys.
    pub allow_eviction: bool,
    /// When the outbox's backlog is named on `/ready`, and when updates stop.
    pub backlog: BacklogLimits,
    /// Who may read and write.
    pub access: Access,
    /// What the cache accepts, and whether it is served.
    pub cache: CacheLimits,
    /// Serve without keys on a non-loopback address (`--insecure-no-auth`).
    pub insecure_no_auth: bool,
    /// Requests per client; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// The authorities a `rediss://` server must chain to (PEM); `None`: the system's roots.
    pub redis_ca: Option<Vec<u8>>,
}

impl ServeConfig {
    /// Defaults: 10 s request timeout, 1 MiB body limit, no seed, the default outbox limits.
    pub fn new(listen: SocketAddr, redis_url: impl Into<String>, store: StoreConfig) -> Self {
        Self {
            listen,
            redis_url: redis_url.into(),
            store,
            seed: Vec::new(),
            request_timeout: Duration::from_secs(10),
            body_limit: 1024 * 1024,
            allow_eviction: false,
            backlog: BacklogLimits::default(),
            access: Access::default(),
            cache: CacheLimits::default(),
            rate_limit: Some(RateLimit::default()),
            redis_ca: None,
            insecure_no_auth: false,
        }
    }
}

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
    /// Redis may evict journeys (see `flyrtech_infrastructure::plumbing::server`).
    #[error(transparent)]
    Server(#[from] flyrtech_infrastructure::plumbing::server::CheckError),
    /// The dataset's layout is not the strategy's (see `flyrtech_infrastructure::dataset`).
    #[error(transparent)]
    Dataset(#[from] DatasetError),
    /// Seeding the sample journeys failed.
    #[error("cannot seed the journeys")]
    Seed(#[source] StoreError),
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
}

/// The state every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Inner>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub struct Inner {
    /// The journey store, writing with the configured strategy.
    pub store: RedisJourneyStore,
    /// The namespaced cache.
    pub cache: RedisCache,
    /// What the cache accepts.
    pub cache_limits: CacheLimits,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    request_timeout: Duration,
    in_flight: Arc<AtomicUsize>,
    allow_eviction: bool,
    backlog: BacklogWatch,
    access: Access,
}

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Inner {
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
                settled.strategies()
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
        use flyrtech_infrastructure::plumbing::server::{CheckError, check};
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

    fn health(&self, status: &'static str) -> ops::Health {
        ops::Health {
            warnings: if status == "ready" {
                self.warnings()
            } else {
                Vec::new()
            },
            status,
            strategy: self.store.strategy().name(),
            redis: if self.store.redis().is_cluster() {
                "cluster"
            } else {
                "standalone"
            },
        }
    }
}

/// A built server, bound and ready to run.
#[derive(Debug)]
pub struct Application {
    listener: TcpListener,
    router: Router,
    state: AppState,
    seeded: SeedReport,
}

impl Application {
    /// Connects, seeds and binds.
    ///
    /// # Errors
    /// [`ServeError`] naming the step that failed.
    pub async fn build(config: ServeConfig) -> Result<Self, ServeError> {
        auth::check_exposure(config.listen, &config.access, config.insecure_no_auth)?;
        let store_err = |source| ServeError::Store {
            url: redact(&config.redis_url),
            source,
        };
        let mut settings = RedisSettings::new(&config.redis_url);
        settings.tls_ca.clone_from(&config.redis_ca);
        let redis = Redis::connect(&settings).await.map_err(store_err)?;
        let store = RedisJourneyStore::new(redis.clone(), &config.store)
            .await
            .map_err(store_err)?;
        // Before the first write: refuses a Redis that may evict journeys, and says so when it
        // keeps nothing on disk.
        let facts =
            flyrtech_infrastructure::plumbing::server::check(&redis, config.allow_eviction).await?;
        if facts.keeps_nothing_on_disk() {
            tracing::warn!(
                "Redis keeps nothing on disk (no AOF, no RDB snapshot): a restart of redis-server loses every journey"
            );
        }
        // Refuses a strategy of the other layout, records ours on an empty Redis.
        let admitted = dataset::admit(&redis, config.store.strategy).await?;
        tracing::info!(dataset = %admitted, strategy = %config.store.strategy, "dataset admitted the strategy");
        let seeded = store.seed(&config.seed).await.map_err(ServeError::Seed)?;
        // The watch has connections of its own: its 256 XLENs a second never queue in front of
        // the requests on the shared connection, which matters most while a primary fails over.
        let backlog = BacklogWatch::start(
            Redis::connect(&settings).await.map_err(store_err)?,
            config.backlog,
        )
        .await;
        let state = AppState(Arc::new(Inner {
            store,
            cache: RedisCache::new(redis, config.cache.max_entries),
            cache_limits: config.cache,
            metrics: prometheus(),
            request_timeout: config.request_timeout,
            in_flight: Arc::new(AtomicUsize::new(0)),
            allow_eviction: config.allow_eviction,
            backlog,
            access: config.access.clone(),
        }));
        let listener =
            TcpListener::bind(config.listen)
                .await
                .map_err(|source| ServeError::Bind {
                    addr: config.listen,
                    source,
                })?;
        let limiter = config
            .rate_limit
            .map(Limiter::new)
            .transpose()?
            .map(Arc::new);
        Ok(Self {
            router: router(state.clone(), config.body_limit, limiter.clone()),
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
    /// requests in flight to finish.
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
        // The peer address is the rate limit's key for requests without an API key.
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await?;
        tracing::info!("all in-flight requests finished; stopped");
        Ok(())
    }
}

/// The routes and the middleware around them.
fn router(state: AppState, body_limit: usize, limiter: Option<Arc<Limiter>>) -> Router {
    let mut api = Router::new()
        .route("/api/journeys", get(journeys::list).post(journeys::create))
        .route("/api/journeys/{id}", get(journeys::get))
        .route(
            "/api/journeys/{id}/segments/{segmentId}/status",
            axum::routing::put(journeys::update_segment),
        )
        .route(
            "/api/journeys/{id}/status",
            axum::routing::put(journeys::update_journey),
        )
        .route("/health", get(ops::health))
        .route("/ready", get(ops::ready))
        .route("/metrics", get(ops::metrics));
    if state.cache_limits.enabled {
        api = api
            .route(
                "/api/cache/demo",
                get(cache::demo)
                    .post(cache::set_demo)
                    .delete(cache::remove_demo),
            )
            .route(
                "/api/cache/{key}",
                get(cache::get).post(cache::set).delete(cache::remove),
            );
    }
    let api = api
        .fallback(|| async { ApiError::not_found("no such route", "Not found") })
        .layer(middleware::from_fn_with_state(state.clone(), deadline))
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ));
    // Outermost of the API routes: a client over its limit costs no key check and no Redis.
    let api = match limiter {
        Some(limiter) => api.layer(middleware::from_fn_with_state(limiter, limit::enforce)),
        None => api,
    }
    .with_state(state.clone());
    Router::new()
        .merge(
            SwaggerUi::new("/swagger-ui")
                .external_url_unchecked("/api-docs/openapi.json", openapi::document()),
        )
        .merge(api)
        .layer(middleware::from_fn_with_state(state, observe))
        .layer(TraceLayer::new_for_http())
}

/// Answers 503 with `Retry-After` when a request outlives the configured timeout, so a client
/// never hangs on a slow Redis. The store's own command timeout (1 s) normally answers first.
async fn deadline(State(app): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(app.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::timed_out(app.request_timeout).into_response(),
    }
}

/// Counts requests in flight and records `http_requests_total` and
/// `http_request_duration_seconds` by method, route template and status.
async fn observe(State(app): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let response = {
        // Decremented on drop, so a request the client abandons is not counted forever.
        let _in_flight = InFlight::enter(&app.in_flight);
        next.run(request).await
    };
    let labels = [
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

/// One request in flight, counted for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
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
            handle
        })
        .clone()
}
