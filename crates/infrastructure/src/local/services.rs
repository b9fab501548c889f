//! Private `nats-server -js` and PostgreSQL processes on free loopback ports, in temporary
//! directories, for the test suite and for the lab's measurements (the servers a machine already
//! runs on 4222 and 5432 are never used).
//!
//! Like [`crate::local::redis_servers`]: each server is polled until it answers (bounded, never a blind
//! sleep), stopped when its handle drops, and its log tail is in every error. PostgreSQL refuses
//! to run as root, so as root its directory is handed to the `postgres` user and `initdb` and
//! `postgres` run as that user (`setpriv`).
//!
//! Binaries: `nats-server` from PATH; PostgreSQL's from `FLYRTECH_PG_BIN` if set, else the
//! newest `/usr/lib/postgresql/<version>/bin` (Debian), else PATH.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::local::redis_servers::{LaunchError, free_port, spawn_from_long_lived_thread, tail};

/// How long a server may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A private `nats-server` with JetStream, its store in a temporary directory.
#[derive(Debug)]
pub struct LocalNats {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl LocalNats {
    /// Starts it and waits until it accepts connections.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without `nats-server`; [`LaunchError::Failed`] with its log.
    pub fn start() -> Result<Self, LaunchError> {
        let dir = tempfile::Builder::new()
            .prefix("flyrtech-nats-")
            .tempdir()?;
        let port = free_port(false)?;
        let mut nats = Self {
            child: None,
            port,
            dir,
        };
        nats.spawn()?;
        Ok(nats)
    }

    fn spawn(&mut self) -> Result<(), LaunchError> {
        let mut cmd = Command::new("nats-server");
        cmd.args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string()])
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .arg("-l")
            .arg(self.log_path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        self.child = Some(spawn(cmd, "nats-server")?);
        wait_for_port(self.port, || self.log_tail(), "nats-server")
    }

    /// Kills it (SIGKILL, as a lost node); its JetStream store stays for [`LocalNats::start_again`].
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts it again on the same port and store, and waits until it accepts connections.
    ///
    /// # Errors
    /// As [`LocalNats::start`].
    pub fn start_again(&mut self) -> Result<(), LaunchError> {
        self.stop();
        self.spawn()
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path())
    }
}

impl Drop for LocalNats {
    fn drop(&mut self) {
        kill(&mut self.child);
    }
}

/// A private PostgreSQL cluster (`initdb` into a temporary directory), trust authentication for
/// the `postgres` user on loopback.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl LocalPostgres {
    /// Initialises and starts it, and waits until it accepts connections.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without PostgreSQL's server binaries;
    /// [`LaunchError::Failed`] with `initdb`'s output or the server log.
    pub fn start() -> Result<Self, LaunchError> {
        let dir = tempfile::Builder::new().prefix("flyrtech-pg-").tempdir()?;
        let owner = server_user()?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
        }
        let initdb = as_owner(owner, &pg_binary("initdb"))
            .arg("-D")
            .arg(dir.path().join("data"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| not_installed(e, "initdb"))?;
        if !initdb.status.success() {
            return Err(LaunchError::Failed {
                what: "initdb failed".into(),
                log: String::from_utf8_lossy(&initdb.stderr).into_owned(),
            });
        }
        let mut pg = Self {
            child: None,
            port: free_port(false)?,
            dir,
        };
        pg.spawn(owner)?;
        Ok(pg)
    }

    fn spawn(&mut self, owner: Option<(u32, u32)>) -> Result<(), LaunchError> {
        let mut cmd = as_owner(owner, &pg_binary("postgres"));
        cmd.arg("-D")
            .arg(self.dir.path().join("data"))
            .args(["-p", &self.port.to_string()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .arg("-k")
            .arg(self.dir.path())
            .args(["-c", "max_connections=50"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(self.log_path())
                    .map(Stdio::from)
                    .unwrap_or_else(|_| Stdio::null()),
            );
        self.child = Some(spawn(cmd, "postgres")?);
        wait_for_port(self.port, || self.log_tail(), "postgres")?;
        // The port answers before recovery has finished; wait until queries are accepted.
        let port = self.port.to_string();
        wait_until(
            "postgres to accept queries",
            || self.log_tail(),
            || {
                Command::new(pg_binary("pg_isready"))
                    .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            },
        )
    }

    /// The port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops it as `pg_ctl stop -m fast` does (SIGINT: sessions aborted, a clean shutdown) and
    /// waits up to 10 s for it to exit; its data stays for [`LocalPostgres::start_again`].
    pub fn stop(&mut self) {
        // SIGKILL would leave shared memory and children behind.
        if let Some(child) = self.child.as_mut() {
            let _ = Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    self.child = None;
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        kill(&mut self.child);
    }

    /// Starts it again on the same port and data, and waits until it accepts queries.
    ///
    /// # Errors
    /// As [`LocalPostgres::start`].
    pub fn start_again(&mut self) -> Result<(), LaunchError> {
        self.stop();
        self.spawn(server_user()?)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self) -> String {
        tail(&self.log_path())
    }
}

impl Drop for LocalPostgres {
    fn drop(&mut self) {
        self.stop();
    }
}

/// As root: the `postgres` user's uid and gid, which the server must run as.
fn server_user() -> Result<Option<(u32, u32)>, LaunchError> {
    let euid = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m));
    if !matches!(euid, Ok(0)) {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            (fields.first() == Some(&"postgres") && fields.len() > 3)
                .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))
                .flatten()
        })
        .map(Some)
        .ok_or_else(|| LaunchError::Failed {
            what: "PostgreSQL cannot run as root and there is no `postgres` user to run it as"
                .into(),
            log: String::new(),
        })
}

fn as_owner(owner: Option<(u32, u32)>, program: &Path) -> Command {
    match owner {
        Some((uid, gid)) => {
            let mut cmd = Command::new("setpriv");
            cmd.arg(format!("--reuid={uid}"))
                .arg(format!("--regid={gid}"))
                .arg("--clear-groups")
                .args(["--pdeathsig", "TERM"])
                .arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// A PostgreSQL server binary (see the module docs for where it is looked for).
fn pg_binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("FLYRTECH_PG_BIN") {
        return Path::new(&dir).join(name);
    }
    let debian = std::fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version: u32 = e.file_name().to_str()?.parse().ok()?;
                    Some((version, e.path().join("bin").join(name)))
                })
                .filter(|(_, path)| path.exists())
                .max_by_key(|(version, _)| *version)
                .map(|(_, path)| path)
        });
    debian.unwrap_or_else(|| PathBuf::from(name))
}

fn spawn(cmd: Command, program: &'static str) -> Result<Child, LaunchError> {
    spawn_from_long_lived_thread(cmd).map_err(|e| not_installed(e, program))
}

fn not_installed(e: std::io::Error, program: &'static str) -> LaunchError {
    match e.kind() {
        std::io::ErrorKind::NotFound => LaunchError::NotInstalled { program },
        _ => LaunchError::Io(e),
    }
}

fn wait_for_port(port: u16, log: impl Fn() -> String, program: &str) -> Result<(), LaunchError> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    wait_until(&format!("{program} to listen on port {port}"), log, || {
        TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
    })
}

/// Polls `ready` every 20 ms for at most [`START_TIMEOUT`].
fn wait_until(
    what: &str,
    log: impl Fn() -> String,
    mut ready: impl FnMut() -> bool,
) -> Result<(), LaunchError> {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        if Instant::now() > deadline {
            return Err(LaunchError::Failed {
                what: format!("gave up waiting for {what}"),
                log: log(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}
