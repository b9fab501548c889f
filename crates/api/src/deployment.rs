//! Where the binary's Redis comes from: the configured URL, or a private redis-server that lives
//! as long as the returned [`Deployment`].

use flyrtech_infrastructure::{LaunchError, LocalRedis};

/// A Redis to talk to, and the private server behind it if we started one.
#[derive(Debug)]
pub struct Deployment {
    /// The URL to connect to.
    pub url: String,
    // Kept only to stop the private server when the deployment drops.
    _private: Option<LocalRedis>,
}

impl Deployment {
    /// Uses `url`, or starts a private server (a 3-master cluster when `cluster`).
    ///
    /// # Errors
    /// [`LaunchError`] when no URL is given and redis-server cannot be started.
    pub fn resolve(url: Option<&str>, cluster: bool) -> Result<Self, LaunchError> {
        if let Some(url) = url {
            return Ok(Self {
                url: url.to_owned(),
                _private: None,
            });
        }
        let local = if cluster {
            LocalRedis::cluster(3)?
        } else {
            LocalRedis::standalone()?
        };
        tracing::info!(
            url = %local.url(),
            cluster,
            "no Redis URL configured: started a private redis-server (stopped on exit)"
        );
        Ok(Self {
            url: local.url(),
            _private: Some(local),
        })
    }
}
