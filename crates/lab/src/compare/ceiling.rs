//! The ceiling: what the same Redis does with the same commands at the same concurrency when no
//! strategy logic, no client library and no verification stand in between.
//!
//! When `redis-benchmark` is on PATH and the run is in-process on a standalone server with no
//! processing delay, the lab replays each strategy's per-update Redis commands on the very
//! documents of the run (their ids end in 12 digits, the shape of redis-benchmark's
//! `__rand_int__`, over `-r <journeys>`):
//!
//! | strategy | commands replayed | ceiling (updates/s) |
//! |---|---|---|
//! | `lua`, `hash` | `EVALSHA` of the strategy's own update script, exact arguments (outbox entry included) | sum of two processes, one setting `Delayed` and one `Scheduled`, half the clients each, so changes and no-ops mix as in the run |
//! | `naive`, `local-lock`, `optimistic` | `GET` of the document, `XADD` of an outbox entry, `SET` of a document-sized value | `1 / (1/r_GET + 1/r_XADD + 1/r_SET)` |
//! | `redlock` | `SET NX PX` (lock), `INCR` (fence), `GET`, `XADD`, `SET`, `DEL` (release) | `1 / sum(1/r_i)` |
//!
//! WATCH/MULTI/EXEC cannot be replayed per request by redis-benchmark, so the optimistic ceiling
//! leaves out the transaction framing. The replay works on copies of the run's journeys
//! (`COPY` to `lab:ceiling:<nonce>:state:<n>`), because a journey's real key carries its outbox
//! partition's hash tag, which `__rand_int__` cannot generate; the copies, the scratch outbox
//! and the other scratch keys (`lab:ceiling:<nonce>:*`) are deleted afterwards.
//!
//! Same concurrency means the same connections and the same requests in flight: the lab's
//! instances each multiplex their writers over one connection, so redis-benchmark opens one
//! connection per instance (`-c`) and pipelines `writers / instances` requests on each (`-P`).
//! Without pipelining redis-benchmark pays a round trip per request that the lab does not, and
//! its "ceiling" would sit below what the lab measures.

use std::process::Command;

use flyrtech_core::{JourneyId, SegmentStatus, StatusChange};
use flyrtech_infrastructure::Strategy;
use serde::Serialize;

use super::workload::Journeys;
use super::{Driver, LabError, Params, Scenario, synthetic_journey, synthetic_segment_id};

/// A strategy's ceiling on this server.
#[derive(Debug, Clone, Serialize)]
pub struct Ceiling {
    /// Updates per second the replayed commands allow.
    pub updates_per_second: f64,
    /// What was measured.
    pub commands: Vec<CommandRate>,
    /// Connections redis-benchmark opened (one per service instance).
    pub connections: usize,
    /// Requests pipelined per connection (writers per instance).
    pub pipeline: usize,
}

/// One redis-benchmark measurement.
#[derive(Debug, Clone, Serialize)]
pub struct CommandRate {
    /// The command, with `__rand_int__` where the key varies.
    pub command: String,
    /// Requests per second.
    pub requests_per_second: f64,
}

/// Requests per redis-benchmark measurement: about two seconds' worth of the run's own rate,
/// within these bounds.
const MIN_REQUESTS: usize = 20_000;
const MAX_REQUESTS: usize = 2_000_000;

/// Whether `redis-benchmark` can be run.
pub fn available() -> bool {
    Command::new("redis-benchmark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Measures the ceiling for this run, or `None` (with the reason logged at debug level) when it
/// does not apply. A failing measurement is logged and reported as `None`: the ceiling is
/// context for the run, never a reason to lose it.
pub async fn measure(
    driver: &Driver,
    scenario: Scenario,
    params: &Params,
    journeys: &Journeys,
    requests: usize,
) -> Option<Ceiling> {
    let (Driver::Library { url, strategy, .. }, Some(store)) = (driver, driver.store()) else {
        return None;
    };
    if !params.processing_delay.is_zero() || store.redis().is_cluster() || !available() {
        tracing::debug!(%scenario, "no ceiling: needs in-process, standalone, no delay, redis-benchmark");
        return None;
    }
    let requests = requests.clamp(MIN_REQUESTS, MAX_REQUESTS);
    match replay(url, *strategy, store, params, journeys, requests).await {
        Ok(ceiling) => Some(ceiling),
        Err(e) => {
            tracing::warn!(%scenario, %strategy, error = %e, "ceiling measurement failed");
            None
        }
    }
}

async fn replay(
    url: &str,
    strategy: Strategy,
    store: &flyrtech_infrastructure::RedisJourneyStore,
    params: &Params,
    journeys: &Journeys,
    requests: usize,
) -> Result<Ceiling, LabError> {
    let target = Target::parse(url)?;
    let connections = params.instances.max(2);
    let pipeline = params.writers.div_ceil(params.instances.max(1)).max(1);
    let placeholder = JourneyId::parse(format!("{}-__rand_int__", journeys.prefix))?;
    let change = |status| -> Result<StatusChange, LabError> {
        Ok(StatusChange::Segment {
            segment_id: synthetic_segment_id(0)?,
            status,
        })
    };
    let range = params.journeys;
    let nonce = journeys.prefix.rsplit('-').next().unwrap_or("0").to_owned();
    let scratch = format!("lab:ceiling:{nonce}");
    // The run's own journeys, copied under names redis-benchmark can generate: a journey's real
    // key carries its outbox partition's hash tag, which `__rand_int__` cannot reproduce.
    let state = format!("{scratch}:state:__rand_int__");
    let outbox = format!("{scratch}:outbox");
    copy_states(store, strategy, journeys, &scratch).await?;
    let delayed = store.script_call(&placeholder, &change(SegmentStatus::Delayed)?);
    let scheduled = store.script_call(&placeholder, &change(SegmentStatus::Scheduled)?);
    if let (Some(delayed), Some(scheduled)) = (delayed, scheduled) {
        let _: String = redis::cmd("SCRIPT")
            .arg("LOAD")
            .arg(delayed.source)
            .query_async(&mut store.redis().shared())
            .await
            .map_err(|e| LabError::Benchmark(e.to_string()))?;
        let argv = |call: &flyrtech_infrastructure::ScriptCall| {
            let mut v = vec![
                "EVALSHA".to_owned(),
                call.sha.clone(),
                call.keys.len().to_string(),
                state.clone(),
                outbox.clone(),
            ];
            // The other layout's key and the fencing counter: absent, as in a settled dataset.
            v.extend((2..call.keys.len()).map(|k| format!("{scratch}:absent:{k}")));
            v.extend(call.args.iter().cloned());
            v
        };
        let (a, b) = (argv(&delayed), argv(&scheduled));
        let runs = tokio::task::spawn_blocking(move || {
            let first = target.spawn(connections / 2, pipeline, requests / 2, range, &a)?;
            let second = target.spawn(
                connections - connections / 2,
                pipeline,
                requests / 2,
                range,
                &b,
            )?;
            Ok::<_, LabError>(vec![finish(first, &a)?, finish(second, &b)?])
        })
        .await
        .map_err(|e| LabError::Benchmark(e.to_string()))?;
        cleanup(store, &scratch).await;
        let runs = runs?;
        let total = runs.iter().map(|r| r.requests_per_second).sum();
        return Ok(Ceiling {
            updates_per_second: total,
            commands: runs,
            connections,
            pipeline,
        });
    }

    // Document strategies: the read, the outbox entry and the write, plus the lock's commands
    // for redlock.
    let document = serde_json::to_string(&synthetic_journey(&placeholder, params.segments)?)
        .map_err(|e| LabError::Benchmark(e.to_string()))?;
    // The outbox entry as the document strategies write it (store::outbox, "The entry").
    let entry = vec![
        "XADD".to_owned(),
        outbox,
        "*".into(),
        "change".into(),
        format!(
            "1 Scheduled {placeholder} SEG-000000000000 Delayed 2026-11-21T08:00:00.000Z \
             019aa6f2-0000-7000-8000-000000000000"
        ),
    ];
    let mut commands: Vec<Vec<String>> = vec![
        vec!["GET".into(), state],
        entry,
        vec![
            "SET".into(),
            format!("{scratch}:doc:__rand_int__"),
            document,
        ],
    ];
    if strategy == Strategy::Redlock {
        let lock = format!("{scratch}:lock:__rand_int__");
        commands.push(vec![
            "SET".into(),
            lock.clone(),
            "token".into(),
            "NX".into(),
            "PX".into(),
            "2000".into(),
        ]);
        commands.push(vec!["INCR".into(), format!("{scratch}:fence:__rand_int__")]);
        commands.push(vec!["DEL".into(), lock]);
    }
    let measured = tokio::task::spawn_blocking(move || {
        commands
            .iter()
            .map(|argv| {
                finish(
                    target.spawn(connections, pipeline, requests, range, argv)?,
                    argv,
                )
            })
            .collect::<Result<Vec<_>, LabError>>()
    })
    .await
    .map_err(|e| LabError::Benchmark(e.to_string()));
    cleanup(store, &scratch).await;
    let measured = measured??;
    let seconds_per_update: f64 = measured.iter().map(|c| 1.0 / c.requests_per_second).sum();
    Ok(Ceiling {
        updates_per_second: 1.0 / seconds_per_update,
        commands: measured,
        connections,
        pipeline,
    })
}

/// Where redis-benchmark connects.
#[derive(Debug, Clone)]
struct Target {
    host: String,
    port: String,
    password: Option<String>,
}

impl Target {
    /// `redis://[user:password@]host:port[/db]`.
    fn parse(url: &str) -> Result<Self, LabError> {
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| LabError::Benchmark(format!("cannot benchmark {url}: not redis://")))?;
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hp)) => (Some(auth), hp),
            None => (None, rest),
        };
        let hostport = hostport.split('/').next().unwrap_or(hostport);
        let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "6379"));
        let password = auth
            .map(|a| a.rsplit_once(':').map_or(a, |(_, p)| p).to_owned())
            .filter(|p| !p.is_empty());
        Ok(Self {
            host: host.to_owned(),
            port: port.to_owned(),
            password,
        })
    }

    fn spawn(
        &self,
        clients: usize,
        pipeline: usize,
        requests: usize,
        range: usize,
        argv: &[String],
    ) -> Result<std::process::Child, LabError> {
        let mut cmd = Command::new("redis-benchmark");
        cmd.args(["-h", &self.host, "-p", &self.port])
            .args(["-c", &clients.max(1).to_string()])
            .args(["-n", &requests.to_string()])
            .args(["-P", &pipeline.to_string()])
            .args(["-r", &range.max(1).to_string()])
            .arg("--csv")
            .args(argv)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        if let Some(p) = &self.password {
            cmd.args(["-a", p]);
        }
        cmd.spawn()
            .map_err(|e| LabError::Benchmark(format!("cannot run redis-benchmark: {e}")))
    }
}

/// Waits for one redis-benchmark and reads its requests per second from the CSV line.
fn finish(child: std::process::Child, argv: &[String]) -> Result<CommandRate, LabError> {
    let output = child
        .wait_with_output()
        .map_err(|e| LabError::Benchmark(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    // `"<command>","rps","avg",...,"max"`: the command may itself contain `","` (a JSON
    // document), so count the seven numbers from the end.
    let rps = stdout
        .lines()
        .filter(|l| !l.starts_with("\"test\""))
        .find_map(|l| {
            l.trim()
                .rsplit("\",\"")
                .nth(6)
                .and_then(|f| f.trim_matches('"').parse::<f64>().ok())
        })
        .filter(|rps| *rps > 0.0)
        .ok_or_else(|| {
            LabError::Benchmark(format!(
                "no requests-per-second in the output: {stdout} {}",
                String::from_utf8_lossy(&output.stderr)
            ))
        })?;
    let command: Vec<&str> = argv
        .iter()
        .map(|a| {
            if a.len() > 60 {
                "<document>"
            } else {
                a.as_str()
            }
        })
        .collect();
    Ok(CommandRate {
        command: command.join(" "),
        requests_per_second: rps,
    })
}

/// Deletes the scratch keys; failure only leaves a few keys under `lab:ceiling:`.
/// Copies the state of each of the run's journeys to `<scratch>:state:<12 digits>`.
async fn copy_states(
    store: &flyrtech_infrastructure::RedisJourneyStore,
    strategy: Strategy,
    journeys: &Journeys,
    scratch: &str,
) -> Result<(), LabError> {
    use flyrtech_infrastructure::keys;
    for chunk in journeys.ids.chunks(1000) {
        let mut pipe = redis::pipe();
        for id in chunk {
            let source = if strategy == Strategy::Hash {
                keys::journey_hash(id)
            } else {
                keys::journey_document(id)
            };
            let n = id.as_str().rsplit('-').next().unwrap_or_default();
            pipe.cmd("COPY")
                .arg(source)
                .arg(format!("{scratch}:state:{n}"))
                .ignore();
        }
        let () = pipe
            .query_async(&mut store.redis().shared())
            .await
            .map_err(|e| LabError::Benchmark(e.to_string()))?;
    }
    Ok(())
}

async fn cleanup(store: &flyrtech_infrastructure::RedisJourneyStore, scratch: &str) {
    let mut conn = store.redis().shared();
    let mut cursor: u64 = 0;
    loop {
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{scratch}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await;
        let Ok((next, keys)) = reply else {
            tracing::warn!(%scratch, "could not delete the ceiling's scratch keys");
            return;
        };
        if !keys.is_empty() {
            let _: redis::RedisResult<i64> =
                redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_become_benchmark_targets() {
        let t = Target::parse("redis://127.0.0.1:7000").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port.as_str(), t.password),
            ("127.0.0.1", "7000", None)
        );
        let t = Target::parse("redis://:secret@cache.local:6380/2").unwrap();
        assert_eq!((t.host.as_str(), t.port.as_str()), ("cache.local", "6380"));
        assert_eq!(t.password.as_deref(), Some("secret"));
        assert!(Target::parse("rediss://x:1").is_err());
    }
}
