//! Connections to Redis, standalone or cluster, behind one handle.
//!
//! [`Redis`] holds two kinds of connection, because the strategies need both:
//! - a shared, multiplexed connection for single commands and scripts (cheap, reconnects by
//!   itself), which every task may use at once;
//! - a pool of dedicated connections per primary for WATCH/MULTI/EXEC ([`crate::connection::nodes`]). WATCH
//!   state belongs to a connection, so on a shared one another task's EXEC or UNWATCH would
//!   silently cancel ours (redis-rs issue #565), and a connection replaced between WATCH and
//!   EXEC would run the transaction unwatched. A pooled connection serves one transaction at a
//!   time and is never replaced behind its user's back.
//!
//! Whether the URL points at a cluster is asked of the server (`INFO cluster`), so one
//! `--redis-url` serves both. Every connection counts its round trips, which the lab reports.
//!
//! A cluster's shared connection is rebuilt from the seeds when its commands keep timing out
//! ([`ClusterShared`]). A primary that goes silent without closing its connections (its host
//! cut from the network, frozen, or gone and back at another address) makes redis-rs retry
//! the timed-out command on the same connection; it never asks for the new slot map, so after
//! the replica's promotion every command for that shard would time out for as long as the old
//! primary stays silent. A fresh connection asks the cluster for its map and reaches the new
//! primary.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use flyrtech_core::StoreError;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisFuture, Value};

use crate::connection::error::{RedisResultExt, from_redis};
use crate::connection::nodes::{NodeAddr, Nodes};
use crate::connection::settings::RedisSettings;

#[derive(Clone)]
enum Shared {
    Single(ConnectionManager),
    Cluster(Arc<ClusterShared>),
}

/// Timed-out commands since the last rebuild that make the shared cluster connection be
/// rebuilt: one may be a slow reply, two in a row on a connection that was fine suggest a node
/// that no longer answers.
const REBUILD_AFTER_TIMEOUTS: u32 = 2;

/// The least time between two rebuilds, so that a cluster that is merely slow is not also made
/// to accept a new set of connections at every timeout.
const REBUILD_INTERVAL: Duration = Duration::from_secs(2);

/// The shared cluster connection, replaced by a fresh one (which reads the slot map anew) when
/// its commands keep timing out. Commands in flight on the old one finish or time out there;
/// the next [`Redis::shared`] hands out the new one.
struct ClusterShared {
    client: ClusterClient,
    current: RwLock<ClusterConnection>,
    /// Timed-out commands since the last rebuild.
    timeouts: AtomicU32,
    rebuilding: AtomicBool,
    last_rebuild: Mutex<Option<Instant>>,
}

impl ClusterShared {
    fn connection(&self) -> ClusterConnection {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Notes a command's outcome; a timeout may start a rebuild in the background.
    fn observe<T>(self: &Arc<Self>, outcome: &redis::RedisResult<T>) {
        let Err(e) = outcome else { return };
        if !e.is_timeout() {
            return;
        }
        if self.timeouts.fetch_add(1, Ordering::Relaxed) + 1 < REBUILD_AFTER_TIMEOUTS {
            return;
        }
        let recent = self
            .last_rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some_and(|at| at.elapsed() < REBUILD_INTERVAL);
        if recent || self.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        let this = Arc::clone(self);
        tokio::spawn(async move { this.rebuild().await });
    }

    async fn rebuild(&self) {
        let fresh = self.client.get_async_connection().await;
        *self
            .last_rebuild
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        match fresh {
            Ok(conn) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = conn;
                self.timeouts.store(0, Ordering::Relaxed);
                metrics::counter!("redis_cluster_reconnects_total").increment(1);
                tracing::warn!(
                    "Redis cluster commands kept timing out: the shared connection was rebuilt \
                     from the seeds and the slot map read again"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "Redis cluster: rebuilding the shared connection failed");
            }
        }
        self.rebuilding.store(false, Ordering::Release);
    }
}

/// A handle on one Redis deployment. Cheap to clone; clones share connections and counters.
#[derive(Clone)]
pub struct Redis {
    shared: Shared,
    nodes: Arc<Nodes>,
    round_trips: Arc<AtomicU64>,
    /// Kept to open connections of other kinds later ([`Redis::subscriber`]).
    settings: Arc<RedisSettings>,
    /// The seed URLs (one for a standalone server).
    seed_urls: Arc<[String]>,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("cluster", &self.is_cluster())
            .field("round_trips", &self.round_trips())
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects, finding out whether the URL names a cluster.
    ///
    /// # Errors
    /// [`StoreError::InvalidInput`] for a malformed URL; [`StoreError::Unavailable`] when no
    /// seed answers.
    pub async fn connect(settings: &RedisSettings) -> Result<Self, StoreError> {
        let seeds = settings.seeds();
        let seed_urls: Arc<[String]> = seeds.clone().into();
        let conn_config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout));
        let cluster = detect_cluster(settings, &seeds, &conn_config).await?;
        let shared = if cluster {
            let client = settings
                .cluster(seeds.clone())
                .build()
                .map_err(invalid_url)?;
            let conn = client.get_async_connection().await.store_err()?;
            Shared::Cluster(Arc::new(ClusterShared {
                client,
                current: RwLock::new(conn),
                timeouts: AtomicU32::new(0),
                rebuilding: AtomicBool::new(false),
                last_rebuild: Mutex::new(None),
            }))
        } else {
            let url = seeds.first().cloned().unwrap_or_default();
            let client = redis::Client::open(settings.info(&url).map_err(invalid_url)?)
                .map_err(invalid_url)?;
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(settings.connect_timeout))
                .set_response_timeout(Some(settings.response_timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(200));
            Shared::Single(
                ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .store_err()?,
            )
        };
        let settings = Arc::new(settings.clone());
        let nodes = Arc::new(Nodes::new(&seeds, cluster, Arc::clone(&settings)).await?);
        Ok(Self {
            shared,
            nodes,
            round_trips: Arc::new(AtomicU64::new(0)),
            settings,
            seed_urls,
        })
    }

    /// A connection of its own that only subscribes, for notifications such as a lock's release
    /// (pub/sub must never share the multiplexed connection, a trap of redis-rs'). RESP3:
    /// messages arrive on `push`, and the connection subscribes again by itself after a
    /// reconnect. On a cluster it uses sharded channels (`SSUBSCRIBE`), which the node holding
    /// the channel's slot delivers without broadcasting over the cluster bus; standalone,
    /// classic channels.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub(crate) async fn subscriber(
        &self,
        push: tokio::sync::mpsc::UnboundedSender<redis::PushInfo>,
    ) -> Result<Subscriber, StoreError> {
        let settings = &self.settings;
        if self.is_cluster() {
            let client = settings
                .cluster(self.seed_urls.to_vec())
                .use_protocol(redis::ProtocolVersion::RESP3)
                .push_sender(push)
                .build()
                .map_err(invalid_url)?;
            let conn = client.get_async_connection().await.store_err()?;
            return Ok(Subscriber::Cluster(conn));
        }
        let url = self.seed_urls.first().cloned().unwrap_or_default();
        let info = settings.info(&url).map_err(invalid_url)?;
        let redis_settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(redis_settings)).map_err(invalid_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_max_delay(Duration::from_millis(200))
            .set_push_sender(push)
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .store_err()?;
        Ok(Subscriber::Single(conn))
    }

    /// Whether this handle talks to a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.shared, Shared::Cluster(_))
    }

    /// The shared multiplexed connection: for anything but WATCH.
    pub fn shared(&self) -> Conn {
        let inner = match &self.shared {
            Shared::Single(c) => Inner::Single(c.clone()),
            Shared::Cluster(c) => Inner::Cluster(c.connection(), Arc::clone(c)),
        };
        Conn {
            inner,
            round_trips: Arc::clone(&self.round_trips),
        }
    }

    /// A dedicated connection to the primary of `key`'s slot, from that primary's pool, for one
    /// WATCH/MULTI/EXEC transaction; and which primary it reaches.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no connection can be had in time.
    pub(crate) async fn dedicated(&self, key: &str) -> Result<(Conn, NodeAddr), StoreError> {
        let addr = self.nodes.primary_of(key)?;
        let conn = match self.nodes.pooled(&addr).await {
            Ok(conn) => conn,
            Err(e) => {
                // The primary may be gone (a failover): the next caller asks the new map.
                self.nodes.refresh().await.ok();
                return Err(e);
            }
        };
        Ok((
            Conn {
                inner: Inner::Pooled(conn),
                round_trips: Arc::clone(&self.round_trips),
            },
            addr,
        ))
    }

    /// The primaries, each reached by connections of our own.
    pub(crate) fn nodes(&self) -> &Arc<Nodes> {
        &self.nodes
    }

    /// Round trips made by every connection of this handle so far.
    pub fn round_trips(&self) -> u64 {
        self.round_trips.load(Ordering::Relaxed)
    }

    /// Whether Redis answers `PING` now.
    pub async fn ping(&self) -> Result<(), StoreError> {
        redis::cmd("PING")
            .query_async::<String>(&mut self.shared())
            .await
            .store_err()
            .map(drop)
    }
}

async fn detect_cluster(
    settings: &RedisSettings,
    seeds: &[String],
    config: &AsyncConnectionConfig,
) -> Result<bool, StoreError> {
    if seeds.is_empty() {
        return Err(StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
            "redis url",
            "is empty",
        )));
    }
    let mut last = None;
    for seed in seeds {
        let client =
            redis::Client::open(settings.info(seed).map_err(invalid_url)?).map_err(invalid_url)?;
        match client
            .get_multiplexed_async_connection_with_config(config)
            .await
        {
            Ok(mut conn) => {
                let info: String = redis::cmd("INFO")
                    .arg("cluster")
                    .query_async(&mut conn)
                    .await
                    .store_err()?;
                return Ok(info.contains("cluster_enabled:1"));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or_else(
        || StoreError::unavailable("no Redis seed answered", "no seeds"),
        from_redis,
    ))
}

fn invalid_url(err: redis::RedisError) -> StoreError {
    StoreError::InvalidInput(flyrtech_core::InvalidInput::new(
        "redis url",
        err.to_string(),
    ))
}

/// A subscribing connection: see [`Redis::subscriber`].
pub(crate) enum Subscriber {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Subscriber {
    /// Subscribes to `channel`; returns once Redis confirmed it.
    pub(crate) async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => c.subscribe(channel).await,
            Self::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    /// Stops listening to `channel`.
    pub(crate) async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Self::Single(c) => c.unsubscribe(channel).await,
            Self::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }
}

enum Inner {
    Single(ConnectionManager),
    /// The shared cluster connection, and what watches its timeouts.
    Cluster(ClusterConnection, Arc<ClusterShared>),
    Pooled(deadpool_redis::Connection),
}

/// One connection of a [`Redis`] handle, shared or dedicated, counting its round trips.
pub struct Conn {
    inner: Inner,
    round_trips: Arc<AtomicU64>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// Runs `$call` on whichever connection `$self` holds; a shared cluster connection's outcome is
/// also noted, so that repeated timeouts rebuild it.
macro_rules! each_inner {
    ($self:ident, $c:ident => $call:expr) => {
        match &mut $self.inner {
            Inner::Single($c) => $call,
            Inner::Pooled($c) => $call,
            Inner::Cluster($c, watch) => {
                let watch = Arc::clone(watch);
                let call = $call;
                Box::pin(async move {
                    let outcome = call.await;
                    watch.observe(&outcome);
                    outcome
                })
            }
        }
    };
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        each_inner!(self, c => c.req_packed_command(cmd))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        each_inner!(self, c => c.req_packed_commands(pipeline, offset, count))
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c, _) => c.get_db(),
            Inner::Pooled(c) => c.get_db(),
        }
    }
}
