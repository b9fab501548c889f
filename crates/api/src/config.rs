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
    /// Concurrency strategy: naive, local-lock, optimistic, redlock, lua or hash.
    #[arg(long, env = "FLYRTECH_STRATEGY", global = true)]
    pub strategy: Option<String>,
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
    /// The configured strategy, if any layer names one.
    pub strategy: Option<Strategy>,
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
        let strategy = args
            .strategy
            .as_deref()
            .or(file.strategy.as_deref())
            .map(str::parse)
            .transpose()?;
        Ok(Self {
            redis_url,
            processing_delay: Duration::from_millis(delay_ms),
            strategy,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>, strategy: Option<&str>, delay: Option<u64>) -> CommonArgs {
        CommonArgs {
            config,
            redis_url: None,
            strategy: strategy.map(str::to_owned),
            processing_delay_ms: delay,
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_apply_without_any_layer() {
        let s = Settings::resolve(&args(None, None, None)).expect("defaults");
        assert_eq!((s.strategy, s.processing_delay), (None, Duration::ZERO));
    }

    #[test]
    fn the_file_fills_what_flags_and_env_leave_open() {
        let f = file("strategy = \"lua\"\nprocessing_delay_ms = 7\n");
        let s = Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("file");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Lua), Duration::from_millis(7))
        );
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let f = file("strategy = \"lua\"\nprocessing_delay_ms = 7\n");
        let s = Settings::resolve(&args(Some(f.path().to_owned()), Some("hash"), Some(3)))
            .expect("flags");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Hash), Duration::from_millis(3))
        );
    }

    #[test]
    fn bad_files_and_names_are_clear_errors() {
        let typo = file("stratgy = \"lua\"\n");
        let err = Settings::resolve(&args(Some(typo.path().to_owned()), None, None))
            .expect_err("unknown key");
        assert!(err.to_string().contains("stratgy"), "{err}");
        let err = Settings::resolve(&args(None, Some("fast"), None)).expect_err("unknown strategy");
        assert!(
            err.to_string()
                .contains("valid strategies: naive, local-lock"),
            "{err}"
        );
    }
}
