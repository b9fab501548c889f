//! Starts private `redis-server` processes on free loopback ports: one server, several
//! independent masters, or a 3-master cluster. Used by the test suite and by the binary when no
//! Redis URL is configured.
//!
//! Every server runs in its own temporary directory with persistence off, is polled with `PING`
//! until it answers (bounded, never a blind sleep), and is killed when its handle drops. When a
//! server fails, the error carries the tail of its log.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
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
    #[error(
        "`{program}` was not found on PATH. Install Redis (Debian/Ubuntu: `apt-get install \
         redis-server redis-tools`; macOS: `brew install redis`), or point the service at a \
         running Redis with --redis-url or FLYRTECH_REDIS_URL (REDIS_URL in the tests)."
    )]
    NotInstalled {
        /// The missing program.
        program: &'static str,
    },
    /// A server or `redis-cli` ran but did not come up; `log` holds what it said.
    #[error("{what}\n--- redis log ---\n{log}")]
    Failed {
        /// What went wrong.
        what: String,
        /// The tail of the server log, or redis-cli's output.
        log: String,
    },
    /// Operating-system trouble (temporary directory, process spawn).
    #[error("local Redis: {0}")]
    Io(#[from] std::io::Error),
}

/// One `redis-server` process. Killed on drop.
#[derive(Debug)]
pub struct RedisProcess {
    child: Option<Child>,
    port: u16,
    cluster: bool,
    dir: TempDir,
}

impl RedisProcess {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without `redis-server`; [`LaunchError::Failed`] with the
    /// server log when it exits or does not answer in time.
    pub fn start(cluster: bool) -> Result<Self, LaunchError> {
        let mut last = None;
        for _ in 0..PORT_ATTEMPTS {
            let port = free_port(cluster)?;
            let mut process = Self {
                child: None,
                port,
                cluster,
                dir: tempfile::Builder::new()
                    .prefix("flyrtech-redis-")
                    .tempdir()?,
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
        let dir = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(self.log_path());
        if self.cluster {
            cmd.args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .arg("--cluster-config-file")
                .arg(dir.join("nodes.conf"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::NotInstalled {
                program: "redis-server",
            },
            _ => LaunchError::Io(e),
        })?;
        self.child = Some(child);
        self.wait_until_ready()
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
        self.dir.path().join("redis.log")
    }

    /// The last lines of the server log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server, as a crash or an outage would. Its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Already-exited children make kill fail; wait reaps either way.
            let _ = child.kill();
            let _ = child.wait();
        }
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
        self.stop();
    }
}

/// A private Redis deployment: one server, or the masters of a cluster.
#[derive(Debug)]
pub struct LocalRedis {
    nodes: Vec<RedisProcess>,
}

impl LocalRedis {
    /// One standalone server.
    ///
    /// # Errors
    /// See [`RedisProcess::start`].
    pub fn standalone() -> Result<Self, LaunchError> {
        Ok(Self {
            nodes: vec![RedisProcess::start(false)?],
        })
    }

    /// `n` independent standalone masters (for Redlock).
    ///
    /// # Errors
    /// See [`RedisProcess::start`].
    pub fn independent_masters(n: usize) -> Result<Vec<Self>, LaunchError> {
        (0..n).map(|_| Self::standalone()).collect()
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
        let this = Self { nodes };
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(this.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())))
            .args(["--cluster-replicas", "0", "--cluster-yes"])
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
        this.wait_for_cluster()?;
        Ok(this)
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

    /// Every node's log tail, labelled by port.
    pub fn log_tail(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("[port {}]\n{}", n.port(), n.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A port that is free now, with room for the cluster bus (port + 10000) when needed.
fn free_port(cluster: bool) -> Result<u16, LaunchError> {
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
