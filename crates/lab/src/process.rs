//! The service's processes the lab starts where it needs them running (`serve`, `relay`,
//! `project`), as an operator would: the `flyrtech` binary ([`service_binary`]) with its own log
//! file, never outliving the measurement (stopped with SIGTERM, then SIGKILL after a bound, when
//! dropped).
//!
//! # What it may import
//! Nothing of this crate: the comparison and the commands both start processes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The service's binary (`flyrtech`), which the lab runs as a user would where it needs the
/// service running: `named` when given, otherwise the one beside this binary (cargo builds both
/// into one directory).
///
/// # Errors
/// When there is no such file.
pub(crate) fn service_binary(
    named: Option<&std::path::Path>,
) -> anyhow::Result<std::path::PathBuf> {
    let path = match named {
        Some(path) => path.to_owned(),
        None => std::env::current_exe()?.with_file_name("flyrtech"),
    };
    anyhow::ensure!(
        path.is_file(),
        "cannot find the service's binary at {} (build it: cargo build --release -p flyrtech-api; \
         or name it: --service-bin PATH)",
        path.display()
    );
    Ok(path)
}

/// A child process stopped (SIGTERM, then SIGKILL after a bound) when dropped.
pub(crate) struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    pub(crate) fn spawn(
        bin: &Path,
        name: &str,
        args: &[&str],
        url: &str,
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(bin)
            .args(args)
            .env("FLYRTECH_REDIS_URL", url)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether it still runs; its log's end when it does not.
    pub(crate) fn check(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            anyhow::bail!("{}", self.failure(status));
        }
        Ok(())
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .stderr(Stdio::null())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Process {
    /// Waits up to `bound` for it to exit by itself (`relay --drain`); an exit other than 0 is
    /// an error with its log's end.
    ///
    /// # Errors
    /// It failed, or still ran after `bound` (then it is stopped when dropped).
    pub(crate) async fn finish(mut self, bound: Duration) -> anyhow::Result<ExitStatus> {
        let deadline = Instant::now() + bound;
        loop {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "{}", self.failure(status));
                return Ok(status);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "{} still runs after {bound:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn failure(&self, status: ExitStatus) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        format!(
            "{} exited ({status}): {}",
            self.name,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    }
}
