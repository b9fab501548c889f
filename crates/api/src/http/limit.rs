//! A per-client rate limit: each client may send `per_second` requests a second on average,
//! with bursts of `burst`; beyond, 429 `/problems/too-many-requests` with `Retry-After`. GCRA
//! from the `governor` crate, keyed by [`Client`].
//!
//! # Who a client is
//! The race it closes is between a request's claim and its check: the limit used to key on the
//! hash of whatever bearer value arrived, before the key check, so a client that made up a new
//! value for every request had a fresh budget each time. Now a client is a **verified** key
//! (its name), and anything else (no bearer, a value that is not a key, a service without keys)
//! is its **address**: made-up keys share their address' budget. An IPv6 address counts by its
//! /64, which one host usually holds whole. The address is the peer's, or, when the peer is one
//! of `--trusted-proxies`, the one its `Forwarded` or `X-Forwarded-For` header names (the
//! nearest address not itself a trusted proxy), so clients behind a reverse proxy do not share
//! the proxy's budget, and no one else can choose their address by sending the header.
//!
//! # What it bounds
//! Clients idle long enough to be back at a full burst are forgotten every minute. At most
//! `max_clients` are tracked: past that, after one sweep, every client not yet tracked shares a
//! single overflow budget, so a flood of addresses costs the table nothing more.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::Request;
use axum::http::HeaderMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};

use super::auth::Identity;
use super::problem::ApiError;
use flyrtech_cli::config::{RateLimit, TrustedProxies};

/// Where a request comes from: put into the request by the accept loop with the connection's
/// address, and given its [`Client`] by the gate. One extension for both, so that a request's
/// extension map is not grown (a rehash) by a second.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The connection's remote address.
    pub addr: SocketAddr,
    /// Who the gate found it to be.
    client: Option<Client>,
}

impl Peer {
    /// The peer at `addr`, not yet identified.
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr, client: None }
    }

    /// Who sent `request`, presenting `identity` ([`Client::of`] its address, see
    /// [`request_addr`]), recorded in the request's `Peer` for the handlers.
    pub fn identify(
        request: &mut Request,
        identity: &Identity,
        proxies: &TrustedProxies,
    ) -> Client {
        // One look-up of the extension when the peer is no proxy (its headers are not read).
        if let Some(peer) = request.extensions_mut().get_mut::<Self>() {
            let addr = peer.addr.ip();
            if !proxies.trusts(addr) {
                let client = Client::of(identity, addr);
                peer.client = Some(client.clone());
                return client;
            }
        }
        let client = Client::of(identity, request_addr(request, proxies));
        Self::identified(request, client.clone());
        client
    }

    /// Records who the gate found the request's sender to be.
    fn identified(request: &mut Request, client: Client) {
        match request.extensions_mut().get_mut::<Self>() {
            Some(peer) => peer.client = Some(client),
            // A router driven without the accept loop (tests).
            None => {
                request.extensions_mut().insert(Self {
                    addr: SocketAddr::from(([0, 0, 0, 0], 0)),
                    client: Some(client),
                });
            }
        }
    }
}

/// The handlers take the client as an extractor: the one the gate identified.
impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Client {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Peer>()
            .and_then(|peer| peer.client.clone())
            .ok_or_else(|| ApiError::internal("the request did not pass the gate"))
    }
}

/// Who a request comes from, for the rate limit and the quotas.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Client {
    /// A verified API key, by name.
    Key(Arc<str>),
    /// Anyone else, by address (an IPv6 address by its /64).
    Addr(IpAddr),
    /// Every client past the table's bound.
    Overflow,
}

impl fmt::Display for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Key(name) => write!(f, "key:{name}"),
            Self::Addr(addr) => write!(f, "addr:{addr}"),
            Self::Overflow => f.write_str("overflow"),
        }
    }
}

impl Client {
    /// The client of a request by `identity` from `addr`.
    pub fn of(identity: &Identity, addr: IpAddr) -> Self {
        match &identity.key {
            Some(key) => Self::Key(Arc::clone(&key.name)),
            None => Self::Addr(prefix(addr)),
        }
    }
}

/// An IPv6 address by its /64 (an IPv4-mapped one as IPv4); IPv4 as it is.
fn prefix(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// The client's address: the peer's, unless the peer is a trusted proxy; then the nearest
/// address of the forwarding chain that is not one (`Forwarded` first, then
/// `X-Forwarded-For`), or the peer's when the headers name none.
pub fn client_addr(proxies: &TrustedProxies, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if !proxies.trusts(peer) {
        return peer;
    }
    let forwarded = headers
        .get_all(axum::http::header::FORWARDED)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(forwarded_for)
        .collect::<Vec<_>>();
    let chain = if forwarded.is_empty() {
        headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|a| parse_addr(a.trim()))
            .collect()
    } else {
        forwarded
    };
    chain
        .into_iter()
        .rev()
        .find(|addr| !proxies.trusts(*addr))
        .unwrap_or(peer)
}

/// The `for=` of one `Forwarded` element (RFC 7239): `for=192.0.2.60`, `for="[2001:db8::1]:4711"`.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    element.split(';').find_map(|pair| {
        let (name, value) = pair.trim().split_once('=')?;
        name.eq_ignore_ascii_case("for")
            .then(|| parse_addr(value.trim().trim_matches('"')))
            .flatten()
    })
}

/// An address, with or without a port (`[v6]:port`, `v4:port`).
fn parse_addr(raw: &str) -> Option<IpAddr> {
    raw.parse::<IpAddr>()
        .ok()
        .or_else(|| raw.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .or_else(|| {
            raw.strip_prefix('[')
                .and_then(|r| r.split(']').next())
                .and_then(|r| r.parse().ok())
        })
}

/// The address a request comes from (the peer's, or its proxy's forwarding): what [`Client`]
/// keys anonymous requests on. A request without a peer (an in-process caller) is unspecified.
pub fn request_addr(request: &Request, proxies: &TrustedProxies) -> IpAddr {
    let peer = request
        .extensions()
        .get::<Peer>()
        .map_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), |p| p.addr.ip());
    client_addr(proxies, peer, request.headers())
}

/// A limit of zero, which would refuse everything.
#[derive(Debug, thiserror::Error)]
#[error(
    "--rate-limit, --rate-burst and --rate-clients must be at least 1 (use --rate-limit off for none)"
)]
pub struct BadLimit;

/// The limiter and the task that forgets idle clients (stopped when the limiter is dropped).
#[derive(Debug)]
pub struct Limiter {
    limiter: Arc<DefaultKeyedRateLimiter<Client>>,
    clock: DefaultClock,
    max_clients: usize,
    /// When the table was last swept because it was full (ms since the limiter started).
    swept_full_at: AtomicU64,
    started: std::time::Instant,
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
    /// [`BadLimit`] for a zero rate, burst or client bound.
    pub fn new(limit: RateLimit) -> Result<Self, BadLimit> {
        let per_second = NonZeroU32::new(limit.per_second).ok_or(BadLimit)?;
        let burst = NonZeroU32::new(limit.burst).ok_or(BadLimit)?;
        if limit.max_clients == 0 {
            return Err(BadLimit);
        }
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
            max_clients: limit.max_clients,
            swept_full_at: AtomicU64::new(0),
            started: std::time::Instant::now(),
            sweeper,
        })
    }

    /// Clients tracked now.
    pub fn clients(&self) -> usize {
        self.limiter.len()
    }

    /// The budget `client` draws on: its own, or the overflow's once the table is full (swept at
    /// most once a second to make room).
    fn budget(&self, client: Client) -> Client {
        if self.limiter.len() < self.max_clients {
            return client;
        }
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let last = self.swept_full_at.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .swept_full_at
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            self.limiter.retain_recent();
        }
        if self.limiter.len() < self.max_clients {
            client
        } else {
            metrics::counter!("http_rate_limit_overflow_total").increment(1);
            Client::Overflow
        }
    }

    /// Whether `client` is within its limit. Run by [`super::gate`] before the key check's
    /// verdict is acted on, so a client over its limit costs no handler and no Redis.
    ///
    /// # Errors
    /// 429 with `Retry-After` (whole seconds, at least one) over the limit.
    pub fn admit(&self, client: Client) -> Result<(), ApiError> {
        let budget = self.budget(client);
        self.limiter
            .check_key(&budget)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
            .map_err(|wait| {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                ApiError::too_many_requests(seconds.max(1))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, value.parse().expect("a header value"));
        }
        map
    }

    #[test]
    fn forwarding_headers_count_only_from_a_trusted_proxy() {
        let proxies: TrustedProxies = "10.0.0.0/8, 192.0.2.7".parse().expect("proxies");
        let client: IpAddr = "203.0.113.9".parse().expect("addr");
        let proxy: IpAddr = "10.1.2.3".parse().expect("addr");
        let spoofed = headers(&[("x-forwarded-for", "198.51.100.1")]);
        // Anyone else's header is ignored: the peer is the client.
        assert_eq!(client_addr(&proxies, client, &spoofed), client);
        // Through the proxy: the nearest untrusted address of the chain.
        let chain = headers(&[("x-forwarded-for", "198.51.100.1, 203.0.113.9, 192.0.2.7")]);
        assert_eq!(client_addr(&proxies, proxy, &chain), client);
        let rfc = headers(&[(
            "forwarded",
            "for=198.51.100.1, for=\"[2001:db8::1]:4711\";proto=https",
        )]);
        assert_eq!(
            client_addr(&proxies, proxy, &rfc),
            "2001:db8::1".parse::<IpAddr>().expect("addr")
        );
        assert_eq!(client_addr(&proxies, proxy, &HeaderMap::new()), proxy);
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
    }

    #[test]
    fn an_ipv6_client_is_its_64() {
        let a = prefix("2001:db8:1:2:aaaa::1".parse().expect("addr"));
        let b = prefix("2001:db8:1:2:bbbb::2".parse().expect("addr"));
        assert_eq!(a, b);
        assert_eq!(
            prefix("::ffff:192.0.2.1".parse().expect("addr")),
            "192.0.2.1".parse::<IpAddr>().expect("addr")
        );
    }

    #[tokio::test]
    async fn past_its_bound_the_table_grows_no_more() {
        let limiter = Limiter::new(RateLimit {
            per_second: 1,
            burst: 1,
            max_clients: 3,
        })
        .expect("limiter");
        for n in 0..50u8 {
            let _ = limiter.admit(Client::Addr(IpAddr::from([192, 0, 2, n])));
        }
        // Three clients and the shared overflow budget.
        assert!(limiter.clients() <= 4, "{}", limiter.clients());
        // The overflow budget is spent: a new address is refused.
        assert!(
            limiter
                .admit(Client::Addr(IpAddr::from([198, 51, 100, 1])))
                .is_err()
        );
    }
}
