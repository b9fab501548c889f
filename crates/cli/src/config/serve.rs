//! `serve`'s options ([`ServeArgs`], also the file's `[serve]` table) and the one settings type
//! it runs with ([`ServeSettings`]). Every default is written once, on the settings type it
//! configures, and read from there by the option (and so by `--help`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use flyrtech_infrastructure::events::backlog::BacklogLimits;
use flyrtech_infrastructure::store::cache::CacheLimits;
use flyrtech_infrastructure::store::quota::JourneyQuota;
use flyrtech_infrastructure::{Fsync, LockSettings, StoreConfig, Strategy};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::values::{MaxAge, OrOff, Switch, parse_age, text};
use super::{ConfigError, Seed, Settings};
use crate::deployment::Private;

/// The strategy `serve` (and the commands that read its dataset) use when none is configured:
/// atomic, fast, and it keeps the original's document layout (docs/strategies.md).
pub const DEFAULT_SERVE_STRATEGY: Strategy = Strategy::Lua;

/// Options of `flyrtech serve`, and its `[serve]` table. Each default is read from the settings
/// type it configures; an option without one is worked out from others (its help says how).
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub struct ServeArgs {
    /// Address to listen on (the original's port).
    #[arg(long, env = "FLYRTECH_LISTEN", default_value_t = ServeSettings::DEFAULT_LISTEN)]
    pub listen: SocketAddr,
    /// A JSON file of journeys (`{"journeys": [...]}`) created at start-up when they do not
    /// exist; existing journeys are never overwritten [default: the sample journeys of
    /// data/journeys.json, built into the binary].
    #[arg(long, env = "FLYRTECH_SEED_FILE")]
    pub seed_file: Option<PathBuf>,
    /// Create no journeys at start-up.
    #[arg(long, conflicts_with = "seed_file")]
    pub no_seed: bool,
    /// Longest a request may take before it is answered 503, in milliseconds.
    #[arg(long, env = "FLYRTECH_REQUEST_TIMEOUT_MS",
          default_value_t = millis(ServeSettings::DEFAULT_REQUEST_TIMEOUT))]
    pub request_timeout_ms: u64,
    /// Start a private 3-master cluster instead of one server (when no Redis URL is set). It
    /// keeps nothing on disk: a development convenience.
    #[arg(long)]
    pub cluster: bool,
    /// Where the private redis-server keeps its data (AOF) when no Redis URL is set, from the
    /// working directory.
    #[arg(long, env = "FLYRTECH_DATA_DIR", default_value = ServeSettings::DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// When the private redis-server makes its AOF durable: `everysec` (a crash of any process
    /// loses nothing acknowledged) or `always` (not even an OS crash does).
    #[arg(long, env = "FLYRTECH_FSYNC", default_value_t = Fsync::default())]
    #[serde(with = "text")]
    pub fsync: Fsync,
    /// An outbox whose oldest entry is older than this is named on `/ready` (no relay is keeping
    /// up): `30s`, `15m`, `1h` or `off`.
    #[arg(long, env = "FLYRTECH_OUTBOX_STALE_AFTER", value_parser = parse_age,
          default_value_t = MaxAge(Some(BacklogLimits::default().stale_after)))]
    pub outbox_stale_after: MaxAge,
    /// Outbox entries beyond which journey updates are refused with 503 `outbox-full` until a
    /// relay catches up, so the outbox cannot fill Redis; 0 turns the cap off.
    #[arg(long, env = "FLYRTECH_OUTBOX_HARD_CAP", default_value_t = BacklogLimits::DEFAULT_HARD_CAP)]
    pub outbox_hard_cap: u64,
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
    /// `off` removes the cache routes.
    #[arg(long, default_value_t = Switch::On)]
    pub cache: Switch,
    /// Largest cache value in bytes (413 beyond).
    #[arg(long, default_value_t = CacheLimits::default().max_value_bytes)]
    pub cache_max_value_bytes: usize,
    /// Time to live of a cache entry set without `expirationSeconds`.
    #[arg(long, value_parser = parse_age,
          default_value_t = MaxAge(Some(CacheLimits::default().default_ttl)))]
    pub cache_default_ttl: MaxAge,
    /// Longest `expirationSeconds` accepted.
    #[arg(long, value_parser = parse_age,
          default_value_t = MaxAge(Some(CacheLimits::default().max_ttl)))]
    pub cache_max_ttl: MaxAge,
    /// Entries the cache may hold; a new key beyond is answered 507.
    #[arg(long, default_value_t = CacheLimits::default().max_entries)]
    pub cache_max_entries: u64,
    /// Requests a second each client (API key, or address without one) may send on average;
    /// `off` for no limit (benchmarks).
    #[arg(long, env = "FLYRTECH_RATE_LIMIT",
          default_value_t = OrOff::On(RateLimit::default().per_second))]
    pub rate_limit: OrOff<u32>,
    /// Requests a client may send at once above its rate [default: twice the rate].
    #[arg(long)]
    pub rate_burst: Option<u32>,
    /// Clients the rate limit tracks at most; past them, new clients share one budget.
    #[arg(long, default_value_t = RateLimit::DEFAULT_MAX_CLIENTS)]
    pub rate_clients: usize,
    /// Reverse proxies (networks or addresses, comma-separated) whose `Forwarded` or
    /// `X-Forwarded-For` names the client's address; anyone else's is ignored [default: none].
    #[arg(long, env = "FLYRTECH_TRUSTED_PROXIES")]
    #[serde(with = "text::option")]
    pub trusted_proxies: Option<TrustedProxies>,
    /// Largest journey document `POST /api/journeys` stores, in bytes (413 beyond).
    #[arg(long, default_value_t = ServeSettings::DEFAULT_MAX_JOURNEY_BYTES)]
    pub max_journey_bytes: usize,
    /// Longest a connection may go with no request in flight (sending a request's headers, or
    /// idle after a response) before it is dropped, in milliseconds.
    #[arg(long, default_value_t = millis(Connections::default().header_timeout))]
    pub header_timeout_ms: u64,
    /// Longest a connection may stay open with no request in flight, closed gracefully, in
    /// milliseconds; it acts only when below `--header-timeout-ms`, which otherwise drops an
    /// idle connection first (to the server, waiting for the next request is waiting for a head).
    #[arg(long, default_value_t = millis(Connections::default().idle_timeout))]
    pub idle_timeout_ms: u64,
    /// Connections held open at once; one more is closed at once.
    #[arg(long, env = "FLYRTECH_MAX_CONNECTIONS",
          default_value_t = Connections::default().max_connections)]
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64 counts as one) may hold at once; one more
    /// from it is closed at once, while other addresses are served. `--trusted-proxies` are
    /// exempt [default: a twentieth of --max-connections, at least 8].
    #[arg(long)]
    pub max_connections_per_client: Option<usize>,
    /// Longest shutdown waits for requests in flight before closing what is left, in
    /// milliseconds.
    #[arg(long, default_value_t = millis(Connections::default().shutdown_grace))]
    pub shutdown_grace_ms: u64,
    /// Journeys one client (API key, or address without one) may create; `off` for no ceiling.
    #[arg(long, default_value_t = OrOff::On(JourneyQuota::DEFAULT_LIMIT))]
    pub quota_journeys: OrOff<u64>,
    /// Cache entries one client's writes may hold [default: a hundredth of --cache-max-entries,
    /// at least one].
    #[arg(long)]
    pub quota_cache_entries: Option<u64>,
    /// The share of --outbox-hard-cap one client's changes may hold waiting for the relay,
    /// above 0 and at most 1; `off` for none.
    #[arg(long, default_value_t = OrOff::On(QuotaLimits::DEFAULT_OUTBOX_SHARE))]
    pub quota_outbox_share: OrOff<f64>,
}

/// A duration in whole milliseconds, as the `_ms` options take it.
pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Everything `serve` runs with, merged once from the layers ([`ServeSettings::resolve`]) and
/// handed whole to `crate::http::Application::build`. Its `Default` is every default.
#[derive(Debug, Clone)]
pub struct ServeSettings {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// The Redis deployment the layers name (one URL, or comma-separated cluster seeds);
    /// `None`: `serve` starts [`ServeSettings::private`].
    pub redis_url: Option<String>,
    /// The private redis-server started without a URL.
    pub private: Private,
    /// PEM file of the authorities a `rediss://` server must chain to; `None`: the system's.
    pub redis_ca: Option<PathBuf>,
    /// The strategy and its knobs.
    pub store: StoreConfig,
    /// Serve even though Redis' maxmemory-policy can evict journeys.
    pub allow_eviction: bool,
    /// Journeys created at start-up when they do not exist yet.
    pub seed: Seed,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
    /// Largest journey document `POST /api/journeys` stores, in bytes (413 beyond).
    pub max_journey_bytes: usize,
    /// Header and idle timeouts, the connection cap, the shutdown grace.
    pub connections: Connections,
    /// Whose `Forwarded` / `X-Forwarded-For` name the client's address.
    pub trusted_proxies: TrustedProxies,
    /// When the outbox's backlog is named on `/ready`, and when updates stop.
    pub backlog: BacklogLimits,
    /// The API keys file; `None`: no keys, loopback only unless `insecure_no_auth`.
    pub api_keys: Option<PathBuf>,
    /// With keys: reads need none.
    pub open_reads: bool,
    /// Serve without keys on a non-loopback address.
    pub insecure_no_auth: bool,
    /// What the cache accepts, and whether it is served.
    pub cache: CacheLimits,
    /// Requests per client; `None` for no limit.
    pub rate_limit: Option<RateLimit>,
    /// Each client's share of the journeys and the outbox (its cache share is in `cache`).
    pub quotas: QuotaLimits,
}

impl ServeSettings {
    /// The original's address.
    pub const DEFAULT_LISTEN: SocketAddr =
        SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 5000);
    /// Where the private redis-server keeps its data unless told otherwise.
    pub const DEFAULT_DATA_DIR: &'static str = "flyrtech-data";
    /// The largest journey document stored unless configured otherwise: 64 KiB, about 250
    /// segments, where an update of a document strategy costs Redis well under a millisecond.
    pub const DEFAULT_MAX_JOURNEY_BYTES: usize = 64 * 1024;
    /// Longest a request takes unless configured otherwise.
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
    /// The largest request body: 1 MiB.
    pub const DEFAULT_BODY_LIMIT: usize = 1024 * 1024;

    /// What `serve`'s options `args` (already layered) mean, on the shared settings, checked.
    ///
    /// # Errors
    /// [`ConfigError::Value`] naming the setting whose value cannot work.
    pub fn resolve(args: &ServeArgs, common: &Settings) -> Result<Self, ConfigError> {
        let d = Self::default();
        let seed = match (&args.seed_file, args.no_seed) {
            (_, true) => Seed::Nothing,
            (Some(file), false) => Seed::File(file.clone()),
            (None, false) => Seed::Sample,
        };
        let private = if args.cluster {
            Private::Cluster
        } else {
            Private::Persistent {
                dir: args.data_dir.clone(),
                fsync: args.fsync,
            }
        };
        let backlog = BacklogLimits {
            stale_after: args.outbox_stale_after.0.unwrap_or(Duration::MAX),
            hard_cap: (args.outbox_hard_cap > 0).then_some(args.outbox_hard_cap),
            ..d.backlog
        };
        let rate_clients = positive("rate_clients", args.rate_clients)?;
        let rate_limit = match args.rate_limit {
            OrOff::Off => None,
            OrOff::On(per_second) => {
                let per_second = positive("rate_limit", per_second)?;
                Some(RateLimit {
                    per_second,
                    burst: positive(
                        "rate_burst",
                        args.rate_burst.unwrap_or(per_second.saturating_mul(2)),
                    )?,
                    max_clients: rate_clients,
                })
            }
        };
        let quotas = QuotaLimits {
            journeys: match args.quota_journeys {
                OrOff::Off => None,
                OrOff::On(n) => Some(positive("quota_journeys", n)?),
            },
            outbox_share: match args.quota_outbox_share {
                OrOff::Off => None,
                OrOff::On(share) if share > 0.0 && share <= 1.0 => Some(share),
                OrOff::On(share) => {
                    return Err(ConfigError::value(
                        "quota_outbox_share",
                        format!("{share} is not a fraction above 0 and at most 1"),
                    ));
                }
            },
            max_clients: rate_clients,
        };
        let mut store = StoreConfig::new(common.strategy.unwrap_or(DEFAULT_SERVE_STRATEGY));
        store.processing_delay = common.processing_delay.unwrap_or_default();
        store.lock = LockSettings {
            urls: common.lock_urls.clone(),
            ..LockSettings::default()
        };
        store.replicas = common.replicas;
        Ok(Self {
            listen: args.listen,
            redis_url: common.redis_url.clone(),
            private,
            redis_ca: common.redis_ca.clone(),
            store,
            allow_eviction: common.allow_eviction,
            seed,
            request_timeout: Duration::from_millis(args.request_timeout_ms),
            body_limit: d.body_limit,
            max_journey_bytes: positive("max_journey_bytes", args.max_journey_bytes)?,
            connections: connections(args)?,
            trusted_proxies: args.trusted_proxies.clone().unwrap_or_default(),
            backlog,
            api_keys: args.api_keys.clone(),
            open_reads: args.open_reads,
            insecure_no_auth: args.insecure_no_auth,
            cache: cache_limits(args)?,
            rate_limit,
            quotas,
        })
    }
}

impl Default for ServeSettings {
    fn default() -> Self {
        Self {
            listen: Self::DEFAULT_LISTEN,
            redis_url: None,
            private: Private::Persistent {
                dir: PathBuf::from(Self::DEFAULT_DATA_DIR),
                fsync: Fsync::default(),
            },
            redis_ca: None,
            store: StoreConfig::new(DEFAULT_SERVE_STRATEGY),
            allow_eviction: false,
            seed: Seed::Sample,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
            body_limit: Self::DEFAULT_BODY_LIMIT,
            max_journey_bytes: Self::DEFAULT_MAX_JOURNEY_BYTES,
            connections: Connections::default(),
            trusted_proxies: TrustedProxies::default(),
            backlog: BacklogLimits::default(),
            api_keys: None,
            open_reads: false,
            insecure_no_auth: false,
            cache: CacheLimits::default(),
            rate_limit: Some(RateLimit::default()),
            quotas: QuotaLimits::default(),
        }
    }
}

/// How many requests one client may send (`--rate-limit`, `--rate-burst`, `--rate-clients`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests a second.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
    /// Clients tracked at most; the rest share one budget.
    pub max_clients: usize,
}

impl RateLimit {
    /// Clients the limit (and the outbox share) track unless configured otherwise.
    pub const DEFAULT_MAX_CLIENTS: usize = 100_000;
}

impl Default for RateLimit {
    /// 1,000 a second, bursts of 2,000, per client, 100,000 clients tracked.
    fn default() -> Self {
        Self {
            per_second: 1000,
            burst: 2000,
            max_clients: Self::DEFAULT_MAX_CLIENTS,
        }
    }
}

/// The reverse proxies whose forwarding headers are believed (`--trusted-proxies`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl std::fmt::Display for TrustedProxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nets: Vec<String> = self.0.iter().map(IpNet::to_string).collect();
        f.write_str(&nets.join(","))
    }
}

impl std::str::FromStr for TrustedProxies {
    type Err = String;
    /// `10.0.0.0/8,192.0.2.7,::1`: networks or single addresses, comma-separated.
    fn from_str(raw: &str) -> Result<Self, String> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<IpNet>()
                    .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| format!("{s:?} is neither a network (10.0.0.0/8) nor an address"))
            })
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl TrustedProxies {
    /// Whether `addr` is one of the proxies.
    pub fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&addr))
    }
}

/// The quotas serve applies (`--quota-journeys`, `--quota-outbox-share`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuotaLimits {
    /// Journeys one client may create; `None` for no ceiling.
    pub journeys: Option<u64>,
    /// The fraction of the outbox's hard cap one client's waiting changes may hold (0 to 1);
    /// `None` for no share (then only the hard cap applies).
    pub outbox_share: Option<f64>,
    /// Clients the outbox share tracks at most.
    pub max_clients: usize,
}

impl QuotaLimits {
    /// The default outbox share: a quarter of the hard cap.
    pub const DEFAULT_OUTBOX_SHARE: f64 = 0.25;
}

impl Default for QuotaLimits {
    /// [`JourneyQuota::DEFAULT_LIMIT`] journeys, [`Self::DEFAULT_OUTBOX_SHARE`] of the outbox.
    fn default() -> Self {
        Self {
            journeys: Some(JourneyQuota::DEFAULT_LIMIT),
            outbox_share: Some(Self::DEFAULT_OUTBOX_SHARE),
            max_clients: RateLimit::DEFAULT_MAX_CLIENTS,
        }
    }
}

/// How connections are bounded (`--header-timeout-ms`, `--idle-timeout-ms`,
/// `--max-connections`, `--shutdown-grace-ms`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Connections {
    /// Longest a connection may go with no request in flight (from its start, and from each
    /// response) before it is dropped: it bounds a request head sent slowly and a keep-alive
    /// connection that sends nothing.
    pub header_timeout: Duration,
    /// Longest a connection may stay open with no request in flight.
    pub idle_timeout: Duration,
    /// Connections held at once; one more is closed at once.
    pub max_connections: usize,
    /// Connections one client address (an IPv6 /64) may hold at once; one more from it is
    /// closed at once. Trusted proxies are exempt.
    pub per_client: usize,
    /// Longest shutdown waits for requests in flight before it closes what is left.
    pub shutdown_grace: Duration,
}

impl Connections {
    /// A client's share of `max_connections` unless configured: a twentieth, at least 8 (a
    /// browser opens six), at most the cap. At the default cap, 500: one host cannot hold more
    /// than 5 % of what everyone shares.
    pub fn default_per_client(max_connections: usize) -> usize {
        (max_connections / 20).max(8).min(max_connections)
    }
}

impl Default for Connections {
    /// 10 s for a head, 60 s idle, 10,000 connections (the process' file limit is 20,000 here,
    /// and Redis needs some), 10 s to drain.
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            max_connections: 10_000,
            per_client: Self::default_per_client(10_000),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// `value`, refused when zero.
fn positive<T: PartialEq + Default>(key: &str, value: T) -> Result<T, ConfigError> {
    if value == T::default() {
        return Err(ConfigError::value(key, "must be at least 1"));
    }
    Ok(value)
}

/// The connections' bounds.
fn connections(args: &ServeArgs) -> Result<Connections, ConfigError> {
    let ms = |key, ms| positive(key, ms).map(Duration::from_millis);
    let max_connections = positive("max_connections", args.max_connections)?;
    Ok(Connections {
        header_timeout: ms("header_timeout_ms", args.header_timeout_ms)?,
        idle_timeout: ms("idle_timeout_ms", args.idle_timeout_ms)?,
        max_connections,
        per_client: positive(
            "max_connections_per_client",
            args.max_connections_per_client
                .unwrap_or(Connections::default_per_client(max_connections)),
        )?
        .min(max_connections),
        shutdown_grace: ms("shutdown_grace_ms", args.shutdown_grace_ms)?,
    })
}

/// The cache's limits.
fn cache_limits(args: &ServeArgs) -> Result<CacheLimits, ConfigError> {
    let duration = |value: MaxAge, key| {
        value
            .0
            .ok_or_else(|| ConfigError::value(key, "must be a duration; off is not allowed"))
    };
    let limits = CacheLimits {
        enabled: args.cache == Switch::On,
        max_value_bytes: args.cache_max_value_bytes,
        default_ttl: duration(args.cache_default_ttl, "cache_default_ttl")?,
        max_ttl: duration(args.cache_max_ttl, "cache_max_ttl")?,
        max_entries: args.cache_max_entries,
        max_entries_per_client: args
            .quota_cache_entries
            .unwrap_or(CacheLimits::default_per_client(args.cache_max_entries)),
    };
    if limits.default_ttl > limits.max_ttl {
        return Err(ConfigError::value(
            "cache_default_ttl",
            "is longer than cache_max_ttl",
        ));
    }
    if limits.max_entries_per_client == 0 {
        return Err(ConfigError::value(
            "quota_cache_entries",
            "must be at least 1",
        ));
    }
    if limits.max_entries == 0 || limits.max_value_bytes == 0 {
        return Err(ConfigError::value(
            "cache_max_entries",
            "the cache's limits must be at least 1 (use --cache off for no cache)",
        ));
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::{Command, parse};

    /// `serve` with the flags `argv` and the file `text`, resolved.
    fn resolve(argv: &[&str], text: &str) -> Result<ServeSettings, ConfigError> {
        match parse(&[&["serve"], argv].concat(), text)? {
            (Command::Serve(args), common) => ServeSettings::resolve(&args, &common),
            (other, _) => panic!("{other:?}"),
        }
    }

    /// The defaults the options read are the settings' own.
    #[test]
    fn no_option_set_is_the_default_settings() {
        let made = resolve(&[], "").expect("defaults");
        let d = ServeSettings::default();
        assert_eq!(
            (made.listen, made.request_timeout, made.max_journey_bytes),
            (d.listen, d.request_timeout, d.max_journey_bytes)
        );
        assert_eq!(
            (made.connections, made.rate_limit),
            (d.connections, d.rate_limit)
        );
        assert_eq!(
            (made.cache, made.quotas, made.backlog),
            (d.cache, d.quotas, d.backlog)
        );
        assert_eq!((made.private, made.seed), (d.private, d.seed));
    }

    #[test]
    fn serve_settings_layer_and_the_sample_seed_parses() {
        let serve = resolve(
            &[],
            "[serve]\nlisten = \"127.0.0.1:6000\"\nrequest_timeout_ms = 250\n",
        )
        .expect("serve settings");
        assert_eq!(serve.listen.port(), 6000);
        assert_eq!(serve.request_timeout, Duration::from_millis(250));
        assert_eq!(serve.seed, Seed::Sample);
        assert_eq!(serve.store.strategy, DEFAULT_SERVE_STRATEGY);
        let sample = serve.seed.load().expect("the built-in sample parses");
        assert!(sample.iter().any(|j| j.id.as_str() == "JRN-001"));
        let no_seed = ["--no-seed"];
        assert_eq!(resolve(&no_seed, "").expect("settings").seed, Seed::Nothing);
        assert_eq!(
            serve.private,
            Private::Persistent {
                dir: PathBuf::from(ServeSettings::DEFAULT_DATA_DIR),
                fsync: Fsync::EverySec
            }
        );
        let serve = resolve(
            &no_seed,
            "strategy = \"hash\"\n[serve]\ndata_dir = \"/var/lib/flyrtech\"\nfsync = \"always\"\n",
        )
        .expect("serve settings");
        assert_eq!(
            serve.private,
            Private::Persistent {
                dir: PathBuf::from("/var/lib/flyrtech"),
                fsync: Fsync::Always
            }
        );
        assert_eq!(serve.store.strategy, Strategy::Hash);
        let err = resolve(&no_seed, "[serve]\nfsync = \"sometimes\"\n").expect_err("bad fsync");
        assert!(err.to_string().contains("fsync"), "{err}");
        let missing = Seed::File(PathBuf::from("/nonexistent/journeys.json"));
        assert!(matches!(missing.load(), Err(ConfigError::SeedRead { .. })));
    }

    #[test]
    fn quotas_come_from_flags_over_the_file_with_off_and_clear_errors() {
        let defaults = resolve(&[], "").expect("defaults");
        assert_eq!(defaults.quotas.journeys, Some(JourneyQuota::DEFAULT_LIMIT));
        assert_eq!(
            defaults.quotas.outbox_share,
            Some(QuotaLimits::DEFAULT_OUTBOX_SHARE)
        );
        assert_eq!(defaults.cache.max_entries_per_client, 100);

        let text =
            "[serve]\nquota_journeys = 50\nquota_outbox_share = 0.5\ncache_max_entries = 30\n";
        let from_file = resolve(&[], text).expect("file");
        assert_eq!(from_file.quotas.journeys, Some(50));
        assert_eq!(from_file.quotas.outbox_share, Some(0.5));
        // A hundredth of the cache unless set, at least one.
        assert_eq!(from_file.cache.max_entries_per_client, 1);

        let flags = [
            "--quota-journeys=off",
            "--quota-outbox-share=off",
            "--quota-cache-entries=7",
        ];
        let off = resolve(&flags, text).expect("flags");
        assert_eq!((off.quotas.journeys, off.quotas.outbox_share), (None, None));
        assert_eq!(off.cache.max_entries_per_client, 7);

        for (flag, key) in [
            ("--quota-journeys=0", "quota_journeys"),
            ("--quota-outbox-share=1.5", "quota_outbox_share"),
            ("--quota-outbox-share=0", "quota_outbox_share"),
            ("--quota-cache-entries=0", "quota_cache_entries"),
            ("--rate-limit=0", "rate_limit"),
        ] {
            let err = resolve(&[flag], "").expect_err(key);
            assert!(err.to_string().contains(key), "{err}");
        }
        let err = resolve(&[], "[serve]\nquota_journeys = true\n").expect_err("a boolean");
        let shown = err.to_string();
        assert!(shown.contains("found bool true"), "{shown}");
        assert!(shown.contains("quota_journeys"), "{shown}");
        assert!(shown.contains("line 2"), "{shown}");
    }

    #[test]
    fn the_outbox_limits_come_from_flags_over_the_file_and_zero_turns_the_cap_off() {
        let defaults = resolve(&[], "").expect("defaults");
        assert_eq!(defaults.backlog.stale_after, Duration::from_secs(60));
        assert_eq!(
            defaults.backlog.hard_cap,
            Some(BacklogLimits::DEFAULT_HARD_CAP)
        );

        let text = "[serve]\noutbox_stale_after = \"5m\"\noutbox_hard_cap = 0\n";
        let from_file = resolve(&[], text).expect("file");
        assert_eq!(from_file.backlog.stale_after, Duration::from_secs(300));
        assert_eq!(from_file.backlog.hard_cap, None);

        let flags = resolve(
            &["--outbox-stale-after=off", "--outbox-hard-cap=1000"],
            text,
        )
        .expect("flags");
        assert_eq!(flags.backlog.stale_after, Duration::MAX);
        assert_eq!(flags.backlog.hard_cap, Some(1000));

        let refused =
            resolve(&[], "[serve]\noutbox_stale_after = \"soon\"\n").expect_err("a bad duration");
        assert!(
            refused.to_string().contains("outbox_stale_after"),
            "{refused}"
        );
    }

    #[test]
    fn serve_keys_belong_in_their_table() {
        let err =
            resolve(&[], "listen = \"127.0.0.1:6000\"\n").expect_err("a serve key at the top");
        assert!(err.to_string().contains("listen"), "{err}");
        let err = resolve(&[], "[serve]\nlisten_on = \"127.0.0.1:6000\"\n").expect_err("a typo");
        assert!(err.to_string().contains("listen_on"), "{err}");
    }
}
