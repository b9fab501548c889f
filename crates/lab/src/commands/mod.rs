//! The subcommands of `flyrtech-lab`, one file each: its arguments (clap) and its `run`, which
//! starts or connects what it measures, measures it and returns the process' exit status.
//! `main.rs` parses the command line and calls one `run`.
//!
//! # Exit statuses
//! As the service's ([`flyrtech_cli::command`]): 0 done; 1 a failure, or a finding (lost
//! updates, a history that is not linearizable, a resource that kept growing); 2 a usage error;
//! 3 undecided or partial.
//!
//! # What it may import
//! The comparison, the verify client and the checker of this crate, and the infrastructure.

pub mod backlog;
pub mod compare;
pub mod migrate_bench;
pub mod project_bench;
pub mod soak;
pub mod verify;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) use flyrtech_cli::command::{
    DONE, FOUND, INCOMPLETE, connect, emit, redis_settings, shutdown_signal,
};

pub(crate) use crate::process::service_binary;

/// A progress bar on stderr when it is a terminal; hidden otherwise.
pub(crate) fn progress_bar(what: &str) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(0);
    bar.set_draw_target(ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{{elapsed_precise}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{per_sec}})"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}
