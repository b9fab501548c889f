//! The lab of the FlyrTech Journey Service (`flyrtech-lab`): what an engineer runs to compare the
//! concurrency strategies and to check a deployment, beside the service an operator runs
//! (`flyrtech`).
//!
//! - [`history`]: the linearizability checker of what clients were answered (pure: no I/O, no
//!   clock).
pub mod history;
