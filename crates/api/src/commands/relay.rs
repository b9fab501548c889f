//! The outbox's commands: `flyrtech relay` (the background publisher), `flyrtech audit` (lost
//! updates, version gaps and unpublished events, from the published history) and `flyrtech
//! backlog` (the drain rate of a large backlog). The machinery lives in
//! `flyrtech_infrastructure::store::outbox` and `flyrtech_infrastructure::events::audit`; this module wires it
//! to flags, metrics and reports.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use comfy_table::Table;
use comfy_table::presets::UTF8_FULL_CONDENSED;
use flyrtech_core::{JourneyId, JourneyStore, StoreError};
use flyrtech_infrastructure::events::audit::{AuditReport, audit};
use flyrtech_infrastructure::events::nats::{
    JetStream, JetStreamPublisher, StreamLimits, StreamSettings,
};
use flyrtech_infrastructure::events::publisher::{Bus, RedisStreamPublisher, Retention};
use flyrtech_infrastructure::events::relay::{Relay, RelaySettings, RelayStats, depth};
use flyrtech_infrastructure::plumbing::keys::{self, Partition};
use flyrtech_infrastructure::store::outbox::{self, Fields};
use flyrtech_infrastructure::{Redis, RedisSettings};
use futures::StreamExt;
use serde::Serialize;

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
}

/// `--bus-max-age`: a duration, or none.
#[derive(Debug, Clone, Copy)]
pub struct MaxAge(pub Option<Duration>);

/// Parses `30s`, `15m`, `24h`, `7d` or `off`.
fn parse_age(raw: &str) -> Result<MaxAge, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(MaxAge(None));
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 30s, 15m, 24h, 7d or off"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit is s, m, h or d")),
    };
    if n == 0 {
        return Err("a max age of zero would trim every entry; use off to keep by length".into());
    }
    Ok(MaxAge(Some(Duration::from_secs(n.saturating_mul(seconds)))))
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
    /// [`StoreError`] when the bus cannot be reached, or `--bus` is not a `nats://` URL.
    pub async fn publisher(&self, journeys: &Redis) -> Result<Bus, StoreError> {
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
                            ..StreamSettings::default()
                        },
                    )
                    .await?,
                ))))
            }
            Some(other) => Err(StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
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
    /// This relay's consumer name [default: relay-<pid>-<random>].
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
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let handle = crate::http::prometheus();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        );
        tracing::info!(%addr, "serving relay metrics on /metrics");
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "the metrics listener stopped");
            }
        });
    } else {
        // Installs the recorder so that the gauges are kept even without a listener.
        let _ = crate::http::prometheus();
    }
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

/// Options of `flyrtech audit`.
#[derive(Debug, Clone, Args)]
pub struct AuditArgs {
    /// Write the full report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Findings listed in the terminal output (all are in the JSON).
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// Compare the PostgreSQL projection at this URL (`flyrtech project`) with the stored
    /// journeys, instead of replaying the bus.
    #[arg(long, env = "FLYRTECH_PROJECTION")]
    pub projection: Option<String>,
    #[command(flatten)]
    pub bus: BusArgs,
}

/// Audits every listed journey and prints the findings.
///
/// # Errors
/// Redis unreachable, or the JSON report cannot be written.
pub async fn run_audit<S: JourneyStore>(
    args: &AuditArgs,
    store: &S,
    redis: &Redis,
) -> anyhow::Result<AuditReport> {
    let bus = args.bus.connect(redis).await?;
    let report = audit(store, redis, &bus, &args.bus.events_stream, None).await?;
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        tracing::info!(path = %path.display(), "wrote the audit report");
    }
    #[allow(clippy::print_stdout)]
    {
        println!("{}", audit_table(&report));
        for lost in report.lost_updates.iter().take(args.limit) {
            println!(
                "lost update: journey {} version {} set {} to {} ({})",
                lost.journey,
                lost.version,
                lost.segment.as_deref().unwrap_or("the journey status"),
                lost.to,
                serde_json::to_value(&lost.reason)
                    .ok()
                    .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                    .unwrap_or_default()
            );
        }
        for gap in report.version_gaps.iter().take(args.limit) {
            println!(
                "version gap: journey {} version {} ({:?})",
                gap.journey, gap.version, gap.cause
            );
        }
    }
    Ok(report)
}

/// The audit's summary as a table.
pub fn audit_table(report: &AuditReport) -> String {
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header([
            "journeys",
            "changes published",
            "duplicate deliveries",
            "lost updates",
            "version gaps",
            "unpublished",
            "parked",
        ])
        .add_row([
            report.journeys.to_string(),
            report.changes_published.to_string(),
            report.duplicate_deliveries.to_string(),
            report.lost_updates.len().to_string(),
            report.version_gaps.len().to_string(),
            report.unpublished.to_string(),
            report.parked.to_string(),
        ]);
    table.to_string()
}

/// The audit's counts, as the lab reports them beside its own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct AuditSummary {
    pub lost_updates: usize,
    pub version_gaps: usize,
    pub changes_published: u64,
    pub unpublished: u64,
}

impl std::ops::Add for AuditSummary {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            lost_updates: self.lost_updates + o.lost_updates,
            version_gaps: self.version_gaps + o.version_gaps,
            changes_published: self.changes_published + o.changes_published,
            unpublished: self.unpublished + o.unpublished,
        }
    }
}

/// Drains the outbox to the default bus on the same Redis, then audits `ids`, reading them
/// with `strategy`'s layout: what the lab's `--audit` does after each run. Uses connections of
/// its own, so the run's round-trip counts stay the run's.
///
/// # Errors
/// [`StoreError`] from Redis.
pub async fn drain_and_audit(
    url: &str,
    strategy: flyrtech_infrastructure::Strategy,
    ids: &[JourneyId],
) -> Result<AuditSummary, StoreError> {
    let redis = Redis::connect(&RedisSettings::new(url)).await?;
    let store = flyrtech_infrastructure::RedisJourneyStore::new(
        redis.clone(),
        &flyrtech_infrastructure::StoreConfig::new(strategy),
    )
    .await?;
    let publisher = RedisStreamPublisher::new(redis.clone(), keys::EVENTS, None);
    let relay = Relay::new(redis.clone(), publisher, RelaySettings::new()).await?;
    relay.drain().await?;
    let report = audit(&store, &redis, &redis, keys::EVENTS, Some(ids)).await?;
    Ok(AuditSummary {
        lost_updates: report.lost_updates.len(),
        version_gaps: report.version_gaps.len(),
        changes_published: report.changes_published,
        unpublished: report.unpublished,
    })
}

/// Options of `flyrtech backlog`.
#[derive(Debug, Clone, Args)]
pub struct BacklogArgs {
    /// Outbox entries to accumulate before the relay starts.
    #[arg(long, default_value_t = 1_000_000)]
    pub entries: usize,
    /// Journeys they belong to (each gets consecutive versions).
    #[arg(long, default_value_t = 10_000)]
    pub journeys: usize,
    /// Write the result as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub relay: RelayArgs,
}

/// What `flyrtech backlog` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::lab::report::Machine,
    pub entries: usize,
    pub journeys: usize,
    pub batch: usize,
    pub parallel: usize,
    pub partitions: usize,
    /// Time to write the backlog (pipelined XADD), seconds.
    pub fill_seconds: f64,
    /// Time for one relay to publish and acknowledge all of it, seconds.
    pub drain_seconds: f64,
    /// Entries published and acknowledged per second.
    pub drain_rate_per_second: f64,
    /// Entries on the bus afterwards (from this run).
    pub published: u64,
    /// Outbox entries left (0 when fully drained).
    pub left_in_outbox: u64,
    /// Per-journey order on the bus held (every journey's versions strictly increasing).
    pub order_kept: bool,
}

/// Fills the outbox with `entries` valid entries over `journeys` journeys, then drains it with
/// one relay publishing to a fresh bus stream, and measures the rate.
///
/// # Errors
/// Bad flags or Redis failures.
pub async fn backlog(args: &BacklogArgs, redis: Redis) -> anyhow::Result<BacklogReport> {
    if args.entries == 0 || args.journeys == 0 {
        anyhow::bail!("--entries and --journeys must each be at least 1");
    }
    let started_at = chrono::Utc::now().to_rfc3339();
    let depth_before = depth(&redis).await?.entries;
    if depth_before > 0 {
        anyhow::bail!(
            "the outbox already holds {depth_before} entries; run the backlog on an empty Redis"
        );
    }
    let nonce = format!(
        "{:06x}",
        rand::RngExt::random::<u32>(&mut rand::rng()) & 0xff_ffff
    );
    let stream = format!("{}:backlog:{nonce}", args.relay.bus.events_stream);
    let fill = Instant::now();
    fill_outbox(&redis, args.entries, args.journeys, &nonce).await?;
    let fill_seconds = fill.elapsed().as_secs_f64();
    tracing::info!(
        entries = args.entries,
        fill_seconds,
        "backlog written; draining"
    );

    let bus = args.relay.bus.connect(&redis).await?;
    let publisher = RedisStreamPublisher::new(bus.clone(), stream.clone(), None);
    let settings = args.relay.settings()?;
    let (batch, parallel) = (settings.batch, settings.parallel);
    let relay = Relay::new(redis.clone(), publisher, settings).await?;
    let drain = Instant::now();
    let stats = relay.drain().await?;
    let drain_seconds = drain.elapsed().as_secs_f64();
    let left_in_outbox = depth(&redis).await?.entries;
    let order_kept = bus_order_kept(&bus, &stream).await?;
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut bus.shared())
        .await;
    #[allow(clippy::cast_precision_loss)]
    let rate = stats.published as f64 / drain_seconds.max(1e-9);
    Ok(BacklogReport {
        schema_version: 1,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at,
        machine: crate::lab::report::Machine::detect(crate::lab::redis_version_of(&redis).await),
        entries: args.entries,
        journeys: args.journeys,
        batch,
        parallel,
        partitions: keys::PARTITIONS,
        fill_seconds,
        drain_seconds,
        drain_rate_per_second: rate,
        published: stats.published,
        left_in_outbox,
        order_kept,
    })
}

/// Writes `entries` outbox entries, round-robin over `journeys` synthetic journeys, each
/// journey's versions consecutive: exactly what that many acknowledged segment changes leave.
pub(crate) async fn fill_outbox(
    redis: &Redis,
    entries: usize,
    journeys: usize,
    nonce: &str,
) -> anyhow::Result<()> {
    let ids: Vec<JourneyId> = (0..journeys)
        .map(|n| JourneyId::parse(format!("BACKLOG-{nonce}-{n:07}")))
        .collect::<Result<_, _>>()?;
    let at = chrono::Utc::now();
    let mut next = 0usize;
    while next < entries {
        let end = (next + 10_000).min(entries);
        // One pipeline per partition: on a cluster a pipeline may not cross slots.
        let mut pipes: std::collections::HashMap<Partition, redis::Pipeline> =
            std::collections::HashMap::new();
        for k in next..end {
            let id = &ids[k % journeys];
            let version = (k / journeys + 1) as u64;
            let fields = backlog_entry(id, version, at)?;
            let partition = Partition::of(id);
            pipes
                .entry(partition)
                .or_default()
                .cmd("XADD")
                .arg(partition.outbox())
                .arg("*")
                .arg(outbox::xadd_args(&fields))
                .ignore();
        }
        let results: Vec<redis::RedisResult<()>> = futures::stream::iter(pipes.into_values())
            .map(|pipe| {
                let mut conn = redis.shared();
                async move { pipe.query_async::<()>(&mut conn).await }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        results
            .into_iter()
            .collect::<redis::RedisResult<Vec<()>>>()?;
        next = end;
    }
    Ok(())
}

fn backlog_entry(
    id: &JourneyId,
    version: u64,
    at: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<Fields> {
    use flyrtech_core::{DomainEvent, EventId, EventKind, JourneyVersion, SegmentStatus};
    let (from, to) = if version % 2 == 1 {
        (SegmentStatus::Scheduled, SegmentStatus::Delayed)
    } else {
        (SegmentStatus::Delayed, SegmentStatus::Scheduled)
    };
    Ok(outbox::encode(&[DomainEvent {
        id: EventId::new(),
        journey_id: id.clone(),
        version: JourneyVersion::new(version),
        occurred_at: at,
        kind: EventKind::SegmentStatusChanged {
            segment_id: crate::lab::synthetic_segment_id(0)?,
            from,
            to,
        },
    }])?)
}

/// Whether every journey's versions appear on the bus stream in increasing order.
async fn bus_order_kept(bus: &Redis, stream: &str) -> Result<bool, StoreError> {
    let mut last: std::collections::HashMap<JourneyId, u64> = std::collections::HashMap::new();
    for (_, envelope) in flyrtech_infrastructure::events::publisher::read_bus(bus, stream).await? {
        let v = envelope.version.get();
        let previous = last.insert(envelope.journey_id.clone(), v).unwrap_or(0);
        if v <= previous {
            return Ok(false);
        }
    }
    Ok(true)
}
