//! `flyrtech api-key new NAME --scope read|write|admin [--file PATH]`: makes an API key, prints
//! it once, and appends its SHA-256 (never the key) to the keys file `serve --api-keys` loads
//! (docs/security.md).

use flyrtech_cli::outln;
use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::DONE;
use crate::http::auth::{ApiKeys, Scope};
use flyrtech_cli::config::Settings;

/// Options of `flyrtech api-key`.
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct ApiKeyArgs {
    /// The keys file (`[api-key] file` in the config file).
    #[arg(long, global = true, default_value = ApiKeys::DEFAULT_FILE)]
    pub file: PathBuf,
    #[command(subcommand)]
    pub action: Action,
}

/// What to do with keys.
#[derive(Debug, Clone, Subcommand, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Make a key: printed once on stdout, its hash appended to the keys file.
    New {
        /// A one-word name for the key's holder (kept in the file, never logged).
        name: String,
        /// `read`, `write` (also changes journeys and the cache) or `admin` (also /metrics).
        #[arg(long)]
        #[serde(with = "flyrtech_cli::config::text")]
        scope: Scope,
    },
}

/// Runs `flyrtech api-key`.
///
/// # Errors
/// A name that is not one word, or the file cannot be written.
pub async fn run(args: &ApiKeyArgs, _settings: Settings) -> anyhow::Result<i32> {
    let file = &args.file;
    match &args.action {
        Action::New { name, scope } => {
            let key = ApiKeys::create(file, name, *scope)?;
            eprintln!(
                "a {scope} key for {name}; its hash is in {}. The key is shown once:",
                file.display()
            );
            outln!("{key}");
        }
    }
    Ok(DONE)
}
