//! What both binaries share at their edge, the service (`flyrtech`, crates/api) and the lab
//! (`flyrtech-lab`, crates/lab): neither depends on the other, both on this.
//!
//! ```text
//!   command ──▶ config ──▶ deployment ──▶ flyrtech-infrastructure
//!      │
//!      └──────▶ output
//! ```
//!
//! - [`config`]: the layered configuration (defaults < file < `FLYRTECH_*` env < flags), one
//!   settings type per command.
//! - [`deployment`]: the configured Redis, or a private redis-server.
//! - [`command`]: the exit statuses, the error report, the Redis a command connects to, its
//!   JSON report, the shutdown signal.
//! - [`output`]: one writer of what a command reports on standard output ([`outln!`]).
//!
//! It holds no service and no lab code: nothing here serves HTTP, runs a strategy or measures.

/// `println!` for what a command reports on standard output, through [`output::line`]: a reader
/// that goes away early (`flyrtech migrate --to hash | head -1`) is not a panic.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::line(format_args!($($arg)*))
    };
}

pub mod command;
pub mod config;
pub mod deployment;
pub mod output;
