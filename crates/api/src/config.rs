//! One configuration, layered: built-in defaults < a TOML file < `FLYRTECH_*` environment
//! variables < command-line flags.
//!
//! Clap reads each flag's environment variable itself (a variable counts as given), so the
//! merge below only has to put the file underneath: `flag_or_env.or(file).unwrap_or(default)`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use flyrtech_core::{Journey, JourneyFile};
use flyrtech_infrastructure::events::backlog::BacklogLimits;
use flyrtech_infrastructure::store::cache::CacheLimits;
use flyrtech_infrastructure::{Fsync, ReplicaWait, Strategy};
use serde::Deserialize;

use crate::http::limit::{RateLimit, TrustedProxies};
use crate::http::quota::QuotaLimits;
use crate::http::server::Connections;
use flyrtech_infrastructure::store::quota::JourneyQuota;

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
    /// Concurrency strategy: naive, local-lock, optimistic, redlock, lua or hash.
    #[arg(long, env = "FLYRTECH_STRATEGY", global = true)]
    pub strategy: Option<String>,
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
    /// Longest wait for those replicas, in milliseconds; below the 1000 ms command timeout
    /// [default: 500].
    #[arg(long, env = "FLYRTECH_WAIT_TIMEOUT_MS", global = true)]
    pub wait_timeout_ms: Option<u64>,
}

/// Options of `flyrtech serve`.
#[derive(Default, Debug, Clone, Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:5000, the original's port].
    #[arg(long, env = "FLYRTECH_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// A JSON file of journeys (`{"journeys": [...]}`) created at start-up when they do not
    /// exist; existing journeys are never overwritten [default: the sample journeys of
    /// data/journeys.json, built into the binary].
    #[arg(long, env = "FLYRTECH_SEED_FILE")]
    pub seed_file: Option<PathBuf>,
    /// Create no journeys at start-up.
    #[arg(long, conflicts_with = "seed_file")]
    pub no_seed: bool,
    /// Longest a request may take before it is answered 503 [default: 10000].
    #[arg(long, env = "FLYRTECH_REQUEST_TIMEOUT_MS")]
    pub request_timeout_ms: Option<u64>,
    /// Start a private 3-master cluster instead of one server (when no Redis URL is set). It
    /// keeps nothing on disk: a development convenience.
    #[arg(long)]
    pub cluster: bool,
    /// Where the private redis-server keeps its data (AOF) when no Redis URL is set
    /// [default: flyrtech-data, in the working directory].
    #[arg(long, env = "FLYRTECH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// When the private redis-server makes its AOF durable: `everysec` (a crash of any process
    /// loses nothing acknowledged) or `always` (not even an OS crash does) [default: everysec].
    #[arg(long, env = "FLYRTECH_FSYNC")]
    pub fsync: Option<Fsync>,
    /// An outbox whose oldest entry is older than this is named on `/ready` (no relay is keeping
    /// up): `30s`, `15m`, `1h` or `off` [default: 60s].
    #[arg(long, env = "FLYRTECH_OUTBOX_STALE_AFTER", value_parser = parse_age)]
    pub outbox_stale_after: Option<MaxAge>,
    /// Outbox entries beyond which journey updates are refused with 503 `outbox-full` until a
    /// relay catches up, so the outbox cannot fill Redis; 0 turns the cap off
    /// [default: 5000000].
    #[arg(long, env = "FLYRTECH_OUTBOX_HARD_CAP")]
    pub outbox_hard_cap: Option<u64>,
    /// The API keys file (`flyrtech api-key new`): requests need `Authorization: Bearer <key>`
    /// with the route's scope. Without it the service runs unauthenticated, on a loopback
    /// address only.
    #[arg(long, env = "FLYRTECH_API_KEYS")]
    pub api_keys: Option<PathBuf>,
    /// With `--api-keys`: reads need no key (writes and /metrics still do).
    #[arg(long)]
    pub open_reads: bool,
    /// Serve without API keys on an address other machines can reach.
    #[arg(long)]
    pub insecure_no_auth: bool,
    /// `off` removes the cache routes [default: on].
    #[arg(long, value_parser = ["on", "off"])]
    pub cache: Option<String>,
    /// Largest cache value in bytes (413 beyond) [default: 65536].
    #[arg(long)]
    pub cache_max_value_bytes: Option<usize>,
    /// Time to live of a cache entry set without `expirationSeconds` [default: 1h].
    #[arg(long, value_parser = parse_age)]
    pub cache_default_ttl: Option<MaxAge>,
    /// Longest `expirationSeconds` accepted [default: 1d].
    #[arg(long, value_parser = parse_age)]
    pub cache_max_ttl: Option<MaxAge>,
    /// Entries the cache may hold; a new key beyond is answered 507 [default: 10000].
    #[arg(long)]
    pub cache_max_entries: Option<u64>,
    /// Requests a second each client (API key, or address without one) may send on average;
    /// `off` for no limit (benchmarks) [default: 1000].
    #[arg(long, env = "FLYRTECH_RATE_LIMIT")]
    pub rate_limit: Option<String>,
    /// Requests a client may send at once above its rate [default: twice the rate].
    #[arg(long)]
    pub rate_burst: Option<u32>,
    /// Clients the rate limit tracks at most; past them, new clients share one budget
    /// [default: 100000].
    #[arg(long)]
    pub rate_clients: Option<usize>,
    /// Reverse proxies (networks or addresses, comma-separated) whose `Forwarded` or
    /// `X-Forwarded-For` names the client's address; anyone else's is ignored [default: none].
    #[arg(long, env = "FLYRTECH_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// Largest journey document `POST /api/journeys` stores, in bytes (413 beyond) [default: 65536].
    #[arg(long)]
    pub max_journey_bytes: Option<usize>,
    /// Longest a connection may take to send a request's headers, from when it starts waiting
    /// for them (also bounds an idle keep-alive connection) [default: 10000].
    #[arg(long)]
    pub header_timeout_ms: Option<u64>,
    /// Longest a connection may stay open with no request in flight [default: 60000].
    #[arg(long)]
    pub idle_timeout_ms: Option<u64>,
    /// Connections held open at once; one more is closed at once [default: 10000].
    #[arg(long, env = "FLYRTECH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Longest shutdown waits for requests in flight before closing what is left [default: 10000].
    #[arg(long)]
    pub shutdown_grace_ms: Option<u64>,
    /// Journeys one client (API key, or address without one) may create; `off` for no ceiling
    /// [default: 100000].
    #[arg(long)]
    pub quota_journeys: Option<String>,
    /// Cache entries one client's writes may hold [default: a tenth of --cache-max-entries].
    #[arg(long)]
    pub quota_cache_entries: Option<u64>,
    /// The share of --outbox-hard-cap one client's changes may hold waiting for the relay,
    /// above 0 and at most 1; `off` for none [default: 0.25].
    #[arg(long)]
    pub quota_outbox_share: Option<String>,
}

/// A duration flag that may be `off` (`--bus-max-age`, `--outbox-stale-after`).
#[derive(Debug, Clone, Copy)]
pub struct MaxAge(pub Option<Duration>);

/// Parses `30s`, `15m`, `24h`, `7d` or `off`.
pub fn parse_age(raw: &str) -> Result<MaxAge, String> {
    if raw.eq_ignore_ascii_case("off") {
        return Ok(MaxAge(None));
    }
    let split = raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len());
    let (digits, unit) = raw.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration such as 30s, 15m, 24h, 7d or off"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{raw:?}: the unit is s, m, h or d")),
    };
    if n == 0 {
        return Err("a duration of zero is not allowed; use off instead".into());
    }
    Ok(MaxAge(Some(Duration::from_secs(n.saturating_mul(seconds)))))
}

/// The file layer: every key optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub redis_url: Option<String>,
    pub redis_ca: Option<PathBuf>,
    pub strategy: Option<String>,
    pub processing_delay_ms: Option<u64>,
    pub lock_urls: Option<Vec<String>>,
    pub listen: Option<SocketAddr>,
    pub seed_file: Option<PathBuf>,
    pub request_timeout_ms: Option<u64>,
    pub data_dir: Option<PathBuf>,
    pub fsync: Option<String>,
    pub allow_eviction: Option<bool>,
    pub wait_replicas: Option<u32>,
    pub wait_timeout_ms: Option<u64>,
    pub outbox_stale_after: Option<String>,
    pub outbox_hard_cap: Option<u64>,
    pub api_keys: Option<PathBuf>,
    pub open_reads: Option<bool>,
    pub insecure_no_auth: Option<bool>,
    pub cache: Option<String>,
    pub cache_max_value_bytes: Option<usize>,
    pub cache_default_ttl: Option<String>,
    pub cache_max_ttl: Option<String>,
    pub cache_max_entries: Option<u64>,
    pub rate_limit: Option<String>,
    pub rate_burst: Option<u32>,
    pub rate_clients: Option<usize>,
    pub trusted_proxies: Option<String>,
    pub max_journey_bytes: Option<usize>,
    pub quota_journeys: Option<toml::Value>,
    pub quota_cache_entries: Option<u64>,
    pub quota_outbox_share: Option<toml::Value>,
    pub header_timeout_ms: Option<u64>,
    pub idle_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
    pub shutdown_grace_ms: Option<u64>,
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
const SECRET_KEYS: [&str; 4] = ["redis_url", "lock_urls", "bus_url", "postgres_url"];

/// Where a TOML error is and what it says, without quoting the file: toml's own `Display`
/// prints the offending line, which for `redis_url = "redis://:pw@host` is the password.
fn parse_reason(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return flyrtech_infrastructure::plumbing::secret::redact_text(error.message());
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    let secret = SECRET_KEYS
        .iter()
        .find(|key| line_text.trim_start().starts_with(**key));
    match secret {
        Some(key) => format!(
            "line {line}, column {column}: the value of {key} is not valid (not shown: it may \
             hold a password)"
        ),
        None => format!(
            "line {line}, column {column}: {}",
            flyrtech_infrastructure::plumbing::secret::redact_text(error.message())
        ),
    }
}

/// How long an update waits for its replicas unless told otherwise.
const DEFAULT_WAIT_TIMEOUT_MS: u64 = 500;

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
    /// The file layer, for subcommand settings merged later ([`ServeSettings`]).
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
        let strategy = args
            .strategy
            .as_deref()
            .or(file.strategy.as_deref())
            .map(str::parse)
            .transpose()?;
        let lock_urls = args
            .lock_urls
            .clone()
            .or_else(|| file.lock_urls.clone())
            .unwrap_or_default();
        let wait_timeout = Duration::from_millis(
            args.wait_timeout_ms
                .or(file.wait_timeout_ms)
                .unwrap_or(DEFAULT_WAIT_TIMEOUT_MS),
        );
        if wait_timeout.is_zero() || wait_timeout >= Duration::from_millis(1000) {
            return Err(ConfigError::Value {
                key: "wait_timeout_ms",
                reason: "must be between 1 and 999: a longer WAIT outlives the 1000 ms command \
                         timeout"
                    .into(),
            });
        }
        let replicas = match args.wait_replicas.or(file.wait_replicas) {
            None | Some(0) => None,
            Some(replicas) => Some(ReplicaWait {
                replicas,
                timeout: wait_timeout,
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
const SAMPLE_JOURNEYS: &str = include_str!("../../../data/journeys.json");

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

/// `serve`'s own settings, merged like the common ones.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    pub listen: SocketAddr,
    pub seed: Seed,
    pub request_timeout: Duration,
    /// The private redis-server's data directory.
    pub data_dir: PathBuf,
    /// The private redis-server's AOF fsync policy.
    pub fsync: Fsync,
    /// When the outbox's backlog is named on `/ready`, and when writes stop.
    pub backlog: BacklogLimits,
    /// The API keys file, if any.
    pub api_keys: Option<PathBuf>,
    /// Reads need no key.
    pub open_reads: bool,
    /// No keys on a non-loopback address is allowed.
    pub insecure_no_auth: bool,
    /// What the cache accepts, and whether it is served.
    pub cache: CacheLimits,
    /// Requests per client; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Each client's share of the journeys and the outbox (its cache share is in `cache`).
    pub quotas: QuotaLimits,
    /// Whose forwarding headers name the client's address.
    pub trusted_proxies: TrustedProxies,
    /// Largest journey document created, in bytes.
    pub max_journey_bytes: usize,
    /// Timeouts and the cap on connections.
    pub connections: Connections,
}

impl ServeSettings {
    /// The original's address.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);

    /// Where the private redis-server keeps its data unless told otherwise.
    pub const DEFAULT_DATA_DIR: &'static str = "flyrtech-data";

    /// Merges `serve`'s flags (and their variables) over the file layer.
    ///
    /// # Errors
    /// [`ConfigError::Value`] for an `fsync` in the file that is neither policy.
    pub fn resolve(args: &ServeArgs, file: &FileConfig) -> Result<Self, ConfigError> {
        let seed = if args.no_seed {
            Seed::Nothing
        } else {
            args.seed_file
                .clone()
                .or_else(|| file.seed_file.clone())
                .map_or(Seed::Sample, Seed::File)
        };
        let fsync = match (args.fsync, file.fsync.as_deref()) {
            (Some(flag), _) => flag,
            (None, Some(text)) => text.parse().map_err(|reason| ConfigError::Value {
                key: "fsync",
                reason,
            })?,
            (None, None) => Fsync::default(),
        };
        let defaults = BacklogLimits::default();
        let stale_after = match (args.outbox_stale_after, file.outbox_stale_after.as_deref()) {
            (Some(flag), _) => flag,
            (None, Some(text)) => parse_age(text).map_err(|reason| ConfigError::Value {
                key: "outbox_stale_after",
                reason,
            })?,
            (None, None) => MaxAge(Some(defaults.stale_after)),
        };
        let hard_cap = args
            .outbox_hard_cap
            .or(file.outbox_hard_cap)
            .unwrap_or(BacklogLimits::DEFAULT_HARD_CAP);
        let backlog = BacklogLimits {
            stale_after: stale_after.0.unwrap_or(Duration::MAX),
            hard_cap: (hard_cap > 0).then_some(hard_cap),
            ..defaults
        };
        let cache = cache_limits(args, file)?;
        let rate_clients = args
            .rate_clients
            .or(file.rate_clients)
            .unwrap_or(crate::http::limit::DEFAULT_MAX_CLIENTS);
        if rate_clients == 0 {
            return Err(ConfigError::Value {
                key: "rate_clients",
                reason: "must be at least 1".into(),
            });
        }
        let trusted_proxies = match args
            .trusted_proxies
            .as_deref()
            .or(file.trusted_proxies.as_deref())
        {
            None => TrustedProxies::default(),
            Some(text) => text.parse().map_err(|reason| ConfigError::Value {
                key: "trusted_proxies",
                reason,
            })?,
        };
        let connections = connections(args, file)?;
        let rate_limit = match args.rate_limit.as_deref().or(file.rate_limit.as_deref()) {
            Some("off") => None,
            None => Some(RateLimit {
                max_clients: rate_clients,
                ..RateLimit::default()
            }),
            Some(text) => {
                let per_second: u32 =
                    text.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| ConfigError::Value {
                            key: "rate_limit",
                            reason: format!("{text:?} is neither a positive number nor off"),
                        })?;
                let burst = args
                    .rate_burst
                    .or(file.rate_burst)
                    .unwrap_or(per_second.saturating_mul(2));
                if burst == 0 {
                    return Err(ConfigError::Value {
                        key: "rate_burst",
                        reason: "must be at least 1".into(),
                    });
                }
                Some(RateLimit {
                    per_second,
                    burst,
                    max_clients: rate_clients,
                })
            }
        };
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(Self::DEFAULT_LISTEN),
            seed,
            request_timeout: Duration::from_millis(
                args.request_timeout_ms
                    .or(file.request_timeout_ms)
                    .unwrap_or(10_000),
            ),
            data_dir: args
                .data_dir
                .clone()
                .or_else(|| file.data_dir.clone())
                .unwrap_or_else(|| PathBuf::from(Self::DEFAULT_DATA_DIR)),
            fsync,
            backlog,
            api_keys: args.api_keys.clone().or_else(|| file.api_keys.clone()),
            open_reads: args.open_reads || file.open_reads.unwrap_or(false),
            insecure_no_auth: args.insecure_no_auth || file.insecure_no_auth.unwrap_or(false),
            cache,
            rate_limit,
            quotas: QuotaLimits {
                journeys: quota_journeys(args, file)?,
                outbox_share: quota_outbox_share(args, file)?,
                max_clients: rate_clients,
            },
            trusted_proxies,
            max_journey_bytes: positive(
                "max_journey_bytes",
                args.max_journey_bytes.or(file.max_journey_bytes),
                crate::http::DEFAULT_MAX_JOURNEY_BYTES,
            )?,
            connections,
        })
    }
}

/// A setting that is a number or `off`, from the flag or else the file (where it may be a TOML
/// number or a string).
fn number_or_off(flag: Option<&str>, file: Option<&toml::Value>) -> Option<String> {
    flag.map(str::to_owned).or_else(|| {
        file.map(|value| match value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(n) => n.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => format!("a {}", other.type_str()),
        })
    })
}

/// `--quota-journeys`: a positive count or `off`.
fn quota_journeys(args: &ServeArgs, file: &FileConfig) -> Result<Option<u64>, ConfigError> {
    match number_or_off(args.quota_journeys.as_deref(), file.quota_journeys.as_ref()).as_deref() {
        None => Ok(Some(JourneyQuota::DEFAULT_LIMIT)),
        Some("off") => Ok(None),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Some(n)),
            _ => Err(ConfigError::Value {
                key: "quota_journeys",
                reason: format!("{text:?} is neither a positive whole number nor off"),
            }),
        },
    }
}

/// `--quota-outbox-share`: a fraction above 0 and at most 1, or `off`.
fn quota_outbox_share(args: &ServeArgs, file: &FileConfig) -> Result<Option<f64>, ConfigError> {
    match number_or_off(
        args.quota_outbox_share.as_deref(),
        file.quota_outbox_share.as_ref(),
    )
    .as_deref()
    {
        None => Ok(Some(QuotaLimits::DEFAULT_OUTBOX_SHARE)),
        Some("off") => Ok(None),
        Some(text) => match text.parse::<f64>() {
            Ok(share) if share > 0.0 && share <= 1.0 => Ok(Some(share)),
            _ => Err(ConfigError::Value {
                key: "quota_outbox_share",
                reason: format!("{text:?} is neither a fraction above 0 and at most 1 nor off"),
            }),
        },
    }
}

/// `value`, or `default` when no layer sets it; zero is refused.
fn positive<T: PartialEq + Default>(
    key: &'static str,
    value: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    let value = value.unwrap_or(default);
    if value == T::default() {
        return Err(ConfigError::Value {
            key,
            reason: "must be at least 1".into(),
        });
    }
    Ok(value)
}

/// The connections' bounds: flags over the file over the defaults.
fn connections(args: &ServeArgs, file: &FileConfig) -> Result<Connections, ConfigError> {
    let defaults = Connections::default();
    let ms = |key, flag: Option<u64>, file: Option<u64>, default: Duration| {
        let ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
        positive(key, flag.or(file), ms).map(Duration::from_millis)
    };
    Ok(Connections {
        header_timeout: ms(
            "header_timeout_ms",
            args.header_timeout_ms,
            file.header_timeout_ms,
            defaults.header_timeout,
        )?,
        idle_timeout: ms(
            "idle_timeout_ms",
            args.idle_timeout_ms,
            file.idle_timeout_ms,
            defaults.idle_timeout,
        )?,
        max_connections: positive(
            "max_connections",
            args.max_connections.or(file.max_connections),
            defaults.max_connections,
        )?,
        shutdown_grace: ms(
            "shutdown_grace_ms",
            args.shutdown_grace_ms,
            file.shutdown_grace_ms,
            defaults.shutdown_grace,
        )?,
    })
}

/// The cache's limits: flags over the file over the defaults.
fn cache_limits(args: &ServeArgs, file: &FileConfig) -> Result<CacheLimits, ConfigError> {
    let defaults = CacheLimits::default();
    let duration = |flag: Option<MaxAge>,
                    text: Option<&str>,
                    key: &'static str,
                    default: Duration|
     -> Result<Duration, ConfigError> {
        let age = match (flag, text) {
            (Some(flag), _) => flag,
            (None, Some(text)) => {
                parse_age(text).map_err(|reason| ConfigError::Value { key, reason })?
            }
            (None, None) => return Ok(default),
        };
        age.0.ok_or_else(|| ConfigError::Value {
            key,
            reason: "must be a duration; off is not allowed".into(),
        })
    };
    let enabled = match args.cache.as_deref().or(file.cache.as_deref()) {
        None | Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(ConfigError::Value {
                key: "cache",
                reason: format!("{other:?} is neither on nor off"),
            });
        }
    };
    let max_entries = args
        .cache_max_entries
        .or(file.cache_max_entries)
        .unwrap_or(defaults.max_entries);
    let limits = CacheLimits {
        enabled,
        max_value_bytes: args
            .cache_max_value_bytes
            .or(file.cache_max_value_bytes)
            .unwrap_or(defaults.max_value_bytes),
        default_ttl: duration(
            args.cache_default_ttl,
            file.cache_default_ttl.as_deref(),
            "cache_default_ttl",
            defaults.default_ttl,
        )?,
        max_ttl: duration(
            args.cache_max_ttl,
            file.cache_max_ttl.as_deref(),
            "cache_max_ttl",
            defaults.max_ttl,
        )?,
        max_entries,
        max_entries_per_client: args
            .quota_cache_entries
            .or(file.quota_cache_entries)
            .unwrap_or((max_entries / 10).max(1)),
    };
    if limits.default_ttl > limits.max_ttl {
        return Err(ConfigError::Value {
            key: "cache_default_ttl",
            reason: "is longer than cache_max_ttl".into(),
        });
    }
    if limits.max_entries_per_client == 0 {
        return Err(ConfigError::Value {
            key: "quota_cache_entries",
            reason: "must be at least 1".into(),
        });
    }
    if limits.max_entries == 0 || limits.max_value_bytes == 0 {
        return Err(ConfigError::Value {
            key: "cache_max_entries",
            reason: "the cache's limits must be at least 1 (use --cache off for no cache)".into(),
        });
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(config: Option<PathBuf>, strategy: Option<&str>, delay: Option<u64>) -> CommonArgs {
        CommonArgs {
            config,
            redis_url: None,
            redis_ca: None,
            strategy: strategy.map(str::to_owned),
            processing_delay_ms: delay,
            lock_urls: None,
            allow_eviction: false,
            wait_replicas: None,
            wait_timeout_ms: None,
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
        let err = Settings::resolve(&args(None, Some("fast"), None)).expect_err("unknown strategy");
        assert!(
            err.to_string()
                .contains("valid strategies: naive, local-lock"),
            "{err}"
        );
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
            ("listen = \"redis://:Sl/ash?Pw#991@h:1\"\n", "line 1"),
        ] {
            let f = file(text);
            let err = Settings::resolve(&args(Some(f.path().to_owned()), None, None))
                .expect_err("a bad file");
            let shown = format!("{err:#}");
            assert!(!shown.contains("Pw#991"), "{shown}");
            assert!(shown.contains(expected), "{shown}");
        }
    }

    #[test]
    fn serve_settings_layer_and_the_sample_seed_parses() {
        let f = file("listen = \"127.0.0.1:6000\"\nrequest_timeout_ms = 250\n");
        let settings =
            Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("file");
        let serve_args = ServeArgs::default();
        let serve = ServeSettings::resolve(&serve_args, &settings.file).expect("serve settings");
        assert_eq!(serve.listen.port(), 6000);
        assert_eq!(serve.request_timeout, Duration::from_millis(250));
        assert_eq!(serve.seed, Seed::Sample);
        let sample = serve.seed.load().expect("the built-in sample parses");
        assert!(sample.iter().any(|j| j.id.as_str() == "JRN-001"));
        let no_seed = ServeArgs {
            no_seed: true,
            ..serve_args
        };
        assert_eq!(
            ServeSettings::resolve(&no_seed, &settings.file)
                .expect("serve settings")
                .seed,
            Seed::Nothing
        );
        assert_eq!(
            serve.data_dir,
            PathBuf::from(ServeSettings::DEFAULT_DATA_DIR)
        );
        assert_eq!(serve.fsync, Fsync::EverySec);
        let f = file("data_dir = \"/var/lib/flyrtech\"\nfsync = \"always\"\n");
        let settings =
            Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("file");
        let serve = ServeSettings::resolve(&no_seed, &settings.file).expect("serve settings");
        assert_eq!(
            (serve.data_dir, serve.fsync),
            (PathBuf::from("/var/lib/flyrtech"), Fsync::Always)
        );
        let f = file("fsync = \"sometimes\"\n");
        let settings =
            Settings::resolve(&args(Some(f.path().to_owned()), None, None)).expect("file");
        let err = ServeSettings::resolve(&no_seed, &settings.file).expect_err("bad fsync");
        assert!(err.to_string().contains("fsync"), "{err}");
        let missing = Seed::File(PathBuf::from("/nonexistent/journeys.json"));
        assert!(matches!(missing.load(), Err(ConfigError::SeedRead { .. })));
    }

    #[test]
    fn quotas_come_from_flags_over_the_file_with_off_and_clear_errors() {
        let defaults = ServeSettings::resolve(&ServeArgs::default(), &FileConfig::default())
            .expect("defaults");
        assert_eq!(defaults.quotas.journeys, Some(JourneyQuota::DEFAULT_LIMIT));
        assert_eq!(
            defaults.quotas.outbox_share,
            Some(QuotaLimits::DEFAULT_OUTBOX_SHARE)
        );
        assert_eq!(defaults.cache.max_entries_per_client, 1000);

        let file: FileConfig = toml::from_str(
            "quota_journeys = 50\nquota_outbox_share = 0.5\ncache_max_entries = 30\n",
        )
        .expect("toml");
        let from_file = ServeSettings::resolve(&ServeArgs::default(), &file).expect("file");
        assert_eq!(from_file.quotas.journeys, Some(50));
        assert_eq!(from_file.quotas.outbox_share, Some(0.5));
        // A tenth of the cache unless set.
        assert_eq!(from_file.cache.max_entries_per_client, 3);

        let flags = ServeArgs {
            quota_journeys: Some("off".into()),
            quota_outbox_share: Some("off".into()),
            quota_cache_entries: Some(7),
            ..ServeArgs::default()
        };
        let off = ServeSettings::resolve(&flags, &file).expect("flags");
        assert_eq!((off.quotas.journeys, off.quotas.outbox_share), (None, None));
        assert_eq!(off.cache.max_entries_per_client, 7);

        for (args, key) in [
            (
                ServeArgs {
                    quota_journeys: Some("0".into()),
                    ..ServeArgs::default()
                },
                "quota_journeys",
            ),
            (
                ServeArgs {
                    quota_outbox_share: Some("1.5".into()),
                    ..ServeArgs::default()
                },
                "quota_outbox_share",
            ),
            (
                ServeArgs {
                    quota_outbox_share: Some("0".into()),
                    ..ServeArgs::default()
                },
                "quota_outbox_share",
            ),
            (
                ServeArgs {
                    quota_cache_entries: Some(0),
                    ..ServeArgs::default()
                },
                "quota_cache_entries",
            ),
        ] {
            let err = ServeSettings::resolve(&args, &FileConfig::default()).expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }
        let bad: FileConfig = toml::from_str("quota_journeys = true\n").expect("toml");
        let err = ServeSettings::resolve(&ServeArgs::default(), &bad).expect_err("a boolean");
        assert!(err.to_string().contains("boolean"), "{err}");
    }

    #[test]
    fn the_outbox_limits_come_from_flags_over_the_file_and_zero_turns_the_cap_off() {
        let mut args = ServeArgs::default();
        let defaults = ServeSettings::resolve(&args, &FileConfig::default()).expect("defaults");
        assert_eq!(defaults.backlog.stale_after, Duration::from_secs(60));
        assert_eq!(
            defaults.backlog.hard_cap,
            Some(BacklogLimits::DEFAULT_HARD_CAP)
        );

        let file: FileConfig =
            toml::from_str("outbox_stale_after = \"5m\"\noutbox_hard_cap = 0\n").expect("toml");
        let from_file = ServeSettings::resolve(&args, &file).expect("file");
        assert_eq!(from_file.backlog.stale_after, Duration::from_secs(300));
        assert_eq!(from_file.backlog.hard_cap, None);

        args.outbox_stale_after = Some(parse_age("off").expect("off"));
        args.outbox_hard_cap = Some(1000);
        let flags = ServeSettings::resolve(&args, &file).expect("flags");
        assert_eq!(flags.backlog.stale_after, Duration::MAX);
        assert_eq!(flags.backlog.hard_cap, Some(1000));

        let bad: FileConfig = toml::from_str("outbox_stale_after = \"soon\"\n").expect("toml");
        args.outbox_stale_after = None;
        let refused = ServeSettings::resolve(&args, &bad).expect_err("a bad duration");
        assert!(
            refused.to_string().contains("outbox_stale_after"),
            "{refused}"
        );
    }
}
