//! One configuration for every command: its defaults < a TOML file < `FLYRTECH_*` variables <
//! flags, merged by one mechanism ([`layers`], on figment) for the shared options and each
//! command's own alike.
//!
//! | command | options | what it runs with |
//! |---|---|---|
//! | every one | [`CommonArgs`] (the file's top) | [`Settings`] |
//! | `serve` | [`ServeArgs`] (`[serve]`) | [`ServeSettings`] (what the service's `Application::build` takes) |
//! | `relay` | [`RelayArgs`] (`[relay]`) | its `settings()` |
//! | `project` | [`ProjectArgs`] (`[project]`) | its `settings()` and `endpoints()` |
//! | the others | their own `Args` (`[compare]`, `[audit]`, …) | the same, layered |
//!
//! A binary calls [`parse`] once; each command's options are layered with [`Settings::layer`]
//! before it runs. A value is typed by the `FromStr` its flag uses, so `fsync = "sometimes"` in
//! the file fails with its key, line and reason, before anything starts.
//!
//! # What it may import
//! The infrastructure crate (its settings types: the strategy, the store's, the outbox's and the
//! cache's limits) and [`crate::deployment`]; never the service's HTTP code, which imports this.

mod events;
mod layers;
mod serve;
mod values;

pub use events::{BusArgs, ProjectArgs, RelayArgs};
pub use layers::{COMMANDS, ConfigFile, Layers, SECRET_KEYS, parse, parse_from, with_variables};
pub use serve::{
    Connections, DEFAULT_SERVE_STRATEGY, QuotaLimits, RateLimit, ServeArgs, ServeSettings,
    TrustedProxies,
};
pub use values::{MaxAge, OrOff, Switch, parse_age, text};

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flyrtech_core::{Journey, JourneyFile};
use flyrtech_infrastructure::{Confirmation, ReplicaWait, Strategy};
use serde::{Deserialize, Serialize};

/// Options every subcommand shares: the file's top.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct CommonArgs {
    /// TOML configuration file (keys as the long flags, with underscores).
    #[arg(long, env = "FLYRTECH_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Redis URL, or comma-separated cluster seed URLs. REDIS_URL is also read. Without one, a
    /// private redis-server is started and stopped on exit.
    #[arg(long, env = "FLYRTECH_REDIS_URL", global = true)]
    pub redis_url: Option<String>,
    /// File holding the Redis password (a mounted secret), used for every Redis URL that names
    /// none: the password stays out of the URL, the command line, the environment and the
    /// config file. Its trailing newline is not part of it.
    #[arg(long, env = "FLYRTECH_REDIS_PASSWORD_FILE", global = true)]
    pub redis_password_file: Option<PathBuf>,
    /// PEM file of the authorities a `rediss://` server's certificate must chain to (a private
    /// CA) [default: the system's roots].
    #[arg(long, env = "FLYRTECH_REDIS_CA", global = true)]
    pub redis_ca: Option<PathBuf>,
    /// Concurrency strategy [default: lua for serve; for the operator commands, the dataset's
    /// own layout's; compare runs those --strategies names].
    #[arg(long, env = "FLYRTECH_STRATEGY", global = true, value_parser = strategy_parser())]
    #[serde(with = "text::option")]
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
    /// The file is not valid TOML. Where, and what is wrong, but never the
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
    /// A setting's value is not one it takes, or the file has a key it should not.
    #[error("invalid {key}: {reason}")]
    Value {
        /// The setting.
        key: String,
        /// Why, and which layer gave it.
        reason: String,
    },
    /// The file has a key no option has, or a table no command has.
    #[error("{0}")]
    Unknown(String),
    /// The command line is not one the binary takes (clap's message; the binaries exit 2 on
    /// it before this is made, [`parse_from`] returns it).
    #[error("{0}")]
    Usage(String),
    /// The layers could not be merged for a reason that is a bug, not the operator's.
    #[error("the configuration's layers cannot be merged: {0}")]
    Internal(String),
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

impl ConfigError {
    fn value(key: &str, reason: impl Into<String>) -> Self {
        Self::Value {
            key: key.to_owned(),
            reason: reason.into(),
        }
    }
}

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
    /// The layers, for the command's own options ([`Settings::layer`]).
    layers: Layers,
}

impl Settings {
    /// What the shared options `args` (already layered) mean, checked.
    ///
    /// # Errors
    /// [`ConfigError::Value`] for a replica wait that cannot work.
    fn resolve(args: &CommonArgs, layers: Layers) -> Result<Self, ConfigError> {
        // The variable every Redis client reads, below every layer of ours.
        let redis_url = args
            .redis_url
            .clone()
            .or_else(|| std::env::var("REDIS_URL").ok())
            .filter(|u| !u.trim().is_empty());
        let password = args
            .redis_password_file
            .as_deref()
            .map(read_password)
            .transpose()?;
        let (redis_url, lock_urls) = match &password {
            None => (redis_url, args.lock_urls.clone().unwrap_or_default()),
            Some(password) => (
                redis_url
                    .map(|urls| with_password(&urls, password, "redis_url"))
                    .transpose()?,
                args.lock_urls
                    .iter()
                    .flatten()
                    .map(|url| with_password(url, password, "lock_urls"))
                    .collect::<Result<_, _>>()?,
            ),
        };
        let wait_aof = args.wait_aof;
        // A WAIT answers from the replicas' acknowledgements of what they received; a WAITAOF
        // to replicas waits for their next report of what their disks hold, about once a
        // second: it gets a longer default and bound.
        let (default_wait, longest) = match wait_aof {
            Some(_) => (DEFAULT_WAIT_AOF_TIMEOUT_MS, 5000),
            None => (DEFAULT_WAIT_TIMEOUT_MS, 999),
        };
        let wait_timeout = Duration::from_millis(args.wait_timeout_ms.unwrap_or(default_wait));
        if wait_timeout.is_zero() || wait_timeout > Duration::from_millis(longest) {
            return Err(ConfigError::Value {
                key: "wait_timeout_ms".into(),
                reason: format!(
                    "must be between 1 and {longest} (with --wait-replicas a longer WAIT outlives \
                     the 1000 ms command timeout; with --wait-aof the timeout follows the wait)"
                ),
            });
        }
        let replicas = match (args.wait_replicas, wait_aof) {
            (Some(n), Some(_)) if n > 0 => {
                return Err(ConfigError::value(
                    "wait_aof",
                    "choose --wait-replicas (memory) or --wait-aof (disk), not both",
                ));
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
            redis_ca: args.redis_ca.clone(),
            processing_delay: args.processing_delay_ms.map(Duration::from_millis),
            strategy: args.strategy,
            lock_urls,
            allow_eviction: args.allow_eviction,
            replicas,
            layers,
        })
    }

    /// The running command's options `args`, as clap parsed them, with its table of the file
    /// under them ([`layers`]).
    ///
    /// # Errors
    /// [`ConfigError::Value`] for a value of the table its option does not take.
    pub fn layer<A: Serialize + serde::de::DeserializeOwned>(
        &self,
        args: A,
    ) -> Result<A, ConfigError> {
        self.layers.command(args)
    }
}

/// The password in `--redis-password-file`: the file's text without its trailing newline.
fn read_password(path: &std::path::Path) -> Result<String, ConfigError> {
    let key = "redis_password_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::value(key, format!("cannot read {}: {e}", path.display())))?;
    let password = text.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(ConfigError::value(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(password.to_owned())
}

/// Each of the comma-separated Redis `urls` with `password` in it. A URL that names a password
/// of its own is refused rather than silently overridden; no error shows a URL, which may hold
/// a password.
fn with_password(urls: &str, password: &str, key: &str) -> Result<String, ConfigError> {
    let one = |text: &str| {
        let mut url = url::Url::parse(text.trim()).map_err(|e| {
            ConfigError::value(
                key,
                format!("not a URL ({e}); not shown: it may hold a password"),
            )
        })?;
        if url.password().is_some() {
            return Err(ConfigError::value(
                key,
                "names a password and --redis-password-file gives one: keep one of them",
            ));
        }
        url.set_password(Some(password))
            .map_err(|()| ConfigError::value(key, "a URL without a host cannot take a password"))?;
        Ok(url.to_string())
    };
    Ok(urls
        .split(',')
        .map(one)
        .collect::<Result<Vec<_>, _>>()?
        .join(","))
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

    /// A binary of three commands, as the service's and the lab's are built.
    #[derive(Debug, clap::Parser)]
    #[command(name = "flyrtech")]
    pub(crate) struct Cli {
        #[command(flatten)]
        pub common: CommonArgs,
        #[command(subcommand)]
        pub command: Command,
    }

    #[derive(Debug, clap::Subcommand)]
    pub(crate) enum Command {
        Serve(ServeArgs),
        Relay(RelayArgs),
        Project(ProjectArgs),
    }

    pub(crate) fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        std::io::Write::write_all(&mut f, text.as_bytes()).expect("write");
        f
    }

    /// `flyrtech <argv>` with `text` as its config file, each command's options layered.
    pub(crate) fn parse(argv: &[&str], text: &str) -> Result<(Command, Settings), ConfigError> {
        let f = file(text);
        let config = format!("--config={}", f.path().display());
        let line = ["flyrtech", config.as_str()]
            .into_iter()
            .chain(argv.iter().copied());
        let (cli, settings) = parse_from(line, |cli: &mut Cli| &mut cli.common)?;
        let command = match cli.command {
            Command::Serve(args) => Command::Serve(settings.layer(args)?),
            Command::Relay(args) => Command::Relay(settings.layer(args)?),
            Command::Project(args) => Command::Project(settings.layer(args)?),
        };
        Ok((command, settings))
    }

    fn shared(argv: &[&str], text: &str) -> Result<Settings, ConfigError> {
        parse(&[argv, &["relay"]].concat(), text).map(|(_, settings)| settings)
    }

    /// The password file's password goes into every Redis URL, percent-encoded; a URL that has
    /// a password of its own, or an empty file, is refused, and no error shows a password.
    #[test]
    fn the_redis_password_comes_from_a_mounted_file() {
        let secret = file("p@ss:w/rd\n");
        let flag = format!("--redis-password-file={}", secret.path().display());
        let urls = "--redis-url=redis://a:7000,redis://user@b:7001/2";
        let s = shared(&[&flag, urls, "--lock-urls=redis://c:7002"], "").expect("settings");
        assert_eq!(
            s.redis_url.as_deref(),
            Some("redis://:p%40ss%3Aw%2Frd@a:7000,redis://user:p%40ss%3Aw%2Frd@b:7001/2")
        );
        assert_eq!(s.lock_urls, ["redis://:p%40ss%3Aw%2Frd@c:7002"]);

        let twice =
            shared(&[&flag, "--redis-url=redis://:other@a:7000"], "").expect_err("two passwords");
        let shown = twice.to_string();
        assert!(shown.contains("keep one of them"), "{shown}");
        assert!(
            !shown.contains("other") && !shown.contains("p@ss"),
            "{shown}"
        );

        let empty = file("\n");
        let flag = format!("--redis-password-file={}", empty.path().display());
        let shown = shared(&[&flag, "--redis-url=redis://a:1"], "")
            .expect_err("an empty password")
            .to_string();
        assert!(shown.contains("is empty"), "{shown}");
    }

    #[test]
    fn defaults_apply_without_any_layer() {
        let s = shared(&[], "").expect("defaults");
        assert_eq!((s.strategy, s.processing_delay), (None, None));
    }

    #[test]
    fn the_file_fills_what_flags_and_env_leave_open() {
        let s = shared(&[], "strategy = \"lua\"\nprocessing_delay_ms = 7\n").expect("file");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Lua), Some(Duration::from_millis(7)))
        );
    }

    #[test]
    fn flags_override_the_file() {
        let s = shared(
            &["--strategy=hash", "--processing-delay-ms=3"],
            "strategy = \"lua\"\nprocessing_delay_ms = 7\n",
        )
        .expect("flags");
        assert_eq!(
            (s.strategy, s.processing_delay),
            (Some(Strategy::Hash), Some(Duration::from_millis(3)))
        );
    }

    /// Every option has a variable: the ones that name their own, and `FLYRTECH_<LONG_NAME>`.
    #[test]
    fn every_option_has_a_variable() {
        use clap::CommandFactory as _;
        let command = with_variables(Cli::command());
        let serve = command.find_subcommand("serve").expect("serve");
        let variable = |cmd: &clap::Command, id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_env())
                .map(|v| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            variable(serve, "rate_burst").as_deref(),
            Some("FLYRTECH_RATE_BURST")
        );
        assert_eq!(
            variable(serve, "rate_limit").as_deref(),
            Some("FLYRTECH_RATE_LIMIT")
        );
        let project = command.find_subcommand("project").expect("project");
        assert_eq!(
            variable(project, "postgres").as_deref(),
            Some("FLYRTECH_PROJECTION")
        );
        for cmd in command.get_subcommands() {
            for arg in cmd.get_arguments().filter(|a| a.get_long() != Some("help")) {
                assert!(
                    arg.get_env().is_some(),
                    "{} --{:?}",
                    cmd.get_name(),
                    arg.get_long()
                );
            }
        }
    }

    #[test]
    fn bad_files_and_names_are_clear_errors() {
        let err = shared(&[], "stratgy = \"lua\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("stratgy"), "{err}");
        let expected = format!("valid strategies: {}", Strategy::names());
        assert!(expected.contains("naive, local-lock, optimistic, redlock, lua, hash"));
        let err = shared(&[], "\nstrategy = \"fast\"\n").expect_err("unknown strategy");
        assert!(err.to_string().contains(&expected), "{err}");
        assert!(err.to_string().contains("line 2"), "{err}");
        let err = shared(&["--strategy=fast"], "").expect_err("unknown strategy flag");
        assert!(matches!(err, ConfigError::Usage(_)), "{err}");
    }

    /// toml's own message quotes the offending line; ours says where it is and never prints a
    /// value of a key that holds URLs, whether the file is not TOML or a value is not one its
    /// option takes.
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
            (
                "[project]\n\npostgres = ['postgres://u:Sl/ash?Pw#991@h/db']\n",
                "line 3",
            ),
            ("redis_url = ['redis://u:Sl/ash?Pw#991@h:1']\n", "line 1"),
        ] {
            let command = if text.contains("[serve]") {
                "serve"
            } else {
                "project"
            };
            let err = parse(&[command], text).expect_err("a bad file");
            let shown = format!("{err:#}");
            assert!(!shown.contains("Pw#991"), "{shown}");
            assert!(shown.contains(expected), "{text}: {shown}");
        }
    }

    /// A key the file should not have is refused by its own name, with the file's: a key that
    /// merely begins like a secret one (`redis_url2`) is not taken for it, and its value is
    /// never shown.
    #[test]
    fn an_unknown_key_is_named_with_its_file_and_line() {
        let f = file("strategy = \"lua\"\nredis_url2 = \"redis://:Sl/ash?Pw#991@h:1\"\n");
        let config = format!("--config={}", f.path().display());
        let err = parse_from(["flyrtech", &config, "relay"], |cli: &mut Cli| {
            &mut cli.common
        })
        .expect_err("an unknown key");
        let shown = format!("{err:#}");
        assert!(shown.contains("line 2"), "{shown}");
        assert!(shown.contains("redis_url2"), "{shown}");
        assert!(shown.contains(&f.path().display().to_string()), "{shown}");
        assert!(!shown.contains("Pw#991"), "{shown}");
        for (text, key, line) in [
            ("[relay]\nbatch = 1\n\nbach = 64\n", "bach", "line 4"),
            ("[serve]\nstrategy = \"lua\"\n", "strategy", "line 2"),
            ("[sever]\nlisten = \"127.0.0.1:1\"\n", "sever", "line 1"),
            ("listen = \"127.0.0.1:1\"\n", "listen", "line 1"),
            ("[strategy]\n", "strategy", "line 1"),
        ] {
            let shown = parse(&["relay"], text).expect_err(key).to_string();
            assert!(
                shown.contains(key) && shown.contains(line),
                "{text}: {shown}"
            );
        }
        // The other binary's commands have tables of their own in the same file.
        assert!(parse(&["relay"], "[compare]\nruns = 3\n").is_ok());
    }

    /// A command missing from [`COMMANDS`] would have its table taken for the other binary's,
    /// and a set of options flattened for clap but not for serde would let the file beat a flag
    /// unnoticed: the layers refuse both.
    #[test]
    fn an_option_serde_cannot_find_is_refused() {
        #[derive(Debug, clap::Args, Serialize, Deserialize)]
        struct Nested {
            #[command(flatten)]
            bus: BusArgs,
        }
        #[derive(Debug, clap::Parser)]
        struct Two {
            #[command(flatten)]
            common: CommonArgs,
            #[command(subcommand)]
            command: Sub,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Sub {
            Audit(Nested),
            /// A command the list of commands lacks.
            Bogus(ProjectArgs),
        }
        let line = ["flyrtech", "audit", "--events-stream=ev"];
        let err = parse_from(line, |cli: &mut Two| &mut cli.common).expect_err("bogus");
        assert!(err.to_string().contains("bogus"), "{err}");
        #[derive(Debug, clap::Parser)]
        struct One {
            #[command(flatten)]
            common: CommonArgs,
            #[command(subcommand)]
            command: Only,
        }
        #[derive(Debug, clap::Subcommand)]
        enum Only {
            Audit(Nested),
        }
        let (cli, settings) = parse_from(line, |cli: &mut One| &mut cli.common).expect("parsed");
        let Only::Audit(nested) = cli.command;
        let err = settings.layer(nested).expect_err("a lost option");
        assert!(err.to_string().contains("events_stream"), "{err}");
    }
}
