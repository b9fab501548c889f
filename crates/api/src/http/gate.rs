//! What every request passes around its handler, in one layer: the count of requests in flight,
//! the rate limit, the key check, the deadline, the request metrics and the request's log lines.
//!
//! They were five layers (four `from_fn` middlewares and tower-http's `TraceLayer`), and each
//! layer costs every request a clone of the route's boxed service, a boxed future and a wrapped
//! body, whatever it then decides. Side by side with the floor of the stack
//! (docs/lab.md), that was a fifth of what `/health` cost. Then one `from_fn` middleware, which
//! still boxed each request's future and cloned the route's service into a `Next`; then a tower
//! layer around every route, which axum boxes into a second route per route. Now a service
//! around the whole router ([`GateService`]): the checks run when it is called, the
//! router's future is polled inside [`GateFuture`], unboxed, and the route template the metrics
//! and spans are labelled with comes from [`RouteTemplates`], the router's own templates looked
//! up once more (a tree walk of a few dozen instructions). The order of the checks is the one
//! the layers had:
//!
//! 1. counted in flight (until its metrics are recorded, or the client goes away);
//! 2. who it is ([`Access::identify`]: the key verified, else the address, see
//!    [`Client`](super::limit::Client)), then the rate limit on that ([`Limiter::admit`]): a
//!    client over its limit costs no handler and no Redis; the client goes into the request's
//!    [`Peer`] for the handlers' quotas;
//! 3. the key check's verdict ([`Access::authorize`]): 401 or 403;
//! 4. the handler, within the request timeout (503 with `Retry-After` past it), measured from
//!    the gate's one clock read (the timer is armed only if the handler waits);
//! 5. `http_requests_total` and `http_request_duration_seconds` by method, route template and
//!    status, through handles made once per label set ([`RouteMetrics`]) instead of a registry
//!    lookup with three label strings made per request, and found by where the labels live;
//! 6. the log lines `TraceLayer` wrote: `finished processing request` at DEBUG, and `response
//!    failed` at ERROR for a 5xx;
//! 7. with traces on (`crate::telemetry`), the handler runs in the request's server span, the
//!    child of the client's `traceparent` when it sent one.
//!
//! # What it bounds
//! The method label is one of the nine standard methods or `OTHER`, and the route label a route
//! template or `unmatched`: a client cannot grow the metrics (or [`RouteMetrics`]' table) by
//! inventing methods or paths. A request for a route's path with a method the route does not
//! take is labelled with the template, as axum's `MatchedPath` would label it.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::Request;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use flyrtech_infrastructure::telemetry::trace_context;
use hyper::body::Body as _;
use rustc_hash::FxHashMap;
use tracing::Instrument;

use super::auth::Access;
use super::limit::{Limiter, Peer};
use super::problem::ApiError;
use flyrtech_cli::config::TrustedProxies;

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
    /// Largest body accepted: a request that declares a longer one is answered 413 before a
    /// byte of it is read.
    pub body_limit: usize,
    /// The request metrics' handles.
    pub metrics: RouteMetrics,
    /// The router's route templates, the requests' route labels.
    pub routes: RouteTemplates,
}

impl Gate {
    /// What a request's head must not say, whatever its route: two `Authorization` headers (a
    /// proxy in front could judge the other one), or a body over the limit (refused before it
    /// is read, so `Expect: 100-continue` gets 413, not "100 Continue").
    fn framing(&self, request: &Request) -> Result<(), ApiError> {
        let headers = request.headers();
        if headers
            .get_all(axum::http::header::AUTHORIZATION)
            .iter()
            .nth(1)
            .is_some()
        {
            return Err(ApiError::two_authorizations());
        }
        if let Some(declared) = headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            && declared > u64::try_from(self.body_limit).unwrap_or(u64::MAX)
        {
            return Err(ApiError::body_too_large(declared, self.body_limit));
        }
        Ok(())
    }
}

/// The router behind the gate (see the module's documentation for its steps). A service of its
/// own rather than `axum::middleware::from_fn`, whose every request boxes its future and clones
/// the route's boxed service into a `Next`, and around the router rather than a layer on its
/// routes, each of which axum boxes into one more route: the checks run in
/// `GateService::call`, and the router's future is polled inside [`GateFuture`], unboxed.
#[derive(Debug, Clone)]
pub struct GateService<S> {
    gate: Arc<Gate>,
    inner: S,
}

impl<S> GateService<S> {
    /// `inner` (the router) behind `gate`.
    pub fn new(gate: Gate, inner: S) -> Self {
        Self {
            gate: Arc::new(gate),
            inner,
        }
    }
}

/// The templates of the router's routes, to label a request with the one the router will match
/// before it has matched it: the same `matchit` tree axum builds, holding the labels only.
#[derive(Debug, Default)]
pub struct RouteTemplates(matchit::Router<&'static str>);

impl RouteTemplates {
    /// Adds a route's template, in axum's syntax (`/api/journeys/{id}`, `/docs/{*rest}`).
    ///
    /// # Errors
    /// The template is malformed or conflicts with one added before (axum refuses it too).
    pub fn insert(&mut self, template: &'static str) -> Result<(), matchit::InsertError> {
        self.0.insert(template, template)
    }

    /// The template `path` matches, else `unmatched`.
    pub fn label(&self, path: &str) -> &'static str {
        self.0.at(path).map_or(UNMATCHED, |matched| *matched.value)
    }
}

impl<S> tower_service::Service<Request> for GateService<S>
where
    S: tower_service::Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = GateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let gate = &self.gate;
        let started = Instant::now();
        // The deadline from the same clock read. Tokio arms the timer at the first poll that
        // finds the handler waiting, so a handler answering at once (`/health`) arms none.
        let deadline = tokio::time::Instant::from_std(started) + gate.request_timeout;
        // Decremented when its `Done` drops, so a request the client abandons is not counted
        // forever.
        gate.in_flight.fetch_add(1, Ordering::SeqCst);
        let method = method_label(request.method());
        let route = gate.routes.label(request.uri().path());
        let uri = tracing::enabled!(tracing::Level::DEBUG).then(|| request.uri().clone());
        // A request with a body: whether all of it arrived, so that a deadline missed while it
        // was still arriving is the client's 408, not the service's 503.
        let arrived = (!request.body().is_end_stream()).then(|| {
            let arrived = Arc::new(AtomicBool::new(false));
            let watched = Arc::clone(&arrived);
            let body = std::mem::take(request.body_mut());
            *request.body_mut() = Body::new(Arrival {
                inner: body,
                arrived: watched,
            });
            arrived
        });
        // Who it is first (the key verified, else the address), so that the limit keys on a
        // verified identity: a made-up bearer value draws on its address' budget.
        let identity = gate.access.identify(&mut request);
        // The handlers' quotas are per client: it goes into the request's `Peer` too.
        let client = Peer::identify(&mut request, &identity, &gate.proxies);
        let admitted = match &gate.limiter {
            Some(limiter) => limiter.admit(client),
            None => Ok(()),
        }
        .and_then(|()| gate.framing(&request))
        .and_then(|()| gate.access.authorize(&request, &identity));
        let state = match admitted {
            Err(refused) => State::Answered {
                response: Some(refused.into_response()),
            },
            // Boxed, so that the plain path's future carries none of the span: with traces
            // off it costs one cached check.
            Ok(()) if trace_context::on() => {
                let carried = request
                    .headers()
                    .get(trace_context::TRACEPARENT)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                State::Traced {
                    handled: Box::pin(traced(
                        (method, route),
                        carried,
                        (gate.request_timeout, arrived.clone()),
                        tokio::time::timeout_at(deadline, self.inner.call(request)),
                    )),
                }
            }
            Ok(()) => State::Handling {
                handled: tokio::time::timeout_at(deadline, self.inner.call(request)),
            },
        };

        GateFuture {
            state,
            done: Some(Done {
                gate: Arc::clone(gate),
                started,
                method,
                route,
                uri,
                arrived,
            }),
        }
    }
}

/// The route label of a request no route matched.
const UNMATCHED: &str = "unmatched";

pin_project_lite::pin_project! {
    /// A request in the gate: the route's future within the deadline, then the metrics and log
    /// lines of its response.
    pub struct GateFuture<F> {
        #[pin]
        state: State<F>,
        done: Option<Done>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProjection]
    enum State<F> {
        // Refused by the gate itself.
        Answered { response: Option<Response> },
        // The route's future, within the request timeout.
        Handling { #[pin] handled: tokio::time::Timeout<F> },
        // The same in the request's server span (traces on).
        Traced { handled: Pin<Box<dyn Future<Output = Response> + Send>> },
    }
}

/// What is recorded once the response is made. The request is counted in flight until it drops
/// (after the record, or unrecorded if the client goes away first).
struct Done {
    gate: Arc<Gate>,
    started: Instant,
    method: &'static str,
    route: &'static str,
    uri: Option<axum::http::Uri>,
    /// For a request with a body: set once all of it has arrived.
    arrived: Option<Arc<AtomicBool>>,
}

impl<F> Future for GateFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProjection::Answered { response } => response
                .take()
                .unwrap_or_else(|| StatusCode::INTERNAL_SERVER_ERROR.into_response()),
            StateProjection::Handling { handled } => {
                let Poll::Ready(handled) = handled.poll(cx) else {
                    return Poll::Pending;
                };
                match this.done.as_ref() {
                    Some(done) => {
                        within(done.gate.request_timeout, done.arrived.as_deref(), handled)
                    }
                    None => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
                }
            }
            StateProjection::Traced { handled } => {
                let Poll::Ready(response) = handled.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                response
            }
        };
        if let Some(done) = this.done.take() {
            done.record(&response);
        }
        Poll::Ready(Ok(response))
    }
}

impl Done {
    /// The request's metrics and log lines.
    fn record(self, response: &Response) {
        let latency = self.started.elapsed();
        let route = self.route;
        let status = response.status();
        let method = self.method;
        self.gate.metrics.record(method, route, status, latency);
        let latency_ms = latency.as_secs_f64() * 1e3;
        if status.is_server_error() {
            tracing::error!(
                method,
                route,
                status = status.as_u16(),
                latency_ms,
                "response failed"
            );
        } else if let Some(uri) = &self.uri {
            tracing::debug!(method, %uri, status = status.as_u16(), latency_ms, "finished processing request");
        }
    }
}

/// The handler's response; past `timeout`, 408 when the request's body had not all arrived
/// (`arrived` unset: the client was too slow to send it), else 503 with `Retry-After`.
fn within(
    timeout: Duration,
    arrived: Option<&AtomicBool>,
    handled: Result<Result<Response, Infallible>, tokio::time::error::Elapsed>,
) -> Response {
    match handled {
        Ok(Ok(response)) => response,
        Ok(Err(never)) => match never {},
        Err(_) if arrived.is_some_and(|a| !a.load(Ordering::Acquire)) => {
            ApiError::body_too_slow(timeout).into_response()
        }
        Err(_) => ApiError::timed_out(timeout).into_response(),
    }
}

pin_project_lite::pin_project! {
    /// A request's body, telling its gate when all of it has arrived.
    struct Arrival {
        #[pin]
        inner: Body,
        arrived: Arc<AtomicBool>,
    }
}

impl hyper::body::Body for Arrival {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) {
            this.arrived.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// The handler, within the request timeout, in the request's server span,
/// `<method> <route template>`: the child of the client's `traceparent` when it sent one (W3C
/// Trace Context), with the response's status.
async fn traced<F>(
    (method, route): (&'static str, &'static str),
    carried: Option<String>,
    (timeout, arrived): (Duration, Option<Arc<AtomicBool>>),
    handled: tokio::time::Timeout<F>,
) -> Response
where
    F: Future<Output = Result<Response, Infallible>>,
{
    let span = tracing::info_span!(
        target: trace_context::SPANS,
        "request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        http.route = route,
        http.response.status_code = tracing::field::Empty,
    );
    trace_context::adopt(&span, carried.as_deref());
    let response = within(
        timeout,
        arrived.as_deref(),
        handled.instrument(span.clone()).await,
    );
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
///
/// Looked up by where the labels live, not by their text: the route template is one of
/// [`RouteTemplates`]' static strings and the method label one of [`method_label`]'s constants,
/// so a lookup hashes three integers with FxHash instead of SipHashing two strings. (Two
/// addresses of one text would only make two pairs of handles to the same metrics.)
#[derive(Debug, Default)]
pub struct RouteMetrics {
    handles: RwLock<FxHashMap<(usize, usize, u16), Handles>>,
}

#[derive(Debug, Clone)]
struct Handles {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl RouteMetrics {
    /// Counts one request and records how long it took.
    pub fn record(&self, method: &'static str, route: &str, status: StatusCode, took: Duration) {
        let key = (
            method.as_ptr() as usize,
            route.as_ptr() as usize,
            status.as_u16(),
        );
        // A 408 measures the client's upload, not the service: counted, never in the latency
        // the alerts watch.
        let seconds = (status != StatusCode::REQUEST_TIMEOUT).then_some(took.as_secs_f64());
        let count = |handles: &Handles| {
            handles.requests.increment(1);
            if let Some(seconds) = seconds {
                handles.duration.record(seconds);
            }
        };
        if let Ok(table) = self.handles.read()
            && let Some(handles) = table.get(&key)
        {
            count(handles);
            return;
        }
        count(&self.register(key, method, route, status));
    }

    #[cold]
    fn register(
        &self,
        key: (usize, usize, u16),
        method: &'static str,
        route: &str,
        status: StatusCode,
    ) -> Handles {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
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
        table.entry(key).or_insert_with(|| handles.clone());
        handles
    }
}

impl Drop for Done {
    fn drop(&mut self) {
        self.gate.in_flight.fetch_sub(1, Ordering::SeqCst);
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
    fn a_path_is_labelled_with_the_template_it_matches() {
        let mut routes = RouteTemplates::default();
        for template in ["/health", "/api/journeys/{id}", "/docs/", "/docs/{*rest}"] {
            routes.insert(template).expect("no conflict");
        }
        assert_eq!(routes.label("/health"), "/health");
        assert_eq!(routes.label("/api/journeys/JRN-001"), "/api/journeys/{id}");
        assert_eq!(routes.label("/docs/"), "/docs/");
        assert_eq!(routes.label("/docs/a/b.css"), "/docs/{*rest}");
        for unknown in [
            "/",
            "/health/",
            "/api/journeys",
            "/api/journeys/a/b",
            "/HEALTH",
        ] {
            assert_eq!(routes.label(unknown), UNMATCHED, "{unknown}");
        }
        assert!(routes.insert("/api/journeys/{other}").is_err());
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
        assert_eq!(table.len(), 3);
    }
}
