//! `compare --html`: the comparison as one page a person reads at a glance, with the figures of
//! the JSON report ([`LabReport`]) and nothing else. First the verdict per strategy (updates
//! acknowledged and lost), then each scenario's throughput and latency percentiles as a chart
//! and a table (retries and lock waits with them), the targets met or not, and the command,
//! engine and machine. Self-contained ([`crate::page`]): readable offline and printable.

use maud::{Markup, PreEscaped, html};

use super::chart::{self, Panel};
use super::report::{LabReport, RunReport};
use super::{LabError, Scenario};
use crate::page::{count, document, number, percent};

/// Writes the page for `report` to `path`.
///
/// # Errors
/// [`LabError::Output`] when a chart cannot be drawn or the file cannot be written.
pub fn write(report: &LabReport, path: &std::path::Path) -> Result<(), LabError> {
    let page = render(report)?;
    let output = |message: String| LabError::Output {
        path: path.display().to_string(),
        message,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| output(e.to_string()))?;
    }
    std::fs::write(path, page).map_err(|e| output(e.to_string()))
}

/// The page for `report`.
///
/// # Errors
/// [`LabError::Output`] when a chart cannot be drawn.
pub fn render(report: &LabReport) -> Result<String, LabError> {
    let mut scenarios = Vec::new();
    for scenario in Scenario::ALL {
        let runs: Vec<&RunReport> = report
            .runs
            .iter()
            .filter(|r| r.scenario == scenario)
            .collect();
        if !runs.is_empty() {
            scenarios.push(scenario_section(scenario, &runs, &report.runs)?);
        }
    }
    let body = html! {
        header {
            h1 { "Journey store strategies compared" }
            p.lede {
                "Every strategy ran the same workloads on " (report.deployment) " Redis; "
                "an update is lost when the store acknowledged it and the final state does not hold it."
            }
        }
        (verdicts(&report.runs))
        @for section in &scenarios { (section) }
        (targets(report))
        (provenance(report))
    };
    Ok(document("flyrtech-lab compare", body))
}

/// One row per strategy, over every run of it: sent, acknowledged, lost, stale targets.
fn verdicts(runs: &[RunReport]) -> Markup {
    let mut strategies: Vec<&str> = Vec::new();
    for run in runs {
        if !strategies.contains(&run.strategy.as_str()) {
            strategies.push(&run.strategy);
        }
    }
    html! {
        section #verdicts {
            h2 { "Verdict" }
            table {
                thead { tr {
                    th { "strategy" } th { "runs" } th { "updates sent" } th { "acknowledged" }
                    th { "changes" } th { "lost" } th { "stale targets" } th.text { "verdict" }
                } }
                tbody {
                    @for strategy in &strategies {
                        @let own: Vec<&RunReport> = runs.iter().filter(|r| r.strategy == *strategy).collect();
                        @let lost: usize = own.iter().map(|r| r.lost).sum();
                        @let stale: usize = own.iter().map(|r| r.stale_targets).sum();
                        tr.verdict data-strategy=(strategy) {
                            td { (strategy) }
                            td { (own.len()) }
                            td { (count(own.iter().map(|r| r.attempted as u64).sum::<u64>())) }
                            td { (count(own.iter().map(|r| r.acknowledged as u64).sum::<u64>())) }
                            td { (count(own.iter().map(|r| r.changed as u64).sum::<u64>())) }
                            td { (count(lost as u64)) }
                            td { (count(stale as u64)) }
                            @if lost + stale == 0 {
                                td.text.good { "no acknowledged update lost" }
                            } @else {
                                td.text.bad { (count(lost as u64)) " acknowledged updates lost" }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A scenario: what it does, its chart, and every run's figures.
fn scenario_section(
    scenario: Scenario,
    runs: &[&RunReport],
    all: &[RunReport],
) -> Result<Markup, LabError> {
    let svg = if scenario == Scenario::Scaling {
        chart::scaling_svg(all)?
    } else {
        let bars: Vec<(String, f64)> = runs
            .iter()
            .map(|r| (label(r, runs), r.throughput))
            .collect();
        let mut series = std::collections::BTreeMap::new();
        for r in runs {
            let l = &r.latency_us;
            let ms = |us: u64| (us as f64 / 1000.0).max(1e-3);
            series.insert(
                label(r, runs),
                vec![
                    (0.0, ms(l.p50)),
                    (1.0, ms(l.p95)),
                    (2.0, ms(l.p99)),
                    (3.0, ms(l.max)),
                ],
            );
        }
        let latency = Panel {
            title: "Latency percentiles",
            x: "percentile",
            y: "ms",
            x_names: &["p50", "p95", "p99", "max"],
            series,
        };
        chart::bars_and_lines_svg("Throughput", "acknowledged updates/s", &bars, &latency)?
    };
    Ok(html! {
        section.scenario data-scenario=(scenario.name()) {
            h2 { "Scenario: " (scenario.name()) }
            p.lede { (scenario.describe()) }
            figure.chart {
                (PreEscaped(svg))
                figcaption { "Throughput is acknowledged updates a second; latency covers every update sent, in milliseconds." }
            }
            table {
                thead { tr {
                    th { "strategy" } th { "writers" } th { "segments" } th { "instances" }
                    th { "updates/s" } th { "p50 ms" } th { "p95 ms" } th { "p99 ms" } th { "max ms" }
                    th { "attempts / update" } th { "conflicts / update" } th { "lock wait ms" }
                    th { "lost" } th { "stale targets" }
                } }
                tbody {
                    @for r in runs {
                        tr.run data-strategy=(r.strategy) {
                            td { (r.strategy) }
                            td { (r.params.writers) }
                            td { (r.params.segments) }
                            td { (r.params.instances) }
                            td { (number(r.throughput)) }
                            td { (number(r.latency_us.p50 as f64 / 1000.0)) }
                            td { (number(r.latency_us.p95 as f64 / 1000.0)) }
                            td { (number(r.latency_us.p99 as f64 / 1000.0)) }
                            td { (number(r.latency_us.max as f64 / 1000.0)) }
                            td { (number(r.attempts_per_update)) }
                            td { (number(r.conflicts_per_update)) }
                            td { (number(r.lock_wait_ms_mean)) }
                            @if r.lost == 0 { td.good { "0" } } @else { td.bad { (r.lost) } }
                            @if r.stale_targets == 0 { td.good { "0" } } @else { td.bad { (r.stale_targets) } }
                        }
                    }
                }
            }
            @if let Some(share) = loss_shares(runs) { p { (share) } }
        }
    })
}

/// A run's name in its scenario's chart: the strategy, with its writers and segments when the
/// scenario ran the strategy more than once.
fn label(run: &RunReport, runs: &[&RunReport]) -> String {
    if runs.iter().filter(|r| r.strategy == run.strategy).count() > 1 {
        format!(
            "{} {}w {}s",
            run.strategy, run.params.writers, run.params.segments
        )
    } else {
        run.strategy.clone()
    }
}

/// The collision model's prediction beside the measured loss, where the scenario has one.
fn loss_shares(runs: &[&RunReport]) -> Option<Markup> {
    let modelled: Vec<&&RunReport> = runs
        .iter()
        .filter(|r| r.model_loss_probability.is_some())
        .collect();
    if modelled.is_empty() {
        return None;
    }
    Some(html! {
        @for r in modelled {
            (r.strategy) ": measured loss "
            (r.loss_share.map_or_else(|| "–".to_owned(), percent))
            ", the model's " (r.model_loss_probability.map_or_else(|| "–".to_owned(), percent))
            ". "
        }
    })
}

/// The lab's targets this run measured, met or not.
fn targets(report: &LabReport) -> Markup {
    html! {
        section #targets {
            h2 { "Targets" }
            table {
                thead { tr { th { "target" } th { "threshold" } th { "measured" } th.text { "met" } } }
                tbody {
                    @for t in &report.targets {
                        tr.target {
                            td.text { (t.target) }
                            td { (number(t.threshold)) }
                            td { (t.measured.map_or_else(|| "not measured".to_owned(), number)) }
                            @match t.met {
                                Some(true) => td.text.good { "met" },
                                Some(false) => td.text.bad { "NOT met" },
                                None => td.text { "–" },
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The command, the engine, and the machine.
fn provenance(report: &LabReport) -> Markup {
    let m = &report.machine;
    html! {
        section #provenance {
            h2 { "How this was measured" }
            dl.facts {
                dt { "command" } dd { code { (report.command) } }
                dt { "started" } dd { (report.started_at) }
                dt { "deployment" } dd { (report.deployment) }
                dt { "engine" } dd { (m.redis_version.as_deref().unwrap_or("unknown")) }
                dt { "machine" } dd {
                    (m.os) " " (m.arch) ", " (m.cpus) " CPUs"
                    @if let Some(model) = &m.cpu_model { " (" (model) ")" }
                }
                dt { "redis-benchmark" } dd { @if m.redis_benchmark { "found: ceilings measured" } @else { "absent: no ceilings" } }
                dt { "schema" } dd { "version " (report.schema_version) " of the JSON report" }
            }
        }
    }
}
