//! Where the lab's updates go: the store library in-process (one store per simulated service
//! instance, each with its own connections), or running `flyrtech serve` instances over HTTP.

use std::sync::Arc;
use std::time::Duration;

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
    },
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
            let redis = Redis::connect(&RedisSettings::new(url)).await?;
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
        })
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
