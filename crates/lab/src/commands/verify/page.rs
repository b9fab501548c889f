//! `verify --html`: the verdict as a page, in the manner of Porcupine's. A summary (operations
//! by outcome, which writes reached the journeys, registers decided, the verdict), then for each
//! register no order explains, and each one asked for with `--show`, a timeline: one lane per
//! client process, each operation a bar from its invocation to its completion labelled with its
//! request and answer, an operation without a definite answer drawn open to the right, the
//! shortest window no order explains shaded and its operations outlined, and the states the
//! register can have been in when the window began. A linearizable run shows one register as an
//! example. Self-contained ([`crate::page`]): no script, nothing fetched; each bar's full text is
//! its tooltip, and a table under the timeline lists the same operations.

use std::collections::BTreeSet;

use maud::{Markup, html};

use super::{VerifyReport, answer_text, call_text};
use crate::history::{Answer, Call, Operation, Verdict, Violation};
use crate::page::{count, document, percent};

/// Operations a timeline shows at most (the window's, then those just before it).
const MOST_SHOWN: usize = 80;
/// Operations of the register shown before the window, for context.
const CONTEXT: usize = 8;
/// Violations drawn at most (a broken store makes hundreds; `--json` holds them all).
const MOST_VIOLATIONS: usize = 12;

/// A register a timeline is drawn for: a journey's status, or one of its segments' statuses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Shown {
    pub(super) journey: String,
    /// `None` for the journey's status (and for a version or snapshot violation: every
    /// operation of the journey).
    pub(super) segment: Option<String>,
}

impl Shown {
    /// `JOURNEY` (its status) or `JOURNEY/SEGMENT`.
    pub(super) fn parse(text: &str) -> Self {
        match text.split_once('/') {
            Some((journey, segment)) => Self {
                journey: journey.to_owned(),
                segment: Some(segment.to_owned()),
            },
            None => Self {
                journey: text.to_owned(),
                segment: None,
            },
        }
    }

    fn name(&self) -> String {
        match &self.segment {
            Some(segment) => format!("{} segment {segment}", self.journey),
            None => format!("{} journey status", self.journey),
        }
    }

    /// Whether `op` reads or writes this register.
    fn touches(&self, op: &Operation) -> bool {
        if op.journey().as_str() != self.journey {
            return false;
        }
        match (&op.call, &self.segment) {
            (Call::Read { .. }, _) => true,
            (Call::SetSegment { segment, .. }, Some(shown)) => segment.as_str() == shown,
            (Call::SetJourney { .. }, None) => true,
            _ => false,
        }
    }
}

/// The page for `summary` of `history`, with timelines of `shown` besides the violations'.
pub(super) fn render(summary: &VerifyReport, history: &[Operation], shown: &[Shown]) -> String {
    let report = &summary.report;
    let mut timelines: Vec<Markup> = report
        .violations
        .iter()
        .take(MOST_VIOLATIONS)
        .map(|v| violation_timeline(v, history))
        .collect();
    for register in shown {
        timelines.push(register_timeline(
            register,
            history,
            "Asked for with --show",
        ));
    }
    if timelines.is_empty()
        && report.violations.is_empty()
        && let Some(example) = example(history)
    {
        timelines.push(register_timeline(
            &example,
            history,
            "An example: the first register's first operations (every register was explained)",
        ));
    }
    let body = html! {
        header {
            h1 { "flyrtech-lab verify" }
            p.lede {
                "Every answer the deployment gave its clients, checked for one order that explains them all "
                "(linearizability), register by register and each journey whole."
            }
        }
        (summary_section(summary))
        @for timeline in &timelines { (timeline) }
        @if report.violations.len() > MOST_VIOLATIONS {
            p #more {
                "… and " (count((report.violations.len() - MOST_VIOLATIONS) as u64))
                " more violations, each with its window, in the JSON report (--json)."
            }
        }
    };
    document("flyrtech-lab verify", body)
}

fn summary_section(summary: &VerifyReport) -> Markup {
    let report = &summary.report;
    let (class, verdict) = match report.verdict {
        Verdict::Linearizable => ("good", "linearizable"),
        Verdict::NotLinearizable => ("bad", "NOT linearizable"),
        Verdict::Undecided => ("undecided", "undecided"),
    };
    let coverage = &summary.coverage;
    html! {
        section #summary {
            h2 { "Verdict" }
            p.verdict-banner.(class) #verdict {
                strong { (verdict) } ": "
                (count(report.operations as u64)) " operations on " (summary.journeys) " journeys from "
                (summary.clients) " clients over " (summary.targets.join(", ")) ", "
                (format!("{:.0}", summary.duration_seconds)) " s"
            }
            @if let Some(why) = &summary.shortfall { p.undecided { "Undecided: " (why) } }
            dl.facts {
                dt { "registers" } dd {
                    (report.registers.linearizable) " linearizable, "
                    (report.registers.not_linearizable) " not, "
                    (report.registers.undecided) " undecided (" (percent(summary.decided)) " decided)"
                }
                dt { "journeys whole" } dd {
                    (report.journeys.linearizable) " linearizable, "
                    (report.journeys.not_linearizable) " not, "
                    (report.journeys.undecided) " undecided"
                }
                dt { "writes" } dd {
                    (count(coverage.reached)) " of " (count(coverage.writes))
                    " reached the journeys (" (percent(coverage.reached_share())) ")"
                }
            }
            table #answers {
                thead { tr { th.text { "answer" } th { "operations" } } }
                tbody {
                    @for (answer, n) in &summary.answers {
                        tr { td.text { (answer) } td { (count(*n)) } }
                    }
                }
            }
            @if !coverage.turned_away.is_empty() {
                table #turned-away {
                    thead { tr { th.text { "writes turned away before the journeys" } th { "writes" } } }
                    tbody {
                        @for (cause, n) in &coverage.turned_away {
                            tr { td.text { (cause.describe()) } td { (count(*n)) } }
                        }
                    }
                }
            }
        }
    }
}

/// The first segment of the first journey written in `history`.
fn example(history: &[Operation]) -> Option<Shown> {
    history.iter().find_map(|op| match &op.call {
        Call::SetSegment {
            journey, segment, ..
        } => Some(Shown {
            journey: journey.to_string(),
            segment: Some(segment.to_string()),
        }),
        _ => None,
    })
}

fn violation_timeline(violation: &Violation, history: &[Operation]) -> Markup {
    let register = Shown {
        journey: violation.journey.to_string(),
        segment: violation
            .register
            .strip_prefix("segment ")
            .map(str::to_owned),
    };
    let window: BTreeSet<usize> = violation.window.iter().copied().collect();
    let first = window.first().copied().unwrap_or(0);
    // The register's operations: the window's, and a few just before it for context.
    let whole_journey = violation.register == "version" || violation.register == "snapshot";
    let touches = |op: &Operation| {
        if whole_journey {
            op.journey() == &violation.journey
        } else {
            register.touches(op)
        }
    };
    let before: Vec<usize> = (0..first)
        .rev()
        .filter(|&i| touches(&history[i]))
        .take(CONTEXT)
        .collect();
    let mut ops: Vec<usize> = before
        .into_iter()
        .rev()
        .chain(window.iter().copied())
        .collect();
    ops.truncate(MOST_SHOWN);
    let title = if whole_journey {
        format!("{} {}", violation.journey, violation.register)
    } else {
        register.name()
    };
    html! {
        section.timeline.violation data-register=(title) {
            h2 { "Not linearizable: " (title) }
            p { strong { (violation.reason) } }
            @if !violation.states_before.is_empty() {
                p.states-before {
                    "When the shaded window began, the register could have been: "
                    strong { (violation.states_before.join(", ")) }
                    " (the states an order of every operation completed before it can leave). "
                    "No order of the window's operations from any of them explains their answers."
                }
            }
            (timeline(history, &ops, &window))
        }
    }
}

fn register_timeline(register: &Shown, history: &[Operation], why: &str) -> Markup {
    let ops: Vec<usize> = (0..history.len())
        .filter(|&i| register.touches(&history[i]))
        .take(MOST_SHOWN.min(40))
        .collect();
    html! {
        section.timeline data-register=(register.name()) {
            h2 { (register.name()) }
            p.lede { (why) }
            @if ops.is_empty() { p { "No operation of this register is in the history." } }
            @else { (timeline(history, &ops, &BTreeSet::new())) }
        }
    }
}

/// Geometry of a timeline drawing.
const WIDTH: f64 = 1200.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const LANE: f64 = 34.0;
const BAR: f64 = 24.0;
const TOP: f64 = 26.0;
const AXIS: f64 = 30.0;

/// One lane per process, a bar per operation, the window shaded; then the same operations as a
/// table.
fn timeline(history: &[Operation], ops: &[usize], window: &BTreeSet<usize>) -> Markup {
    let processes: Vec<u64> = ops
        .iter()
        .map(|&i| history[i].process)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let start = ops.iter().map(|&i| history[i].invoke).min().unwrap_or(0);
    let known_end = ops
        .iter()
        .filter_map(|&i| history[i].complete)
        .chain(ops.iter().map(|&i| history[i].invoke))
        .max()
        .unwrap_or(start);
    // Room on the right for what never completed.
    let end = known_end + (known_end - start).max(1) / 10 + 1;
    let span = (end - start) as f64;
    let x = |t: u64| LEFT + (t.saturating_sub(start)) as f64 / span * (WIDTH - LEFT - RIGHT);
    let lane = |p: u64| processes.iter().position(|q| *q == p).unwrap_or(0) as f64;
    let height = TOP + LANE * processes.len() as f64 + AXIS;
    let window_span = (!window.is_empty()).then(|| {
        let from = window
            .iter()
            .map(|&i| history[i].invoke)
            .min()
            .unwrap_or(start);
        let to = window
            .iter()
            .map(|&i| {
                history[i]
                    .complete
                    .filter(|_| history[i].answer != Answer::Unknown)
                    .unwrap_or(end)
            })
            .max()
            .unwrap_or(end);
        (x(from), x(to))
    });
    let ms = |t: u64| t as f64 / 1e6;
    let ticks: Vec<u64> = (0..=5).map(|k| start + (end - start) * k / 5).collect();
    html! {
        figure.timeline-chart {
            svg xmlns="http://www.w3.org/2000/svg" viewBox=(format!("0 0 {WIDTH} {height}"))
                role="img" aria-label="a timeline of the operations, one lane per client process" {
                @if let Some((from, to)) = window_span {
                    rect.window-band x=(from) y=(TOP - 18.0) width=((to - from).max(2.0))
                        height=(LANE * processes.len() as f64 + 18.0) fill="#b3261e" fill-opacity="0.10"
                        stroke="#b3261e" stroke-dasharray="4 3" {
                        title { "the shortest window no order explains" }
                    }
                    text x=(from + 4.0) y=(TOP - 6.0) font-size="12" fill="#b3261e" {
                        "no order explains these"
                    }
                }
                @for (n, p) in processes.iter().enumerate() {
                    @let y = TOP + LANE * n as f64;
                    line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(y + LANE / 2.0) y2=(y + LANE / 2.0) stroke="#e3e7ea" {}
                    text x="6" y=(y + LANE / 2.0 + 4.0) font-size="12" fill="#5b6670" { "p" (p) }
                }
                @for &i in ops {
                    @let op = &history[i];
                    @let y = TOP + LANE * lane(op.process) + (LANE - BAR) / 2.0;
                    @let from = x(op.invoke);
                    @let open = op.answer == Answer::Unknown || op.complete.is_none();
                    @let to = if open { x(end) } else { x(op.complete.unwrap_or(end)) };
                    @let width = (to - from).max(3.0);
                    @let (fill, kind) = colour(&op.answer);
                    @let label = format!("{} → {}", call_text(&op.call), short_answer(&op.answer));
                    g.op.in-window[window.contains(&i)] data-outcome=(kind) {
                        title { (format!("p{} [{:.3} .. {}] {} {}", op.process, ms(op.invoke),
                            if open { "?".to_owned() } else { format!("{:.3} ms", ms(op.complete.unwrap_or(0))) },
                            call_text(&op.call), answer_text(&op.answer))) }
                        rect x=(from) y=(y) width=(width) height=(BAR) rx="3" fill=(fill)
                            fill-opacity=(if open { "0.35" } else { "0.85" })
                            stroke=(if window.contains(&i) { "#b3261e" } else { "#44505a" })
                            stroke-width=(if window.contains(&i) { "2.5" } else { "0.8" })
                            stroke-dasharray=(if open { "5 3" } else { "none" }) {}
                        @if width > 70.0 {
                            text x=(from + 4.0) y=(y + BAR / 2.0 + 4.0) font-size="11" fill="#111" {
                                (clip(&label, ((width - 8.0) / 6.2) as usize))
                            }
                        }
                    }
                }
                @let axis = TOP + LANE * processes.len() as f64 + 6.0;
                line x1=(LEFT) x2=(WIDTH - RIGHT) y1=(axis) y2=(axis) stroke="#44505a" {}
                @for (k, t) in ticks.iter().enumerate() {
                    line x1=(x(*t)) x2=(x(*t)) y1=(axis) y2=(axis + 5.0) stroke="#44505a" {}
                    text x=(x(*t)) y=(axis + 18.0) font-size="11" fill="#5b6670"
                        text-anchor=(match k { 0 => "start", 5 => "end", _ => "middle" }) {
                        (format!("{:.1} ms", ms(*t)))
                    }
                }
            }
            figcaption {
                "Each bar runs from a request's sending to its answer (ms since the run began); "
                "a dashed, open bar had no definite answer and may have taken effect at any point after it was sent. "
                "Outlined in red: the window's operations. Hover a bar for its full text."
            }
        }
        table.operations {
            thead { tr { th { "process" } th { "sent ms" } th { "answered ms" } th.text { "request" } th.text { "answer" } } }
            tbody {
                @for &i in ops {
                    @let op = &history[i];
                    tr.in-window[window.contains(&i)] {
                        td { "p" (op.process) }
                        td { (format!("{:.3}", ms(op.invoke))) }
                        td { (op.complete.map_or_else(|| "–".to_owned(), |c| format!("{:.3}", ms(c)))) }
                        td.text { (call_text(&op.call)) }
                        td.text.bad[window.contains(&i)] { (answer_text(&op.answer)) }
                    }
                }
            }
        }
    }
}

/// A bar's colour and the outcome's name.
fn colour(answer: &Answer) -> (&'static str, &'static str) {
    match answer {
        Answer::Changed { .. } => ("#2ca02c", "changed"),
        Answer::Unchanged { .. } => ("#9ecae1", "unchanged"),
        Answer::Refused => ("#ff9f40", "refused"),
        Answer::PreconditionFailed { .. } => ("#c5b0d5", "precondition-failed"),
        Answer::Observed(_) => ("#6baed6", "observed"),
        Answer::Failed { .. } => ("#d9d9d9", "failed"),
        Answer::Unknown => ("#fdd0a2", "unknown"),
    }
}

/// The answer in a bar's few words.
fn short_answer(answer: &Answer) -> String {
    match answer {
        Answer::Changed { version } => format!("changed v{version}"),
        Answer::Unchanged { version } => format!("unchanged v{version}"),
        Answer::Refused => "refused".to_owned(),
        Answer::PreconditionFailed { current } => format!("412 at v{current}"),
        Answer::Observed(_) => answer_text(answer),
        Answer::Failed { status } => format!("failed {status}"),
        Answer::Unknown => "unknown".to_owned(),
    }
}

/// `text` cut to `chars` characters, with an ellipsis when cut.
fn clip(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        return text.to_owned();
    }
    let kept: String = text.chars().take(chars.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_register_is_named_by_its_journey_and_segment() {
        assert_eq!(
            Shown::parse("VFY-1/S2"),
            Shown {
                journey: "VFY-1".into(),
                segment: Some("S2".into())
            }
        );
        assert_eq!(Shown::parse("VFY-1").segment, None);
        assert_eq!(clip("abcdef", 4), "abc…");
        assert_eq!(clip("abc", 4), "abc");
    }
}
