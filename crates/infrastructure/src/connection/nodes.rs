//! The primaries of a deployment, each reached by connections of our own.
//!
//! redis-rs' cluster connection and `ConnectionManager` replace a node's connection after a
//! timeout or an I/O error, silently to the caller. Most commands do not care; two things do,
//! because their meaning belongs to one connection:
//! - `WATCH`: a transaction whose connection was swapped between `WATCH` and `EXEC` executes
//!   unwatched, and a stale read is written over a newer change;
//! - `WAIT`: it counts the replicas that confirmed the writes *of the connection it is sent on*;
//!   on a fresh connection it has nothing to wait for and confirms at once (docs/reliability.md).
//!
//! [`Nodes`] gives those users plain connections that are never replaced behind their back: a
//! connection that fails stays failed, so the caller knows that the outcome of what it sent is
//! unknown. On a cluster it keeps the slot map itself (`CLUSTER SLOTS`, asked of any node that
//! answers) and refreshes it when a node redirects (`MOVED`, `ASK`), refuses as a replica
//! (`READONLY`) or cannot be reached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use deadpool_redis::Runtime;
use flyrtech_core::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, Value};

use crate::connection::error::RedisResultExt;
use crate::connection::settings::RedisSettings;

/// `host:port` of one primary.
pub(crate) type NodeAddr = Arc<str>;

/// Which primary serves each slot range (a standalone server serves them all).
#[derive(Debug, Default)]
struct SlotMap {
    /// `(first slot, last slot, primary)`, sorted by first slot.
    ranges: Vec<(u16, u16, NodeAddr)>,
}

impl SlotMap {
    fn primary(&self, slot: u16) -> Option<NodeAddr> {
        let at = self.ranges.partition_point(|(first, _, _)| *first <= slot);
        let (_, last, addr) = self.ranges.get(at.checked_sub(1)?)?;
        (slot <= *last).then(|| Arc::clone(addr))
    }

    /// Parses a `CLUSTER SLOTS` reply; an empty host means the node we asked.
    fn parse(reply: &Value, asked: &str) -> Option<Self> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::with_capacity(entries.len());
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let int = |v: &Value| match v {
                Value::Int(n) => u16::try_from(*n).ok(),
                _ => None,
            };
            let (first, last) = (int(fields.first()?)?, int(fields.get(1)?)?);
            let Value::Array(primary) = fields.get(2)? else {
                return None;
            };
            let host = match primary.first()? {
                Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
                Value::SimpleString(s) => s.clone(),
                _ => return None,
            };
            let port = match primary.get(1)? {
                Value::Int(p) => *p,
                _ => return None,
            };
            let host = if host.is_empty() || host == "?" {
                asked.rsplit_once(':').map(|(h, _)| h.to_owned())?
            } else {
                host
            };
            ranges.push((first, last, Arc::from(format!("{host}:{port}").as_str())));
        }
        ranges.sort_by_key(|(first, _, _)| *first);
        Some(Self { ranges })
    }
}

/// The primaries of one deployment and a pool of plain connections to each.
pub(crate) struct Nodes {
    cluster: bool,
    /// The seed's connection details (credentials, database); only the address changes.
    template: ConnectionInfo,
    seeds: Vec<NodeAddr>,
    slots: RwLock<Arc<SlotMap>>,
    /// Serialises refreshes and remembers the last one, so a burst of redirects asks once.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    pools: Mutex<HashMap<NodeAddr, deadpool_redis::Pool>>,
    settings: Arc<RedisSettings>,
}

impl std::fmt::Debug for Nodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nodes")
            .field("cluster", &self.cluster)
            .finish_non_exhaustive()
    }
}

/// How often the slot map may be asked for again.
const REFRESH_INTERVAL: Duration = Duration::from_millis(100);

fn addr_of(info: &ConnectionInfo) -> Option<NodeAddr> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            Some(Arc::from(format!("{host}:{port}").as_str()))
        }
        _ => None,
    }
}

impl Nodes {
    /// The nodes behind `seeds`; on a cluster, the slot map is read before this returns.
    pub(crate) async fn new(
        seeds: &[String],
        cluster: bool,
        settings: Arc<RedisSettings>,
    ) -> Result<Self, StoreError> {
        let mut infos = Vec::with_capacity(seeds.len());
        for seed in seeds {
            infos.push(settings.info(seed).map_err(invalid)?);
        }
        let template = infos.first().cloned().ok_or_else(|| {
            StoreError::InvalidInput(flyrtech_core::InvalidInput::new("redis url", "is empty"))
        })?;
        let seeds: Vec<NodeAddr> = infos.iter().filter_map(addr_of).collect();
        let slots = if cluster {
            SlotMap::default()
        } else {
            let only = seeds.first().cloned().ok_or_else(|| {
                StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
                    "redis url",
                    "names no TCP address",
                ))
            })?;
            SlotMap {
                ranges: vec![(0, u16::MAX, only)],
            }
        };
        let nodes = Self {
            cluster,
            template,
            seeds,
            slots: RwLock::new(Arc::new(slots)),
            refreshed: tokio::sync::Mutex::new(None),
            pools: Mutex::new(HashMap::new()),
            settings,
        };
        if cluster {
            nodes.refresh().await?;
        }
        Ok(nodes)
    }

    /// How connections are made.
    pub(crate) fn settings(&self) -> &RedisSettings {
        &self.settings
    }

    /// The primary that serves `key`'s slot, as last known.
    pub(crate) fn primary_of(&self, key: &str) -> Result<NodeAddr, StoreError> {
        let slot = if self.cluster {
            crate::keys::slot(key)
        } else {
            0
        };
        self.slots
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .primary(slot)
            .ok_or_else(|| {
                StoreError::unavailable(
                    "Redis Cluster is reconfiguring",
                    format!("no primary is known for slot {slot}"),
                )
            })
    }

    /// Reads the slot map again from the first node that answers (a standalone server has
    /// nothing to refresh). At most once per [`REFRESH_INTERVAL`]; concurrent callers wait for
    /// the one refresh.
    pub(crate) async fn refresh(&self) -> Result<(), StoreError> {
        if !self.cluster {
            return Ok(());
        }
        let mut last = self.refreshed.lock().await;
        if last.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL) {
            return Ok(());
        }
        let mut candidates: Vec<NodeAddr> = {
            let slots = self.slots.read().unwrap_or_else(PoisonError::into_inner);
            slots.ranges.iter().map(|(_, _, a)| Arc::clone(a)).collect()
        };
        candidates.extend(self.seeds.iter().cloned());
        candidates.dedup();
        let mut failure = None;
        for addr in candidates {
            let asked = async {
                let mut conn = self.connect(&addr, self.settings.response_timeout).await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut conn)
                    .await
                    .store_err()
            };
            match asked.await {
                Ok(reply) => match SlotMap::parse(&reply, &addr) {
                    Some(map) if !map.ranges.is_empty() => {
                        *self.slots.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(map);
                        *last = Some(Instant::now());
                        return Ok(());
                    }
                    _ => {
                        failure = Some(StoreError::unavailable(
                            "Redis Cluster is reconfiguring",
                            format!("{addr} answered CLUSTER SLOTS without a usable slot map"),
                        ))
                    }
                },
                Err(e) => failure = Some(e),
            }
        }
        *last = Some(Instant::now());
        Err(failure
            .unwrap_or_else(|| StoreError::unavailable("no Redis node answered", "no nodes known")))
    }

    fn info(&self, addr: &str) -> ConnectionInfo {
        let (host, port) = addr
            .rsplit_once(':')
            .map_or((addr, 6379), |(h, p)| (h, p.parse().unwrap_or(6379)));
        let node = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: host.to_owned(),
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host.to_owned(), port),
        };
        self.template.clone().set_addr(node)
    }

    /// A new plain connection to `addr` whose replies may take up to `response_timeout`. It is
    /// never replaced: once it fails, every later request on it fails too.
    pub(crate) async fn connect(
        &self,
        addr: &str,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, StoreError> {
        let client = redis::Client::open(self.info(addr)).map_err(invalid)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .store_err()
    }

    /// A pooled plain connection to `addr`, for one transaction at a time.
    pub(crate) async fn pooled(
        &self,
        addr: &NodeAddr,
    ) -> Result<deadpool_redis::Connection, StoreError> {
        let pool = {
            let mut pools = self.pools.lock().unwrap_or_else(PoisonError::into_inner);
            match pools.get(addr) {
                Some(pool) => pool.clone(),
                None => {
                    let config = AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(self.settings.connect_timeout))
                        .set_response_timeout(Some(self.settings.response_timeout));
                    let manager = deadpool_redis::Manager::new_with_config(self.info(addr), config)
                        .map_err(invalid)?;
                    let pool = deadpool_redis::Pool::builder(manager)
                        .max_size(self.settings.pool_size)
                        .runtime(Runtime::Tokio1)
                        .wait_timeout(Some(self.settings.response_timeout))
                        .create_timeout(Some(self.settings.connect_timeout))
                        .build()
                        .map_err(|e| {
                            StoreError::unavailable("cannot build the connection pool", e)
                        })?;
                    pools.insert(Arc::clone(addr), pool.clone());
                    pool
                }
            }
        };
        pool.get()
            .await
            .map_err(|e| StoreError::unavailable("no Redis connection available", e))
    }
}

fn invalid(err: redis::RedisError) -> StoreError {
    StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
        "redis url",
        err.to_string(),
    ))
}

/// Whether a server error reply says the command was not executed because the slot is served
/// elsewhere or the node cannot take writes now: the slot map is stale, or a failover is under
/// way. Safe to send again once the map is refreshed.
pub(crate) fn redirected(error: &redis::ServerError) -> bool {
    matches!(
        error.code(),
        "MOVED" | "ASK" | "READONLY" | "TRYAGAIN" | "CLUSTERDOWN" | "MASTERDOWN" | "LOADING"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_served_by_the_range_that_holds_it() {
        let map = SlotMap {
            ranges: vec![
                (0, 5460, Arc::from("a:1")),
                (5461, 10922, Arc::from("b:2")),
                (10923, 16383, Arc::from("c:3")),
            ],
        };
        assert_eq!(map.primary(0).as_deref(), Some("a:1"));
        assert_eq!(map.primary(5461).as_deref(), Some("b:2"));
        assert_eq!(map.primary(16383).as_deref(), Some("c:3"));
        assert_eq!(map.primary(16384), None);
        assert_eq!(SlotMap::default().primary(0), None);
    }
}
