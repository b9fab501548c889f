//! The lab's terminal table.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};

use super::RunReport;

/// Renders one row per run.
pub fn table(runs: &[RunReport]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "strategy",
        "scenario",
        "instances",
        "attempted",
        "acknowledged",
        "rejected",
        "lost",
        "elapsed ms",
        "attempts/update",
        "round trips/update",
    ]);
    for r in runs {
        let per = |x: u64| format!("{:.2}", x as f64 / r.attempted.max(1) as f64);
        table.add_row([
            r.strategy.to_string(),
            r.scenario.name().to_owned(),
            r.params.instances.to_string(),
            r.attempted.to_string(),
            r.acknowledged.to_string(),
            r.rejected.to_string(),
            r.lost.to_string(),
            r.elapsed.as_millis().to_string(),
            per(r.attempts),
            per(r.round_trips),
        ]);
    }
    table.to_string()
}
