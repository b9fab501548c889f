//! What a run reports: one [`RunReport`] per strategy and parameter set, rendered as a terminal
//! table and as the JSON report whose schema docs/lab.md documents, plus the lab's targets
//! checked against the measurements.

use std::collections::BTreeMap;
use std::time::Duration;

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde::{Serialize, Serializer};

use super::ceiling::Ceiling;
use super::driver::{HttpCeiling, RouteRatio};
use super::verify::Check;
use super::workload::Outcome;
use super::{LabError, Params, SCALING_FIXED_WRITERS, Scenario};

/// Bump when a field changes meaning or disappears (adding fields keeps the version).
pub const SCHEMA_VERSION: u32 = 1;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p95: u64,
    pub p99: u64,
    pub max: u64,
    pub mean: f64,
}

/// What one strategy did with one parameter set.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub strategy: String,
    pub scenario: Scenario,
    pub params: Params,
    /// Updates sent.
    pub attempted: usize,
    /// Updates the store acknowledged (changes and no-ops).
    pub acknowledged: usize,
    /// Acknowledged updates that changed something.
    pub changed: usize,
    /// Updates refused or failed.
    pub rejected: usize,
    /// Refusals and failures by kind (`invalid_transition`, `conflict`, `unavailable`, ...).
    pub errors: BTreeMap<String, usize>,
    /// Acknowledged changes missing from the final state (see `verify`).
    pub lost: usize,
    /// Targets whose final status is not the last acknowledged write's.
    pub stale_targets: usize,
    #[serde(rename = "elapsed_ms", serialize_with = "millis")]
    pub elapsed: Duration,
    /// Acknowledged updates per second.
    pub throughput: f64,
    /// Latency of every update sent, in microseconds.
    pub latency_us: Latency,
    pub attempts_per_update: f64,
    pub conflicts_per_update: f64,
    /// Mean lock wait per acknowledged update.
    pub lock_wait_ms_mean: f64,
    /// Redis round trips per update sent (in-process runs only).
    pub round_trips_per_update: Option<f64>,
    /// The same server's ceiling for this strategy's commands, when measured.
    pub ceiling: Option<Ceiling>,
    /// `throughput / ceiling.updates_per_second`.
    pub fraction_of_ceiling: Option<f64>,
    /// Over HTTP: what the same servers answer on `GET /health` with the same client and
    /// concurrency (no Redis behind it), measured right after the run.
    pub http_ceiling: Option<HttpCeiling>,
    /// `throughput / http_ceiling.requests_per_second`.
    pub fraction_of_http_ceiling: Option<f64>,
    /// Over HTTP with `--http-floor`: `/health`, `GET` and `PUT` on the first server and on
    /// the floor of the stack, side by side.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub floor: Option<Vec<RouteRatio>>,
    /// With an arrival window: the model's share of updates absent from the final state
    /// (`super::collision::absent`), to set beside `lost / changed`, which measures the same.
    pub model_loss_probability: Option<f64>,
    /// The same model with the window measured instead of configured: the median update
    /// latency (read, processing, write, and the timer's granularity).
    pub model_loss_probability_effective: Option<f64>,
    /// The share overwritten at least once (`super::collision::overwritten`, closed form): an
    /// upper bound on the loss, not the loss.
    pub model_overwritten_probability: Option<f64>,
    /// `lost / changed`, what the model's loss predicts (`None` when nothing changed).
    pub loss_share: Option<f64>,
    /// With `--audit`: what the outbox audit found for the run's journeys, to set beside `lost`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audit: Option<crate::compare::audit::AuditSummary>,
}

impl RunReport {
    /// Assembles the report of one run.
    pub fn new(
        strategy: String,
        scenario: Scenario,
        params: Params,
        outcome: &Outcome,
        check: Check,
        round_trips: Option<u64>,
        ceiling: Option<Ceiling>,
    ) -> Self {
        let sent = outcome.attempted.max(1) as f64;
        let acknowledged = outcome.acks.len();
        let seconds = outcome.elapsed.as_secs_f64().max(f64::EPSILON);
        let throughput = acknowledged as f64 / seconds;
        let h = &outcome.latency;
        Self {
            strategy,
            scenario,
            params,
            attempted: outcome.attempted,
            acknowledged,
            changed: check.changed,
            rejected: outcome.errors.values().sum(),
            errors: outcome.errors.clone(),
            lost: check.lost,
            stale_targets: check.stale_targets,
            elapsed: outcome.elapsed,
            throughput,
            latency_us: Latency {
                p50: h.value_at_quantile(0.50),
                p95: h.value_at_quantile(0.95),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
                mean: h.mean(),
            },
            attempts_per_update: outcome.attempts as f64 / sent,
            conflicts_per_update: outcome.conflicts as f64 / sent,
            lock_wait_ms_mean: outcome.lock_wait.as_secs_f64() * 1000.0
                / acknowledged.max(1) as f64,
            round_trips_per_update: round_trips.map(|r| r as f64 / sent),
            fraction_of_ceiling: ceiling.as_ref().map(|c| throughput / c.updates_per_second),
            ceiling,
            http_ceiling: None,
            fraction_of_http_ceiling: None,
            floor: None,
            model_loss_probability: params
                .arrival_window
                .map(|t| super::collision::absent(params.writers, params.processing_delay, t)),
            model_loss_probability_effective: params.arrival_window.map(|t| {
                let window = Duration::from_micros(h.value_at_quantile(0.5));
                super::collision::absent(params.writers, window, t)
            }),
            model_overwritten_probability: params
                .arrival_window
                .map(|t| super::collision::overwritten(params.writers, params.processing_delay, t)),
            loss_share: (check.changed > 0).then(|| check.lost as f64 / check.changed as f64),
            audit: None,
        }
    }

    /// Sets the HTTP ceiling measured for this run, and the fraction of it the run reached.
    #[must_use]
    pub fn with_http_ceiling(mut self, ceiling: Option<HttpCeiling>) -> Self {
        self.fraction_of_http_ceiling = ceiling
            .as_ref()
            .map(|c| self.throughput / c.requests_per_second.max(f64::EPSILON));
        self.http_ceiling = ceiling;
        self
    }

    /// `naive (incident): 20 of 20 updates acknowledged (20 changes), 19 lost`.
    pub fn summary_line(&self) -> String {
        format!(
            "{} ({}): {} of {} updates acknowledged ({} changes), {} lost",
            self.strategy,
            self.scenario,
            self.acknowledged,
            self.attempted,
            self.changed,
            self.lost
        ) + &self
            .audit
            .map(|a| {
                format!(
                    "; audit: {} lost updates, {} version gaps in {} published changes",
                    a.lost_updates, a.version_gaps, a.changes_published
                )
            })
            .unwrap_or_default()
    }
}

/// One column of the runs' table: its header, whether the narrow table shows it, and its cell.
struct Column {
    header: &'static str,
    narrow: bool,
    cell: fn(&RunReport) -> String,
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or_else(|| "-".into(), |f| format!("{:.0}%", f * 100.0))
}

const COLUMNS: &[Column] = &[
    Column {
        header: "strategy",
        narrow: true,
        cell: |r| r.strategy.clone(),
    },
    Column {
        header: "scenario",
        narrow: true,
        cell: |r| r.scenario.name().to_owned(),
    },
    Column {
        header: "writers",
        narrow: true,
        cell: |r| r.params.writers.to_string(),
    },
    Column {
        header: "segs",
        narrow: false,
        cell: |r| r.params.segments.to_string(),
    },
    Column {
        header: "sent",
        narrow: false,
        cell: |r| r.attempted.to_string(),
    },
    Column {
        header: "acked",
        narrow: true,
        cell: |r| r.acknowledged.to_string(),
    },
    Column {
        header: "rejected",
        narrow: false,
        cell: |r| r.rejected.to_string(),
    },
    Column {
        header: "lost",
        narrow: true,
        cell: |r| r.lost.to_string(),
    },
    Column {
        header: "stale",
        narrow: false,
        cell: |r| r.stale_targets.to_string(),
    },
    Column {
        header: "updates/s",
        narrow: true,
        cell: |r| format!("{:.0}", r.throughput),
    },
    Column {
        header: "p50 ms",
        narrow: true,
        cell: |r| ms(r.latency_us.p50),
    },
    Column {
        header: "p99 ms",
        narrow: true,
        cell: |r| ms(r.latency_us.p99),
    },
    Column {
        header: "max ms",
        narrow: false,
        cell: |r| ms(r.latency_us.max),
    },
    Column {
        header: "attempts",
        narrow: true,
        cell: |r| format!("{:.2}", r.attempts_per_update),
    },
    Column {
        header: "lock wait ms",
        narrow: false,
        cell: |r| format!("{:.2}", r.lock_wait_ms_mean),
    },
    Column {
        header: "RTT/update",
        narrow: false,
        cell: |r| {
            r.round_trips_per_update
                .map_or_else(|| "-".into(), |x| format!("{x:.1}"))
        },
    },
    Column {
        header: "of ceiling",
        narrow: true,
        cell: |r| percent(r.fraction_of_ceiling),
    },
    Column {
        header: "of HTTP ceiling",
        narrow: true,
        cell: |r| percent(r.fraction_of_http_ceiling),
    },
];

/// Renders one row per run. The narrow table (the default) has the columns a comparison is read
/// by and fits a 120-column terminal; `wide` has every column. A column no run measured (all
/// `-`) is left out of either.
pub fn table(runs: &[RunReport], wide: bool) -> String {
    let shown: Vec<&Column> = COLUMNS
        .iter()
        .filter(|c| wide || c.narrow)
        .filter(|c| runs.is_empty() || runs.iter().any(|r| (c.cell)(r) != "-"))
        .collect();
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(shown.iter().map(|c| c.header));
    for r in runs {
        table.add_row(shown.iter().map(|c| (c.cell)(r)));
    }
    table.to_string()
}

pub use crate::page::figure;

/// One of the lab's targets, checked against this run's measurements.
#[derive(Debug, Clone, Serialize)]
pub struct TargetCheck {
    pub target: String,
    /// The measured value, when this run measured it.
    pub measured: Option<f64>,
    /// The threshold it is compared with.
    pub threshold: f64,
    /// `None` when not measured in this run.
    pub met: Option<bool>,
}

/// Checks the lab's targets against `runs`.
pub fn targets(runs: &[RunReport]) -> Vec<TargetCheck> {
    let find = |strategy: &str, scenario: Scenario, pick: &dyn Fn(&Params) -> bool| {
        runs.iter()
            .find(|r| r.strategy == strategy && r.scenario == scenario && pick(&r.params))
    };
    let mut out = Vec::new();
    for strategy in ["lua", "hash"] {
        let measured = find(strategy, Scenario::Spread, &|p| {
            p.writers == SCALING_FIXED_WRITERS
        })
        .and_then(|r| r.fraction_of_ceiling);
        out.push(at_least(
            format!(
                "{strategy}: throughput / redis-benchmark ceiling of its script, spread, 50 writers"
            ),
            measured,
            0.8,
        ));
    }
    let hash_at = |segments| {
        find("hash", Scenario::Scaling, &|p| {
            p.segments == segments && p.writers == SCALING_FIXED_WRITERS
        })
        .map(|r| r.throughput)
    };
    out.push(at_least(
        "hash: throughput at 200 segments / at 2 segments (scaling, 50 writers)".into(),
        hash_at(200).zip(hash_at(2)).map(|(big, small)| big / small),
        0.9,
    ));
    // The retry-tuning goal: optimistic retries tuned, close to the serial bound.
    let optimistic = find("optimistic", Scenario::Incident, &|_| true).map(|r| {
        let serial = r.params.updates as f64 * r.params.processing_delay.as_secs_f64();
        r.elapsed.as_secs_f64() / serial.max(f64::EPSILON)
    });
    out.push(at_most(
        "optimistic: incident elapsed / serial bound (writers x delay)".into(),
        optimistic,
        1.3,
    ));
    // Redlock against the in-process mutex of the same run, both on one instance: a lock taken
    // across processes should cost next to nothing more than one taken in memory. (Against the
    // serial bound the bar sat below the model's own timer floor, which no lock can beat.)
    let one_instance = |strategy: &str| {
        find(strategy, Scenario::Incident, &|p| p.instances == 1).map(|r| r.elapsed.as_secs_f64())
    };
    out.push(at_most(
        "redlock: incident elapsed / local-lock's in the same run (one instance)".into(),
        one_instance("redlock")
            .zip(one_instance("local-lock"))
            .map(|(redlock, mutex)| redlock / mutex.max(f64::EPSILON)),
        1.05,
    ));
    out.push(at_most(
        "redlock: same-segment p99 ms (a third of the 185 ms of jittered polling)".into(),
        find("redlock", Scenario::SameSegment, &|_| true).map(|r| r.latency_us.p99 as f64 / 1000.0),
        REDLOCK_SAME_SEGMENT_P99_BEFORE_MS / 3.0,
    ));
    // The HTTP path against the floor of its stack (axum + redis-rs, no middleware),
    // measured in the same run. PUT is judged for hash, whose script is the nearest to the
    // floor's one HINCRBY; the other strategies' PUTs are set against their Redis ceilings.
    for run in runs {
        for route in run.floor.iter().flatten() {
            let threshold = match route.route {
                "/health" => 0.9,
                "PUT segment status" if !run.strategy.starts_with("hash") => continue,
                _ => 0.85,
            };
            out.push(at_least(
                format!("{}: {} / the floor's, same run", run.strategy, route.route),
                Some(route.ratio),
                threshold,
            ));
        }
    }
    let correct: Vec<&RunReport> = runs
        .iter()
        .filter(|r| {
            r.strategy
                .parse::<flyrtech_infrastructure::Strategy>()
                .is_ok_and(|s| s.is_correct_across_instances())
        })
        .collect();
    let lost = (!correct.is_empty()).then(|| {
        correct
            .iter()
            .map(|r| (r.lost + r.stale_targets) as f64)
            .sum()
    });
    out.push(TargetCheck {
        target: "lost updates + stale targets, every correct strategy, every scenario run".into(),
        met: lost.map(|l: f64| l == 0.0),
        measured: lost,
        threshold: 0.0,
    });
    out
}

/// Redlock's same-segment p99 while waiters polled with jittered sleeps (docs/results, before
/// the release notifications).
const REDLOCK_SAME_SEGMENT_P99_BEFORE_MS: f64 = 185.47;

fn at_most(target: String, measured: Option<f64>, threshold: f64) -> TargetCheck {
    TargetCheck {
        target,
        met: measured.map(|m| m <= threshold),
        measured,
        threshold,
    }
}

fn at_least(target: String, measured: Option<f64>, threshold: f64) -> TargetCheck {
    TargetCheck {
        target,
        met: measured.map(|m| m >= threshold),
        measured,
        threshold,
    }
}

/// Renders the targets this run measured (the others are left out: the JSON report keeps them
/// all, unmeasured ones with `measured: null`); empty when it measured none.
pub fn targets_table(targets: &[TargetCheck]) -> String {
    let measured: Vec<&TargetCheck> = targets.iter().filter(|t| t.measured.is_some()).collect();
    if measured.is_empty() {
        return String::new();
    }
    let mut table = Table::new();
    table
        .load_preset(UTF8_FULL_CONDENSED)
        .set_header(["target", "threshold", "measured", "met"]);
    for t in measured {
        table.add_row([
            t.target.clone(),
            figure(t.threshold),
            t.measured.map_or_else(String::new, figure),
            match t.met {
                Some(true) => "yes".into(),
                Some(false) => "NO".into(),
                None => "-".into(),
            },
        ]);
    }
    table.to_string()
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub os: &'static str,
    pub arch: &'static str,
    pub cpus: usize,
    pub cpu_model: Option<String>,
    pub redis_version: Option<String>,
    pub redis_benchmark: bool,
}

/// The command line of this process, as reports record it: passwords in URLs replaced by `***`.
pub fn command_line() -> String {
    let args: Vec<String> = std::env::args().collect();
    flyrtech_infrastructure::secrets::redact_words(args.iter().map(String::as_str))
}

impl Machine {
    /// Reads what this process can see.
    pub fn detect(redis_version: Option<String>) -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|info| {
                info.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split(':').nth(1))
                    .map(|m| m.trim().to_owned())
            });
        Self {
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpus: std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            cpu_model,
            redis_version,
            redis_benchmark: super::ceiling::available(),
        }
    }
}

/// The JSON report (schema: docs/lab.md).
#[derive(Debug, Clone, Serialize)]
pub struct LabReport {
    pub schema_version: u32,
    /// The command line that produced it.
    pub command: String,
    /// RFC 3339.
    pub started_at: String,
    pub machine: Machine,
    /// `standalone`, `cluster`, or `http`.
    pub deployment: String,
    pub runs: Vec<RunReport>,
    pub targets: Vec<TargetCheck>,
}

impl LabReport {
    /// Writes the report as pretty JSON.
    ///
    /// # Errors
    /// [`LabError::Output`] when the file cannot be written.
    pub fn write(&self, path: &std::path::Path) -> Result<(), LabError> {
        let output = |message: String| LabError::Output {
            path: path.display().to_string(),
            message,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| output(e.to_string()))?;
        }
        let json = serde_json::to_string_pretty(self).map_err(|e| output(e.to_string()))?;
        std::fs::write(path, json + "\n").map_err(|e| output(e.to_string()))
    }
}

pub(crate) fn millis<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1000.0)
}

pub(crate) fn millis_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => millis(d, s),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_keep_three_significant_digits() {
        for (x, shown) in [
            (185.47 / 3.0, "61.8"),
            (0.8, "0.8"),
            (1.05, "1.05"),
            (1.3, "1.3"),
            (3650.4, "3650"),
            (0.012_345, "0.0123"),
            (0.0, "0"),
        ] {
            assert_eq!(figure(x), shown, "{x}");
        }
    }

    #[test]
    fn targets_not_measured_are_left_out() {
        let targets = [
            at_most("measured".into(), Some(0.5), 1.0),
            at_most("not measured".into(), None, 1.0),
        ];
        let table = targets_table(&targets);
        assert!(
            table.contains("measured") && !table.contains("not measured"),
            "{table}"
        );
        assert!(targets_table(&targets[1..]).is_empty());
    }
}
