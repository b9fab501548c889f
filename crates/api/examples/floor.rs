//! The floor of the HTTP path (issue 26): the smallest server on the service's own stack and
//! locked versions (axum 0.8, tokio, redis-rs 1.8 with one multiplexed connection, mimalloc), no
//! middleware at all. `tools/http-bench/run.sh` runs it beside `flyrtech serve` on the same
//! Redis and reports the service as a fraction of it. Not part of the product's binary.
//!
//! It answers the service's paths, so the same load generator scripts drive both:
//! - `GET /health`: `ok`, Redis not asked;
//! - `GET /api/journeys/{id}`: one `GET` of a journey-sized document;
//! - `PUT /api/journeys/{id}/segments/{segment}/status`: one `HINCRBY`.
//!
//! Usage: `floor REDIS_URL LISTEN_ADDR`.

use anyhow::Context;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, put};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DOCUMENT_KEY: &str = "floor:journey";
const HASH_KEY: &str = "floor:hash";

async fn read(State(mut redis): State<MultiplexedConnection>) -> Result<String, String> {
    redis
        .get::<_, String>(DOCUMENT_KEY)
        .await
        .map_err(|e| e.to_string())
}

async fn write(State(mut redis): State<MultiplexedConnection>) -> Result<String, String> {
    redis
        .hincr::<_, _, _, i64>(HASH_KEY, "status", 1)
        .await
        .map(|n| n.to_string())
        .map_err(|e| e.to_string())
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(listen)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: floor REDIS_URL LISTEN_ADDR");
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = redis::Client::open(url.as_str())?;
        let mut redis = client
            .get_multiplexed_async_connection()
            .await
            .context("cannot reach Redis")?;
        // The size of the sample journey JRN-001 as `GET` answers it (703 bytes).
        let () = redis.set(DOCUMENT_KEY, "x".repeat(703)).await?;
        let app = Router::new()
            .route("/health", get(|| async { "ok" }))
            .route("/api/journeys/{id}", get(read))
            .route("/api/journeys/{id}/segments/{segment}/status", put(write))
            .with_state(redis);
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        axum::serve(listener, app).await?;
        Ok(())
    })
}
