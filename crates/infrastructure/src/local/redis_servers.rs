//! Starts private `redis-server` processes on free loopback ports: one server, several
//! independent masters, or a 3-master cluster. Used by the test suite and by the binary when no
//! Redis URL is configured.
//!
//! Throw-away servers (the tests, `compare`) run in a temporary directory with persistence off.
//! The one `serve` runs by default ([`LocalRedis::persistent`]) keeps its data in a directory of
//! the operator's with AOF on, so a restart keeps every acknowledged update:
//! - with `appendfsync everysec` a crash of `serve` or of redis-server itself loses nothing that
//!   was acknowledged (Redis writes the AOF before it replies; only an OS crash or power loss can
//!   lose the last second), with `always` not even that;
//! - the server never outlives `serve`: it is started through `setpriv --pdeathsig TERM`, from a
//!   thread that lives as long as the process (the signal follows the spawning *thread*), so the
//!   kernel stops it when `serve` dies, even by SIGKILL; where `setpriv` is missing a warning says
//!   so and the next start deals with the leftover;
//! - an exclusive lock on `flyrtech.lock` keeps two `serve` processes off one directory, and a
//!   server left running there by an earlier `serve` (its port is recorded in `redis.port`) is
//!   shut down with `SHUTDOWN`, which writes its AOF, before the new one starts on the same files.
//!
//! Every server is polled with `PING` until it answers (bounded, never a blind sleep) and stopped
//! when its handle drops. When a server fails, the error carries the tail of its log.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a server may take to answer its first `PING`.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new cluster may take to report `cluster_state:ok` everywhere.
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at finding a port nobody grabs between our probe and the server's bind.
const PORT_ATTEMPTS: usize = 8;

/// Why a local Redis could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LaunchError {
    /// The program is not on PATH.
    #[error("`{program}` was not found on PATH. {}", install_hint(.program))]
    NotInstalled {
        /// The missing program.
        program: &'static str,
    },
    /// A server or `redis-cli` ran but did not come up; `log` holds what it said.
    #[error("{what}\n--- log ---\n{log}")]
    Failed {
        /// What went wrong.
        what: String,
        /// The tail of the server log, or redis-cli's output.
        log: String,
    },
    /// Another process holds the data directory's lock.
    #[error(
        "the data directory {0} is in use by another flyrtech serve (its flyrtech.lock is held); \
         stop that one, or give this one its own --data-dir"
    )]
    DataDirInUse(PathBuf),
    /// Operating-system trouble (temporary directory, process spawn).
    #[error("local Redis: {0}")]
    Io(#[from] std::io::Error),
}

/// What to do about a missing program.
fn install_hint(program: &str) -> &'static str {
    match program {
        "nats-server" => {
            "Install NATS (Debian/Ubuntu: `apt-get install nats-server`), or point the command at \
             a running server with --bus nats://HOST:PORT."
        }
        "initdb" | "postgres" | "pg_isready" => {
            "Install PostgreSQL (Debian/Ubuntu: `apt-get install postgresql`; the server binaries \
             are looked for in /usr/lib/postgresql/*/bin or FLYRTECH_PG_BIN), or point the \
             command at a running server with --postgres postgres://..."
        }
        _ => {
            "Install Redis (Debian/Ubuntu: `apt-get install redis-server redis-tools`; macOS: \
             `brew install redis`), or point the service at a running Redis with --redis-url or \
             FLYRTECH_REDIS_URL (REDIS_URL in the tests)."
        }
    }
}

/// The Redis-compatible server every private server runs: `FLYRTECH_REDIS_SERVER` (a program on
/// PATH or a path, e.g. Valkey's `valkey-server`), else `redis-server`. Read once.
pub fn server_program() -> &'static str {
    static PROGRAM: OnceLock<String> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        std::env::var("FLYRTECH_REDIS_SERVER")
            .ok()
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| "redis-server".to_owned())
    })
}

/// When a persistent server makes its AOF durable (`appendfsync`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Before every reply: nothing acknowledged is lost even to an OS crash; slower writes.
    Always,
    /// Once a second: a crash of any process loses nothing acknowledged, an OS crash up to a
    /// second. Redis' default.
    #[default]
    EverySec,
}

impl Fsync {
    fn name(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
        }
    }
}

impl std::fmt::Display for Fsync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Fsync {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            other => Err(format!(
                "unknown fsync policy {other:?}; use always or everysec"
            )),
        }
    }
}

/// Where a server keeps its files, and whether they outlive it.
#[derive(Debug)]
enum Storage {
    /// A temporary directory, persistence off, deleted with the handle.
    Throwaway(TempDir),
    /// The operator's directory, AOF on.
    Persistent { dir: PathBuf, fsync: Fsync },
}

impl Storage {
    fn dir(&self) -> &Path {
        match self {
            Self::Throwaway(dir) => dir.path(),
            Self::Persistent { dir, .. } => dir,
        }
    }
}

/// One `redis-server` process. Stopped on drop.
#[derive(Debug)]
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    cluster: bool,
    storage: Storage,
    /// Extra `redis-server` arguments (replication, failover timing).
    extra: Vec<String>,
}

impl RedisProcess {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without `redis-server`; [`LaunchError::Failed`] with the
    /// server log when it exits or does not answer in time.
    pub fn start(cluster: bool) -> Result<Self, LaunchError> {
        let storage = || -> Result<Storage, LaunchError> {
            Ok(Storage::Throwaway(
                tempfile::Builder::new()
                    .prefix("flyrtech-redis-")
                    .tempdir()?,
            ))
        };
        Self::start_with(cluster, storage, &[])
    }

    /// A throw-away server with extra `redis-server` arguments.
    fn start_throwaway(cluster: bool, extra: &[String]) -> Result<Self, LaunchError> {
        let storage = || -> Result<Storage, LaunchError> {
            Ok(Storage::Throwaway(
                tempfile::Builder::new()
                    .prefix("flyrtech-redis-")
                    .tempdir()?,
            ))
        };
        Self::start_with(cluster, storage, extra)
    }

    fn start_with(
        cluster: bool,
        storage: impl Fn() -> Result<Storage, LaunchError>,
        extra: &[String],
    ) -> Result<Self, LaunchError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(cluster)?;
            let mut process = Self {
                child: None,
                port,
                cluster,
                storage: storage()?,
                extra: extra.to_vec(),
            };
            match process.spawn() {
                Ok(()) => return Ok(process),
                // Someone took the port between our probe and the bind: try another.
                Err(LaunchError::Failed { what, log })
                    if log.contains("Address already in use") =>
                {
                    last = Some(LaunchError::Failed { what, log });
                }
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or_else(|| LaunchError::Failed {
            what: "no free port".into(),
            log: String::new(),
        }))
    }

    fn spawn(&mut self) -> Result<(), LaunchError> {
        let dir = self.storage.dir().to_owned();
        let persistent = matches!(self.storage, Storage::Persistent { .. });
        // A persistent server must not outlive us: `setpriv` asks the kernel to send it SIGTERM
        // when its parent thread dies (see the module docs).
        let mut cmd = if persistent && setpriv_available() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "TERM", server_program()]);
            c
        } else {
            Command::new(server_program())
        };
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(&dir)
            .arg("--logfile")
            .arg(self.log_path());
        match &self.storage {
            Storage::Throwaway(_) => {
                cmd.args(["--appendonly", "no"]);
            }
            Storage::Persistent { fsync, .. } => {
                cmd.args(["--appendonly", "yes", "--appendfsync", fsync.name()]);
            }
        }
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"));
            if !self.extra.iter().any(|a| a == "--cluster-node-timeout") {
                cmd.args(["--cluster-node-timeout", "5000"]);
            }
        }
        cmd.args(&self.extra);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = spawn_from_long_lived_thread(cmd).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::NotInstalled {
                program: server_program(),
            },
            _ => LaunchError::Io(e),
        })?;
        self.child = Some(child);
        self.wait_until_ready()?;
        if persistent {
            std::fs::write(dir.join(PORT_FILE), self.port.to_string())?;
        }
        Ok(())
    }

    fn wait_until_ready(&mut self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(self.failure(format!(
                    "redis-server on port {} exited: {status}",
                    self.port
                )));
            }
            if command(self.port, "PING").is_ok_and(|reply| reply.starts_with("+PONG")) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.failure(format!(
                    "redis-server on port {} did not answer PING",
                    self.port
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn failure(&self, what: String) -> LaunchError {
        LaunchError::Failed {
            what,
            log: self.log_tail(),
        }
    }

    fn log_path(&self) -> PathBuf {
        self.storage.dir().join("redis.log")
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path())
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server, as a crash or an outage would. A throw-away server's data is gone; a
    /// persistent one keeps what its AOF holds.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already-exited children make kill fail; wait reaps either way.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server the way an operator would: `SHUTDOWN` (a persistent server writes its
    /// AOF), then, should it not exit in time, a kill.
    pub fn shutdown(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = command(self.port, "SHUTDOWN");
            let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.stop();
    }

    /// The process id, to signal the server as a fault would (SIGSTOP, SIGCONT, SIGKILL).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends `signal` (`STOP`, `CONT`, `KILL`, ...) to the server with `kill(1)`.
    ///
    /// # Errors
    /// When the server is not running or `kill` fails.
    pub fn signal(&self, signal: &str) -> std::io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| std::io::Error::other("the server is not running"))?;
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill -{signal} {pid}: {status}"
            )))
        }
    }

    /// Sends one inline command and returns the raw reply (for tests that inspect a node).
    ///
    /// # Errors
    /// When the server does not answer.
    pub fn raw_command(&self, line: &str) -> std::io::Result<String> {
        command(self.port, line)
    }

    /// Starts the server again on the same port (after [`RedisProcess::stop`]).
    ///
    /// # Errors
    /// As [`RedisProcess::start`].
    pub fn restart(&mut self) -> Result<(), LaunchError> {
        self.stop();
        self.spawn()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        match self.storage {
            Storage::Throwaway(_) => self.stop(),
            Storage::Persistent { .. } => self.shutdown(),
        }
    }
}

/// How long a server may take to exit after `SHUTDOWN`.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);
/// Where a persistent server's port is recorded, to find a leftover server at the next start.
const PORT_FILE: &str = "redis.port";
/// The data directory's lock, held by the `serve` that uses it.
const LOCK_FILE: &str = "flyrtech.lock";

/// A private Redis deployment: one server, or the masters of a cluster.
#[derive(Debug)]
pub struct LocalRedis {
    nodes: Vec<RedisProcess>,
    /// Held for a persistent deployment's whole life: the data directory is ours.
    _lock: Option<File>,
}

impl LocalRedis {
    /// One standalone server.
    ///
    /// # Errors
    /// See [`RedisProcess::start`].
    pub fn standalone() -> Result<Self, LaunchError> {
        Ok(Self {
            nodes: vec![RedisProcess::start(false)?],
            _lock: None,
        })
    }

    /// One standalone server keeping its data in `dir` (created if missing) with AOF on: what
    /// `serve` runs when no Redis URL is configured. See the module docs for what it guarantees.
    ///
    /// # Errors
    /// [`LaunchError::DataDirInUse`] when another process holds the directory;
    /// [`LaunchError::Failed`] when a leftover server there will not stop, or the new one does
    /// not start; as [`RedisProcess::start`] otherwise.
    pub fn persistent(dir: &Path, fsync: Fsync) -> Result<Self, LaunchError> {
        std::fs::create_dir_all(dir)?;
        let dir = dir.canonicalize()?;
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))?;
        if lock.try_lock().is_err() {
            return Err(LaunchError::DataDirInUse(dir));
        }
        stop_leftover_server(&dir)?;
        let storage = || {
            Ok(Storage::Persistent {
                dir: dir.clone(),
                fsync,
            })
        };
        Ok(Self {
            nodes: vec![RedisProcess::start_with(false, storage, &[])?],
            _lock: Some(lock),
        })
    }

    /// `n` independent standalone masters (for Redlock).
    ///
    /// # Errors
    /// See [`RedisProcess::start`].
    pub fn independent_masters(n: usize) -> Result<Vec<Self>, LaunchError> {
        (0..n).map(|_| Self::standalone()).collect()
    }

    /// One primary (first node) and `replicas` replicas of it, polled until the primary reports
    /// every replica `online`.
    ///
    /// # Errors
    /// See [`RedisProcess::start`]; [`LaunchError::Failed`] when replication does not start.
    pub fn primary_with_replicas(replicas: usize) -> Result<Self, LaunchError> {
        Self::replicated(RedisProcess::start(false)?, replicas, &[])
    }

    /// As [`LocalRedis::primary_with_replicas`], every node keeping an AOF (`fsync` policy) in its
    /// temporary directory: [`RedisProcess::restart`] brings a node back with its data, and
    /// `WAITAOF` can count the replicas' disks.
    ///
    /// # Errors
    /// See [`LocalRedis::primary_with_replicas`].
    pub fn primary_with_replicas_and_aof(
        replicas: usize,
        fsync: Fsync,
    ) -> Result<Self, LaunchError> {
        let aof = [
            "--appendonly".to_owned(),
            "yes".to_owned(),
            "--appendfsync".to_owned(),
            fsync.name().to_owned(),
        ];
        Self::replicated(RedisProcess::start_throwaway(false, &aof)?, replicas, &aof)
    }

    fn replicated(
        primary: RedisProcess,
        replicas: usize,
        replica_args: &[String],
    ) -> Result<Self, LaunchError> {
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            let mut extra = vec![
                "--replicaof".to_owned(),
                "127.0.0.1".to_owned(),
                nodes[0].port().to_string(),
            ];
            extra.extend_from_slice(replica_args);
            nodes.push(RedisProcess::start_throwaway(false, &extra)?);
        }
        let this = Self { nodes, _lock: None };
        this.wait_for_replicas(0, replicas)?;
        Ok(this)
    }

    /// A cluster of `masters` masters with `replicas` replicas each, set up to fail over fast and
    /// deterministically (node timeout 1 s, no replica validity limit, replica pings every
    /// second), polled until `cluster_state:ok` everywhere and every replica is online.
    ///
    /// # Errors
    /// As [`LocalRedis::cluster`].
    pub fn cluster_with_replicas(masters: usize, replicas: usize) -> Result<Self, LaunchError> {
        let extra: Vec<String> = [
            "--cluster-node-timeout",
            "1000",
            "--cluster-replica-validity-factor",
            "0",
            "--repl-ping-replica-period",
            "1",
        ]
        .map(str::to_owned)
        .to_vec();
        let nodes = (0..masters.max(3) * (1 + replicas))
            .map(|_| RedisProcess::start_throwaway(true, &extra))
            .collect::<Result<Vec<_>, _>>()?;
        let this = Self { nodes, _lock: None };
        this.create_cluster(replicas)?;
        this.wait_for_cluster()?;
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let online: usize = this
                .nodes
                .iter()
                .filter_map(|n| command(n.port(), "INFO replication").ok())
                .filter(|info| info.contains("role:master"))
                .map(|info| info.matches("state=online").count())
                .sum();
            if online >= masters.max(3) * replicas {
                return Ok(this);
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Failed {
                    what: "the cluster's replicas did not come online".into(),
                    log: this.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_for_replicas(&self, primary: usize, replicas: usize) -> Result<(), LaunchError> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let info = command(self.nodes[primary].port(), "INFO replication").unwrap_or_default();
            if info.matches("state=online").count() >= replicas {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Failed {
                    what: "the replicas did not come online".into(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A cluster of `masters` masters (at least 3) without replicas, every slot assigned, built
    /// with `redis-cli --cluster create` and polled until every node reports `cluster_state:ok`.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without `redis-server` or `redis-cli`;
    /// [`LaunchError::Failed`] when the cluster does not form in time.
    pub fn cluster(masters: usize) -> Result<Self, LaunchError> {
        let nodes = (0..masters.max(3))
            .map(|_| RedisProcess::start(true))
            .collect::<Result<Vec<_>, _>>()?;
        let this = Self { nodes, _lock: None };
        this.create_cluster(0)?;
        this.wait_for_cluster()?;
        Ok(this)
    }

    fn create_cluster(&self, replicas: usize) -> Result<(), LaunchError> {
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => LaunchError::NotInstalled {
                    program: "redis-cli",
                },
                _ => LaunchError::Io(e),
            })?;
        if !output.status.success() {
            return Err(LaunchError::Failed {
                what: "redis-cli --cluster create failed".into(),
                log: String::from_utf8_lossy(&output.stdout).into_owned()
                    + &String::from_utf8_lossy(&output.stderr),
            });
        }
        Ok(())
    }

    fn wait_for_cluster(&self) -> Result<(), LaunchError> {
        let deadline = Instant::now() + CLUSTER_TIMEOUT;
        loop {
            let ready = self.nodes.iter().all(|n| {
                command(n.port(), "CLUSTER INFO")
                    .is_ok_and(|info| info.contains("cluster_state:ok"))
            });
            if ready {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(LaunchError::Failed {
                    what: "the cluster did not reach cluster_state:ok".into(),
                    log: self.log_tail(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL to give `--redis-url`: one server's URL, or every cluster node's, comma-separated.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(RedisProcess::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The processes, to stop or restart one in a test.
    pub fn nodes_mut(&mut self) -> &mut [RedisProcess] {
        &mut self.nodes
    }

    /// The processes.
    pub fn nodes(&self) -> &[RedisProcess] {
        &self.nodes
    }

    /// Every node's log tail, labelled by port.
    pub fn log_tail(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("[port {}]\n{}", n.port(), n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// The last 40 lines of a server's log file (empty when it cannot be read).
pub(crate) fn tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A loopback port that is free now, with room for the cluster bus (port + 10000) when needed:
/// the one way every private server, the binary's own helpers and the tests pick a port.
///
/// # Errors
/// [`LaunchError`] when no socket can be bound.
pub fn free_port(cluster: bool) -> Result<u16, LaunchError> {
    loop {
        let port = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?
            .local_addr()?
            .port();
        if !cluster {
            return Ok(port);
        }
        if let Some(bus) = port.checked_add(10_000)
            && TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, bus))).is_ok()
        {
            return Ok(port);
        }
    }
}

/// Sends one inline command and returns the raw reply (enough for PING and CLUSTER INFO).
fn command(port: u16, line: &str) -> std::io::Result<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    stream.set_read_timeout(Some(Duration::from_millis(500)))?;
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf)?;
    Ok(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Shuts down a server an earlier `serve` left running in `dir` (its port is in `redis.port` and
/// it answers that its `dir` is ours), so that the new server starts on files nobody else writes.
fn stop_leftover_server(dir: &Path) -> Result<(), LaunchError> {
    let Some(port) = std::fs::read_to_string(dir.join(PORT_FILE))
        .ok()
        .and_then(|p| p.trim().parse::<u16>().ok())
    else {
        return Ok(());
    };
    let ours =
        command(port, "CONFIG GET dir").is_ok_and(|reply| reply.contains(&*dir.to_string_lossy()));
    if !ours {
        return Ok(());
    }
    tracing::warn!(port, dir = %dir.display(), "a redis-server from an earlier run is still using the data directory; shutting it down (it writes its AOF first)");
    let _ = command(port, "SHUTDOWN");
    let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
    while command(port, "PING").is_ok_and(|r| r.starts_with("+PONG")) {
        if Instant::now() > deadline {
            return Err(LaunchError::Failed {
                what: format!("the leftover redis-server on port {port} did not shut down"),
                log: std::fs::read_to_string(dir.join("redis.log")).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Whether `setpriv` (util-linux) can be run, checked once.
fn setpriv_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let found = Command::new("setpriv")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            tracing::warn!("setpriv not found: a private redis-server may outlive a killed serve (the next start shuts it down)");
        }
        found
    })
}

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Spawns `cmd` from one thread that lives as long as the process: a parent-death signal
/// (`setpriv --pdeathsig`) follows the thread that forked the child, so a short-lived thread (a
/// Tokio worker, a test thread) would stop the server when it ends.
///
/// # Errors
/// The spawn's own error.
pub fn spawn_from_long_lived_thread(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("redis-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::warn!(error = %e, "cannot start the spawner thread"));
        Mutex::new(tx)
    });
    let (reply, answer) = mpsc::channel();
    let sent = spawner
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .send((cmd, reply));
    match sent {
        Ok(()) => answer
            .recv()
            .unwrap_or_else(|_| Err(std::io::Error::other("the spawner thread stopped"))),
        // No spawner thread (it could not start): spawn here, without the guarantee.
        Err(mpsc::SendError((mut cmd, _))) => cmd.spawn(),
    }
}
