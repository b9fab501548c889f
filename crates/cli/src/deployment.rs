//! Where the binary's Redis comes from: the configured URL, or a private redis-server that lives
//! as long as the returned [`Deployment`].

use std::path::PathBuf;

use flyrtech_infrastructure::{Fsync, LaunchError, LocalRedis};

/// What to start when no Redis URL is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Private {
    /// One server with persistence off, gone with the process (`compare`, the operator commands).
    Throwaway,
    /// A 3-master cluster, persistence off (`--cluster`).
    Cluster,
    /// One primary with this many replicas, persistence off (`compare --wait-replicas`).
    Replicated(usize),
    /// One server keeping its data in `dir` with AOF on (`serve`).
    Persistent {
        /// The data directory.
        dir: PathBuf,
        /// When the AOF is made durable.
        fsync: Fsync,
    },
}

/// A Redis to talk to, and the private server behind it if we started one.
#[derive(Debug)]
pub struct Deployment {
    /// The URL to connect to.
    pub url: String,
    // Kept only to stop the private server when the deployment drops.
    _private: Option<LocalRedis>,
}

impl Deployment {
    /// Uses `url`, or starts the `private` server.
    ///
    /// # Errors
    /// [`LaunchError`] when no URL is given and redis-server cannot be started.
    pub fn resolve(url: Option<&str>, private: Private) -> Result<Self, LaunchError> {
        if let Some(url) = url {
            return Ok(Self {
                url: url.to_owned(),
                _private: None,
            });
        }
        let local = match &private {
            Private::Throwaway => LocalRedis::standalone()?,
            Private::Cluster => LocalRedis::cluster(3)?,
            Private::Replicated(replicas) => LocalRedis::primary_with_replicas(*replicas)?,
            Private::Persistent { dir, fsync } => LocalRedis::persistent(dir, *fsync)?,
        };
        match &private {
            Private::Persistent { dir, fsync } => tracing::info!(
                url = %local.url(),
                data_dir = %dir.display(),
                ?fsync,
                "no Redis URL configured: started a private redis-server keeping its data (AOF) in the data directory (stopped on exit)"
            ),
            _ => tracing::info!(
                url = %local.url(),
                "no Redis URL configured: started a private redis-server that keeps nothing (stopped on exit)"
            ),
        }
        // A replicated deployment is reached through its primary.
        let url = match private {
            Private::Replicated(_) => local
                .nodes()
                .first()
                .map_or_else(|| local.url(), |primary| primary.url()),
            _ => local.url(),
        };
        Ok(Self {
            url,
            _private: Some(local),
        })
    }
}
