//! `flyrtech-lab verify`: points at running instances, records every answer they give to clients of
//! its own ([`crate::verify`]), and checks the history for linearizability
//! ([`crate::history`]); or, with `--check FILE.jsonl`, checks a history recorded before
//! or elsewhere (Jepsen's shape, each journey's starting state given by a first read of it:
//! `crate::history::jepsen`). Exit 0 linearizable, 1 not, 3 undecided: the search ran out
//! of budget somewhere and found nothing wrong elsewhere, or too few of the writes reached the
//! journeys to judge them ([`crate::verify::coverage`]: a run the service mostly turned away,
//! by its rate limit for one, checked almost nothing, and says so with the cause).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use crate::history::{self, Operation, Report, Verdict};
use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use super::{DONE, FOUND, INCOMPLETE};

mod page;
use crate::verify::coverage::Coverage;
use crate::verify::{Plan, record};
use flyrtech_cli::config::{MaxAge, Settings, parse_age};

/// Options of `flyrtech-lab verify`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct VerifyArgs {
    /// The running instances' base URLs, comma-separated (`http://10.0.0.5:5000`); the clients
    /// are spread over them.
    #[arg(long, value_delimiter = ',', required_unless_present = "check")]
    pub target: Vec<String>,
    /// Check this history file instead of recording one (JSON lines in Jepsen's shape, as
    /// `--history` writes them).
    #[arg(long, conflicts_with = "target")]
    pub check: Option<PathBuf>,
    /// An API key with the write scope, when the instances need one (never printed).
    #[arg(long, env = "FLYRTECH_VERIFY_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// How long the clients run (`10s`, `2m`).
    #[arg(long, default_value = "10s", value_parser = parse_age)]
    pub duration: MaxAge,
    /// Journeys the run creates for itself (ids `VFY-<run>-<n>`); fewer means more contention.
    #[arg(long, default_value_t = 4)]
    pub journeys: usize,
    /// Segments per journey.
    #[arg(long, default_value_t = 3)]
    pub segments: usize,
    /// Clients running at once.
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// Longest a request may take before its outcome is unknown, in milliseconds.
    #[arg(long, default_value_t = 2000)]
    pub timeout_ms: u64,
    /// Search steps each register may take before its verdict is undecided.
    #[arg(long, default_value_t = 2_000_000)]
    pub budget: u64,
    /// The random choices' seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Write the history here, one JSON line per event in Jepsen's shape.
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Write the report here as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write the verdict here as one self-contained HTML page: a summary, then a timeline of
    /// each register no order explains (one lane per client, the shortest window shaded), or
    /// of one register as an example.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Draw this register's timeline on the page too: `JOURNEY` (its status) or
    /// `JOURNEY/SEGMENT`; repeatable.
    #[arg(long, requires = "html")]
    pub show: Vec<String>,
    /// The least share of writes, in percent, that must reach the journeys (answered 200, 409
    /// or 412) for a verdict; below it the run is undecided (exit 3) and the cause is named.
    /// Half by default: a fault run loses seconds of writes, not half of them, while a run
    /// below it mostly measured the service's gatekeeping (a rate limit, a key, an outage).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub min_reached: u8,
}

/// What `--json` holds.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub targets: Vec<String>,
    pub duration_seconds: f64,
    pub journeys: usize,
    pub clients: usize,
    /// Operations by answer: changed, unchanged, refused, precondition-failed, observed,
    /// failed, unknown.
    pub answers: std::collections::BTreeMap<String, u64>,
    /// The share of registers the search decided within its budget.
    pub decided: f64,
    /// Which writes reached the journeys, and which the service turned away, by cause.
    pub coverage: Coverage,
    /// Why the run is undecided although the search found nothing wrong: too few writes reached
    /// the journeys (`--min-reached`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shortfall: Option<String>,
    #[serde(flatten)]
    pub report: Report,
    /// Each violation's window, as the operations themselves.
    pub windows: Vec<Vec<Operation>>,
}

/// Runs `flyrtech-lab verify`.
///
/// # Errors
/// The run's journeys cannot be created, or a file cannot be written.
pub async fn run(args: &VerifyArgs, _settings: Settings) -> anyhow::Result<i32> {
    if let Some(path) = &args.check {
        return check_file(args, path);
    }
    let duration = args.duration.0.context("--duration cannot be off")?;
    let plan = Plan {
        targets: args
            .target
            .iter()
            .map(|t| t.trim_end_matches('/').to_owned())
            .collect(),
        api_key: args.api_key.clone(),
        duration,
        journeys: args.journeys,
        segments: args.segments,
        clients: args.clients,
        timeout: Duration::from_millis(args.timeout_ms),
        seed: args.seed,
    };
    let bar = progress(duration);
    let recorded = record(&plan, |ops| {
        bar.set_position(u64::try_from(bar.elapsed().as_millis()).unwrap_or(u64::MAX));
        bar.set_message(format!("{ops} operations"));
    })
    .await?;
    bar.finish_and_clear();
    if let Some(path) = &args.history {
        write_history(path, &recorded.initial, &recorded.history)?;
    }
    let summary = judge(
        args,
        plan.targets.clone(),
        duration.as_secs_f64(),
        plan.clients,
        &recorded.initial,
        &recorded.history,
    );
    conclude(args, &summary, &recorded.history)
}

/// `verify --check FILE`: the history in `path`, judged as a recorded one would be.
fn check_file(args: &VerifyArgs, path: &std::path::Path) -> anyhow::Result<i32> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let events = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            serde_json::from_str::<history::jepsen::Event>(line)
                .with_context(|| format!("{} line {}: not an event", path.display(), n + 1))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let ops = history::jepsen::operations(&events)
        .with_context(|| format!("{} is not a history", path.display()))?;
    let (initial, missing) = history::jepsen::initial_states(&ops);
    if !missing.is_empty() {
        anyhow::bail!(
            "{}: no starting state for {} journey(s) ({}): a history must begin each journey \
             with a read of it that completes before its other operations",
            path.display(),
            missing.len(),
            missing
                .iter()
                .take(5)
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let last = ops
        .iter()
        .map(|o| o.complete.unwrap_or(o.invoke))
        .max()
        .unwrap_or(0);
    let clients = ops
        .iter()
        .map(|o| o.process)
        .filter(|p| *p != history::jepsen::SETUP_PROCESS)
        .collect::<std::collections::BTreeSet<_>>()
        .len();
    let summary = judge(
        args,
        vec![path.display().to_string()],
        last as f64 / 1e9,
        clients,
        &initial,
        &ops,
    );
    conclude(args, &summary, &ops)
}

/// Checks `history` and gathers what the report says of it.
fn judge(
    args: &VerifyArgs,
    targets: Vec<String>,
    duration_seconds: f64,
    clients: usize,
    initial: &[history::Initial],
    history: &[Operation],
) -> VerifyReport {
    let mut report = history::check(history, initial, args.budget);
    let coverage = Coverage::of(history);
    let shortfall = coverage.shortfall(f64::from(args.min_reached) / 100.0);
    // Nothing wrong found in a history too few writes reached is no verdict; a violation found
    // stands whatever the share.
    if shortfall.is_some() && report.verdict == Verdict::Linearizable {
        report.verdict = Verdict::Undecided;
    }
    VerifyReport {
        shortfall,
        coverage,
        targets,
        duration_seconds,
        journeys: initial.len(),
        clients,
        answers: answers(history),
        decided: report.decided(),
        windows: report
            .violations
            .iter()
            .map(|v| v.window.iter().map(|i| history[*i].clone()).collect())
            .collect(),
        report,
    }
}

/// Writes `--json` and `--html`, prints the verdict, and answers the exit status.
fn conclude(
    args: &VerifyArgs,
    summary: &VerifyReport,
    history: &[Operation],
) -> anyhow::Result<i32> {
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(summary)?)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    if let Some(path) = &args.html {
        let shown: Vec<page::Shown> = args.show.iter().map(|s| page::Shown::parse(s)).collect();
        std::fs::write(path, page::render(summary, history, &shown))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    print(summary);
    Ok(match summary.report.verdict {
        Verdict::Linearizable => DONE,
        Verdict::NotLinearizable => FOUND,
        Verdict::Undecided => INCOMPLETE,
    })
}

fn progress(duration: Duration) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(
        Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)),
        ProgressDrawTarget::stderr(),
    );
    if let Ok(style) = ProgressStyle::with_template("verify [{bar:30}] {elapsed}/{duration} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn answers(history: &[Operation]) -> std::collections::BTreeMap<String, u64> {
    let mut counts = std::collections::BTreeMap::new();
    for op in history {
        let name = serde_json::to_value(&op.answer)
            .ok()
            .and_then(|v| v.get("outcome").and_then(|o| o.as_str()).map(str::to_owned))
            .unwrap_or_default();
        *counts.entry(name).or_insert(0) += 1;
    }
    counts
}

fn write_history(
    path: &PathBuf,
    initial: &[history::Initial],
    history: &[Operation],
) -> anyhow::Result<()> {
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    for event in history::jepsen::events_with_initial(initial, history) {
        serde_json::to_writer(&mut out, &event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Prints the verdict and the first violations' windows (all of them are in `--json`); a closed
/// stdout (`| head`) is not an error.
fn print(summary: &VerifyReport) {
    let _ = std::io::stdout()
        .lock()
        .write_all(render(summary).as_bytes());
}

fn render(summary: &VerifyReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let report = &summary.report;
    let verdict = match report.verdict {
        Verdict::Linearizable => "linearizable",
        Verdict::NotLinearizable => "NOT linearizable",
        Verdict::Undecided => "undecided",
    };
    let _ = writeln!(
        out,
        "verify: {} operations on {} journeys from {} clients over {} target(s) in {:.0} s: {verdict}",
        report.operations,
        summary.journeys,
        summary.clients,
        summary.targets.len(),
        summary.duration_seconds,
    );
    let _ = writeln!(
        out,
        "registers: {} linearizable, {} not, {} undecided; journeys whole: {} linearizable, {} \
         not, {} undecided ({:.1} % decided); answers: {}",
        report.registers.linearizable,
        report.registers.not_linearizable,
        report.registers.undecided,
        report.journeys.linearizable,
        report.journeys.not_linearizable,
        report.journeys.undecided,
        summary.decided * 100.0,
        summary
            .answers
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let coverage = &summary.coverage;
    let _ = writeln!(
        out,
        "writes: {} of {} reached the journeys ({:.1} %){}",
        coverage.reached,
        coverage.writes,
        coverage.reached_share() * 100.0,
        coverage
            .turned_away
            .iter()
            .map(|(cause, n)| format!("; {n} {}", cause.describe()))
            .collect::<String>()
    );
    if let Some(why) = &summary.shortfall {
        let _ = writeln!(out, "undecided: {why}");
    }
    for (violation, window) in report.violations.iter().zip(&summary.windows).take(5) {
        let _ = writeln!(
            out,
            "\n{} {}: {}",
            violation.journey, violation.register, violation.reason
        );
        for op in window {
            let _ = writeln!(out, "  {}", describe(op));
        }
    }
    if report.violations.len() > 5 {
        let _ = writeln!(
            out,
            "\n… and {} more (all in --json)",
            report.violations.len() - 5
        );
    }
    out
}

/// One operation on one line: process, interval (ms from the start), call, answer.
fn describe(op: &Operation) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let end = op
        .complete
        .map_or_else(|| "…".to_owned(), |c| format!("{:.3}", ms(c)));
    format!(
        "p{:<4} [{:>10.3} .. {:>10}] {:<32} {}",
        op.process,
        ms(op.invoke),
        end,
        call_text(&op.call),
        answer_text(&op.answer)
    )
}

/// The request, in a few words (`set S1 Delayed if-match 3`, `read`).
fn call_text(call: &history::Call) -> String {
    match call {
        history::Call::SetSegment {
            segment,
            to,
            if_match,
            ..
        } => format!(
            "set {segment} {to}{}",
            if_match.map_or_else(String::new, |v| format!(" if-match {v}"))
        ),
        history::Call::SetJourney { to, if_match, .. } => format!(
            "set journey {to}{}",
            if_match.map_or_else(String::new, |v| format!(" if-match {v}"))
        ),
        history::Call::Read { .. } => "read".to_owned(),
    }
}

/// The answer, in a few words (`saw v3 Confirmed [S1 Delayed, S2 Scheduled]`, or its JSON).
fn answer_text(answer: &history::Answer) -> String {
    match answer {
        history::Answer::Observed(seen) => format!(
            "saw v{} {} [{}]",
            seen.version,
            seen.status,
            seen.segments
                .iter()
                .map(|(s, st)| format!("{s} {st}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}
