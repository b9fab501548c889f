//! One configuration, layered: built-in defaults < a TOML file < `FLYRTECH_*` environment
//! variables < command-line flags.
//!
//! Clap reads each flag's environment variable itself (a variable counts as given), so the
//! merge below only has to put the file underneath: `flag_or_env.or(file).unwrap_or(default)`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flyrtech_infrastructure::Strategy;
use serde::Deserialize;

/// Options every subcommand shares.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "FLYRTECH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Redis URL, or comma-separated cluster seed URLs. REDIS_URL is also read. Without one, a
    /// private redis-server is started and stopped on exit.
    #[arg(long, env = "FLYRTECH_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// Simulated work between reading a journey and writing it back, in milliseconds.
    #[arg(long, env = "FLYRTECH_PROCESSING_DELAY_MS", global = true)]
    pub processing_delay_ms: Option<u64>,
}

/// The file layer: every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub redis_url: Option<String>,
    pub strategy: Option<String>,
    pub processing_delay_ms: Option<u64>,
    pub listen: Option<String>,
    pub seed_file: Option<PathBuf>,
}

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML for [`FileConfig`].
    #[error("invalid config file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// A strategy name is not known.
    #[error(transparent)]
    Strategy(#[from] flyrtech_infrastructure::UnknownStrategy),
}

impl FileConfig {
    /// Reads `path`, or the empty layer when there is no file.
    ///
    /// # Errors
    /// [`ConfigError::Read`] or [`ConfigError::Parse`].
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else {
            return Ok(Self::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// The merged settings every subcommand uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: start a private redis-server.
    pub redis_url: Option<String>,
    pub processing_delay: Duration,
    pub file: std::sync::Arc<FileConfig>,
}

impl Settings {
    /// Merges the layers.
    ///
    /// # Errors
    /// A [`ConfigError`] when the file cannot be read or parsed.
    pub fn resolve(args: &CommonArgs) -> Result<Self, ConfigError> {
        let file = FileConfig::load(args.config.as_deref())?;
        let redis_url = args
            .redis_url
            .clone()
            .or_else(|| file.redis_url.clone())
            .or_else(|| std::env::var("REDIS_URL").ok())
            .filter(|u| !u.trim().is_empty());
        let delay_ms = args
            .processing_delay_ms
            .or(file.processing_delay_ms)
            .unwrap_or(0);
        Ok(Self {
            redis_url,
            processing_delay: Duration::from_millis(delay_ms),
            file: std::sync::Arc::new(file),
        })
    }

    /// The strategy: the flag/env value, else the file's, else `default`.
    ///
    /// # Errors
    /// [`ConfigError::Strategy`] naming the valid strategies.
    pub fn strategy(&self, flag: Option<&str>, default: Strategy) -> Result<Strategy, ConfigError> {
        match flag.or(self.file.strategy.as_deref()) {
            Some(name) => Ok(name.parse()?),
            None => Ok(default),
        }
    }
}
