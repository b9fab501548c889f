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
mod process;
pub mod project_bench;
pub mod soak;
pub mod verify;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) use flyrtech_cli::command::{
    DONE, FOUND, INCOMPLETE, connect, emit, redis_settings, shutdown_signal,
};

/// The service's binary (`flyrtech`), which the lab runs as a user would where it needs the
/// service running: `named` when given, otherwise the one beside this binary (cargo builds both
/// into one directory).
///
/// # Errors
/// When there is no such file.
pub(crate) fn service_binary(
    named: Option<&std::path::Path>,
) -> anyhow::Result<std::path::PathBuf> {
    let path = match named {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?.with_file_name("flyrtech"),
    };
    anyhow::ensure!(
        path.is_file(),
        "cannot find the service's binary at {} (build it: cargo build --release -p flyrtech-api; \
         or name it: --service-bin PATH)",
        path.display()
    );
    Ok(path)
}

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
