//! `flyrtech redis-acl [--role ROLE] [--strategy S] [--user NAME]`: prints the `ACL SETUSER`
//! line a role needs on Redis (least privilege: its key patterns, channels and commands, nothing
//! else; see `flyrtech_infrastructure::secrets::acl`). Set the password where it says
//! `>PASSWORD` and run the line with `redis-cli` as an administrator.

use clap::{Args, ValueEnum};
use flyrtech_cli::outln;
use flyrtech_infrastructure::Strategy;
use flyrtech_infrastructure::secrets::acl::Role;

use super::DONE;
use flyrtech_cli::config::DEFAULT_SERVE_STRATEGY;
use flyrtech_cli::config::Settings;

/// Which command the user is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RoleName {
    /// `flyrtech serve` with the configured strategy.
    Serve,
    /// `flyrtech relay`.
    Relay,
    /// `flyrtech migrate`.
    Migrate,
    /// `flyrtech import-legacy`.
    ImportLegacy,
    /// `flyrtech audit`.
    Audit,
}

/// Options of `flyrtech redis-acl`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct RedisAclArgs {
    /// The command the user is for.
    #[arg(long, value_enum, default_value = "serve")]
    pub role: RoleName,
    /// The Redis user's name.
    #[arg(long, default_value = "flyrtech")]
    pub user: String,
}

/// Prints the line.
///
/// # Errors
/// A user name that is not one word.
pub async fn run(args: &RedisAclArgs, settings: Settings) -> anyhow::Result<i32> {
    if args.user.is_empty()
        || !args
            .user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        anyhow::bail!("--user must be one word of letters, digits, '-', '_' or '.'");
    }
    let strategy = settings.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY);
    let role = match args.role {
        RoleName::Serve => Role::Serve {
            locks: strategy == Strategy::Redlock,
        },
        RoleName::Relay => Role::Relay,
        RoleName::Migrate => Role::Migrate,
        RoleName::ImportLegacy => Role::ImportLegacy,
        RoleName::Audit => Role::Audit,
    };
    outln!("{}", role.setuser(&args.user));
    Ok(DONE)
}
