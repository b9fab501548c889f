//! The lab of the FlyrTech Journey Service (`flyrtech-lab`): what an engineer runs to compare the
//! concurrency strategies and to check a deployment, beside the service an operator runs
//! (`flyrtech`, crates/api).
//!
//! ```text
//!   main.rs ──▶ commands ──▶ compare, verify ──▶ flyrtech-infrastructure
//!                  │                   │
//!                  └──────▶ history ◀──┘
//! ```
//!
//! - [`commands`]: one file per subcommand (`compare`, `verify`, `backlog`, `project-bench`,
//!   `migrate-bench`, `soak`).
//! - [`compare`]: strategies side by side with lost updates counted (`flyrtech-lab compare`),
//!   and the report, charts and synthetic journeys the bench commands reuse.
//! - [`verify`]: the client that records a history of a running deployment's answers.
//! - [`history`]: the linearizability checker of what clients were answered (pure: no I/O, no
//!   clock).

pub mod commands;
pub mod compare;
pub mod history;
pub mod page;
pub(crate) mod process;
pub mod verify;
