//! What the Redis server itself must guarantee for journeys to be safe, checked from the
//! outside: it must not evict them, and it should keep them on disk.
//!
//! Journeys carry no TTL. A `maxmemory-policy` of `allkeys-*` lets Redis delete any key under
//! memory pressure, journeys and outbox entries included, silently: an acknowledged update
//! simply disappears. `noeviction` (writes fail instead) and `volatile-*` (only keys with a TTL,
//! i.e. cache entries) are safe. [`check`] reads `INFO memory` and `INFO persistence` rather than
//! `CONFIG GET`, which managed Redis services often disable; on a cluster every primary answers,
//! and one unsafe node is enough to refuse.

use flyrtech_core::StoreError;

use crate::connection::error::RedisResultExt;
use crate::connection::handle::Redis;

/// What the server says about itself, read once at start-up: the engine, its eviction and
/// persistence, and what it can confirm.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFacts {
    /// `redis` or `valkey` (`INFO server`'s `server_name`, absent on Redis).
    pub engine: String,
    /// The engine's own version (`valkey_version` on Valkey, else `redis_version`).
    pub version: String,
    /// Whether the server knows `WAITAOF` (`COMMAND INFO`, never a version string).
    pub waitaof: bool,
    /// Whether it runs in cluster mode.
    pub cluster: bool,
    /// Every distinct `maxmemory_policy` reported (one per node of a cluster).
    pub eviction_policies: Vec<String>,
    /// Whether every node has AOF on.
    pub aof_enabled: bool,
    /// Whether every node has made an RDB snapshot or has one in progress: a hint that
    /// snapshots are configured (INFO does not show the `save` setting).
    pub rdb_saves: bool,
}

impl ServerFacts {
    /// The policies that can evict a key without a TTL.
    pub fn unsafe_policies(&self) -> Vec<&str> {
        self.eviction_policies
            .iter()
            .map(String::as_str)
            .filter(|p| p.starts_with("allkeys-"))
            .collect()
    }

    /// Whether nothing suggests the server keeps data on disk.
    pub fn keeps_nothing_on_disk(&self) -> bool {
        !self.aof_enabled && !self.rdb_saves
    }
}

/// The server may evict journeys.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "Redis is configured with maxmemory-policy {policy}, which evicts keys without a TTL under \
     memory pressure: journeys and their outbox entries would disappear silently. Set \
     `maxmemory-policy noeviction` (or a volatile-* policy; journeys have no TTL), e.g. \
     `CONFIG SET maxmemory-policy noeviction` and the same line in redis.conf, or start with \
     --allow-eviction to accept that risk"
)]
pub struct EvictionRisk {
    /// The offending policy.
    pub policy: String,
}

/// Reads what the server reports.
///
/// # Errors
/// [`StoreError::Unavailable`] when Redis cannot be reached.
pub async fn facts(redis: &Redis) -> Result<ServerFacts, StoreError> {
    let mut conn = redis.shared();
    let memory: redis::Value = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .store_err()?;
    let persistence: redis::Value = redis::cmd("INFO")
        .arg("persistence")
        .query_async(&mut conn)
        .await
        .store_err()?;
    let field = |info: &redis::Value, name: &str| -> Vec<String> {
        let mut values = Vec::new();
        for text in texts(info) {
            values.extend(text.lines().filter_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(':'))
                    .map(|v| v.trim().to_owned())
            }));
        }
        values
    };
    let server: redis::Value = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .store_err()?;
    let first = |info: &redis::Value, name: &str| field(info, name).into_iter().next();
    let engine = first(&server, "server_name").unwrap_or_else(|| "redis".to_owned());
    let version = first(&server, "valkey_version")
        .or_else(|| first(&server, "redis_version"))
        .unwrap_or_default();
    let waitaof: redis::Value = redis::cmd("COMMAND")
        .arg("INFO")
        .arg("WAITAOF")
        .query_async(&mut conn)
        .await
        .store_err()?;
    let mut eviction_policies = field(&memory, "maxmemory_policy");
    eviction_policies.sort();
    eviction_policies.dedup();
    let all = |name: &str, pred: &dyn Fn(&str) -> bool| {
        let values = field(&persistence, name);
        !values.is_empty() && values.iter().all(|v| pred(v))
    };
    Ok(ServerFacts {
        engine,
        version,
        waitaof: knows_command(&waitaof),
        cluster: redis.is_cluster(),
        eviction_policies,
        aof_enabled: all("aof_enabled", &|v| v == "1"),
        rdb_saves: all("rdb_last_save_time", &|v| v != "0")
            && all("rdb_last_bgsave_status", &|v| v == "ok")
            && !field(&persistence, "rdb_saves").iter().all(|v| v == "0"),
    })
}

/// Refuses a server that may evict journeys, unless `allow_eviction`; warns about one that
/// keeps nothing on disk.
///
/// # Errors
/// [`CheckError::Eviction`] or Redis' own unavailability.
pub async fn check(redis: &Redis, allow_eviction: bool) -> Result<ServerFacts, CheckError> {
    let facts = facts(redis).await?;
    if let Some(policy) = facts.unsafe_policies().first() {
        if allow_eviction {
            tracing::warn!(
                policy,
                "maxmemory-policy may evict journeys; allowed by --allow-eviction"
            );
        } else {
            return Err(CheckError::Eviction(EvictionRisk {
                policy: (*policy).to_owned(),
            }));
        }
    }
    Ok(facts)
}

/// Why [`check`] refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The server may evict journeys.
    #[error(transparent)]
    Eviction(#[from] EvictionRisk),
    /// `--wait-aof` on an engine without `WAITAOF`.
    #[error(
        "--wait-aof needs WAITAOF (Redis 7.2 and later, Valkey), and {engine} has none; use \
         --wait-replicas, which waits for the replicas' memory rather than their disks"
    )]
    NoWaitAof {
        /// The engine and its version.
        engine: String,
    },
    /// `--wait-aof` with `appendonly` off on a primary.
    #[error(
        "--wait-aof needs appendonly yes on every primary (WAITAOF 1 confirms the primary's own \
         AOF); a primary has it off: `CONFIG SET appendonly yes` and the same in redis.conf"
    )]
    AofOff,
    /// Redis failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Whether `COMMAND INFO name`'s reply describes a command (an unknown one is a nil entry).
fn knows_command(reply: &redis::Value) -> bool {
    match reply {
        redis::Value::Array(entries) => entries
            .first()
            .is_some_and(|e| !matches!(e, redis::Value::Nil)),
        redis::Value::Map(pairs) => !pairs.is_empty(),
        _ => false,
    }
}

impl ServerFacts {
    /// Refuses `--wait-aof` on a server that cannot keep its promise: no `WAITAOF`, or
    /// `appendonly` off on a primary.
    ///
    /// # Errors
    /// [`CheckError::NoWaitAof`] or [`CheckError::AofOff`].
    pub fn can_wait_aof(&self) -> Result<(), CheckError> {
        if !self.waitaof {
            return Err(CheckError::NoWaitAof {
                engine: format!("{} {}", self.engine, self.version),
            });
        }
        if !self.aof_enabled {
            return Err(CheckError::AofOff);
        }
        Ok(())
    }
}

impl std::fmt::Display for ServerFacts {
    /// `valkey 9.1.2, cluster, WAITAOF, AOF on, maxmemory-policy noeviction`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, {}, {}, AOF {}, maxmemory-policy {}",
            self.engine,
            self.version,
            if self.cluster {
                "cluster"
            } else {
                "standalone"
            },
            if self.waitaof {
                "WAITAOF"
            } else {
                "no WAITAOF"
            },
            if self.aof_enabled { "on" } else { "off" },
            self.eviction_policies.join("/")
        )
    }
}

/// Every text in a reply: one `INFO` string, or a cluster's map of node to string.
fn texts(value: &redis::Value) -> Vec<String> {
    match value {
        redis::Value::BulkString(bytes) => vec![String::from_utf8_lossy(bytes).into_owned()],
        redis::Value::SimpleString(s) | redis::Value::VerbatimString { text: s, .. } => {
            vec![s.clone()]
        }
        redis::Value::Array(items) | redis::Value::Set(items) => {
            items.iter().flat_map(texts).collect()
        }
        redis::Value::Map(pairs) => pairs.iter().flat_map(|(_, v)| texts(v)).collect(),
        _ => Vec::new(),
    }
}
