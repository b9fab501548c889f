//! `flyrtech-lab soak`: the resources of a running deployment over time. Starts `serve` and `relay`
//! as processes of their own (the `flyrtech` binary beside this one) on one Redis, drives `serve` with PUTs and GETs from
//! this process for `--duration`, and every `--sample-every` records each process' resident
//! memory, Redis' `used_memory`, the `events` stream's length and the outbox backlog. Nobody
//! scrapes `/metrics`: the exporter's own upkeep must keep its memory flat.
//!
//! The goals (docs/reliability.md, "Resources"): after the warm-up (the first third of the run,
//! or until the stream first holds its retention if that is later), each process' RSS and Redis'
//! memory grow less than 5 %, the stream stays within its retention, and the outbox backlog stays
//! below one second of writes (the relay keeps up).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use flyrtech_core::{JourneyId, JourneyStore};
use flyrtech_infrastructure::events::backlog::depth;
use flyrtech_infrastructure::events::publisher::Retention;
use flyrtech_infrastructure::keys;
use flyrtech_infrastructure::{Redis, RedisJourneyStore, RedisSettings, StoreConfig, Strategy};
use serde::Serialize;

use super::{DONE, FOUND, emit, shutdown_signal};
use crate::compare::chart::{Panel, Scale, write_panels};
use crate::compare::report::Machine;
use crate::compare::{redis_version_of, synthetic_journey, synthetic_segment_id};
use crate::process::Process;
use flyrtech_cli::config::{MaxAge, Settings, parse_age};
use flyrtech_cli::deployment::{Deployment, Private};

/// Options of `flyrtech-lab soak`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct SoakArgs {
    /// How long the load runs (`90s`, `10m`, `1h`).
    #[arg(long, default_value = "10m", value_parser = parse_age)]
    pub duration: MaxAge,
    /// How often resources are sampled.
    #[arg(long, default_value = "5s", value_parser = parse_age)]
    pub sample_every: MaxAge,
    /// Concurrent HTTP requests.
    #[arg(long, default_value_t = 32)]
    pub connections: usize,
    /// Journeys created before the load starts (each update toggles one's first segment).
    #[arg(long, default_value_t = 1000)]
    pub journeys: usize,
    /// One request in this many is a GET; the others are segment status PUTs.
    #[arg(long, default_value_t = 5)]
    pub read_every: u64,
    /// The relay's `--bus-max-len` (the retention the stream must stay within).
    #[arg(long, default_value_t = Retention::default().max_len)]
    pub bus_max_len: usize,
    /// Write the report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the chart here, as .svg and .png.
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// The service's binary, which runs `serve` and `relay` [default: `flyrtech` beside this
    /// binary].
    #[arg(long)]
    pub service_bin: Option<PathBuf>,
}

/// One sample.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    /// Resident memory in MB (None when the process cannot be seen from here).
    pub serve_rss_mb: Option<f64>,
    pub relay_rss_mb: Option<f64>,
    pub redis_rss_mb: Option<f64>,
    /// Redis' `used_memory`, MB.
    pub redis_used_memory_mb: f64,
    /// `XLEN events`.
    pub events_stream: u64,
    /// Outbox entries not yet published.
    pub outbox_backlog: u64,
    /// Requests answered since the previous sample, per second.
    pub requests_per_second: f64,
}

/// How one curve moved after the warm-up: the mean of the first half of what follows the
/// warm-up against the mean of the second half (a trend, not one noisy sample against another).
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    pub first_half_mean: f64,
    pub second_half_mean: f64,
    pub max_after: f64,
    pub last: f64,
    /// `(second_half_mean - first_half_mean) / first_half_mean`.
    pub growth: f64,
}

/// A goal and whether the run met it.
#[derive(Debug, Clone, Serialize)]
pub struct Goal {
    pub goal: String,
    pub measured: String,
    pub met: bool,
}

/// What `flyrtech-lab soak` measured.
#[derive(Debug, Clone, Serialize)]
pub struct SoakReport {
    pub schema_version: u32,
    pub command: String,
    pub started_at: String,
    pub machine: Machine,
    pub strategy: String,
    pub duration_seconds: f64,
    pub warm_up_seconds: f64,
    pub connections: usize,
    pub journeys: usize,
    pub requests: u64,
    pub failed_requests: u64,
    pub bus_max_len: usize,
    pub samples: Vec<Sample>,
    pub growth: BTreeMap<String, Growth>,
    pub goals: Vec<Goal>,
}

/// Runs `flyrtech-lab soak`; [`FOUND`] when a goal was not met.
///
/// # Errors
/// Redis or a child process cannot be started, a report cannot be written, or interrupted.
pub async fn run(args: &SoakArgs, settings: Settings) -> anyhow::Result<i32> {
    let report = tokio::select! {
        report = soak(args, &settings) => report?,
        () = shutdown_signal() => anyhow::bail!("interrupted"),
    };
    emit(&report, args.json.as_deref())?;
    if let Some(path) = &args.chart {
        for written in write_panels(&panels(&report), Scale::Linear, path)? {
            tracing::info!(path = %written.display(), "wrote a chart");
        }
    }
    Ok(if report.goals.iter().all(|g| g.met) {
        DONE
    } else {
        FOUND
    })
}

/// Resident memory of `pid` in MB, from `/proc`.
fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// A field of `INFO section`.
async fn info_field(redis: &Redis, section: &str, field: &str) -> anyhow::Result<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(&mut redis.shared())
        .await?;
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .with_context(|| format!("INFO {section} has no {field}"))
}

async fn soak(args: &SoakArgs, settings: &Settings) -> anyhow::Result<SoakReport> {
    let duration = args.duration.0.context("--duration cannot be off")?;
    let every = args
        .sample_every
        .0
        .context("--sample-every cannot be off")?;
    if args.connections == 0 || args.journeys < args.connections || args.read_every == 0 {
        anyhow::bail!(
            "--connections and --read-every must be at least 1, --journeys at least --connections"
        );
    }
    let strategy = settings.strategy.unwrap_or(Strategy::Hash);
    let deployment = Deployment::resolve(settings.redis_url.as_deref(), Private::Throwaway)?;
    let redis = Redis::connect(&RedisSettings::new(deployment.url.clone())).await?;
    let started_at = chrono::Utc::now().to_rfc3339();

    // The journeys, created in the strategy's layout before serve starts.
    let store = RedisJourneyStore::new(redis.clone(), &StoreConfig::new(strategy)).await?;
    let ids: Vec<JourneyId> = (0..args.journeys)
        .map(|n| JourneyId::parse(format!("SOAK-{n:06}")))
        .collect::<Result<_, _>>()?;
    for id in &ids {
        store.create(&synthetic_journey(id, 3)?).await?;
    }

    let dir = tempfile::tempdir()?;
    let port = flyrtech_infrastructure::local::free_port(false)?;
    let listen = format!("127.0.0.1:{port}");
    let bus_max_len = args.bus_max_len.to_string();
    let service = super::service_binary(args.service_bin.as_deref())?;
    let mut serve = Process::spawn(
        &service,
        "serve",
        &[
            "--strategy",
            strategy.name(),
            "serve",
            "--no-seed",
            // One client by design: the rate limit would measure itself.
            "--rate-limit",
            "off",
            "--listen",
            &listen,
        ],
        &deployment.url,
        dir.path(),
    )?;
    let mut relay = Process::spawn(
        &service,
        "relay",
        &["relay", "--bus-max-len", &bus_max_len],
        &deployment.url,
        dir.path(),
    )?;
    let base = format!("http://{listen}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let ready_by = Instant::now() + Duration::from_secs(60);
    loop {
        serve.check()?;
        let ready = client.get(format!("{base}/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        anyhow::ensure!(Instant::now() < ready_by, "serve was not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let redis_pid: Option<u32> = info_field(&redis, "server", "process_id")
        .await
        .ok()
        .and_then(|p| p.parse().ok());
    tracing::info!(%strategy, seconds = duration.as_secs(), "soaking: serve, relay and the load");

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let segment = synthetic_segment_id(0)?;
    let mut load = Vec::new();
    for worker in 0..args.connections {
        let mine: Vec<JourneyId> = ids
            .iter()
            .skip(worker)
            .step_by(args.connections)
            .cloned()
            .collect();
        let (client, base, segment) = (client.clone(), base.clone(), segment.clone());
        let (stop, answered, failed) = (stop.clone(), answered.clone(), failed.clone());
        let read_every = args.read_every;
        load.push(tokio::spawn(async move {
            // Each worker owns its journeys, so it knows each one's status and always asks for
            // a change the table allows (Scheduled <-> Delayed).
            let mut delayed = vec![false; mine.len()];
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                let i = (n as usize) % mine.len();
                let id = &mine[i];
                let request = if n.is_multiple_of(read_every) {
                    client.get(format!("{base}/api/journeys/{id}"))
                } else {
                    let to = if delayed[i] { "Scheduled" } else { "Delayed" };
                    client
                        .put(format!(
                            "{base}/api/journeys/{id}/segments/{segment}/status"
                        ))
                        .json(&serde_json::json!({ "status": to }))
                };
                match request.send().await {
                    Ok(r) if r.status().is_success() => {
                        if !n.is_multiple_of(read_every) {
                            delayed[i] = !delayed[i];
                        }
                        answered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                n += 1;
            }
        }));
    }

    let started = Instant::now();
    let mut samples = Vec::new();
    let mut last = (Instant::now(), 0_u64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        serve.check()?;
        relay.check()?;
        let now = Instant::now();
        let done = answered.load(Ordering::Relaxed);
        let rate = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
        last = (now, done);
        let used: f64 = info_field(&redis, "memory", "used_memory").await?.parse()?;
        let events: u64 = redis::cmd("XLEN")
            .arg(keys::EVENTS)
            .query_async(&mut redis.shared())
            .await?;
        let sample = Sample {
            t: started.elapsed().as_secs_f64(),
            serve_rss_mb: rss_mb(serve.pid()),
            relay_rss_mb: rss_mb(relay.pid()),
            redis_rss_mb: redis_pid.and_then(rss_mb),
            redis_used_memory_mb: used / 1_048_576.0,
            events_stream: events,
            outbox_backlog: depth(&redis).await?.entries,
            requests_per_second: rate,
        };
        tracing::info!(
            t = sample.t as u64,
            serve_mb = sample.serve_rss_mb.unwrap_or_default() as u64,
            relay_mb = sample.relay_rss_mb.unwrap_or_default() as u64,
            redis_mb = sample.redis_used_memory_mb as u64,
            events = sample.events_stream,
            backlog = sample.outbox_backlog,
            rps = sample.requests_per_second as u64,
            "sample"
        );
        samples.push(sample);
        if started.elapsed() >= duration {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await?;
    }
    drop((serve, relay));

    // The warm-up: a third of the run, or until the stream first reached its retention if
    // that was later (until then Redis' memory grows by design).
    let reached = samples
        .iter()
        .find(|s| s.events_stream >= args.bus_max_len as u64)
        .map(|s| s.t);
    let warm_up = reached.map_or(duration.as_secs_f64() / 3.0, |t| {
        t.max(duration.as_secs_f64() / 3.0)
    });
    let growth = growth_after(&samples, warm_up);
    let goals = goals(
        &growth,
        &samples,
        warm_up,
        args.bus_max_len,
        reached.is_some(),
    );
    for goal in &goals {
        tracing::info!(goal = %goal.goal, measured = %goal.measured, met = goal.met, "soak goal");
    }
    Ok(SoakReport {
        schema_version: 1,
        command: crate::compare::report::command_line(),
        started_at,
        machine: Machine::detect(redis_version_of(&redis).await),
        strategy: strategy.name().to_owned(),
        duration_seconds: started.elapsed().as_secs_f64(),
        warm_up_seconds: warm_up,
        connections: args.connections,
        journeys: args.journeys,
        requests: answered.load(Ordering::Relaxed),
        failed_requests: failed.load(Ordering::Relaxed),
        bus_max_len: args.bus_max_len,
        samples,
        growth,
        goals,
    })
}

/// The curves the goals are about, by name.
fn curves(samples: &[Sample]) -> BTreeMap<String, Vec<(f64, f64)>> {
    let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for s in samples {
        let mut push = |name: &str, v: Option<f64>| {
            if let Some(v) = v {
                out.entry(name.to_owned()).or_default().push((s.t, v));
            }
        };
        push("serve", s.serve_rss_mb);
        push("relay", s.relay_rss_mb);
        push("redis-server", s.redis_rss_mb);
        push("used_memory", Some(s.redis_used_memory_mb));
    }
    out
}

fn growth_after(samples: &[Sample], warm_up: f64) -> BTreeMap<String, Growth> {
    let mean = |values: &[f64]| values.iter().sum::<f64>() / values.len().max(1) as f64;
    curves(samples)
        .into_iter()
        .filter_map(|(name, points)| {
            let after: Vec<f64> = points
                .iter()
                .filter(|(t, _)| *t >= warm_up)
                .map(|(_, v)| *v)
                .collect();
            if after.len() < 2 {
                return None;
            }
            let (first, second) = after.split_at(after.len() / 2);
            let (first_half_mean, second_half_mean) = (mean(first), mean(second));
            let growth = Growth {
                first_half_mean,
                second_half_mean,
                max_after: after.iter().copied().fold(f64::MIN, f64::max),
                last: *after.last()?,
                growth: (second_half_mean - first_half_mean) / first_half_mean.max(1e-9),
            };
            Some((name, growth))
        })
        .collect()
}

fn goals(
    growth: &BTreeMap<String, Growth>,
    samples: &[Sample],
    warm_up: f64,
    bus_max_len: usize,
    retention_reached: bool,
) -> Vec<Goal> {
    let mut goals: Vec<Goal> = ["serve", "relay", "used_memory"]
        .into_iter()
        .filter_map(|name| {
            let g = growth.get(name)?;
            Some(Goal {
                goal: format!("{name}: trend after the warm-up < 5 %"),
                measured: format!(
                    "mean {:.1} MB then {:.1} MB ({:+.1} %), max {:.1} MB",
                    g.first_half_mean,
                    g.second_half_mean,
                    g.growth * 100.0,
                    g.max_after
                ),
                // Redis' memory is judged only once the stream holds its retention.
                met: g.growth < 0.05 && (name != "used_memory" || retention_reached),
            })
        })
        .collect();
    if !retention_reached {
        goals.push(Goal {
            goal: "the events stream reached its retention (else Redis memory still grows)".into(),
            measured: "not reached: run longer or lower --bus-max-len".into(),
            met: false,
        });
    }
    let longest = samples.iter().map(|s| s.events_stream).max().unwrap_or(0);
    let peak_rate = samples
        .iter()
        .map(|s| s.requests_per_second)
        .fold(0.0, f64::max);
    // The relay trims at most once a second, to whole nodes of 100 entries (`MAXLEN ~`): the
    // stream may pass its length by a second of writes and a node, by design.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let bound = bus_max_len as u64 + peak_rate.ceil() as u64 + 100;
    goals.push(Goal {
        goal: format!(
            "events stream within its retention ({bus_max_len} entries, plus a second of writes \
             and a node between trims)"
        ),
        measured: format!("longest {longest}, bound {bound}"),
        met: longest <= bound,
    });
    let backlog = samples
        .iter()
        .filter(|s| s.t >= warm_up)
        .map(|s| s.outbox_backlog)
        .max()
        .unwrap_or(0);
    let per_sample = samples
        .iter()
        .map(|s| s.requests_per_second)
        .fold(0.0, f64::max);
    goals.push(Goal {
        goal: "outbox backlog after the warm-up below one second of writes".into(),
        measured: format!("max {backlog} entries (peak rate {per_sample:.0} requests/s)"),
        met: (backlog as f64) < per_sample.max(1.0),
    });
    goals
}

fn panels(report: &SoakReport) -> Vec<Panel> {
    let series = |pick: &dyn Fn(&Sample) -> Option<(String, f64)>| {
        let mut out: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in &report.samples {
            if let Some((name, v)) = pick(s) {
                out.entry(name).or_default().push((s.t, v));
            }
        }
        out
    };
    let mut rss = series(&|s| s.serve_rss_mb.map(|v| ("serve".to_owned(), v)));
    rss.extend(series(&|s| s.relay_rss_mb.map(|v| ("relay".to_owned(), v))));
    rss.extend(series(&|s| {
        s.redis_rss_mb.map(|v| ("redis-server".to_owned(), v))
    }));
    let mut entries = series(&|s| Some(("events stream".to_owned(), s.events_stream as f64)));
    entries.extend(series(&|s| {
        Some(("outbox backlog".to_owned(), s.outbox_backlog as f64))
    }));
    vec![
        Panel {
            x_names: &[],
            title: "Resident memory (nobody scrapes /metrics)",
            x: "seconds",
            y: "MB",
            series: rss,
        },
        Panel {
            x_names: &[],
            title: "Redis used_memory",
            x: "seconds",
            y: "MB",
            series: series(&|s| Some(("used_memory".to_owned(), s.redis_used_memory_mb))),
        },
        Panel {
            x_names: &[],
            title: "Entries: events stream and outbox backlog",
            x: "seconds",
            y: "entries",
            series: entries,
        },
        Panel {
            x_names: &[],
            title: "Load",
            x: "seconds",
            y: "requests/s",
            series: series(&|s| Some(("serve".to_owned(), s.requests_per_second))),
        },
    ]
}
