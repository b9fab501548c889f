//! The floor of the HTTP path: the smallest server on the service's own stack and
//! locked versions (axum 0.8, tokio, redis-rs 1.8 with one multiplexed connection, mimalloc), no
//! middleware at all. `tools/http-bench/run.sh` runs it beside `flyrtech serve` on the same
//! Redis and reports the service as a fraction of it. Not part of the product's binary.
//!
//! It answers the service's paths with the service's job shapes, so the same load
//! generator scripts drive both and what the service adds is its own work:
//! - `GET /health`: `ok`, Redis not asked;
//! - `GET /api/journeys/{id}`: one `GET` of a stored JSON document, journey-sized (the sample
//!   journey JRN-001 of `data/journeys.json`), answered as `application/json`;
//! - `PUT /api/journeys/{id}/segments/{segment}/status`: the JSON body `{"status": …}` parsed,
//!   one `HINCRBY`, a small JSON object answered.
//!
//! With `--put-empty-script` the PUT sends, instead of the `HINCRBY`, the cheapest script a
//! Redis can run (`return 1`) with the hash update's three keys and arguments (`EVALSHA`): what
//! Redis spends on any script-based update before the script does anything, the bound below
//! every atomic check-and-write that runs as a script.
//!
//! Usage: `floor REDIS_URL LISTEN_ADDR [--put-empty-script]`.

use anyhow::Context;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, put};
use axum::{Json, Router};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOCUMENT_KEY: &str = "floor:journey";
const HASH_KEY: &str = "floor:hash";

/// The connection, and the empty script when the PUT sends one instead of `HINCRBY`.
#[derive(Clone)]
struct Floor {
    redis: MultiplexedConnection,
    empty_script: Option<Arc<redis::Script>>,
}

async fn read(State(floor): State<Floor>) -> Result<impl IntoResponse, String> {
    let mut redis = floor.redis;
    let document: Vec<u8> = redis.get(DOCUMENT_KEY).await.map_err(|e| e.to_string())?;
    Ok(([(header::CONTENT_TYPE, "application/json")], document))
}

/// The body the service's segment update takes.
#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

/// A small answer, as the service's is.
#[derive(Serialize)]
struct Updated {
    status: String,
    version: i64,
}

async fn write(
    State(floor): State<Floor>,
    Json(body): Json<StatusBody>,
) -> Result<Json<Updated>, String> {
    let mut redis = floor.redis;
    let version = match &floor.empty_script {
        None => redis.hincr::<_, _, _, i64>(HASH_KEY, "version", 1).await,
        // The hash update's keys and arguments, in its shapes (see
        // crates/infrastructure/src/store/scripts/hash_update.lua and script-cost.sh).
        Some(script) => {
            script
                .key(
                    &[
                        "journey:{7}:JRN-001:hash",
                        "outbox:{7}",
                        "journey:{7}:JRN-001",
                    ][..],
                )
                .arg(&["SEG-001-1", body.status.as_str(), ""][..])
                .arg(format!(
                    "JRN-001 SEG-001-1 {} 2026-12-05T16:30:00.123456789Z \
                     0193a5b2-7c1d-7e3f-8a9b-0c1d2e3f4a5b",
                    body.status
                ))
                .arg(&["", "Scheduled", "Delayed"][..])
                .invoke_async(&mut redis)
                .await
        }
    }
    .map_err(|e| e.to_string())?;
    Ok(Json(Updated {
        status: body.status,
        version,
    }))
}

/// JRN-001 of the sample data, as JSON text.
fn sample_journey() -> anyhow::Result<String> {
    #[derive(Deserialize)]
    struct Sample {
        journeys: Vec<serde_json::Value>,
    }
    let sample: Sample = serde_json::from_str(include_str!("../../../data/journeys.json"))?;
    let journey = sample
        .journeys
        .into_iter()
        .find(|j| j.get("id").and_then(|id| id.as_str()) == Some("JRN-001"))
        .context("JRN-001 in data/journeys.json")?;
    Ok(serde_json::to_string(&journey)?)
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: floor REDIS_URL LISTEN_ADDR [--put-empty-script]";
    let (Some(url), Some(listen)) = (args.next(), args.next()) else {
        anyhow::bail!(usage);
    };
    let empty_script = match args.next().as_deref() {
        None => None,
        Some("--put-empty-script") => Some(Arc::new(redis::Script::new("return 1"))),
        Some(_) => anyhow::bail!(usage),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = redis::Client::open(url.as_str())?;
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .context("cannot reach Redis")?;
        let () = redis.set(DOCUMENT_KEY, sample_journey()?).await?;
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/api/journeys/{id}", get(read))
            .route("/api/journeys/{id}/segments/{segment}/status", put(write))
            .with_state(Floor {
                redis,
                empty_script,
            });
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
