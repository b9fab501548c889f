//! The suite's own test hosts: network namespaces joined by veth pairs, so that a partition is
//! a link taken down (packets dropped, both ways, nothing buffered for later), not a paused
//! process whose socket still takes the stream in.
//!
//! Every address is from 198.18.0.0/15 (RFC 2544, set aside for benchmarking and never
//! routed), one /30 per link, inside namespaces this module made and removes again; no packet
//! leaves them or loopback. Needs root (`ip netns`); a developer without it is told and the test
//! returns, as with NATS and PostgreSQL ([`crate::service`]); under CI a missing one fails.

use std::net::{Ipv4Addr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use flyrtech_infrastructure::LaunchError;

/// Links made by this process so far: each gets its own /30 and interface names.
static LINKS: AtomicU32 = AtomicU32::new(0);

fn ip(args: &[&str]) -> Result<(), LaunchError> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LaunchError::NotInstalled { program: "ip" },
            _ => LaunchError::Io(e),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(LaunchError::Failed {
            what: format!("ip {}", args.join(" ")),
            log: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }
}

/// A namespace of its own: one test host. Removed on drop.
#[derive(Debug)]
pub struct Host {
    name: String,
}

impl Host {
    /// A new namespace with its loopback up.
    ///
    /// # Errors
    /// [`LaunchError::NotInstalled`] without `ip`; [`LaunchError::Failed`] without the right to
    /// make namespaces.
    pub fn create() -> Result<Self, LaunchError> {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        let name = format!("flyrtech-{}-{n}", std::process::id());
        ip(&["netns", "add", &name])?;
        let host = Self { name };
        ip(&["-n", &host.name, "link", "set", "lo", "up"])?;
        Ok(host)
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.name]);
    }
}

/// A veth pair between two hosts (`None`: the root namespace, where the tests themselves run),
/// with a /30 of its own: `addr(0)` on the first end, `addr(1)` on the second.
#[derive(Debug)]
pub struct Link {
    ends: [(Option<String>, String); 2],
    base: Ipv4Addr,
}

impl Link {
    /// Joins `a` and `b` and brings the link up.
    ///
    /// # Errors
    /// As [`Host::create`].
    pub fn join(a: Option<&Host>, b: Option<&Host>) -> Result<Self, LaunchError> {
        let n = LINKS.fetch_add(1, Ordering::Relaxed);
        // 198.18.0.0/15: 32,768 blocks of four, 64 for each process (by its id) in turn.
        let block = ((std::process::id() % 512) * 64 + n % 64) % 32_768;
        let base = Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + block * 4);
        let tag = format!("{:x}{n}", std::process::id() % 0xffff);
        let ends = [
            (a.map(|h| h.name.clone()), format!("fj{tag}a")),
            (b.map(|h| h.name.clone()), format!("fj{tag}b")),
        ];
        ip(&[
            "link", "add", &ends[0].1, "type", "veth", "peer", "name", &ends[1].1,
        ])?;
        let link = Self { ends, base };
        for (i, (ns, name)) in link.ends.iter().enumerate() {
            if let Some(ns) = ns {
                ip(&["link", "set", name, "netns", ns])?;
            }
            let addr = format!("{}/30", link.addr(i));
            link.on(i, &["addr", "add", &addr, "dev", name])?;
            link.on(i, &["link", "set", name, "up"])?;
        }
        Ok(link)
    }

    /// The address of end `i` (0 or 1).
    pub fn addr(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1 + u32::try_from(i).unwrap_or(0))
    }

    fn on(&self, i: usize, args: &[&str]) -> Result<(), LaunchError> {
        match &self.ends[i].0 {
            Some(ns) => {
                let mut all = vec!["-n", ns.as_str()];
                all.extend_from_slice(args);
                ip(&all)
            }
            None => ip(args),
        }
    }

    /// Takes both ends down: from now on every packet either way is dropped.
    pub fn cut(&self) {
        for i in 0..2 {
            self.on(i, &["link", "set", &self.ends[i].1, "down"])
                .unwrap();
        }
    }

    /// Brings both ends up again.
    pub fn heal(&self) {
        for i in 0..2 {
            self.on(i, &["link", "set", &self.ends[i].1, "up"]).unwrap();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Deleting one end deletes the pair.
        let _ = self.on(0, &["link", "del", &self.ends[0].1]);
    }
}

/// A throw-away `redis-server` inside a host, listening on every address of it. Killed on drop.
#[derive(Debug)]
pub struct HostedRedis {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl HostedRedis {
    /// Starts one in `host` with `extra` arguments and waits until it answers at `reach` (an
    /// address of `host` the tests can reach).
    ///
    /// # Errors
    /// As [`Host::create`]; [`LaunchError::Failed`] with its log when it does not answer.
    pub fn start(host: &Host, reach: Ipv4Addr, extra: &[String]) -> Result<Self, LaunchError> {
        let dir = tempfile::Builder::new()
            .prefix("flyrtech-netns-redis-")
            .tempdir()?;
        let port = flyrtech_infrastructure::local::free_port(false)?;
        let mut cmd = host.command(flyrtech_infrastructure::local::server_program());
        cmd.args(["--port", &port.to_string(), "--bind", "0.0.0.0"])
            .args(["--protected-mode", "no", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--repl-ping-replica-period", "1"])
            .arg("--dir")
            .arg(dir.path())
            .arg("--logfile")
            .arg(dir.path().join("redis.log"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = flyrtech_infrastructure::local::spawn_from_long_lived_thread(cmd)?;
        let mut this = Self {
            child: Some(child),
            port,
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&(reach, port).into(), Duration::from_millis(200)).is_err()
        {
            if Instant::now() > deadline {
                let log = this.log_tail();
                this.kill();
                return Err(LaunchError::Failed {
                    what: format!(
                        "redis-server in {} did not answer at {reach}:{port}",
                        host.name
                    ),
                    log,
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(this)
    }

    /// `redis://ADDR:PORT`.
    pub fn url(&self, via: Ipv4Addr) -> String {
        format!("redis://{via}:{}", self.port)
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Kills it, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for HostedRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
