//! Replica-confirmed writes (`--wait-replicas N`): a write and its `WAIT` inseparable, shared by
//! concurrent writes to one primary (group commit), and refused at once on a shard known to lack
//! its replicas.
//!
//! # The race it closes
//! `WAIT n t` counts the replicas that acknowledged every write *sent on its own connection*. A
//! write and its `WAIT` sent as two requests over a connection that redis-rs may replace in
//! between (the shared multiplexed connection, a cluster node connection) can be confirmed by a
//! `WAIT` on a fresh connection, which has no write to wait for and answers at once: an update
//! acknowledged that no replica holds, lost at the next failover. Here every confirmed write
//! travels in one pipeline `[writes…, INCR marker, WAIT n t]` on a plain connection that is never
//! replaced ([`crate::connection::nodes`]): if that connection fails before the `WAIT` answers, the outcome
//! is unknown and the write is answered [`StoreError::Unavailable`], never success.
//!
//! A no-op (the status already was the requested one) is confirmed too: it may be a retry of an
//! earlier write whose confirmation failed, through this instance or another. The batch's marker
//! (`INCR replication:{TAG}` in the write's slot, after every write of the batch) is a write of
//! this connection made after the no-op read its state, so the `WAIT` that covers the marker
//! covers whatever that read saw.
//!
//! # Group commit, off the shared connection
//! `WAIT` blocks its connection. On the shared multiplexed connection it would hold up every
//! read and every other journey's write behind it (which is why StackExchange.Redis refuses
//! blocking commands on its multiplexer). Each primary gets [`WRITERS_PER_NODE`] connections of
//! its own; each takes every write pending for that primary, sends them and one `WAIT` in one
//! pipeline, and answers each write from that one `WAIT`'s count. One replica round trip then
//! confirms a whole batch.
//!
//! # A shard without its replicas is refused fast
//! A `WAIT` that comes back short, or a primary that answers `NOREPLICAS`
//! (`min-replicas-to-write`), marks the primary as lacking: later writes for it are refused at
//! once with [`StoreError::ReplicasMissing`], before anything is sent, instead of each waiting
//! out the timeout. The two answers differ on purpose: [`StoreError::NotReplicated`] says the
//! write reached the primary and its fate is unknown (a failover may or may not keep it);
//! [`StoreError::ReplicasMissing`] says nothing was written, so nothing of it can surface later. A probe (`INCR marker` + a short `WAIT` every [`PROBE_INTERVAL`]) clears the mark
//! as soon as enough replicas confirm again. Primaries with their replicas are not affected.
//!
//! Optimistic transactions cannot share a connection (their `WATCH` is the connection's); they
//! send `[MULTI … EXEC, WAIT]` as one pipeline on their own pooled node connection and report
//! to the same health ([`Replication::commit_on`]).
//!
//! # What it may import
//! The core crate, [`crate::connection`] (one connection per primary), [`crate::keys`] and
//! [`crate::telemetry`]. `script`: a Lua script call that can travel alone or in a
//! replica-confirmed batch.

pub(crate) mod script;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use flyrtech_core::StoreError;
use redis::aio::MultiplexedConnection;
use redis::{Cmd, Value};
use tokio::sync::{mpsc, oneshot};

use crate::connection::error::from_redis;
use crate::connection::nodes::{NodeAddr, Nodes, redirected};
use crate::keys;

/// Wait for this many replicas to confirm each write, for at most `timeout` (`WAIT`).
///
/// Every write of the store (updates, creations, the fenced write, conversions) is sent with its
/// `WAIT` in one pipeline on a connection that is never replaced, shared by the writes pending
/// for the same primary (group commit: this module). If fewer replicas confirm in
/// time, the update answers [`StoreError::NotReplicated`] instead of success: the write may be
/// on the primary, but a failover now could lose it. A no-op is confirmed too, through whichever
/// instance it comes, so the retry of an unconfirmed write is acknowledged only once the
/// replicas hold it. A primary known to lack replicas is refused at once. `WAIT` narrows the
/// failover window; it does not make Redis strongly consistent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    /// Replicas required.
    pub replicas: u32,
    /// Longest wait; keep it below the 1 s command timeout.
    pub timeout: Duration,
    /// What the confirmation says: received (`WAIT`), or on disk (`WAITAOF`).
    pub confirmation: Confirmation,
}

/// What a write's confirmation promises (`--wait-replicas N` or `--wait-aof N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Confirmation {
    /// `WAIT N`: N replicas hold it in memory.
    #[default]
    Received,
    /// `WAITAOF 1 N` (Redis 7.2+, Valkey): the primary's AOF and N replicas' AOFs hold it on disk;
    /// a write the primary's own fsync did not confirm counts no replica.
    OnDisk,
}

/// Connections per primary that send batches and their `WAIT`s.
pub const WRITERS_PER_NODE: usize = 2;
/// Most writes one batch carries.
const MAX_BATCH: usize = 256;
/// Writes that may queue for one primary before writers wait for room.
const QUEUE: usize = 4096;
/// How often a lacking primary is probed.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// How long a probe's `WAIT` may take.
const PROBE_WAIT: Duration = Duration::from_millis(50);
/// How often one write may be redirected (slot moved, failover) before it is answered 503.
const REDIRECTS: usize = 3;

/// A primary known to lack the replicas its writes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shortfall {
    /// `host:port` of the primary.
    pub primary: String,
    /// Replicas that confirmed its last write or probe.
    pub confirmed: u32,
    /// Replicas required.
    pub required: u32,
    /// How long it has lacked them.
    pub since: Duration,
}

/// Replica-confirmed writes for one store.
pub(crate) struct Replication {
    wait: ReplicaWait,
    nodes: Arc<Nodes>,
    committers: Mutex<HashMap<NodeAddr, Arc<Committer>>>,
}

impl std::fmt::Debug for Replication {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replication")
            .field("wait", &self.wait)
            .finish_non_exhaustive()
    }
}

/// What a batch did for one write.
enum Answer {
    /// Sent, executed, and confirmed by enough replicas: the write's replies.
    Confirmed(Vec<Value>),
    /// Not executed: the slot is served elsewhere now. Refresh the map and send it again.
    Redirected,
    /// Anything else, with its error.
    Failed(StoreError),
}

/// One write waiting for a batch.
struct Pending {
    cmds: Vec<Cmd>,
    /// The script the write calls by SHA, loaded and sent again on `NOSCRIPT`.
    script: Option<&'static str>,
    marker: String,
    reply: oneshot::Sender<Answer>,
}

impl Replication {
    pub(crate) fn new(nodes: Arc<Nodes>, wait: ReplicaWait) -> Self {
        Self {
            wait,
            nodes,
            committers: Mutex::new(HashMap::new()),
        }
    }

    fn committer(&self, addr: &NodeAddr) -> Arc<Committer> {
        let mut committers = self
            .committers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Arc::clone(
            committers
                .entry(Arc::clone(addr))
                .or_insert_with(|| Committer::start(addr, &self.nodes, self.wait)),
        )
    }

    /// Sends `cmds` (every key in `key`'s slot) to the primary of that slot in the next batch,
    /// and returns their replies once enough replicas confirmed them. An empty `cmds` confirms
    /// only what the primary held when the batch ran (a no-op's acknowledgement).
    ///
    /// # Errors
    /// [`StoreError::NotReplicated`] when too few replicas confirmed in time;
    /// [`StoreError::ReplicasMissing`] at once when the primary is known to lack them (then
    /// nothing was sent); [`StoreError::Unavailable`]
    /// when the primary cannot be reached or the connection failed before the `WAIT` answered
    /// (the outcome is unknown).
    pub(crate) async fn write(
        &self,
        key: &str,
        cmds: Vec<Cmd>,
        script: Option<&'static str>,
    ) -> Result<Vec<Value>, StoreError> {
        let marker = keys::replication_marker(key);
        for _ in 0..REDIRECTS {
            let addr = self.nodes.primary_of(key)?;
            let committer = self.committer(&addr);
            committer.primary.remember(&marker);
            committer.primary.first_look().await;
            committer.primary.health.refuse(self.wait)?;
            let (reply, answer) = oneshot::channel();
            let pending = Pending {
                cmds: cmds.clone(),
                script,
                marker: marker.clone(),
                reply,
            };
            if committer.queue.send(pending).await.is_err() {
                return Err(stopped());
            }
            match answer.await.map_err(|_| stopped())? {
                Answer::Confirmed(values) => return Ok(values),
                Answer::Failed(e) => return Err(e),
                Answer::Redirected => self.nodes.refresh().await?,
            }
        }
        Err(StoreError::unavailable(
            "Redis Cluster is reconfiguring",
            format!("the slot of {key} moved {REDIRECTS} times during one write"),
        ))
    }

    /// Confirms, without writing anything of its own, what the primary of `key`'s slot holds
    /// now: the acknowledgement of a no-op.
    pub(crate) async fn confirm(&self, key: &str) -> Result<(), StoreError> {
        self.write(key, Vec::new(), None).await.map(drop)
    }

    /// Refuses at once when the primary `addr`, which serves `key`, is known to lack its
    /// replicas.
    pub(crate) async fn check(&self, key: &str, addr: &NodeAddr) -> Result<(), StoreError> {
        let committer = self.committer(addr);
        committer.primary.remember(&keys::replication_marker(key));
        committer.primary.first_look().await;
        committer.primary.health.refuse(self.wait)
    }

    /// Sends `pipeline` (a transaction, `MULTI … EXEC`, built without `atomic()`) followed by
    /// `WAIT` in one request on `conn`, a connection of `addr`'s own that holds the
    /// transaction's `WATCH`. Returns the pipeline's replies (without the `WAIT`'s) when the
    /// transaction did not write (`EXEC` answered nil) or enough replicas confirmed it.
    ///
    /// # Errors
    /// As [`Replication::write`].
    pub(crate) async fn commit_on(
        &self,
        conn: &mut impl redis::aio::ConnectionLike,
        addr: &NodeAddr,
        mut pipeline: redis::Pipeline,
        wrote: impl Fn(&[Value]) -> bool,
    ) -> Result<Vec<Value>, StoreError> {
        let committer = self.committer(addr);
        committer.primary.first_look().await;
        committer.primary.health.refuse(self.wait)?;
        pipeline.add_command(wait_cmd(self.wait, self.wait.timeout));
        let started = Instant::now();
        let mut replies: Vec<Value> = pipeline
            .query_async(conn)
            .await
            .map_err(|e| unknown(addr, e))?;
        let confirmed = replies.pop().and_then(|v| confirmed_count(&v));
        if !wrote(&replies) {
            return Ok(replies);
        }
        let confirmed = confirmed.ok_or_else(|| {
            StoreError::unavailable(
                "WAIT answered something else",
                format!("after a transaction on {addr}"),
            )
        })?;
        committer.primary.judge(confirmed, started.elapsed())?;
        Ok(replies)
    }

    /// The primaries known to lack their replicas now.
    pub(crate) fn shortfalls(&self) -> Vec<Shortfall> {
        let committers = self
            .committers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<Shortfall> = committers
            .iter()
            .filter_map(|(addr, c)| {
                let health = &c.primary.health;
                let since = (*health.since.lock().unwrap_or_else(PoisonError::into_inner))?;
                Some(Shortfall {
                    primary: addr.to_string(),
                    confirmed: health.confirmed.load(Ordering::Relaxed),
                    required: self.wait.replicas,
                    since: since.elapsed(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.primary.cmp(&b.primary));
        out
    }
}

fn stopped() -> StoreError {
    StoreError::unavailable(
        "the replica-confirmed writer stopped",
        "its queue is closed",
    )
}

/// The connection failed before the `WAIT` answered: whatever was sent may or may not be in
/// place, and no replica is known to hold it.
fn unknown(addr: &str, err: redis::RedisError) -> StoreError {
    let cause = from_redis(err);
    StoreError::unavailable(
        format!(
            "the connection to {addr} failed before its replicas confirmed the write; its outcome \
             is unknown"
        ),
        cause,
    )
}

/// How long a probe waits: briefly for `WAIT` (a healthy replica answers at once); for
/// `WAITAOF`, as long as a write would, since a replica reports its disk about once a second.
fn probe_wait(wait: ReplicaWait) -> Duration {
    match wait.confirmation {
        Confirmation::Received => PROBE_WAIT,
        Confirmation::OnDisk => wait.timeout,
    }
}

/// The confirmation `wait` asks for, waiting at most `timeout`: `WAIT N t`, or `WAITAOF 1 N t`.
fn wait_cmd(wait: ReplicaWait, timeout: Duration) -> Cmd {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    match wait.confirmation {
        Confirmation::Received => {
            let mut cmd = redis::cmd("WAIT");
            cmd.arg(wait.replicas).arg(millis);
            cmd
        }
        Confirmation::OnDisk => {
            let mut cmd = redis::cmd("WAITAOF");
            cmd.arg(1).arg(wait.replicas).arg(millis);
            cmd
        }
    }
}

/// The replicas a confirmation counts: `WAIT`'s integer, or `WAITAOF`'s `[local, replicas]`.
/// `None` when it confirms nothing a count can say: another reply, or a `WAITAOF` whose primary
/// did not get the write onto its own disk in time (then the write's outcome is unknown: it is
/// on the primary, not yet on its disk).
fn confirmed_count(value: &Value) -> Option<u32> {
    match value {
        Value::Int(n) => u32::try_from(*n).ok(),
        Value::Array(pair) => match pair.as_slice() {
            [Value::Int(local), Value::Int(replicas)] if *local >= 1 => {
                u32::try_from(*replicas).ok()
            }
            _ => None,
        },
        _ => None,
    }
}

/// What is known of one primary's replicas.
#[derive(Default)]
struct Health {
    /// Set while the primary is known to lack replicas: writes are refused without sending.
    lacking: AtomicBool,
    /// When it started lacking them.
    since: Mutex<Option<Instant>>,
    /// Replicas that confirmed the last batch or probe.
    confirmed: AtomicU32,
    /// Whether a probe is running.
    probing: AtomicBool,
}

impl Health {
    fn refuse(&self, wait: ReplicaWait) -> Result<(), StoreError> {
        if self.lacking.load(Ordering::Acquire) {
            crate::telemetry::replica_refusal();
            return Err(StoreError::ReplicasMissing {
                confirmed: self.confirmed.load(Ordering::Relaxed),
                required: wait.replicas,
            });
        }
        Ok(())
    }

    /// Records a count; true when the primary just started lacking replicas.
    fn record(&self, confirmed: u32, required: u32) -> bool {
        self.confirmed.store(confirmed, Ordering::Relaxed);
        let lacking = confirmed < required;
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        let was = self.lacking.swap(lacking, Ordering::AcqRel);
        match (was, lacking) {
            (false, true) => *since = Some(Instant::now()),
            (_, false) => *since = None,
            _ => {}
        }
        lacking && !was
    }
}

/// One primary as the writes confirmed on it see it.
struct Primary {
    addr: NodeAddr,
    nodes: Arc<Nodes>,
    wait: ReplicaWait,
    health: Health,
    /// The marker the last batch incremented: a key this primary serves, for the probe.
    marker: Mutex<String>,
    /// Set once the primary's replicas were first looked at.
    looked: tokio::sync::OnceCell<()>,
}

impl Primary {
    /// Keeps `marker` (a key of a slot this primary serves) for the probe, unless a batch
    /// already left one. Without it, a primary found lacking replicas at its first look, before
    /// any batch, was probed with the marker of no key: slot 0, which a cluster primary that
    /// does not serve it answers with MOVED, so the probe never saw the replicas come back and
    /// the primary stayed refused for good.
    fn remember(&self, marker: &str) {
        let mut kept = self.marker.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.is_empty() {
            marker.clone_into(&mut kept);
        }
    }

    /// The first time a primary is written to (at start-up, or a replica promoted by a
    /// failover), its `INFO replication` says how many replicas are online: one without enough
    /// is refused from its first write, not after a first `WAIT` has timed out.
    async fn first_look(self: &Arc<Self>) {
        self.looked
            .get_or_init(|| async {
                let timeout = self.nodes.settings().response_timeout;
                let Ok(mut conn) = self.nodes.connect(&self.addr, timeout).await else {
                    return;
                };
                let info: Result<String, _> = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut conn)
                    .await;
                if let Ok(info) = info {
                    let online = info
                        .lines()
                        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                        .count();
                    let online = u32::try_from(online).unwrap_or(u32::MAX);
                    if online < self.wait.replicas && self.health.record(online, self.wait.replicas)
                    {
                        self.probe();
                    }
                }
            })
            .await;
    }

    /// Judges one `WAIT`'s count, starting the probe when the primary now lacks replicas.
    fn judge(self: &Arc<Self>, confirmed: u32, took: Duration) -> Result<(), StoreError> {
        let satisfied = confirmed >= self.wait.replicas;
        crate::telemetry::replica_wait(took, satisfied);
        if self.health.record(confirmed, self.wait.replicas) {
            self.probe();
        }
        if satisfied {
            Ok(())
        } else {
            Err(StoreError::NotReplicated {
                confirmed,
                required: self.wait.replicas,
            })
        }
    }

    /// Probes the primary until enough replicas confirm a marker write again, then lets its
    /// writes through. Stops when the store is dropped.
    fn probe(self: &Arc<Self>) {
        if self.health.probing.swap(true, Ordering::AcqRel) {
            return;
        }
        let primary = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut conn: Option<MultiplexedConnection> = None;
            loop {
                tokio::time::sleep(PROBE_INTERVAL).await;
                let Some(this) = primary.upgrade() else {
                    return;
                };
                if !this.health.lacking.load(Ordering::Acquire) {
                    this.health.probing.store(false, Ordering::Release);
                    return;
                }
                if conn.is_none() {
                    conn = this
                        .nodes
                        .connect(
                            &this.addr,
                            probe_wait(this.wait) + Duration::from_millis(500),
                        )
                        .await
                        .ok();
                }
                let Some(c) = conn.as_mut() else { continue };
                let key = this
                    .marker
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone();
                if key.is_empty() {
                    continue;
                }
                let mut pipe = redis::pipe();
                pipe.cmd("INCR").arg(&key).ignore();
                pipe.add_command(wait_cmd(this.wait, probe_wait(this.wait)));
                match pipe.query_async::<(Value,)>(c).await {
                    Ok((waited,)) => {
                        let confirmed = confirmed_count(&waited).unwrap_or(0);
                        this.health.record(confirmed, this.wait.replicas);
                    }
                    // NOREPLICAS, a moved slot, a dead node: still lacking; a new connection
                    // next time.
                    Err(_) => conn = None,
                }
            }
        });
    }
}

/// The writers of one primary.
struct Committer {
    primary: Arc<Primary>,
    queue: mpsc::Sender<Pending>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Committer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Committer {
    fn start(addr: &NodeAddr, nodes: &Arc<Nodes>, wait: ReplicaWait) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
        let primary = Arc::new(Primary {
            addr: Arc::clone(addr),
            nodes: Arc::clone(nodes),
            wait,
            health: Health::default(),
            marker: Mutex::new(String::new()),
            looked: tokio::sync::OnceCell::new(),
        });
        let tasks = (0..WRITERS_PER_NODE)
            .map(|_| {
                let writer = CommitConnection {
                    primary: Arc::clone(&primary),
                    conn: None,
                };
                tokio::spawn(writer.run(Arc::clone(&receiver)))
            })
            .collect();
        Arc::new(Self {
            primary,
            queue,
            tasks,
        })
    }
}

/// One connection of a primary's group commit.
struct CommitConnection {
    primary: Arc<Primary>,
    conn: Option<MultiplexedConnection>,
}

/// What a batch's marker and `WAIT` said.
enum Tail {
    /// Replicas that confirmed everything the batch wrote and read.
    Confirmed(u32),
    /// The marker was refused: nothing after the batch's writes is known to be confirmed.
    Refused(redis::ServerError),
    /// Something else came back.
    Garbled(String),
}

impl CommitConnection {
    async fn run(mut self, receiver: Arc<tokio::sync::Mutex<mpsc::Receiver<Pending>>>) {
        loop {
            let batch = {
                let mut receiver = receiver.lock().await;
                let Some(first) = receiver.recv().await else {
                    return;
                };
                let mut batch = vec![first];
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(next) => batch.push(next),
                        Err(_) => break,
                    }
                }
                batch
            };
            self.send(batch).await;
        }
    }

    async fn connection(&mut self) -> Result<&mut MultiplexedConnection, StoreError> {
        let conn = match self.conn.take() {
            Some(conn) => conn,
            // Longer than the WAIT, so that a WAIT that times out is answered, not abandoned.
            None => {
                let timeout = self.primary.wait.timeout + Duration::from_millis(500);
                self.primary
                    .nodes
                    .connect(&self.primary.addr, timeout)
                    .await?
            }
        };
        Ok(self.conn.insert(conn))
    }

    /// One batch: every write, the marker, one `WAIT`; each write answered from its replies
    /// and the `WAIT`'s count. Writes refused with `NOSCRIPT` go once more, with their script
    /// loaded first, in a batch of their own on the same connection.
    async fn send(&mut self, mut batch: Vec<Pending>) {
        let mut load: Vec<&'static str> = Vec::new();
        for _ in 0..2 {
            // Queued before the primary was found lacking: refused now, without sending.
            if let Err(refused) = self.primary.health.refuse(self.primary.wait) {
                fail_all(batch, &refused);
                return;
            }
            batch = self.round(batch, &load).await;
            if batch.is_empty() {
                return;
            }
            load = batch.iter().filter_map(|p| p.script).collect();
            load.dedup();
        }
        fail_all(
            batch,
            &StoreError::unavailable("Redis lost the update script twice", "NOSCRIPT"),
        );
    }

    /// Sends one pipeline; returns the writes to send again (`NOSCRIPT`).
    async fn round(&mut self, batch: Vec<Pending>, load: &[&'static str]) -> Vec<Pending> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for source in load {
            pipe.cmd("SCRIPT").arg("LOAD").arg(*source).ignore();
        }
        for p in &batch {
            for cmd in &p.cmds {
                pipe.add_command(cmd.clone());
            }
        }
        let marker = batch.last().map(|p| p.marker.clone()).unwrap_or_default();
        pipe.cmd("INCR").arg(&marker);
        pipe.add_command(wait_cmd(self.primary.wait, self.primary.wait.timeout));
        let started = Instant::now();
        let sent = match self.connection().await {
            Ok(conn) => pipe.query_async::<Vec<Value>>(conn).await,
            Err(e) => {
                fail_all(batch, &e);
                self.primary.nodes.refresh().await.ok();
                return Vec::new();
            }
        };
        let mut replies = match sent {
            Ok(replies) => replies.into_iter(),
            Err(e) => {
                // The connection is gone with whatever it had sent: never reuse it.
                self.conn = None;
                fail_all(batch, &unknown(&self.primary.addr, e));
                self.primary.nodes.refresh().await.ok();
                return Vec::new();
            }
        };
        let mut own: Vec<(Pending, Vec<Value>)> = Vec::with_capacity(batch.len());
        for p in batch {
            let values: Vec<Value> = replies.by_ref().take(p.cmds.len()).collect();
            own.push((p, values));
        }
        let tail = match (replies.next(), replies.next()) {
            (Some(Value::ServerError(e)), _) => Tail::Refused(e),
            (Some(_), Some(waited)) => match confirmed_count(&waited) {
                Some(n) => Tail::Confirmed(n),
                None => Tail::Garbled(format!("{waited:?}")),
            },
            other => Tail::Garbled(format!("{other:?}")),
        };
        *self
            .primary
            .marker
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = marker;
        let required = self.primary.wait.replicas;
        let verdict = match tail {
            Tail::Confirmed(n) => self.primary.judge(n, started.elapsed()),
            Tail::Refused(e) if e.code() == "NOREPLICAS" => {
                self.primary.judge(0, started.elapsed())
            }
            Tail::Refused(e) => Err(StoreError::unavailable(
                "Redis refused the replication marker",
                format!("{}: {e}", self.primary.addr),
            )),
            Tail::Garbled(what) => Err(StoreError::unavailable(
                "WAIT answered something else",
                format!("{}: {what}", self.primary.addr),
            )),
        };
        let mut retry = Vec::new();
        for (p, values) in own {
            let refused = values.iter().find_map(|v| match v {
                Value::ServerError(e) => Some(e.clone()),
                _ => None,
            });
            let answer = match refused {
                // Not executed: nothing of it is in place.
                Some(e) if redirected(&e) => Answer::Redirected,
                Some(e) if e.code() == "NOSCRIPT" && p.script.is_some() => {
                    retry.push(p);
                    continue;
                }
                // `min-replicas-to-write` refused this write itself: it did not run.
                Some(e) if e.code() == "NOREPLICAS" => {
                    Answer::Failed(StoreError::ReplicasMissing {
                        confirmed: 0,
                        required,
                    })
                }
                // Executed (a script may have refused the change: its replies say so).
                _ => match &verdict {
                    Ok(()) => Answer::Confirmed(values),
                    Err(e) => Answer::Failed(duplicate(e)),
                },
            };
            let _ = p.reply.send(answer);
        }
        retry
    }
}

fn fail_all(batch: Vec<Pending>, error: &StoreError) {
    for p in batch {
        let _ = p.reply.send(Answer::Failed(duplicate(error)));
    }
}

/// The same error for every write of a batch (`StoreError` is not `Clone`: its cause is boxed).
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotReplicated {
            confirmed,
            required,
        } => StoreError::NotReplicated {
            confirmed: *confirmed,
            required: *required,
        },
        StoreError::ReplicasMissing {
            confirmed,
            required,
        } => StoreError::ReplicasMissing {
            confirmed: *confirmed,
            required: *required,
        },
        StoreError::Unavailable { message, source } => StoreError::Unavailable {
            message: message.clone(),
            source: source.as_ref().map(|s| s.to_string().into()),
        },
        other => StoreError::unavailable("the replica-confirmed write failed", other.to_string()),
    }
}
