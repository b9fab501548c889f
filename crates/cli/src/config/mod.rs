//! One configuration, layered: built-in defaults < a TOML file < `FLYRTECH_*` environment
//! variables < command-line flags.
//!
//! Clap reads each flag's environment variable itself (a variable counts as given), so the
//! merge only has to put the file underneath: `flag_or_env.or(file).unwrap_or(default)`. Every
//! command gets one settings type, built here once and handed to what runs it, as
//! zero-to-production hands its `Settings` to `Application::build`:
//!
//! | command | flags | settings |
//! |---|---|---|
//! | every one | [`CommonArgs`] | [`Settings`] |
//! | `serve` | [`ServeArgs`] | [`ServeSettings`] (what `crate::http::Application::build` takes) |
//! | `relay` | [`RelayArgs`] | [`RelayArgs::layered`], then its `settings()` |
//! | `project` | [`ProjectArgs`] | [`ProjectArgs::layered`] |
//! | the one-shot tools | their own `Args` | the file's table as flags ([`tools`]) |
//!
//! The file is typed ([`FileConfig`]): each value is parsed by the same `FromStr` as its flag,
//! so `fsync = "sometimes"` fails at load with the line, the key and the reason. Keys are the
//! long flags with underscores: the shared ones at the top, each command's under its name
//! (`[serve]`, `[relay]`, `[project]`, `[compare]`, `[project-bench]`, …).
//!
//! # What it may import
//! The infrastructure crate (its settings types: the strategy, the store's, the outbox's and the
//! cache's limits) and [`crate::deployment`]; never `http`, which imports this.

mod events;
mod serve;
pub mod tools;
mod values;

pub use events::{BusArgs, ProjectArgs, RelayArgs};
pub use serve::{
    Connections, DEFAULT_SERVE_STRATEGY, QuotaLimits, RateLimit, ServeArgs, ServeSettings,
    TrustedProxies,
};
pub use values::{MaxAge, OrOff, Switch, parse_age};

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flyrtech_core::{Journey, JourneyFile};
use flyrtech_infrastructure::{Confirmation, ReplicaWait, Strategy};
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
    /// PEM file of the authorities a `rediss://` server's certificate must chain to (a private
    /// CA) [default: the system's roots].
    #[arg(long, env = "FLYRTECH_REDIS_CA", global = true)]
    pub redis_ca: Option<PathBuf>,
    /// Concurrency strategy [default: lua for serve; for the operator commands, the dataset's
    /// own layout's; compare runs those --strategies names].
    #[arg(long, env = "FLYRTECH_STRATEGY", global = true, value_parser = strategy_parser())]
    pub strategy: Option<Strategy>,
    /// Simulated work between reading a journey and writing it back, in milliseconds.
    #[arg(long, env = "FLYRTECH_PROCESSING_DELAY_MS", global = true)]
    pub processing_delay_ms: Option<u64>,
    /// Independent Redis masters for the redlock strategy's lock, comma-separated. Default: the
    /// journey Redis itself is the one lock node.
    #[arg(long, env = "FLYRTECH_LOCK_URLS", global = true, value_delimiter = ',')]
    pub lock_urls: Option<Vec<String>>,
    /// Start (`serve`, `relay`) even though Redis' maxmemory-policy can evict keys without a
    /// TTL (allkeys-*), i.e. journeys.
    #[arg(long, env = "FLYRTECH_ALLOW_EVICTION", global = true)]
    pub allow_eviction: bool,
    /// Replicas that must confirm each update before it is acknowledged (`WAIT`); an update
    /// they do not confirm in time is answered 503 /problems/not-replicated [default: 0, none].
    #[arg(long, env = "FLYRTECH_WAIT_REPLICAS", global = true)]
    pub wait_replicas: Option<u32>,
    /// Replicas whose AOF must hold each update on disk, as the primary's own must, before it is
    /// acknowledged (`WAITAOF 1 N`: Redis 7.2 and later, Valkey); instead of --wait-replicas.
    /// Start-up refuses it on an engine without WAITAOF or with appendonly off [default: none].
    #[arg(
        long,
        env = "FLYRTECH_WAIT_AOF",
        global = true,
        conflicts_with = "wait_replicas"
    )]
    pub wait_aof: Option<u32>,
    /// Longest wait for those replicas, in milliseconds: with --wait-replicas below the 1000 ms
    /// command timeout [default: 500]; with --wait-aof at most 5000 [default: 1500].
    #[arg(long, env = "FLYRTECH_WAIT_TIMEOUT_MS", global = true)]
    pub wait_timeout_ms: Option<u64>,
}

/// A strategy's name on the command line: an unknown one is a usage error (exit 2) that lists
/// the names, as `--help` does.
fn strategy_parser() -> impl clap::builder::TypedValueParser<Value = Strategy> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Strategy::ALL.map(Strategy::name))
        .try_map(|name| name.parse::<Strategy>())
}

/// The file layer: every key optional, every value typed (parsed by its flag's `FromStr`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub redis_url: Option<String>,
    pub redis_ca: Option<PathBuf>,
    #[serde(default, deserialize_with = "values::parsed")]
    pub strategy: Option<Strategy>,
    pub processing_delay_ms: Option<u64>,
    pub lock_urls: Option<Vec<String>>,
    pub allow_eviction: Option<bool>,
    pub wait_replicas: Option<u32>,
    pub wait_aof: Option<u32>,
    pub wait_timeout_ms: Option<u64>,
    /// `flyrtech serve`'s keys, under `[serve]`.
    #[serde(default)]
    pub serve: ServeArgs,
    /// `flyrtech relay`'s keys, under `[relay]`.
    #[serde(default)]
    pub relay: RelayArgs,
    /// `flyrtech project`'s keys, under `[project]`.
    #[serde(default)]
    pub project: ProjectArgs,
    // The one-shot tools' options, a table each, put in front of the command line's own
    // ([`tools::with_file_options`]) so that clap parses them as it parses flags.
    pub compare: Option<toml::Table>,
    pub verify: Option<toml::Table>,
    pub audit: Option<toml::Table>,
    pub backlog: Option<toml::Table>,
    pub migrate: Option<toml::Table>,
    #[serde(rename = "import-legacy")]
    pub import_legacy: Option<toml::Table>,
    #[serde(rename = "project-bench")]
    pub project_bench: Option<toml::Table>,
    #[serde(rename = "migrate-bench")]
    pub migrate_bench: Option<toml::Table>,
    pub soak: Option<toml::Table>,
    #[serde(rename = "api-key")]
    pub api_key: Option<toml::Table>,
    #[serde(rename = "redis-acl")]
    pub redis_acl: Option<toml::Table>,
}

impl FileConfig {
    /// The table of the one-shot tool `name` (a subcommand's name), if the file has one.
    pub fn tool(&self, name: &str) -> Option<&toml::Table> {
        match name {
            "compare" => self.compare.as_ref(),
            "verify" => self.verify.as_ref(),
            "audit" => self.audit.as_ref(),
            "backlog" => self.backlog.as_ref(),
            "migrate" => self.migrate.as_ref(),
            "import-legacy" => self.import_legacy.as_ref(),
            "project-bench" => self.project_bench.as_ref(),
            "migrate-bench" => self.migrate_bench.as_ref(),
            "soak" => self.soak.as_ref(),
            "api-key" => self.api_key.as_ref(),
            "redis-acl" => self.redis_acl.as_ref(),
            _ => None,
        }
    }
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
    /// The file is not valid TOML for [`FileConfig`]. Where, and what is wrong, but never the
    /// offending line itself: it may hold a secret (a URL with its password).
    #[error("invalid config file {path}: {reason}")]
    Parse {
        path: PathBuf,
        /// The line and column, and toml's message with every password redacted (and none at
        /// all for a key that holds URLs).
        reason: String,
    },
    /// A strategy name is not known.
    #[error(transparent)]
    Strategy(#[from] flyrtech_infrastructure::UnknownStrategy),
    /// A setting's value is not one it takes.
    #[error("invalid {key}: {reason}")]
    Value {
        /// The setting.
        key: &'static str,
        /// Why.
        reason: String,
    },
    /// The seed file could not be read.
    #[error("cannot read seed file {path}: {source}")]
    SeedRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The seed file is not `{"journeys": [...]}` with valid journeys.
    #[error("invalid seed file {path}: {source}")]
    SeedParse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            reason: parse_reason(&text, &e),
        })
    }
}

/// The keys whose values may hold a secret: URLs, with their passwords.
const SECRET_KEYS: [&str; 5] = ["redis_url", "lock_urls", "bus", "events_url", "postgres"];

/// Where a TOML error is and what it says, without quoting the file: toml's own `Display`
/// prints the offending line, which for `redis_url = "redis://:pw@host` is the password.
fn parse_reason(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return flyrtech_infrastructure::secrets::redact_text(error.message());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let key: String = line_text
        .trim_start()
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    // The key exactly: `redis_url2` is an unknown key of its own, not `redis_url`'s value.
    let secret = SECRET_KEYS.iter().find(|secret| **secret == key);
    match secret {
        Some(key) => format!(
            "line {line}, column {column}: the value of {key} is not valid (not shown: it may \
             hold a password)"
        ),
        None if !key.is_empty() => format!(
            "line {line}, column {column}, {key}: {}",
            flyrtech_infrastructure::secrets::redact_text(error.message())
        ),
        None => format!(
            "line {line}, column {column}: {}",
            flyrtech_infrastructure::secrets::redact_text(error.message())
        ),
    }
}

/// How long an update waits for its replicas unless told otherwise.
const DEFAULT_WAIT_TIMEOUT_MS: u64 = 500;

/// How long an update waits for the replicas' disks (`--wait-aof`) unless told otherwise: past
/// their once-a-second report of what their AOF holds.
const DEFAULT_WAIT_AOF_TIMEOUT_MS: u64 = 1500;

/// The merged settings every subcommand uses.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `None`: start a private redis-server.
    pub redis_url: Option<String>,
    /// The authorities for `rediss://`, if not the system's.
    pub redis_ca: Option<PathBuf>,
    /// `None` when no layer sets it: serve uses 0, each lab scenario its own default.
    pub processing_delay: Option<Duration>,
    /// The configured strategy, if any layer names one.
    pub strategy: Option<Strategy>,
    /// Redlock masters; empty: the journey Redis.
    pub lock_urls: Vec<String>,
    /// Whether a Redis that may evict journeys is accepted.
    pub allow_eviction: bool,
    /// Replicas each update waits for; `None` when no layer asks for any.
    pub replicas: Option<ReplicaWait>,
    /// The file layer, for each command's own settings ([`ServeSettings::resolve`],
    /// [`RelayArgs::layered`], [`ProjectArgs::layered`]).
    pub file: FileConfig,
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
        let delay_ms = args.processing_delay_ms.or(file.processing_delay_ms);
        let strategy = args.strategy.or(file.strategy);
        let lock_urls = args
            .lock_urls
            .clone()
            .or_else(|| file.lock_urls.clone())
            .unwrap_or_default();
        let wait_aof = args.wait_aof.or(file.wait_aof);
        // A WAIT answers from the replicas' acknowledgements of what they received; a WAITAOF
        // to replicas waits for their next report of what their disks hold, about once a
        // second: it gets a longer default and bound.
        let (default_wait, longest) = match wait_aof {
            Some(_) => (DEFAULT_WAIT_AOF_TIMEOUT_MS, 5000),
            None => (DEFAULT_WAIT_TIMEOUT_MS, 999),
        };
        let wait_timeout = Duration::from_millis(
            args.wait_timeout_ms
                .or(file.wait_timeout_ms)
                .unwrap_or(default_wait),
        );
        if wait_timeout.is_zero() || wait_timeout > Duration::from_millis(longest) {
            return Err(ConfigError::Value {
                key: "wait_timeout_ms",
                reason: format!(
                    "must be between 1 and {longest} (with --wait-replicas a longer WAIT outlives \
                     the 1000 ms command timeout; with --wait-aof the timeout follows the wait)"
                ),
            });
        }
        let replicas = match (args.wait_replicas.or(file.wait_replicas), wait_aof) {
            (Some(n), Some(_)) if n > 0 => {
                return Err(ConfigError::Value {
                    key: "wait_aof",
                    reason: "choose --wait-replicas (memory) or --wait-aof (disk), not both".into(),
                });
            }
            (_, Some(replicas)) => Some(ReplicaWait {
                replicas,
                timeout: wait_timeout,
                confirmation: Confirmation::OnDisk,
            }),
            (None | Some(0), None) => None,
            (Some(replicas), None) => Some(ReplicaWait {
                replicas,
                timeout: wait_timeout,
                confirmation: Confirmation::Received,
            }),
        };
        Ok(Self {
            redis_url,
            redis_ca: args.redis_ca.clone().or_else(|| file.redis_ca.clone()),
            processing_delay: delay_ms.map(Duration::from_millis),
            strategy,
            lock_urls,
            allow_eviction: args.allow_eviction || file.allow_eviction.unwrap_or(false),
            replicas,
            file,
        })
    }
}

/// The journeys seeded at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seed {
    /// None.
    Nothing,
    /// The sample journeys built into the binary (data/journeys.json).
    Sample,
    /// A file of the same shape.
    File(PathBuf),
}

/// The sample data of the original service.
const SAMPLE_JOURNEYS: &str = include_str!("../../../../data/journeys.json");

impl Seed {
    /// Reads the journeys.
    ///
    /// # Errors
    /// [`ConfigError::SeedRead`] or [`ConfigError::SeedParse`].
    pub fn load(&self) -> Result<Vec<Journey>, ConfigError> {
        let (path, text) = match self {
            Self::Nothing => return Ok(Vec::new()),
            Self::Sample => (
                PathBuf::from("data/journeys.json"),
                SAMPLE_JOURNEYS.to_owned(),
            ),
            Self::File(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::SeedRead {
                        path: path.clone(),
                        source,
                    })?;
                (path.clone(), text)
            }
        };
        serde_json::from_str::<JourneyFile>(&text)
            .map(|f| f.journeys)
            .map_err(|source| ConfigError::SeedParse { path, source })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn args(
        config: Option<PathBuf>,
        strategy: Option<&str>,
        delay: Option<u64>,
    ) -> CommonArgs {
        CommonArgs {
            config,
            redis_url: None,
            redis_ca: None,
            strategy: strategy.map(|name| name.parse().expect("a strategy's name")),
            processing_delay_ms: delay,
            lock_urls: None,
            allow_eviction: false,
            wait_replicas: None,
            wait_aof: None,
            wait_timeout_ms: None,
        }
    }

    pub(crate) fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn defaults_apply_without_any_layer() {
        let s = Settings::resolve(&args(None, None, None)).expect("defaults");
        assert_eq!((s.strategy, s.processing_delay), (None, None));
    }

    #[test]
    fn the_file_fills_what_flags_and_env_leave_open() {
        let f = file("strategy = \"lua\"\nprocessing_delay_ms = 7\n");
        let s = Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("file");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Lua), Some(Duration::from_millis(7)))
        );
    }

    #[test]
    fn flags_and_env_override_the_file() {
        let f = file("strategy = \"lua\"\nprocessing_delay_ms = 7\n");
        let s = Settings::resolve(&args(Some(f.path().to_owned()), Some("hash"), Some(3)))
            .expect("flags");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Hash), Some(Duration::from_millis(3)))
        );
    }

    #[test]
    fn bad_files_and_names_are_clear_errors() {
        let typo = file("stratgy = \"lua\"\n");
        let err = Settings::resolve(&args(Some(typo.path().to_owned()), None, None))
            .expect_err("unknown key");
        assert!(err.to_string().contains("stratgy"), "{err}");
        let expected = format!("valid strategies: {}", Strategy::names());
        assert!(expected.contains("naive, local-lock, optimistic, redlock, lua, hash"));
        let in_file = file("strategy = \"fast\"\n");
        let err = Settings::resolve(&args(Some(in_file.path().to_owned()), None, None))
            .expect_err("unknown strategy in the file");
        assert!(err.to_string().contains(&expected), "{err}");
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    /// toml's own message quotes the offending line; ours says where it is and never prints a
    /// value of a key that holds URLs.
    #[test]
    fn a_config_error_never_quotes_a_password() {
        for (text, expected) in [
            (
                "redis_url = \"redis://:Sl/ash?Pw#991@127.0.0.1:5555\n",
                "line 1",
            ),
            (
                "strategy = \"lua\"\nlock_urls = \"redis://:Sl/ash?Pw#991@h:1\"\n",
                "line 2",
            ),
            (
                "redis_url = 'redis://u:Sl/ash?Pw#991@h:1'\nstrategy = 5\n",
                "line 2",
            ),
            (
                "[serve]\nlisten = \"redis://:Sl/ash?Pw#991@h:1\"\n",
                "line 2",
            ),
            (
                "[project]\npostgres = 'postgres://u:Sl/ash?Pw#991@h/db'\nbatch = \"x\"\n",
                "line 3",
            ),
            (
                "[project]\npostgres = \"postgres://u:Sl/ash?Pw#991@h/db\n",
                "line 2",
            ),
        ] {
            let f = file(text);
            let err = Settings::resolve(&args(Some(f.path().to_owned()), None, None))
                .expect_err("a bad file");
            let shown = format!("{err:#}");
            assert!(!shown.contains("Pw#991"), "{shown}");
            assert!(shown.contains(expected), "{shown}");
        }
    }

    /// A key the file should not have is refused by its own name, with the file's: a key that
    /// merely begins like a secret one (`redis_url2`) is not taken for it, and its value is
    /// never shown.
    #[test]
    fn an_unknown_key_is_named_with_its_file() {
        let f = file("strategy = \"lua\"\nredis_url2 = \"redis://:Sl/ash?Pw#991@h:1\"\n");
        let err = Settings::resolve(&args(Some(f.path().to_owned()), None, None))
            .expect_err("an unknown key");
        let shown = format!("{err:#}");
        assert!(shown.contains("line 2"), "{shown}");
        assert!(shown.contains("redis_url2"), "{shown}");
        assert!(shown.contains(&f.path().display().to_string()), "{shown}");
        assert!(!shown.contains("the value of redis_url"), "{shown}");
        assert!(!shown.contains("Pw#991"), "{shown}");
    }
}
