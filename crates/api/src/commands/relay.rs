//! `flyrtech relay`: the background worker that publishes the outbox to the bus (a Redis Stream
//! or NATS JetStream), at least once and in per-journey order, until SIGTERM or, with `--drain`,
//! until the outbox is empty. The machinery is `flyrtech_infrastructure::events::relay`; this
//! module wires it to its settings ([`RelayArgs`], flags over the file's `[relay]`) and metrics.
//! [`BusArgs`] (which bus) is shared with `audit`.

use flyrtech_core::BusError;
use flyrtech_infrastructure::events::nats::{
    JetStream, JetStreamPublisher, StreamLimits, StreamSettings,
};
use flyrtech_infrastructure::events::publisher::{Bus, RedisStreamPublisher};
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings, RelayStats};
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::telemetry::health::{Backoff, Dependencies, Dependency};
use flyrtech_infrastructure::{Redis, ReplicaWait, dataset};

use super::{DONE, connect, shutdown_signal};
use flyrtech_cli::config::{BusArgs, RelayArgs, Settings};

/// Runs `flyrtech relay`.
///
/// # Errors
/// Bad flags, Redis unreachable at start, a Redis that may evict, or a failing metrics listener.
pub async fn run(args: &RelayArgs, settings: Settings) -> anyhow::Result<i32> {
    let (_deployment, redis) = connect(&settings, "relay").await?;
    // The relay reads only the outbox, which both layouts share: it serves any dataset.
    // Its entries carry no TTL either: refuse a Redis that may evict them.
    let facts =
        flyrtech_infrastructure::connection::server::check(&redis, settings.allow_eviction).await?;
    // The same check serve makes: --wait-aof needs an engine with WAITAOF and an AOF.
    if settings
        .replicas
        .is_some_and(|w| w.confirmation == flyrtech_infrastructure::Confirmation::OnDisk)
    {
        facts.can_wait_aof()?;
    }
    let state = dataset::state(&redis).await?;
    tracing::info!(dataset = %state, confirm = ?settings.replicas, "relaying the outbox");
    let stats = relay(args, redis, settings.replicas, shutdown_signal()).await?;
    flyrtech_cli::command::write_report(&stats, args.json.as_deref())?;
    Ok(DONE)
}

/// The publisher `bus` names: JetStream with `--bus`, else the Redis stream, whose batches
/// `confirm` confirms as the outbox's are (a JetStream publication is confirmed by its
/// acknowledgement).
///
/// # Errors
/// [`BusError`] when the bus cannot be reached, or `--bus` is not a `nats://` URL.
pub async fn publisher(
    bus: &BusArgs,
    journeys: &Redis,
    confirm: Option<ReplicaWait>,
) -> Result<Bus, BusError> {
    match &bus.bus {
        Some(url) if url.starts_with("nats://") => {
            Ok(Bus::JetStream(Box::new(JetStreamPublisher::new(
                JetStream::connect(
                    url,
                    StreamSettings {
                        limits: Some(StreamLimits {
                            max_age: bus.retention().max_age,
                            max_messages: i64::try_from(bus.retention().hard_cap)
                                .unwrap_or(i64::MAX),
                        }),
                        partitions: bus.partitions,
                        replicas: bus.bus_replicas,
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
        None => Ok(Bus::Redis(
            RedisStreamPublisher::new(
                bus.redis(journeys).await?,
                bus.events_stream().to_owned(),
                Some(bus.retention()),
            )
            .confirmed(confirm),
        )),
    }
}

/// Runs the relay until `shutdown` (or, with `--drain`, until the outbox is empty), publishing
/// only what `confirm`'s replicas hold when the deployment confirms writes.
///
/// Neither Redis nor the bus unreachable ends it: at start it waits for both (a [`Backoff`]
/// between attempts), and once running the relay retries every failure itself
/// ([`Relay::run`]); `/ready` and `dependency_reachable` say which one it waits for.
///
/// # Errors
/// Bad flags, or a failing metrics listener.
pub async fn relay(
    args: &RelayArgs,
    redis: Redis,
    confirm: Option<ReplicaWait>,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<RelayStats> {
    let settings = RelaySettings {
        confirm,
        ..args.settings()?
    };
    let bus = if args.bus.bus.is_some() {
        Dependency::Nats
    } else {
        Dependency::Redis
    };
    let health = Dependencies::watch(&[Dependency::Redis, bus]);
    super::serve_metrics(args.metrics_listen, "relay", health.clone()).await?;
    tokio::pin!(shutdown);
    let mut backoff = Backoff::default();
    let relay = loop {
        let started = async {
            let publisher = publisher(&args.bus, &redis, confirm)
                .await
                .map_err(|e| (bus, anyhow::Error::from(e)))?;
            health.up(bus);
            Relay::new(redis.clone(), publisher, settings.clone())
                .await
                .map_err(|e| (Dependency::Redis, anyhow::Error::from(e)))
        };
        let failure = tokio::select! {
            started = started => match started {
                Ok(relay) => break relay.watched(health.clone(), bus),
                Err(failure) => failure,
            },
            () = &mut shutdown => return Ok(RelayStats::default()),
        };
        let (dependency, e) = failure;
        // A bad --bus is the operator's to fix: no retry mends it.
        if e.downcast_ref::<BusError>()
            .is_some_and(|e| matches!(e, BusError::InvalidInput(_)))
        {
            return Err(e);
        }
        health.down(dependency, &e);
        let pause = backoff.next_delay();
        tracing::warn!(%dependency, error = %e, retry_in = ?pause, "the relay cannot start yet; retrying");
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = &mut shutdown => return Ok(RelayStats::default()),
        }
    };
    health.up(Dependency::Redis);
    tracing::info!(
        consumer = %relay.settings().consumer,
        outbox_shards = keys::OUTBOX_SHARDS,
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
        unconfirmed = stats.unconfirmed,
        "relay stopped"
    );
    Ok(stats)
}
