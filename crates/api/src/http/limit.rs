//! A per-client rate limit: each client (its API key, or without one its peer address) may send
//! `per_second` requests a second on average, with bursts of `burst`; beyond, 429
//! `/problems/too-many-requests` with `Retry-After`. GCRA from the `governor` crate, keyed by
//! client; clients idle long enough to be back at a full burst are forgotten every minute, so the
//! table holds the clients active in the last minute, not every address ever seen.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::auth::KeyDigest;
use super::problem::ApiError;

/// How many requests one client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests a second.
    pub per_second: u32,
    /// Requests allowed at once above the sustained rate.
    pub burst: u32,
}

impl Default for RateLimit {
    /// 1,000 a second, bursts of 2,000, per client (`serve`'s defaults, in `config`).
    fn default() -> Self {
        Self {
            per_second: 1000,
            burst: 2000,
        }
    }
}

/// Who a request comes from: its API key (hashed, never kept), or its peer address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// The key's SHA-256 (shared with the key check, see [`KeyDigest`]).
    Key(KeyDigest),
    /// The peer address, for requests without a key.
    Addr(IpAddr),
}

impl Client {
    fn of(request: &mut Request) -> Option<Self> {
        if let Some(digest) = KeyDigest::of(request) {
            return Some(Self::Key(digest));
        }
        request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self::Addr(addr.ip()))
    }
}

/// A limit of zero, which would refuse everything.
#[derive(Debug, thiserror::Error)]
#[error("--rate-limit and --rate-burst must be at least 1 (use --rate-limit off for none)")]
pub struct BadLimit;

/// The limiter and the task that forgets idle clients (stopped when the limiter is dropped).
#[derive(Debug)]
pub struct Limiter {
    limiter: Arc<DefaultKeyedRateLimiter<Client>>,
    clock: DefaultClock,
    sweeper: tokio::task::JoinHandle<()>,
}

impl Drop for Limiter {
    fn drop(&mut self) {
        self.sweeper.abort();
    }
}

impl Limiter {
    /// A limiter for `limit`.
    ///
    /// # Errors
    /// [`BadLimit`] for a zero rate or burst.
    pub fn new(limit: RateLimit) -> Result<Self, BadLimit> {
        let per_second = NonZeroU32::new(limit.per_second).ok_or(BadLimit)?;
        let burst = NonZeroU32::new(limit.burst).ok_or(BadLimit)?;
        let limiter = Arc::new(DefaultKeyedRateLimiter::keyed(
            Quota::per_second(per_second).allow_burst(burst),
        ));
        let sweeper = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tick.tick().await;
                    limiter.retain_recent();
                    limiter.shrink_to_fit();
                }
            })
        };
        Ok(Self {
            limiter,
            clock: DefaultClock::default(),
            sweeper,
        })
    }

    /// `Err(wait)` when `client` is over its limit.
    fn check(&self, client: &Client) -> Result<(), Duration> {
        self.limiter
            .check_key(client)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    /// Whether `request`'s client is within its limit. Run by [`super::gate`] first of all, so
    /// a client over its limit costs no key check and no Redis.
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, at least one) over the limit.
    pub fn admit(&self, request: &mut Request) -> Result<(), ApiError> {
        let Some(client) = Client::of(request) else {
            // No key and no peer address (an in-process caller): nothing to key a limit on.
            return Ok(());
        };
        self.check(&client).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::too_many_requests(seconds.max(1))
        })
    }
}
