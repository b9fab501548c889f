//! What a command reports on standard output, one line at a time.
//!
//! `println!` panics when standard output is a pipe its reader has closed (`| head -1`): a
//! backtrace in the operator's terminal, and for a command that reports after its work, an
//! exit status that says "panicked" instead of what the work did. Here, once the reader is gone
//! the rest of the report is dropped, quietly, and the command ends with its own status (a
//! migration that left journeys out still exits 3). Any other write failure is said once on
//! standard error.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set once writing failed: nothing more is attempted.
static GONE: AtomicBool = AtomicBool::new(false);

/// Writes `args` and a newline to standard output.
pub fn line(args: std::fmt::Arguments<'_>) {
    if GONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    let Err(e) = writeln!(out, "{args}").and_then(|()| out.flush()) else {
        return;
    };
    GONE.store(true, Ordering::Relaxed);
    if e.kind() != ErrorKind::BrokenPipe {
        eprintln!("error: could not write standard output: {e}");
    }
}
