//! Operations endpoints: liveness, readiness, and Prometheus metrics.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use flyrtech_infrastructure::RedisJourneyStore;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::problem::{ApiError, Problem};

/// Liveness and readiness answers.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// `up` or `ready`.
    pub status: &'static str,
    /// The strategy this instance writes with.
    pub strategy: &'static str,
    /// `standalone` or `cluster`.
    pub redis: &'static str,
    /// On `/ready`: the engine as read at start-up (`valkey 9.1.2, standalone, WAITAOF, AOF on,
    /// maxmemory-policy noeviction`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// On `/ready`: what an operator should look at though the instance serves, such as an
    /// outbox no relay keeps up with. Absent when there is nothing.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Health {
    /// `/health`'s answer for an instance of `store`.
    pub fn up(store: &RedisJourneyStore) -> Self {
        Self {
            status: "up",
            strategy: store.strategy().name(),
            redis: if store.redis().is_cluster() {
                "cluster"
            } else {
                "standalone"
            },
            engine: None,
            warnings: Vec::new(),
        }
    }
}

/// The process is up (it does not ask Redis).
#[utoipa::path(get, path = "/health", tag = "operations", operation_id = "health", responses((status = 200, body = Health)))]
pub async fn health(State(app): State<AppState>) -> impl IntoResponse {
    // The same body for the life of the process: rendered once (see `Shared::up`).
    ([(header::CONTENT_TYPE, "application/json")], app.up.clone())
}

/// Redis answers, the dataset is in a layout this instance's strategy serves (its own, or
/// either while a migration runs), and with `--wait-replicas` no primary is known to lack its
/// replicas. An outbox older than `--outbox-stale-after` is named in `warnings` without failing
/// readiness: every instance would fail at once, turning a relay outage into a write outage.
#[utoipa::path(get, path = "/ready", tag = "operations", operation_id = "ready",
    responses((status = 200, body = Health), (status = 503, body = Problem, content_type = "application/problem+json", description = "Redis unavailable, Redis may evict journeys (maxmemory-policy allkeys-*), this instance writes a layout the dataset has left, or a primary lacks the replicas --wait-replicas requires (named)", headers(("Retry-After" = u64)))))]
pub async fn ready(State(app): State<AppState>) -> Result<Json<Health>, ApiError> {
    // First, as it asks Redis nothing: a primary known to lack its replicas is named even while
    // the cluster client still has its dead predecessor in its map.
    app.check_replicas()?;
    app.check_server().await?;
    app.check_layout().await?;
    Ok(Json(app.ready()))
}

/// Prometheus text format: the store's metrics (see `flyrtech_infrastructure::telemetry`) and
/// the HTTP ones.
#[utoipa::path(get, path = "/metrics", tag = "operations", operation_id = "metrics",
    responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    app.metrics.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        app.metrics.render(),
    )
}
