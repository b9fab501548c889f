//! The service's binary as a user runs it: a private redis-server when no URL is configured, clear errors
//! for a missing redis-server and for bad configuration, the long-running commands as processes
//! killed and restarted, and no secret printed. One test binary, a module per concern; the
//! helpers here, and the suite's own (`flyrtech_tests`: servers, ports) for the rest.
#![allow(clippy::unwrap_used)]

mod basics;
mod dataset;
mod deployment;
mod events;
mod observability;
mod secrets;
mod serve;
mod traces;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

pub(crate) use flyrtech_tests::service;

/// The service's binary with none of the caller's configuration ([`flyrtech_tests::binary`]).
fn flyrtech() -> Command {
    flyrtech_tests::binary(env!("CARGO_BIN_EXE_flyrtech"))
}

/// A running `flyrtech serve`, read until it listens; killed when dropped unless a test ended it
/// (a failed assertion must not leave it running).
struct Serving {
    child: std::process::Child,
    addr: String,
    redis_port: u16,
    log: String,
    stderr: BufReader<std::process::ChildStderr>,
}

impl Serving {
    /// Starts `flyrtech serve ARGS --listen 127.0.0.1:0` on a private redis-server and reads its
    /// log until it says where it listens (bounded by the lines it prints).
    fn start(args: &[&str]) -> Self {
        let mut serving = Self::start_with(args, &[]);
        serving.redis_port = serving
            .log
            .split("url=redis://127.0.0.1:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap();
        serving
    }

    /// Starts `flyrtech serve ARGS --listen 127.0.0.1:0` with `env` and reads its log until it
    /// says where it listens.
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = flyrtech()
            .arg("serve")
            .args(args)
            .args(["--listen", "127.0.0.1:0"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut log = String::new();
        let addr = loop {
            let mut line = String::new();
            assert!(
                stderr.read_line(&mut line).unwrap() > 0,
                "serve exited before listening:\n{log}"
            );
            log.push_str(&line);
            if line.contains("serving the journey API") {
                let addr = line.split("addr=").nth(1).unwrap();
                break addr.split_whitespace().next().unwrap().to_owned();
            }
        };
        Self {
            child,
            addr,
            redis_port: 0,
            log,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit status and the whole log.
    fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let killed = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stderr, &mut rest).unwrap();
        self.log.push_str(&rest);
        (status, std::mem::take(&mut self.log))
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// Whether anything answers on the loopback port.
fn listening(port: u16) -> bool {
    std::net::TcpStream::connect(format!("127.0.0.1:{port}")).is_ok()
}

/// Polls (bounded) until nothing listens on `port`; false when something still does.
async fn gone_within(port: u16, limit: std::time::Duration) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while listening(port) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    true
}

/// A private redis-server, its URL, and a connection handle on it.
async fn private_redis() -> (
    flyrtech_tests::TestRedis,
    String,
    flyrtech_infrastructure::Redis,
) {
    let local = flyrtech_tests::TestRedis::single();
    let url = local.url();
    let redis = local.connect().await;
    (local, url, redis)
}

/// Counts a Redis command's calls so far (`INFO commandstats`).
async fn calls(redis: &flyrtech_infrastructure::Redis, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix(&format!("cmdstat_{command}:calls=")))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}
