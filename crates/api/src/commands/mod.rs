//! The subcommands, one file each.

pub mod migrate;
pub mod project;
pub mod relay;
