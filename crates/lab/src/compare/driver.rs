//! Where the lab's updates go: the store library in-process (one store per simulated service
//! instance, each with its own connections), or running `flyrtech serve` instances over HTTP.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use flyrtech_core::{Journey, JourneyId, JourneyStore, StatusChange, UpdateOutcome};
use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy};

use super::LabError;

/// Sends the lab's operations.
#[derive(Debug)]
pub enum Driver {
    /// In-process stores sharing one Redis.
    Library {
        /// The Redis every instance uses.
        url: String,
        /// The strategy every instance runs.
        strategy: Strategy,
        /// One per simulated instance.
        stores: Vec<Arc<RedisJourneyStore>>,
    },
    /// Running servers; the strategy is whatever they were started with.
    Http {
        /// The strategy the first server reports on `/ready`.
        strategy: String,
        /// Base URLs, `http://host:port`.
        bases: Vec<String>,
        /// A pooled client.
        client: reqwest::Client,
        /// The same strategy in-process on the servers' own Redis, when the lab was given its
        /// URL: the Redis ceiling is measured through it.
        twin: Option<Box<Driver>>,
        /// The floor of the stack on the same Redis (`crates/lab/examples/floor.rs`), when
        /// given: its routes are measured beside the first server's ([`Driver::floor_ratios`]).
        floor: Option<String>,
    },
}

/// One route measured on the service and on the floor, one after the other, with the same
/// client and concurrency.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RouteRatio {
    /// `/health`, `GET journey` or `PUT segment status`.
    pub route: &'static str,
    /// The service's 2xx answers per second.
    pub service_per_second: f64,
    /// The floor's 2xx answers per second.
    pub floor_per_second: f64,
    /// `service / floor`.
    pub ratio: f64,
}

/// What the servers answer when nothing stands behind HTTP: `GET /health` at the run's
/// concurrency, through the same client.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HttpCeiling {
    /// Answers per second.
    pub requests_per_second: f64,
    /// Answers in all.
    pub requests: u64,
    /// Requests that failed (none on a healthy server).
    pub failed: u64,
    /// Concurrent clients (the run's writers).
    pub connections: usize,
    /// How long it ran.
    pub duration_ms: f64,
}

/// Why one update did not succeed: a low-cardinality kind for the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    /// `invalid_transition`, `conflict`, `unavailable`, `http_409`, ...
    pub kind: String,
    /// The message, for the log.
    pub message: String,
    /// Tries spent before giving up (1 unless the strategy retried).
    pub attempts: u32,
}

impl Driver {
    /// `instances` stores for `strategy` on the Redis at `url`.
    ///
    /// # Errors
    /// When Redis cannot be reached or the strategy cannot be set up.
    pub async fn library(
        url: &str,
        config: &StoreConfig,
        instances: usize,
    ) -> Result<Self, LabError> {
        let mut stores = Vec::with_capacity(instances.max(1));
        for _ in 0..instances.max(1) {
            let redis = Redis::connect(
                &RedisSettings::new(url).waiting(config.replicas.map(|w| w.timeout)),
            )
            .await?;
            stores.push(Arc::new(RedisJourneyStore::new(redis, config).await?));
        }
        Ok(Self::Library {
            url: url.to_owned(),
            strategy: config.strategy,
            stores,
        })
    }

    /// Drives the servers at `bases`.
    ///
    /// # Errors
    /// When the first server's `/ready` does not answer.
    pub async fn http(bases: Vec<String>) -> Result<Self, LabError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .pool_max_idle_per_host(512)
            .build()
            .map_err(|e| http_error("client", &e))?;
        let first = bases.first().ok_or_else(|| LabError::Http {
            url: String::new(),
            message: "--http needs at least one URL".into(),
        })?;
        let url = format!("{first}/ready");
        let ready: serde_json::Value = client
            .get(&url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| http_error(&url, &e))?
            .json()
            .await
            .map_err(|e| http_error(&url, &e))?;
        let strategy = ready["strategy"].as_str().unwrap_or("unknown").to_owned();
        Ok(Self::Http {
            strategy,
            bases,
            client,
            twin: None,
            floor: None,
        })
    }

    /// Also measures the routes of the floor at `floor` beside the servers' after each run.
    #[must_use]
    pub fn with_floor(mut self, url: Option<String>) -> Self {
        if let Self::Http { floor, .. } = &mut self {
            *floor = url;
        }
        self
    }

    /// Also measures the Redis ceiling of the servers' strategy, through an in-process store
    /// on `redis_url`, which must be the Redis the servers use (their journeys are copied from
    /// it).
    ///
    /// # Errors
    /// When that Redis cannot be reached or the servers' strategy is not one this build knows.
    pub async fn with_redis(self, redis_url: &str) -> Result<Self, LabError> {
        let Self::Http {
            strategy,
            bases,
            client,
            floor,
            ..
        } = self
        else {
            return Ok(self);
        };
        let known: Strategy =
            strategy
                .parse()
                .map_err(
                    |e: flyrtech_infrastructure::UnknownStrategy| LabError::Http {
                        url: redis_url.to_owned(),
                        message: e.to_string(),
                    },
                )?;
        let config = StoreConfig {
            index: super::LAB_INDEX.to_owned(),
            ..StoreConfig::new(known)
        };
        let twin = Self::library(redis_url, &config, bases.len().max(2)).await?;
        Ok(Self::Http {
            strategy,
            bases,
            client,
            twin: Some(Box::new(twin)),
            floor,
        })
    }

    /// The driver whose Redis the ceiling is measured on: in-process itself, or the HTTP
    /// servers' twin.
    pub fn redis_side(&self) -> &Self {
        match self {
            Self::Http {
                twin: Some(twin), ..
            } => twin,
            _ => self,
        }
    }

    /// The HTTP ceiling of the servers: `writers` clients of the same pooled client sending
    /// `GET /health` (no Redis behind it) to the same servers, spread as the updates were,
    /// for `duration`. `None` in-process.
    pub async fn http_ceiling(&self, writers: usize, duration: Duration) -> Option<HttpCeiling> {
        let Self::Http { bases, client, .. } = self else {
            return None;
        };
        let urls: Vec<String> = bases.iter().map(|b| format!("{b}/health")).collect();
        Some(hammer(writers, duration, |w, _| client.get(&urls[w % urls.len()])).await)
    }

    /// The floor's routes beside the first server's, each driven for `duration` by `writers`
    /// clients, service then floor: `/health`, `GET` of `journey` (created on the server
    /// first, with two segments, so that the run's own changes do not matter), and `PUT` of its
    /// first segment's status (alternating `Delayed` and `Scheduled`, as tools/http-bench does).
    /// `None` without a floor or in-process.
    ///
    /// # Errors
    /// When the journey cannot be created on the server.
    pub async fn floor_ratios(
        &self,
        writers: usize,
        duration: Duration,
        journey: &JourneyId,
    ) -> Result<Option<Vec<RouteRatio>>, LabError> {
        let Self::Http {
            bases,
            client,
            floor: Some(floor),
            ..
        } = self
        else {
            return Ok(None);
        };
        let Some(base) = bases.first() else {
            return Ok(None);
        };
        let created =
            super::synthetic_journey(journey, 2).map_err(|e| LabError::Task(e.to_string()))?;
        let segment = super::synthetic_segment_id(0).map_err(|e| LabError::Task(e.to_string()))?;
        let url = format!("{base}/api/journeys");
        client
            .post(&url)
            .json(&created)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| http_error(&url, &e))?;
        let routes = [
            ("/health", "/health".to_owned()),
            ("GET journey", format!("/api/journeys/{journey}")),
            (
                "PUT segment status",
                format!("/api/journeys/{journey}/segments/{segment}/status"),
            ),
        ];
        let mut out = Vec::with_capacity(routes.len());
        for (route, path) in routes {
            let mut rates = [0.0; 2];
            for (rate, host) in rates.iter_mut().zip([base, floor]) {
                let url = format!("{host}{path}");
                let measured = hammer(writers, duration, |_, n| {
                    if route.starts_with("PUT") {
                        let status = if n % 2 == 0 { "Delayed" } else { "Scheduled" };
                        client
                            .put(&url)
                            .json(&serde_json::json!({ "status": status }))
                    } else {
                        client.get(&url)
                    }
                })
                .await;
                *rate = measured.requests_per_second;
            }
            let [service, floor] = rates;
            out.push(RouteRatio {
                route,
                service_per_second: service,
                floor_per_second: floor,
                ratio: service / floor.max(f64::EPSILON),
            });
        }
        Ok(Some(out))
    }

    /// The strategy under test, as reports name it.
    pub fn strategy_name(&self) -> String {
        match self {
            Self::Library { strategy, .. } => strategy.name().to_owned(),
            Self::Http { strategy, .. } => format!("{strategy} (http)"),
        }
    }

    /// The library strategy, when in-process.
    pub fn strategy(&self) -> Option<Strategy> {
        match self {
            Self::Library { strategy, .. } => Some(*strategy),
            Self::Http { .. } => None,
        }
    }

    /// The first store, when in-process.
    pub fn store(&self) -> Option<&RedisJourneyStore> {
        match self {
            Self::Library { stores, .. } => stores.first().map(AsRef::as_ref),
            Self::Http { .. } => None,
        }
    }

    /// Whether [`Driver::round_trips`] means anything.
    pub fn measures_round_trips(&self) -> bool {
        matches!(self, Self::Library { .. })
    }

    /// Redis round trips so far, summed over instances (0 over HTTP).
    pub fn round_trips(&self) -> u64 {
        match self {
            Self::Library { stores, .. } => stores.iter().map(|s| s.redis().round_trips()).sum(),
            Self::Http { .. } => 0,
        }
    }

    /// Creates a journey (through the first instance).
    ///
    /// # Errors
    /// Any failure, including an id that exists.
    pub async fn create(&self, journey: &Journey) -> Result<(), LabError> {
        match self {
            Self::Library { stores, .. } => Ok(stores[0].create(journey).await?),
            Self::Http { bases, client, .. } => {
                let url = format!("{}/api/journeys", bases[0]);
                let response = client
                    .post(&url)
                    .json(journey)
                    .send()
                    .await
                    .map_err(|e| http_error(&url, &e))?;
                if response.status() == reqwest::StatusCode::CREATED {
                    Ok(())
                } else {
                    Err(unexpected(&url, response).await)
                }
            }
        }
    }

    /// Reads a journey (through the first instance).
    ///
    /// # Errors
    /// Any failure.
    pub async fn get(&self, id: &JourneyId) -> Result<Journey, LabError> {
        match self {
            Self::Library { stores, .. } => Ok(stores[0].get(id).await?),
            Self::Http { bases, client, .. } => {
                let url = format!("{}/api/journeys/{id}", bases[0]);
                let response = client
                    .get(&url)
                    .send()
                    .await
                    .map_err(|e| http_error(&url, &e))?;
                if !response.status().is_success() {
                    return Err(unexpected(&url, response).await);
                }
                response.json().await.map_err(|e| http_error(&url, &e))
            }
        }
    }

    /// Sends one update as writer `writer` (which picks the instance).
    ///
    /// # Errors
    /// [`OpError`] with the refusal's kind.
    pub async fn update(
        &self,
        writer: usize,
        id: &JourneyId,
        change: &StatusChange,
    ) -> Result<UpdateOutcome, OpError> {
        match self {
            Self::Library { stores, .. } => stores[writer % stores.len()]
                .update(id, change, None)
                .await
                .map_err(|e| OpError {
                    kind: e.kind().to_owned(),
                    message: e.to_string(),
                    attempts: match e {
                        flyrtech_core::StoreError::Conflict { attempts } => attempts,
                        _ => 1,
                    },
                }),
            Self::Http { bases, client, .. } => {
                let base = &bases[writer % bases.len()];
                let url = match change {
                    StatusChange::Segment { segment_id, .. } => {
                        format!("{base}/api/journeys/{id}/segments/{segment_id}/status")
                    }
                    _ => format!("{base}/api/journeys/{id}/status"),
                };
                http_update(client, &url, change.target_status()).await
            }
        }
    }
}

async fn http_update(
    client: &reqwest::Client,
    url: &str,
    status: &str,
) -> Result<UpdateOutcome, OpError> {
    let op_error = |kind: String, message: String| OpError {
        kind,
        message,
        attempts: 1,
    };
    let response = client
        .put(url)
        .json(&serde_json::json!({ "status": status }))
        .send()
        .await
        .map_err(|e| op_error("http_unreachable".into(), e.to_string()))?;
    let code = response.status();
    let body: serde_json::Value = response
        .json()
        .await
        .map_err(|e| op_error(format!("http_{}", code.as_u16()), e.to_string()))?;
    if !code.is_success() {
        let kind = body["type"]
            .as_str()
            .and_then(|t| t.strip_prefix("/problems/"))
            .map_or_else(|| format!("http_{}", code.as_u16()), str::to_owned);
        return Err(op_error(kind, body["detail"].to_string()));
    }
    let number = |field: &str| body[field].as_u64();
    match (
        number("version"),
        body["changed"].as_bool(),
        number("attempts"),
    ) {
        (Some(version), Some(changed), Some(attempts)) => Ok(UpdateOutcome {
            version: flyrtech_core::JourneyVersion::new(version),
            changed,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            lock_wait: Duration::ZERO,
        }),
        _ => Err(op_error("http_bad_body".into(), body.to_string())),
    }
}

fn http_error(url: &str, e: &reqwest::Error) -> LabError {
    LabError::Http {
        url: url.to_owned(),
        message: e.to_string(),
    }
}

async fn unexpected(url: &str, response: reqwest::Response) -> LabError {
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    LabError::Http {
        url: url.to_owned(),
        message: format!("{status}: {body}"),
    }
}

/// `writers` clients sending the request `make(writer, n)` (their `n`th) one after the other
/// for `duration`: how many were answered 2xx per second.
async fn hammer(
    writers: usize,
    duration: Duration,
    make: impl Fn(usize, u64) -> reqwest::RequestBuilder,
) -> HttpCeiling {
    let writers = writers.max(1);
    let started = Instant::now();
    let deadline = started + duration;
    let make = &make;
    let counts = join_all((0..writers).map(|w| async move {
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut n = 0u64;
        while Instant::now() < deadline {
            let answered = match make(w, n).send().await {
                Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                _ => false,
            };
            n += 1;
            if answered {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        (ok, failed)
    }))
    .await;
    let elapsed = started.elapsed().as_secs_f64().max(1e-3);
    let (ok, failed) = counts.iter().fold((0, 0), |(a, b), (o, f)| (a + o, b + f));
    HttpCeiling {
        requests_per_second: ok as f64 / elapsed,
        requests: ok,
        failed,
        connections: writers,
        duration_ms: elapsed * 1e3,
    }
}
