//! The accept loop: every connection bounded before its first header arrives, and a shutdown
//! that no client can hold.
//!
//! `axum::serve` builds hyper's connection without a timer, so hyper's header-read timeout
//! never fires there: a client that sends `GET /health HTTP/1.1`, a header name and then a byte
//! a second keeps its connection (and a file descriptor) for as long as it likes, and thousands
//! of them take the service down without a key. This loop is axum's, with what it lacks:
//!
//! - **A header-read timeout** ([`Connections::header_timeout`]): a connection with no request
//!   in flight for this long is dropped, whatever it is doing: waiting for a head, receiving
//!   one a byte at a time, or not reading its last response. It runs from the connection's
//!   start and from each response, so it also bounds a keep-alive connection that never sends
//!   its next request. hyper has a header-read timeout of its own, but it arms a boxed timer
//!   for every request (about 770 instructions of a `/health` that costs 17,500, docs/lab.md);
//!   this one is one timer per connection, looked at when it fires and re-armed from the last
//!   response then.
//! - **An idle timeout** ([`Connections::idle_timeout`]): a connection with no request in
//!   flight for this long is closed gracefully (hyper closes it at once between requests, and
//!   after the response it is writing otherwise). Shorter than the header timeout, it closes a
//!   kept-alive connection first; longer, the header timeout does.
//! - **A cap on open connections** ([`Connections::max_connections`]): one beyond it is closed
//!   at once, before a byte is read, and counted in `http_connections_refused_total`;
//!   `http_connections_open` is the gauge of those held.
//! - **Each client's share of the cap** ([`Connections::per_client`]): one address (an IPv6
//!   /64 counts as one, as a host usually holds the whole prefix) holds at most this many
//!   connections; one more from it is closed at once and counted in
//!   `http_connections_refused_per_client_total`, while other addresses are still served. So
//!   silent sockets from one host cannot lock everyone else out until their header timeout.
//!   Connections from `--trusted-proxies` are exempt: a proxy carries many clients (the rate
//!   limit and quotas see them by the address it forwards).
//! - **A bounded drain** ([`Connections::shutdown_grace`]): at shutdown the listener closes,
//!   every connection is told to finish (hyper answers the request in flight, then closes; an
//!   idle one closes at once), and whatever is still open after the grace is dropped, so a
//!   half-sent request never holds the process.
//!
//! Each request carries its peer's address ([`Peer`]): the rate limit and the quotas key on it
//! when no known key is presented.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower_service::Service;

use super::gate::GateService;
use super::limit::Peer;
use flyrtech_cli::config::{Connections, TrustedProxies};

/// What the loop serves: the router behind the gate.
type Gated = GateService<Router>;

/// Serves `service` (the gated router) on `listener` until `shutdown` resolves, then drains
/// within the grace.
///
/// # Errors
/// None today: accept errors (a full file table) are logged and retried after a pause.
pub async fn serve(
    listener: TcpListener,
    service: Gated,
    limits: Connections,
    proxies: TrustedProxies,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let shares = Arc::new(Shares::default());
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            // Reap finished connections so the set holds only open ones.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // EMFILE and friends: the connections held must finish first. A pause,
                        // not a busy loop.
                        tracing::warn!(error = %e, "cannot accept a connection; retrying");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let share = if proxies.trusts(peer.ip()) {
                    None
                } else {
                    let Some(share) = Share::take(&shares, peer.ip(), limits.per_client) else {
                        metrics::counter!("http_connections_refused_per_client_total").increment(1);
                        drop(stream);
                        continue;
                    };
                    Some(share)
                };
                let Ok(permit) = Arc::clone(&open).try_acquire_owned() else {
                    metrics::counter!("http_connections_refused_total").increment(1);
                    drop(stream);
                    continue;
                };
                metrics::gauge!("http_connections_open").increment(1.0);
                let service = service.clone();
                let stopping = stopping.clone();
                connections.spawn(async move {
                    connection(stream, peer, service, limits, stopping).await;
                    metrics::gauge!("http_connections_open").decrement(1.0);
                    drop((permit, share));
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            grace_ms = limits.shutdown_grace.as_millis() as u64,
            "connections still open after the shutdown grace; closing them"
        );
        connections.shutdown().await;
    }
    Ok(())
}

/// One connection: hyper's HTTP/1, watched for a late head, idleness and shutdown.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    service: Gated,
    limits: Connections,
    mut stopping: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::default());
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(Peer::new(peer));
            let mut service = service.clone();
            let busy = Busy::enter(&activity);
            async move {
                let response = service.call(request.map(axum::body::Body::new)).await;
                drop(busy);
                response
            }
        })
    };
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The header timeout is this loop's (see the module's documentation), not hyper's. The
    // response head and body are copied into one buffer and written with one `write`: the
    // bodies are small, and a queue of buffers for `writev` costs more than the copy.
    builder
        .header_read_timeout(None)
        .keep_alive(true)
        .writev(false);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let first = limits.header_timeout.min(limits.idle_timeout);
    loop {
        // While a request is in flight the connection is not idle: look again a timeout later.
        // Once closing, only the header timeout is left to watch.
        let wait = if closing {
            limits.header_timeout
        } else {
            first
        };
        let idle_until = if activity.in_flight.load(Ordering::Acquire) > 0 {
            Instant::now() + wait
        } else {
            activity.idle_since() + wait
        };
        tokio::select! {
            finished = conn.as_mut() => {
                if let Err(e) = finished {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            changed = stopping.changed(), if !closing => {
                // A dropped sender is a shutdown too.
                if changed.is_err() || *stopping.borrow() {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep_until(idle_until) => {
                if activity.is_idle_for(limits.header_timeout) {
                    tracing::debug!(%peer, "no request within the header timeout; dropped");
                    return;
                }
                if !closing && activity.is_idle_for(limits.idle_timeout) {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Who a connection's share is counted against: an IPv4 address, or an IPv6 address' /64.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
    }
}

/// The connections each client holds (only clients holding some are kept).
#[derive(Debug, Default)]
struct Shares(Mutex<HashMap<IpAddr, usize>>);

/// One connection counted in its client's share; uncounted when dropped.
struct Share {
    shares: Arc<Shares>,
    client: IpAddr,
}

impl Share {
    /// Counts a connection from `ip` when its client holds fewer than `limit`.
    fn take(shares: &Arc<Shares>, ip: IpAddr, limit: usize) -> Option<Self> {
        let client = client_of(ip);
        let mut held = shares.0.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            shares: Arc::clone(shares),
            client,
        })
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut held = self.shares.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.client) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                held.remove(&self.client);
            }
        }
    }
}

/// What one connection is doing: requests in flight, and since when it has had none (in
/// nanoseconds from its start: an atomic, not a lock, on every response).
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    started: Instant,
    idle_since: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            started: Instant::now(),
            idle_since: AtomicU64::new(0),
        }
    }
}

impl Activity {
    fn idle_since(&self) -> Instant {
        self.started + Duration::from_nanos(self.idle_since.load(Ordering::Acquire))
    }

    /// Idle from now.
    fn rest(&self) {
        let since = u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.idle_since.store(since, Ordering::Release);
    }

    fn is_idle_for(&self, limit: Duration) -> bool {
        self.in_flight.load(Ordering::Acquire) == 0 && self.idle_since().elapsed() >= limit
    }
}

/// A request in flight on its connection; the connection is idle again from its drop.
struct Busy(Arc<Activity>);

impl Busy {
    fn enter(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(activity))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.rest();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_is_an_ipv4_address_or_an_ipv6_prefix() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("an address");
        assert_eq!(client_of(ip("127.0.0.2")), ip("127.0.0.2"));
        assert_eq!(client_of(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_of(ip("2001:db8:1:2::7"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:3::1")),
            client_of(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn a_share_is_counted_while_held_and_forgotten_when_empty() {
        let shares = Arc::new(Shares::default());
        let ip = "127.0.0.9".parse::<IpAddr>().expect("an address");
        let first = Share::take(&shares, ip, 2).expect("one");
        let second = Share::take(&shares, ip, 2).expect("two");
        assert!(Share::take(&shares, ip, 2).is_none(), "the share is two");
        let other = "127.0.0.10".parse::<IpAddr>().expect("an address");
        assert!(
            Share::take(&shares, other, 2).is_some(),
            "another client is served"
        );
        drop(first);
        let third = Share::take(&shares, ip, 2).expect("room again");
        drop((second, third));
        assert!(shares.0.lock().expect("lock").is_empty());
    }
}
