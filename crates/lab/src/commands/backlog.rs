//! `flyrtech-lab backlog`: how fast one relay drains a backlog of outbox entries (default
//! 1,000,000), with the bus' per-journey order checked afterwards. The relay is the service's
//! own process (`flyrtech relay --drain`, found beside this binary or named by
//! `--service-bin`), timed from its start to its exit, as an operator would run it; with
//! `--wait-replicas N` or `--wait-aof N` it confirms each batch (what that costs:
//! `tools/relay-confirm/price.sh`). `fill_outbox` is shared with `project-bench`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use flyrtech_core::{BusError, JourneyId};
use flyrtech_infrastructure::events::backlog::depth;
use flyrtech_infrastructure::events::relay::{RelaySettings, RelayStats};
use flyrtech_infrastructure::keys::{self, OutboxShard};
use flyrtech_infrastructure::store::outbox::{self, Fields};
use flyrtech_infrastructure::{Confirmation, Redis, ReplicaWait};
use futures::StreamExt;
use serde::Serialize;

use super::{DONE, connect, emit, shutdown_signal};
use crate::process::Process;
use flyrtech_cli::config::Settings;
use flyrtech_cli::deployment::Deployment;

/// Runs `flyrtech-lab backlog` and prints (and with `--json` writes) its report.
///
/// # Errors
/// Redis unreachable, or interrupted.
pub async fn run(args: &BacklogArgs, settings: Settings) -> anyhow::Result<i32> {
    let (deployment, redis) = connect(&settings, "backlog").await?;
    let report = tokio::select! {
        report = backlog(args, &deployment, redis, settings.replicas) => report?,
        () = shutdown_signal() => anyhow::bail!("interrupted"),
    };
    emit(&report, args.json.as_deref())?;
    Ok(DONE)
}

/// Options of `flyrtech-lab backlog`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
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
    /// Entries the relay reads and publishes per outbox shard batch (its `--batch`).
    #[arg(long, default_value_t = RelaySettings::new().batch)]
    pub batch: usize,
    /// Outbox shards the relay processes at once (its `--parallel`).
    #[arg(long, default_value_t = RelaySettings::new().parallel)]
    pub parallel: usize,
    /// The service's binary, which runs the relay [default: `flyrtech` beside this binary].
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
}

/// The longest the relay may take to drain the backlog before the measurement gives up.
const DRAIN_BOUND: Duration = Duration::from_secs(3600);

/// What `flyrtech-lab backlog` measured.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: crate::compare::report::Machine,
    pub entries: usize,
    pub journeys: usize,
    pub batch: usize,
    pub parallel: usize,
    pub outbox_shards: usize,
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
    /// What each batch waited for before it was published: `WAIT 1`, `WAITAOF 1 1`, or none.
    pub confirm: Option<String>,
    /// Batches held because their replicas did not confirm them in time (read again later).
    pub unconfirmed_batches: u64,
}

/// Fills the outbox with `entries` valid entries over `journeys` journeys, then drains it with
/// one `flyrtech relay --drain` publishing to a fresh bus stream, each batch confirmed by
/// `confirm`'s replicas when given, and measures the rate.
///
/// # Errors
/// Bad flags, Redis failures, or a relay that fails.
pub async fn backlog(
    args: &BacklogArgs,
    deployment: &Deployment,
    redis: Redis,
    confirm: Option<ReplicaWait>,
) -> anyhow::Result<BacklogReport> {
    if args.entries == 0 || args.journeys == 0 {
        anyhow::bail!("--entries and --journeys must each be at least 1");
    }
    let service = super::service_binary(args.service_bin.as_deref())?;
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
    let stream = format!("{}:backlog:{nonce}", keys::EVENTS);
    let fill = Instant::now();
    fill_outbox(&redis, args.entries, args.journeys, &nonce).await?;
    let fill_seconds = fill.elapsed().as_secs_f64();
    tracing::info!(
        entries = args.entries,
        fill_seconds,
        "backlog written; draining"
    );

    let dir = tempfile::tempdir()?;
    let report = dir.path().join("relay.json");
    let mut line: Vec<String> = match confirm {
        Some(wait) => vec![
            match wait.confirmation {
                Confirmation::Received => "--wait-replicas".into(),
                Confirmation::OnDisk => "--wait-aof".into(),
            },
            wait.replicas.to_string(),
            "--wait-timeout-ms".into(),
            wait.timeout.as_millis().to_string(),
        ],
        None => Vec::new(),
    };
    line.extend(
        [
            "relay",
            "--drain",
            "--events-stream",
            &stream,
            "--batch",
            &args.batch.to_string(),
            "--parallel",
            &args.parallel.to_string(),
            "--json",
        ]
        .map(str::to_owned),
    );
    line.push(report.display().to_string());
    let line: Vec<&str> = line.iter().map(String::as_str).collect();
    let drain = Instant::now();
    let relay = Process::spawn(&service, "relay", &line, &deployment.url, dir.path())?;
    relay.finish(DRAIN_BOUND).await?;
    let drain_seconds = drain.elapsed().as_secs_f64();
    let stats: RelayStats = serde_json::from_slice(&std::fs::read(&report)?)?;
    let left_in_outbox = depth(&redis).await?.entries;
    let order_kept = bus_order_kept(&redis, &stream).await?;
    let _: redis::RedisResult<i64> = redis::cmd("DEL")
        .arg(&stream)
        .query_async(&mut redis.shared())
        .await;
    let (batch, parallel) = (args.batch, args.parallel);
    #[allow(clippy::cast_precision_loss)]
    let rate = stats.published as f64 / drain_seconds.max(1e-9);
    Ok(BacklogReport {
        schema_version: 1,
        command: crate::compare::report::command_line(),
        started_at,
        machine: crate::compare::report::Machine::detect(
            crate::compare::redis_version_of(&redis).await,
        ),
        entries: args.entries,
        journeys: args.journeys,
        batch,
        parallel,
        outbox_shards: keys::OUTBOX_SHARDS,
        fill_seconds,
        drain_seconds,
        drain_rate_per_second: rate,
        published: stats.published,
        left_in_outbox,
        order_kept,
        confirm: confirm.map(|w| match w.confirmation {
            Confirmation::Received => format!("WAIT {}", w.replicas),
            Confirmation::OnDisk => format!("WAITAOF 1 {}", w.replicas),
        }),
        unconfirmed_batches: stats.unconfirmed,
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
        let mut pipes: std::collections::HashMap<OutboxShard, redis::Pipeline> =
            std::collections::HashMap::new();
        for k in next..end {
            let id = &ids[k % journeys];
            let version = (k / journeys + 1) as u64;
            let fields = backlog_entry(id, version, at)?;
            let partition = OutboxShard::of(id);
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
            segment_id: crate::compare::synthetic_segment_id(0)?,
            from,
            to,
        },
    }])?)
}

/// Whether every journey's versions appear on the bus stream in increasing order.
async fn bus_order_kept(bus: &Redis, stream: &str) -> Result<bool, BusError> {
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
