//! What every request passes around its handler, in one middleware: the count of requests in
//! flight, the rate limit, the key check, the deadline, the request metrics and the request's
//! log lines.
//!
//! They were five layers (four `from_fn` middlewares and tower-http's `TraceLayer`), and each
//! layer costs every request a clone of the route's boxed service, a boxed future and a wrapped
//! body, whatever it then decides. Side by side with the floor of the stack (issue 26,
//! docs/lab.md), that was a fifth of what `/health` cost. One middleware costs one of each; the
//! order of the checks is the one the layers had:
//!
//! 1. counted in flight (until the response is made, or the client goes away);
//! 2. who it is ([`Access::identify`]: the key verified, else the address, see [`Client`]), then
//!    the rate limit on that ([`Limiter::admit`]): a client over its limit costs no handler and
//!    no Redis;
//! 3. the key check's verdict ([`Access::authorize`]): 401 or 403; the [`Client`] goes into the
//!    request's extensions for the handlers' quotas;
//! 4. the handler, within the request timeout (503 with `Retry-After` past it);
//! 5. `http_requests_total` and `http_request_duration_seconds` by method, route template and
//!    status, through handles made once per label set ([`RouteMetrics`]) instead of a registry
//!    lookup with three label strings made per request;
//! 6. the log lines `TraceLayer` wrote: `finished processing request` at DEBUG, and `response
//!    failed` at ERROR for a 5xx;
//! 7. with traces on (`crate::telemetry`), the handler runs in the request's server span, the
//!    child of the client's `traceparent` when it sent one.
//!
//! # What it bounds
//! The method label is one of the nine standard methods or `OTHER`, and the route label a route
//! template or `unmatched`: a client cannot grow the metrics (or [`RouteMetrics`]' table) by
//! inventing methods or paths.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use flyrtech_infrastructure::plumbing::trace_context;
use tracing::Instrument;

use super::auth::Access;
use super::limit::{Client, Limiter, request_addr};
use super::problem::ApiError;
use crate::config::TrustedProxies;

/// What the gate checks requests against; shared by every route.
#[derive(Debug)]
pub struct Gate {
    /// Requests being handled right now.
    pub in_flight: Arc<AtomicUsize>,
    /// The per-client rate limit; `None` for none.
    pub limiter: Option<Arc<Limiter>>,
    /// The keys and what they may do.
    pub access: Access,
    /// Whose forwarding headers name the client's address.
    pub proxies: TrustedProxies,
    /// Longest a handler may take.
    pub request_timeout: Duration,
    /// The request metrics' handles.
    pub metrics: RouteMetrics,
}

/// The middleware (see the module's documentation for its steps).
pub async fn pass(State(gate): State<Arc<Gate>>, mut request: Request, next: Next) -> Response {
    let started = Instant::now();
    // Decremented on drop, so a request the client abandons is not counted forever.
    let in_flight = InFlight::enter(&gate.in_flight);
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let uri = tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().clone());
    // Who it is first (the key verified, else the address), so that the limit keys on a
    // verified identity: a made-up bearer value draws on its address' budget.
    let identity = gate.access.identify(&mut request);
    let client = Client::of(&identity, request_addr(&request, &gate.proxies));
    let admitted = match &gate.limiter {
        Some(limiter) => limiter.admit(client.clone()),
        None => Ok(()),
    }
    .and_then(|()| gate.access.authorize(&request, &identity));
    // The handlers' quotas are per client.
    request.extensions_mut().insert(client);
    let route = route.as_ref().map_or("unmatched", MatchedPath::as_str);
    let response = match admitted {
        Err(refused) => refused.into_response(),
        // Boxed, so that the plain path's future carries none of the span: with traces off it
        // costs one cached check.
        Ok(()) if trace_context::on() => {
            Box::pin(traced(method, route, gate.request_timeout, request, next)).await
        }
        Ok(()) => within(
            gate.request_timeout,
            tokio::time::timeout(gate.request_timeout, next.run(request)).await,
        ),
    };
    drop(in_flight);
    let latency = started.elapsed();
    let status = response.status();
    gate.metrics.record(method, route, status, latency);
    let latency_ms = latency.as_secs_f64() * 1e3;
    if status.is_server_error() {
        tracing::error!(
            method,
            route,
            status = status.as_u16(),
            latency_ms,
            "response failed"
        );
    } else if let Some(uri) = uri {
        tracing::debug!(method, %uri, status = status.as_u16(), latency_ms, "finished processing request");
    }
    response
}

/// The handler's response, or 503 with `Retry-After` when it took longer than `timeout`.
fn within(timeout: Duration, handled: Result<Response, tokio::time::error::Elapsed>) -> Response {
    handled.unwrap_or_else(|_| ApiError::timed_out(timeout).into_response())
}

/// The handler, within the request timeout, in the request's server span, `<method> <route template>`: the child of the
/// client's `traceparent` when it sent one (W3C Trace Context), with the response's status.
async fn traced(
    method: &'static str,
    route: &str,
    timeout: Duration,
    request: Request,
    next: Next,
) -> Response {
    let span = tracing::info_span!(
        target: trace_context::SPANS,
        "request",
        otel.name = tracing::field::Empty,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    span.record("otel.name", format!("{method} {route}"));
    let carried = request
        .headers()
        .get(trace_context::TRACEPARENT)
        .and_then(|v| v.to_str().ok());
    trace_context::adopt(&span, carried);
    let handled = tokio::time::timeout(timeout, next.run(request))
        .instrument(span.clone())
        .await;
    let response = within(timeout, handled);
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// The method as a metric label: a standard method's name, else `OTHER`.
fn method_label(method: &Method) -> &'static str {
    const STANDARD: [(Method, &str); 9] = [
        (Method::GET, "GET"),
        (Method::PUT, "PUT"),
        (Method::POST, "POST"),
        (Method::DELETE, "DELETE"),
        (Method::HEAD, "HEAD"),
        (Method::OPTIONS, "OPTIONS"),
        (Method::PATCH, "PATCH"),
        (Method::TRACE, "TRACE"),
        (Method::CONNECT, "CONNECT"),
    ];
    STANDARD
        .iter()
        .find(|(m, _)| m == method)
        .map_or("OTHER", |(_, label)| label)
}

/// The handles of `http_requests_total` and `http_request_duration_seconds`, one pair per
/// method, status and route template, made on first use from the installed recorder and kept.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    handles: RwLock<HashMap<(&'static str, u16), ByRoute>>,
}

/// The handles of one method and status, by route template.
type ByRoute = HashMap<Box<str>, Handles>;

#[derive(Debug, Clone)]
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl RouteMetrics {
    /// Counts one request and records how long it took.
    pub fn record(&self, method: &'static str, route: &str, status: StatusCode, took: Duration) {
        let key = (method, status.as_u16());
        let known = self.handles.read().ok().and_then(|table| {
            table
                .get(&key)
                .and_then(|routes| routes.get(route))
                .cloned()
        });
        let handles = known.unwrap_or_else(|| self.register(key, route));
        handles.requests.increment(1);
        handles.duration.record(took.as_secs_f64());
    }

    #[cold]
    fn register(&self, (method, status): (&'static str, u16), route: &str) -> Handles {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.to_string()),
        ];
        let handles = Handles {
            requests: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
        };
        // A poisoned table only means another request panicked mid-insert: the handles are
        // still right, so keep them.
        let mut table = self
            .handles
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        table
            .entry((method, status))
            .or_default()
            .entry(route.into())
            .or_insert_with(|| handles.clone());
        handles
    }
}

/// One request in flight, counted for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_are_bounded_labels() {
        assert_eq!(method_label(&Method::PUT), "PUT");
        assert_eq!(method_label(&Method::CONNECT), "CONNECT");
        let invented = Method::from_bytes(b"BREW").expect("a token is a method");
        assert_eq!(method_label(&invented), "OTHER");
    }

    #[test]
    fn handles_are_made_once_per_label_set() {
        let metrics = RouteMetrics::default();
        for _ in 0..3 {
            metrics.record("GET", "/health", StatusCode::OK, Duration::from_millis(1));
        }
        metrics.record("GET", "/health", StatusCode::NOT_FOUND, Duration::ZERO);
        metrics.record("PUT", "/health", StatusCode::OK, Duration::ZERO);
        let table = metrics.handles.read().expect("not poisoned");
        let sets: usize = table.values().map(HashMap::len).sum();
        assert_eq!(sets, 3);
    }
}
