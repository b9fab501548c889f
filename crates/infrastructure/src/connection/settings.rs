//! How to reach Redis: the URL (one server, or a cluster's comma-separated seeds), the
//! timeouts, the transaction pool's size and the authorities for `rediss://`.
//!
//! Its own module so that the connections (`connection`) and the per-primary connections
//! (`nodes`) both read it without importing each other. Its `Debug` never shows a password.

use std::time::Duration;

use redis::cluster::ClusterClientBuilder;

/// How to reach Redis. Its `Debug` shows the URL without its password.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://host:port`, or several comma-separated seed URLs of a cluster.
    pub url: String,
    /// How long one command may take before it fails as unavailable.
    pub response_timeout: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// Dedicated connections for transactions.
    pub pool_size: usize,
    /// PEM certificates of the authorities a `rediss://` server's certificate must chain to;
    /// `None` trusts the system's roots.
    pub tls_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &crate::secrets::redact(&self.url))
            .field("response_timeout", &self.response_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_size", &self.pool_size)
            .field("tls_ca", &self.tls_ca.as_ref().map(Vec::len))
            .finish()
    }
}

impl RedisSettings {
    /// Settings for `url` with the defaults below.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            response_timeout: Duration::from_millis(1000),
            connect_timeout: Duration::from_millis(500),
            pool_size: 64,
            tls_ca: None,
        }
    }

    /// These settings with a command timeout long enough for a confirmation that waits up to
    /// `wait` (a `ReplicaWait`'s timeout): the wait plus half a second, and never less than the
    /// default. A `WAITAOF` to replicas lasts up to a second (a replica reports its AOF's
    /// fsynced offset about once a second), so its wait may outlast the default timeout, and the
    /// write's connection must not give up on it first.
    pub fn waiting(mut self, wait: Option<Duration>) -> Self {
        if let Some(wait) = wait {
            self.response_timeout = self.response_timeout.max(wait + Duration::from_millis(500));
        }
        self
    }

    /// Trusts the authorities in the PEM file at `path` for `rediss://` (a private CA).
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn with_ca_file(mut self, path: &std::path::Path) -> std::io::Result<Self> {
        self.tls_ca = Some(std::fs::read(path)?);
        Ok(self)
    }

    /// How to reach one seed: its URL, with the configured authorities for `rediss://`.
    pub(crate) fn info(&self, seed: &str) -> redis::RedisResult<redis::ConnectionInfo> {
        match &self.tls_ca {
            Some(ca) if seed.starts_with("rediss://") => Ok(redis::Client::build_with_tls(
                seed,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(ca.clone()),
                },
            )?
            .get_connection_info()
            .clone()),
            _ => redis::IntoConnectionInfo::into_connection_info(seed),
        }
    }

    /// The cluster client for `seeds`, with the configured authorities.
    pub(crate) fn cluster(&self, seeds: Vec<String>) -> ClusterClientBuilder {
        let builder = ClusterClientBuilder::new(seeds)
            .connection_timeout(self.connect_timeout)
            .response_timeout(self.response_timeout);
        match &self.tls_ca {
            Some(ca) => builder.certs(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            }),
            None => builder,
        }
    }

    pub(crate) fn seeds(&self) -> Vec<String> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }
}
