//! The original's cache endpoints, confined to the cache's own key namespace.
//!
//! `RedisCache` stores every key under `cache:`, so `POST /api/cache/journey:JRN-001` writes
//! `cache:journey:JRN-001` and can never replace the journey (the original let it). The one
//! visible change for existing clients: `GET /api/cache/journey:JRN-001` no longer returns the
//! journey document, it answers 404 unless a cache entry of that name was set.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use flyrtech_core::{CacheKey, CacheService, InvalidInput};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::problem::{ApiError, Problem};

const PROBLEM: &str = "application/problem+json";

/// Longest expiration accepted: ten years.
const MAX_EXPIRATION_SECONDS: u64 = 10 * 365 * 24 * 3600;

/// How long the demo entry lives.
const DEMO_TTL_SECONDS: u64 = 60;

/// `POST /api/cache/{key}`: the original's body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSetRequest {
    /// The value to store.
    pub value: String,
    /// Seconds until the entry expires; absent means never.
    pub expiration_seconds: Option<u64>,
}

/// A cache entry as the API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheEntry {
    /// The key as the client wrote it.
    pub key: String,
    /// The stored value.
    pub value: String,
    /// Seconds until expiry as requested, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_seconds: Option<u64>,
}

/// What the demo did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheDemo {
    /// A sentence for humans.
    pub message: String,
    /// The key written (`demo`).
    pub key: String,
    /// The value written.
    pub value: String,
    /// The value read back.
    pub cached_value: Option<String>,
    /// Seconds the entry lives.
    pub expiration_seconds: u64,
}

/// Writes a timestamped value under `demo`, reads it back, and shows both.
#[utoipa::path(get, path = "/api/cache/demo", tag = "cache",
    responses((status = 200, body = CacheDemo), (status = 503, body = Problem, content_type = PROBLEM)))]
pub async fn demo(State(app): State<AppState>) -> Result<Json<CacheDemo>, ApiError> {
    let key = CacheKey::parse("demo")?;
    let value = format!(
        "Hello from Redis! Cached at {}",
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    );
    app.cache
        .set(&key, &value, Some(Duration::from_secs(DEMO_TTL_SECONDS)))
        .await?;
    let cached_value = app.cache.get(&key).await?;
    Ok(Json(CacheDemo {
        message: "Value written to the cache and read back".to_owned(),
        key: key.as_str().to_owned(),
        value,
        cached_value,
        expiration_seconds: DEMO_TTL_SECONDS,
    }))
}

/// Reads a cache entry.
#[utoipa::path(get, path = "/api/cache/{key}", tag = "cache",
    params(("key" = String, Path, description = "Cache key (its own namespace: never a journey)")),
    responses(
        (status = 200, body = CacheEntry),
        (status = 404, body = Problem, content_type = PROBLEM),
        (status = 422, body = Problem, content_type = PROBLEM),
        (status = 503, body = Problem, content_type = PROBLEM),
    ))]
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CacheEntry>, ApiError> {
    let key = key(path)?;
    match app.cache.get(&key).await? {
        Some(value) => Ok(Json(CacheEntry {
            key: key.as_str().to_owned(),
            value,
            expiration_seconds: None,
        })),
        None => Err(missing(&key)),
    }
}

/// Stores a cache entry, replacing any previous value.
#[utoipa::path(post, path = "/api/cache/{key}", tag = "cache",
    params(("key" = String, Path)),
    request_body = CacheSetRequest,
    responses(
        (status = 200, body = CacheEntry),
        (status = 400, body = Problem, content_type = PROBLEM),
        (status = 413, body = Problem, content_type = PROBLEM),
        (status = 422, body = Problem, content_type = PROBLEM),
        (status = 503, body = Problem, content_type = PROBLEM),
    ))]
pub async fn set(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    payload: Result<Json<CacheSetRequest>, JsonRejection>,
) -> Result<Json<CacheEntry>, ApiError> {
    let key = key(path)?;
    let Json(body) = payload?;
    let ttl = match body.expiration_seconds {
        None => None,
        Some(secs @ 1..=MAX_EXPIRATION_SECONDS) => Some(Duration::from_secs(secs)),
        Some(_) => {
            return Err(InvalidInput::new(
                "expirationSeconds",
                format!("must be between 1 and {MAX_EXPIRATION_SECONDS}"),
            )
            .into());
        }
    };
    app.cache.set(&key, &body.value, ttl).await?;
    Ok(Json(CacheEntry {
        key: key.as_str().to_owned(),
        value: body.value,
        expiration_seconds: body.expiration_seconds,
    }))
}

/// Removes a cache entry.
#[utoipa::path(delete, path = "/api/cache/{key}", tag = "cache",
    params(("key" = String, Path)),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, body = Problem, content_type = PROBLEM),
        (status = 503, body = Problem, content_type = PROBLEM),
    ))]
pub async fn remove(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let key = key(path)?;
    if app.cache.remove(&key).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(missing(&key))
    }
}

fn missing(key: &CacheKey) -> ApiError {
    ApiError::not_found(format!("no cache entry {:?}", key.as_str()))
}

fn key(path: Result<Path<String>, PathRejection>) -> Result<CacheKey, ApiError> {
    let Path(raw) = path?;
    Ok(CacheKey::parse(raw)?)
}
