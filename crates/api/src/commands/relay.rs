//! `flyrtech relay`: the background worker that publishes the outbox to the bus (a Redis Stream
//! or NATS JetStream), at least once and in per-journey order, until SIGTERM or, with `--drain`,
//! until the outbox is empty. The machinery is `flyrtech_infrastructure::events::relay`; this
//! module wires it to flags and metrics. [`BusArgs`] (which bus) is shared with `audit`.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use flyrtech_core::{BusError, StoreError};
use flyrtech_infrastructure::events::nats::{
    JetStream, JetStreamPublisher, StreamLimits, StreamSettings,
};
use flyrtech_infrastructure::events::publisher::{Bus, RedisStreamPublisher, Retention};
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings, RelayStats};
use flyrtech_infrastructure::plumbing::keys;
use flyrtech_infrastructure::{Redis, RedisSettings, dataset};

use super::{DONE, connect, shutdown_signal};
use crate::config::Settings;
use crate::config::{MaxAge, parse_age};

/// Runs `flyrtech relay`.
///
/// # Errors
/// Bad flags, Redis unreachable at start, a Redis that may evict, or a failing metrics listener.
pub async fn run(args: &RelayArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "relay").await?;
    // The relay reads only the outbox, which both layouts share: it serves any dataset.
    // Its entries carry no TTL either: refuse a Redis that may evict them.
    flyrtech_infrastructure::plumbing::server::check(&redis, settings.allow_eviction).await?;
    let state = dataset::state(&redis).await?;
    tracing::info!(dataset = %state, "relaying the outbox");
    relay(args, redis, shutdown_signal()).await?;
    Ok(DONE)
}

/// Where the relay publishes.
#[derive(Debug, Clone, Args)]
pub struct BusArgs {
    /// Publish to NATS JetStream at this URL (`nats://host:port`; stream `JOURNEY_EVENTS`,
    /// created if absent) instead of the Redis stream.
    #[arg(long, env = "FLYRTECH_BUS")]
    pub bus: Option<String>,
    /// Redis URL of the event bus [default: the journey Redis].
    #[arg(long, env = "FLYRTECH_EVENTS_URL")]
    pub events_url: Option<String>,
    /// The bus stream's name.
    #[arg(long, default_value = keys::EVENTS)]
    pub events_stream: String,
    /// Entries the Redis bus stream keeps once every consumer group has read the older ones.
    #[arg(long, alias = "events-retention", default_value_t = Retention::default().max_len)]
    pub bus_max_len: usize,
    /// Age past which Redis bus entries are trimmed once every consumer group has read them
    /// (`30s`, `15m`, `24h`, `7d`; `off` keeps them by length alone).
    #[arg(long, default_value = "24h", value_parser = parse_age)]
    pub bus_max_age: MaxAge,
    /// Entries beyond which the Redis bus stream is trimmed even if a consumer group has not
    /// read them (counted in `bus_trimmed_over_cap_total`, and logged).
    #[arg(long, default_value_t = Retention::default().hard_cap)]
    pub bus_hard_cap: usize,
    /// With --bus: the partition count to record if this relay creates the JetStream stream
    /// [default: 8]; an existing stream's count must be the same (changing it is a migration:
    /// docs/outbox/SCHEMA.md, "Partitions").
    #[arg(long)]
    pub partitions: Option<u32>,
}

impl BusArgs {
    /// The retention these flags name.
    pub fn retention(&self) -> Retention {
        Retention {
            max_len: self.bus_max_len,
            max_age: self.bus_max_age.0,
            hard_cap: self.bus_hard_cap.max(self.bus_max_len),
        }
    }
}

impl BusArgs {
    /// Connects to the bus (the journey Redis unless `--events-url` says otherwise).
    ///
    /// # Errors
    /// [`StoreError`] when the bus cannot be reached.
    pub async fn connect(&self, journeys: &Redis) -> Result<Redis, StoreError> {
        match &self.events_url {
            Some(url) => Redis::connect(&RedisSettings::new(url.clone())).await,
            None => Ok(journeys.clone()),
        }
    }

    /// The publisher these flags name: JetStream with `--bus`, else the Redis stream.
    ///
    /// # Errors
    /// [`BusError`] when the bus cannot be reached, or `--bus` is not a `nats://` URL.
    pub async fn publisher(&self, journeys: &Redis) -> Result<Bus, BusError> {
        match &self.bus {
            Some(url) if url.starts_with("nats://") => {
                Ok(Bus::JetStream(Box::new(JetStreamPublisher::new(
                    JetStream::connect(
                        url,
                        StreamSettings {
                            limits: Some(StreamLimits {
                                max_age: self.bus_max_age.0,
                                max_messages: i64::try_from(self.retention().hard_cap)
                                    .unwrap_or(i64::MAX),
                            }),
                            partitions: self.partitions,
                            ..StreamSettings::default()
                        },
                    )
                    .await?,
                ))))
            }
            Some(other) => Err(BusError::InvalidInput(flyrtech_core::InvalidInput::new(
                "--bus",
                format!("{other:?} is not a nats:// URL"),
            ))),
            None => Ok(Bus::Redis(RedisStreamPublisher::new(
                self.connect(journeys).await?,
                self.events_stream.clone(),
                Some(self.retention()),
            ))),
        }
    }
}

/// Options of `flyrtech relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Publish until the outbox is empty, then exit (instead of running until SIGTERM).
    #[arg(long)]
    pub drain: bool,
    /// Entries read and published per partition batch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,
    /// Partitions processed at once.
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Pending entries idle this long are claimed from a relay presumed dead (milliseconds).
    #[arg(long, default_value_t = 30_000)]
    pub claim_idle_ms: u64,
    /// How long a partition lease lasts (milliseconds).
    #[arg(long, default_value_t = 15_000)]
    pub lease_ms: u64,
    /// Deliveries after which an entry that keeps failing is parked.
    #[arg(long, default_value_t = 5)]
    pub max_deliveries: u64,
    /// Pause between sweeps that found nothing to publish (milliseconds).
    #[arg(long, default_value_t = 100)]
    pub poll_ms: u64,
    /// This relay's consumer name (default: `relay-<pid>-<random>`).
    #[arg(long)]
    pub consumer: Option<String>,
    /// Modelled bus latency between publishing a batch and acknowledging it (milliseconds);
    /// for tests and the lab.
    #[arg(long, default_value_t = 0)]
    pub publish_delay_ms: u64,
    /// Serve Prometheus metrics on this address (`GET /metrics`).
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub bus: BusArgs,
}

impl RelayArgs {
    /// The relay settings these flags describe.
    ///
    /// # Errors
    /// [`flyrtech_core::InvalidInput`] for a zero batch size or parallelism.
    pub fn settings(&self) -> Result<RelaySettings, flyrtech_core::InvalidInput> {
        if self.batch == 0 || self.parallel == 0 || self.max_deliveries == 0 {
            return Err(flyrtech_core::InvalidInput::new(
                "relay",
                "--batch, --parallel and --max-deliveries must each be at least 1",
            ));
        }
        let defaults = RelaySettings::new();
        Ok(RelaySettings {
            consumer: self.consumer.clone().unwrap_or(defaults.consumer),
            batch: self.batch,
            parallel: self.parallel,
            claim_idle: Duration::from_millis(self.claim_idle_ms),
            lease: Duration::from_millis(self.lease_ms),
            max_deliveries: self.max_deliveries,
            poll_interval: Duration::from_millis(self.poll_ms),
            publish_delay: Duration::from_millis(self.publish_delay_ms),
        })
    }
}

/// Runs the relay until `shutdown` (or, with `--drain`, until the outbox is empty).
///
/// # Errors
/// Bad flags, Redis unreachable at start, or a failing metrics listener.
pub async fn relay(
    args: &RelayArgs,
    redis: Redis,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RelayStats> {
    let settings = args.settings()?;
    let publisher = args.bus.publisher(&redis).await?;
    super::serve_metrics(args.metrics_listen, "relay").await?;
    let relay = Relay::new(redis, publisher, settings).await?;
    tracing::info!(
        consumer = %relay.settings().consumer,
        partitions = keys::PARTITIONS,
        drain = args.drain,
        "relay started"
    );
    let stats = if args.drain {
        tokio::select! {
            stats = relay.drain() => stats?,
            () = shutdown => relay.stats(),
        }
    } else {
        relay.run(shutdown).await
    };
    tracing::info!(
        published = stats.published,
        redelivered = stats.redelivered,
        parked = stats.parked,
        batches = stats.batches,
        "relay stopped"
    );
    Ok(stats)
}
