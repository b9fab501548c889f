//! Every error the API returns, as RFC 9457 `application/problem+json`.
//!
//! One mapping from the store's typed errors to HTTP lives here, so every endpoint answers the
//! same failure with the same status, `type` and headers. A problem is only ever returned before
//! anything was written, or (503) when Redis could not confirm a write; see
//! [`StoreError::Unavailable`].

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flyrtech_core::{CacheError, InvalidInput, JourneyVersion, StoreError};
use serde::Serialize;
use utoipa::ToSchema;

/// Seconds a client should wait before retrying after a 503 or a conflict.
const RETRY_AFTER_SECONDS: u64 = 1;

/// The body of every error response.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Problem {
    /// A URI reference naming the kind of problem, e.g. `/problems/invalid-transition`
    /// (documented in docs/api.md).
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary of the kind of problem.
    pub title: String,
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong with this request, for a human.
    pub detail: String,
    /// For 412: the journey's current version, so the client can re-read and retry.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current_version: Option<JourneyVersion>,
    /// On every 404: the original service's own sentence (`Journey 'JRN-9' not found`), an
    /// RFC 9457 extension member, so clients of the original that show `message` keep working.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The failures every route with a JSON body can answer (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum BodyRejected {
    /// Malformed JSON, or a header that cannot be parsed (If-Match).
    #[response(status = 400, content_type = "application/problem+json")]
    Malformed(Problem),
    /// Body over 1 MiB; on `POST /api/journeys` also a journey whose document is over
    /// `--max-journey-bytes` (`/problems/journey-too-large`).
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// The body did not arrive within the request timeout (`/problems/request-timeout`).
    #[response(status = 408, content_type = "application/problem+json")]
    TooSlow(Problem),
    /// The body is not `application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    NotJson(Problem),
}

/// The answer of every route that asks Redis when it cannot (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum Unavailable {
    /// Redis unavailable (a write may or may not have landed; retrying it is safe), the
    /// request outlived its deadline, or (`--wait-replicas`) too few replicas confirmed the
    /// write in time (`/problems/not-replicated`: it may be in place) or the write was refused
    /// before it was sent because its primary lacks them (`/problems/replicas-missing`:
    /// nothing was written).
    #[response(status = 503, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Seconds to wait before retrying")))]
    Unavailable(Problem),
}

/// An error on its way to becoming a problem response.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    slug: &'static str,
    title: &'static str,
    detail: String,
    /// Seconds for `Retry-After`, when the client should retry later.
    retry_after: Option<u64>,
    bearer_challenge: bool,
    current_version: Option<JourneyVersion>,
    message: Option<String>,
}

impl ApiError {
    fn new(status: StatusCode, slug: &'static str, title: &'static str, detail: String) -> Self {
        Self {
            status,
            slug,
            title,
            detail,
            retry_after: None,
            bearer_challenge: false,
            current_version: None,
            message: None,
        }
    }

    /// Sets the original's `message` on a 404; any other error is returned unchanged.
    #[must_use]
    pub fn with_not_found_message(mut self, message: impl Into<String>) -> Self {
        if self.status == StatusCode::NOT_FOUND {
            self.message = Some(message.into());
        }
        self
    }

    /// 404 for a journey id no journey can have (it fails our id rules): such a journey does not
    /// exist. Answered before anything reaches Redis.
    pub fn impossible_journey(raw: &str, reason: &InvalidInput) -> Self {
        let raw = quoted(raw);
        Self::new(
            StatusCode::NOT_FOUND,
            "journey-not-found",
            "Journey not found",
            format!("no journey can have the id {raw}: {}", reason.reason),
        )
        .with_not_found_message(format!("Journey {raw} not found"))
    }

    /// 404 for a segment id no segment can have, naming the segment (the journey id is valid).
    pub fn impossible_segment(journey: &str, raw: &str, reason: &InvalidInput) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "segment-not-found",
            "Segment not found",
            format!(
                "no segment can have the id {} (journey {}): {}",
                quoted(raw),
                quoted(journey),
                reason.reason
            ),
        )
    }

    /// 400: more than one `Authorization` header. The service and a proxy in front of it could
    /// each judge a different one, so neither is taken.
    pub fn two_authorizations() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "ambiguous-authorization",
            "More than one Authorization header",
            "send one Authorization header".to_owned(),
        )
    }

    /// 413 for a journey whose document would be larger than the service stores.
    pub fn journey_too_large(bytes: usize, max: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "journey-too-large",
            "Journey too large",
            format!(
                "the journey's document would be {bytes} bytes; the most this service stores is \
                 {max} (--max-journey-bytes), so that one update's cost in Redis stays bounded; \
                 nothing was created"
            ),
        )
    }

    fn retry_later(mut self) -> Self {
        self.retry_after = Some(RETRY_AFTER_SECONDS);
        self
    }

    /// 404 for anything that is not there (a cache key, a route), with the original's
    /// `message`.
    pub fn not_found(detail: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not-found",
            "Not found",
            detail.into(),
        )
        .with_not_found_message(message)
    }

    /// 412: the `If-Match` precondition failed.
    pub fn precondition_failed(detail: impl Into<String>, current: Option<JourneyVersion>) -> Self {
        let mut e = Self::new(
            StatusCode::PRECONDITION_FAILED,
            "precondition-failed",
            "The journey changed since you read it",
            detail.into(),
        );
        e.current_version = current;
        e
    }

    /// 400: the request is malformed at the HTTP level (a header that cannot be parsed).
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed-request",
            "Malformed request",
            detail.into(),
        )
    }

    /// 408: the request's body had not arrived when the request's time ran out. The client's
    /// doing (a slow upload), so a 4xx: nothing was done, and nobody is paged.
    pub fn body_too_slow(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            "request-timeout",
            "The request's body did not arrive in time",
            format!(
                "the body had not arrived within {} ms; nothing was done",
                limit.as_millis()
            ),
        )
    }

    /// 503 when the request ran out of time; the client may retry.
    pub fn timed_out(limit: std::time::Duration) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            "The request took too long",
            format!("the request did not finish within {} ms", limit.as_millis()),
        )
        .retry_later()
    }

    /// 503: this instance's strategy writes a layout the dataset has left (a migration finished
    /// while it ran). Its updates stay correct; it takes no new journeys and is not ready.
    pub fn wrong_layout(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "wrong-layout",
            "This instance writes a layout the dataset has left",
            detail.into(),
        )
        .retry_later()
    }

    /// 503 on `/ready`: primaries known to lack the replicas `--wait-replicas` requires; their
    /// journeys' writes are refused until a replica confirms again.
    pub fn replicas_missing(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "not-replicated",
            "Some primaries lack the replicas writes must wait for",
            detail.into(),
        )
        .retry_later()
    }

    /// 413 before any of the body is read: its declared `Content-Length` is over the limit
    /// (so a client that sent `Expect: 100-continue` is refused instead of invited).
    pub fn body_too_large(declared: u64, limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            "Request body too large",
            format!("the body would be {declared} bytes; the most accepted is {limit}"),
        )
    }

    /// 413: a cache value over `--cache-max-value-bytes`.
    pub fn value_too_large(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "value-too-large",
            "The cache value is too large",
            detail.into(),
        )
    }

    /// 429: this client sent more than its rate limit; `Retry-After` says when it may again.
    pub fn too_many_requests(wait_seconds: u64) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too-many-requests",
            "Too many requests",
            format!("this client is over its rate limit; retry in {wait_seconds} s"),
        );
        error.retry_after = Some(wait_seconds);
        error
    }

    /// 500: something the service cannot explain to the client (logged).
    pub fn internal(detail: impl Into<String>) -> Self {
        let detail = detail.into();
        tracing::error!(%detail, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "Internal error",
            detail,
        )
    }

    /// 401: no key, or one the service does not know; with `WWW-Authenticate: Bearer`.
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        let mut error = Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "A valid API key is needed",
            detail.into(),
        );
        error.bearer_challenge = true;
        error
    }

    /// 403: the key is valid but its scope does not cover the route.
    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "The API key's scope does not allow this",
            detail.into(),
        )
    }

    /// 503 on an update: the outbox's backlog has reached `--outbox-hard-cap` (no relay is
    /// keeping up); nothing was changed, and the update can be sent again later.
    pub fn outbox_full(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outbox-full",
            "The outbox is full: updates wait for the relay",
            detail.into(),
        )
        .retry_later()
    }

    /// 429 on an update: this client's changes waiting in the outbox have reached its share of
    /// the outbox's cap (`--quota-outbox-share`); other clients' updates are served.
    pub fn outbox_quota(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "outbox-quota",
            "This client's changes fill its share of the outbox",
            detail.into(),
        )
        .retry_later()
    }

    /// 503 on `/ready`: Redis' `maxmemory-policy` can evict journeys.
    pub fn eviction_risk(detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "eviction-risk",
            "Redis may evict journeys",
            detail.into(),
        )
        .retry_later()
    }

    /// 503: Redis could not be reached or did not answer in time; retrying is safe.
    fn redis_unavailable(detail: String) -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "Redis is unavailable",
            detail,
        )
        .retry_later()
    }

    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The problem body.
    pub fn problem(&self) -> Problem {
        Problem {
            kind: format!("/problems/{}", self.slug),
            title: self.title.to_owned(),
            status: self.status.as_u16(),
            detail: self.detail.clone(),
            current_version: self.current_version,
            message: self.message.clone(),
        }
    }
}

impl From<InvalidInput> for ApiError {
    fn from(e: InvalidInput) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid-input",
            "Invalid input",
            e.to_string(),
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let detail = e.to_string();
        match e {
            StoreError::JourneyNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "journey-not-found",
                "Journey not found",
                detail,
            )
            .with_not_found_message(format!("Journey '{id}' not found")),
            StoreError::Rejected(flyrtech_core::DomainError::SegmentNotFound { .. }) => Self::new(
                StatusCode::NOT_FOUND,
                "segment-not-found",
                "Segment not found",
                detail,
            ),
            StoreError::Rejected(_) => Self::new(
                StatusCode::CONFLICT,
                "invalid-transition",
                "The status cannot change that way",
                detail,
            ),
            StoreError::InvalidInput(e) => e.into(),
            StoreError::AlreadyExists(_) => Self::new(
                StatusCode::CONFLICT,
                "already-exists",
                "Journey already exists",
                detail,
            ),
            StoreError::VersionMismatch { actual, .. } => {
                Self::precondition_failed(detail, Some(actual))
            }
            StoreError::Conflict { .. } | StoreError::StaleFencingToken { .. } => Self::new(
                StatusCode::CONFLICT,
                "concurrent-update",
                "Too many concurrent updates",
                detail,
            )
            .retry_later(),
            StoreError::NotReplicated { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "not-replicated",
                "Applied, but not confirmed by enough replicas",
                format!(
                    "{detail}. The change may be in place, but a failover now could lose it; \
                     retrying the same change is safe"
                ),
            )
            .retry_later(),
            StoreError::ReplicasMissing { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "replicas-missing",
                "Not written: the primary lacks the replicas it must wait for",
                format!(
                    "{detail}. Nothing of the change is in place and nothing of it will surface \
                     later; send it again once the replicas are back"
                ),
            )
            .retry_later(),
            StoreError::OverQuota { .. } => {
                metrics::counter!("http_quota_refused_total", "quota" => "journeys").increment(1);
                // The client's doing, not the service's: a 4xx, which pages nobody. No
                // Retry-After: journeys are kept, so waiting brings no room back.
                Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "journey-quota",
                    "This client has created its quota of journeys",
                    format!(
                        "{detail}: journeys are kept for good, so one client may not take the \
                         memory every client shares (--quota-journeys); nothing was created, \
                         and other clients are not affected"
                    ),
                )
            }
            StoreError::Corrupt { key, reason } => {
                // Permanent until someone repairs the key: no Retry-After, and the key in the log.
                tracing::error!(%key, %reason, "stored data cannot be decoded");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "corrupt-journey",
                    "A stored journey is corrupt",
                    detail,
                )
            }
            // Unavailable, and anything a newer core adds.
            _ => Self::redis_unavailable(detail),
        }
    }
}

impl From<CacheError> for ApiError {
    fn from(e: CacheError) -> Self {
        let detail = e.to_string();
        match e {
            CacheError::InvalidInput(e) => e.into(),
            CacheError::Full { .. } => Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "cache-full",
                "The cache is full",
                format!(
                    "{detail}; entries expire, so room comes back, or delete one you set \
                     (journeys are never affected)"
                ),
            )
            .retry_later(),
            CacheError::OverQuota { .. } => {
                metrics::counter!("http_quota_refused_total", "quota" => "cache").increment(1);
                // The client's doing: 429, since its entries expire and room comes back.
                Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "cache-quota",
                    "This client holds its quota of cache entries",
                    format!(
                        "{detail} (--quota-cache-entries); entries expire, so room comes back, \
                         or delete one you set; nothing was stored, and other clients are not \
                         affected"
                    ),
                )
                .retry_later()
            }
            // Unavailable, and anything a newer core adds.
            _ => Self::redis_unavailable(detail),
        }
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let detail = rejection.body_text();
        match rejection.status() {
            StatusCode::PAYLOAD_TOO_LARGE => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body-too-large",
                "Request body too large",
                detail,
            ),
            StatusCode::UNPROCESSABLE_ENTITY => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid-input",
                "Invalid input",
                detail,
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Self::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "Send application/json",
                detail,
            ),
            _ => Self::new(
                StatusCode::BAD_REQUEST,
                "malformed-body",
                "Malformed request body",
                detail,
            ),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = match serde_json::to_vec(&self.problem()) {
            Ok(body) => body,
            // Serializing a struct of strings and numbers cannot fail; keep a body regardless.
            Err(_) => self.detail.clone().into_bytes(),
        };
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(seconds) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.bearer_challenge {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"flyrtech\""),
            );
        }
        response
    }
}

/// At most this many characters of what a client sent are quoted back in an error.
const QUOTED: usize = 80;

/// `raw`, quoted for an error: whole when short, else its start and its length, so an answer
/// never grows with what the client sent.
pub(crate) fn quoted(raw: &str) -> String {
    match raw.char_indices().nth(QUOTED) {
        None => format!("'{raw}'"),
        Some((at, _)) => format!("'{}…' ({} characters)", &raw[..at], raw.chars().count()),
    }
}
