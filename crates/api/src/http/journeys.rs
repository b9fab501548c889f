//! The journey endpoints: the original's four plus `POST /api/journeys`.
//!
//! Handlers only translate: HTTP in, one store call, HTTP out. Every write goes through
//! [`JourneyStore::update`] of the configured strategy, with the client's `If-Match` passed down
//! as the expected version so the check happens inside the strategy's atomic step.
//!
//! The original's bodies, field for field (docs/api.md, "Endpoints"): `newStatus` in both update replies, and
//! on every 404 the original's `message`. An id no journey can have (our id rules reject it) is
//! a journey that does not exist: 404 with that message, before anything reaches Redis.

use axum::Json;
use axum::body::{Body, Bytes};
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use flyrtech_core::{
    Journey, JourneyId, JourneyStatus, JourneyStore, JourneyVersion, SegmentId, SegmentStatus,
    Status, StatusChange, StoreError,
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use flyrtech_infrastructure::store::index::PageCursor;

use super::AppState;
use super::etag::{Conditions, IfMatch, etag};
use super::limit::Client;
use super::problem::{ApiError, BodyRejected, Problem, Unavailable};

/// `GET /api/journeys`: the original's shape.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JourneyIds {
    /// The journey ids of this page, sorted, at most `limit` (every id when they fit on one page).
    pub journey_ids: Vec<JourneyId>,
    /// How many ids this page holds (all of them when they fit on one page).
    pub count: usize,
    /// When there are more pages: the `cursor` of the next (also in the `Link` header).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
    /// When the ids span pages: how many journeys there are in all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
}

/// `GET /api/journeys` query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Ids per page, 1 to 10000 [default: 1000]. A dataset no larger than one page is
    /// answered whole, as the original did.
    #[param(minimum = 1, maximum = 10_000)]
    pub limit: Option<String>,
    /// Where to continue: the `nextCursor` of the previous page.
    #[param(pattern = "^[0-9]{1,20}(:[A-Za-z0-9._-]{1,64})?$")]
    pub cursor: Option<String>,
}

/// Ids per page unless `limit` says otherwise.
pub const DEFAULT_PAGE: usize = 1000;
/// The largest `limit`.
pub const MAX_PAGE: usize = 10_000;

/// The body of a segment status update.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SegmentStatusRequest {
    /// The new status. Also accepted in any case and with surrounding whitespace
    /// (`departed`); any other value is 422 listing the valid ones.
    #[schema(value_type = SegmentStatus, example = "Departed")]
    pub status: String,
}

/// The body of a journey status update.
#[derive(Debug, Deserialize, ToSchema)]
pub struct JourneyStatusRequest {
    /// The new status. Also accepted in any case and with surrounding whitespace
    /// (`inprogress`); any other value is 422 listing the valid ones.
    #[schema(value_type = JourneyStatus, example = "InProgress")]
    pub status: String,
}

/// What a status update did: the original's fields, plus the version, whether anything
/// changed, and the strategy's attempts.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusUpdated {
    /// A sentence for humans (`Segment status updated successfully`).
    #[schema(value_type = String)]
    pub message: std::borrow::Cow<'static, str>,
    /// The journey.
    pub journey_id: JourneyId,
    /// The segment, for a segment update.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment_id: Option<SegmentId>,
    /// The status now stored, in its canonical spelling (`Departed`).
    pub new_status: &'static str,
    /// The journey's version after the update (also the response's `ETag`).
    pub version: JourneyVersion,
    /// False when the status already was the requested one and nothing was written.
    pub changed: bool,
    /// How many tries the strategy needed.
    pub attempts: u32,
}

const PROBLEM: &str = "application/problem+json";

/// What both status updates can answer besides success, a missing target, and the shared
/// body and availability failures (for the OpenAPI document).
#[derive(Debug, utoipa::IntoResponses)]
pub enum UpdateRefused {
    /// The transition table forbids the change, or the strategy gave up under contention (then
    /// with Retry-After).
    #[response(status = 409, content_type = "application/problem+json",
        headers(("Retry-After" = u64, description = "Only when the strategy gave up under contention")))]
    Conflict(Problem),
    /// If-Match names no current version; `currentVersion` says which it is.
    #[response(status = 412, content_type = "application/problem+json")]
    PreconditionFailed(Problem),
    /// A status that is not one of the enum, or a body without `status`.
    #[response(status = 422, content_type = "application/problem+json")]
    InvalidStatus(Problem),
    /// This client's changes waiting in the outbox fill its share (`/problems/outbox-quota`);
    /// nothing was changed.
    #[response(status = 429, content_type = "application/problem+json",
        headers(("Retry-After" = u64)))]
    OverShare(Problem),
    /// The stored journey cannot be decoded (a foreign writer).
    #[response(status = 500, content_type = "application/problem+json")]
    Corrupt(Problem),
}

/// Lists the journey ids, a page at a time (`limit`, `cursor`); a dataset that fits on one page
/// is answered whole, exactly as the original did.
#[utoipa::path(get, path = "/api/journeys", tag = "journeys", operation_id = "listJourneys",
    params(ListParams),
    responses(
        (status = 200, body = JourneyIds, headers(("Link" = String, description = "When there are more pages: `</api/journeys?limit=N&cursor=C>; rel=\"next\"`"))),
        (status = 422, body = Problem, content_type = PROBLEM, description = "A `limit` outside 1 to 10000, a `cursor` that is not one, or a query string that does not parse (a repeated parameter)"),
        (status = 500, body = Problem, content_type = PROBLEM, description = "The stored index holds an id that is not valid (a foreign writer)"),
        Unavailable,
    ))]
pub async fn list(
    State(app): State<AppState>,
    query: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    // A query string that does not parse (a repeated parameter) is invalid input, like a bad
    // value: 422.
    let Query(params) = query
        .map_err(|e| ApiError::from(flyrtech_core::InvalidInput::new("query", e.body_text())))?;
    let limit = match params.limit.as_deref().map(str::parse::<usize>) {
        None => DEFAULT_PAGE,
        Some(Ok(n @ 1..=MAX_PAGE)) => n,
        Some(_) => {
            return Err(flyrtech_core::InvalidInput::new(
                "limit",
                format!("must be a whole number from 1 to {MAX_PAGE}"),
            )
            .into());
        }
    };
    let cursor = params
        .cursor
        .as_deref()
        .map(str::parse::<PageCursor>)
        .transpose()
        .map_err(|e| flyrtech_core::InvalidInput::new("cursor", e.to_string()))?;
    let paged = cursor.is_some();
    let page = app.store.list_page(cursor, limit).await?;
    let next = page.next.map(|c| c.to_string());
    let paged = paged || next.is_some();
    let link = next
        .as_ref()
        .map(|next| format!("</api/journeys?limit={limit}&cursor={next}>; rel=\"next\""));
    let body = JourneyIds {
        count: page.ids.len(),
        journey_ids: page.ids,
        next_cursor: next,
        total: paged.then_some(page.total),
    };
    let mut response = Json(body).into_response();
    if let Some(value) = link.and_then(|link| HeaderValue::try_from(link).ok()) {
        response.headers_mut().insert(header::LINK, value);
    }
    Ok(response)
}

/// Reads one journey; `ETag` is its version, and `If-None-Match` answers 304.
#[utoipa::path(get, path = "/api/journeys/{id}", tag = "journeys", operation_id = "getJourney",
    params(
        ("id" = String, Path, description = "Journey id, e.g. JRN-001; any other string names no journey (404)", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ("If-None-Match" = Option<String>, Header, nullable = false, description = "Entity tags the client holds; the current one (weak comparison) or `*` answers 304"),
    ),
    responses(
        (status = 200, body = Journey, headers(("ETag" = String, description = "The journey version, quoted: a strong validator"))),
        (status = 304, description = "Unchanged since the If-None-Match version", headers(("ETag" = String))),
        (status = 404, body = Problem, content_type = PROBLEM, description = "No such journey, or an id no journey can have; `message` is the original's"),
        (status = 500, body = Problem, content_type = PROBLEM, description = "The stored journey cannot be decoded (a foreign writer)"),
        Unavailable,
    ))]
pub async fn get(
    State(app): State<AppState>,
    path: Result<Path<String>, PathRejection>,
    conditions: Conditions,
) -> Result<Response, ApiError> {
    let Path(raw) = path?;
    let id = journey_id(&raw)?;
    // The journey's JSON as `Json(journey)` would write it, decoded and encoded only when Redis
    // returned bytes not rendered before (flyrtech_infrastructure::store::render).
    let journey = app.store.get_json(&id).await?;
    let tag = etag(journey.version);
    if conditions.none_match(journey.version) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, tag)]).into_response());
    }
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::ETAG, tag),
        ],
        Body::from(Bytes::from_owner(ArcText(journey.json))),
    )
        .into_response())
}

/// Shared JSON text as a response body, without copying it.
struct ArcText(std::sync::Arc<str>);

impl AsRef<[u8]> for ArcText {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// Creates a journey from the same JSON shape `GET` returns. Never overwrites.
#[utoipa::path(post, path = "/api/journeys", tag = "journeys", operation_id = "createJourney",
    request_body = Journey,
    responses(
        (status = 201, body = Journey, headers(("Location" = String, description = "/api/journeys/{id}"), ("ETag" = String)),
            links(
                ("GetJourney" = (operation_id = "getJourney", parameters(("id" = "$response.body#/id")), description = "The journey just created")),
                ("UpdateJourneyStatus" = (operation_id = "updateJourneyStatus", parameters(("id" = "$response.body#/id")))),
                ("UpdateSegmentStatus" = (operation_id = "updateSegmentStatus", parameters(("id" = "$response.body#/id"), ("segmentId" = "$response.body#/segments/0/segmentId")))),
            )),
        BodyRejected,
        (status = 409, body = Problem, content_type = PROBLEM, description = "A journey with this id exists; it is untouched"),
        (status = 422, body = Problem, content_type = PROBLEM, description = "Invalid fields, including rules a schema cannot state: segment ids unique within the journey, arrivalTime not before departureTime, prices in whole cents"),
        (status = 429, body = Problem, content_type = PROBLEM, description = "This client has created its quota of journeys (`journey-quota`); nothing was created"),
        Unavailable,
    ))]
pub async fn create(
    State(app): State<AppState>,
    client: Client,
    payload: Result<Json<Journey>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(journey) = payload?;
    journey.validate_new()?;
    let bytes = serde_json::to_vec(&journey).map_or(usize::MAX, |doc| doc.len());
    if bytes > app.max_journey_bytes {
        return Err(ApiError::journey_too_large(bytes, app.max_journey_bytes));
    }
    app.check_layout().await?;
    let owner = client.to_string();
    if let Some(quota) = &app.journey_quota {
        quota.take(&owner).await?;
    }
    if let Err(e) = app.store.create(&journey).await {
        give_back(&app, &owner, &e).await;
        return Err(e.into());
    }
    tracing::info!(journey = %journey.id, strategy = %app.store.strategy(), "journey created");
    let location = HeaderValue::try_from(format!("/api/journeys/{}", journey.id))
        .expect("journey ids are URL- and header-safe by construction");
    Ok((
        StatusCode::CREATED,
        [
            (header::LOCATION, location),
            (header::ETAG, etag(journey.version)),
        ],
        Json(journey),
    )
        .into_response())
}

/// Gives back the journey quota's unit a create that wrote nothing took; an outcome the store
/// cannot know (unavailable) keeps it (store::quota).
async fn give_back(app: &AppState, owner: &str, error: &StoreError) {
    let Some(quota) = &app.journey_quota else {
        return;
    };
    if matches!(error, StoreError::Unavailable { .. }) {
        return;
    }
    if let Err(e) = quota.give_back(owner).await {
        tracing::warn!(%owner, error = %e, "cannot give back a journey quota unit; it stays counted");
    }
}

/// Sets one segment's status.
#[utoipa::path(put, path = "/api/journeys/{id}/segments/{segmentId}/status", tag = "journeys", operation_id = "updateSegmentStatus",
    params(
        ("id" = String, Path, description = "Journey id; any other string names no journey (404)", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ("segmentId" = String, Path, description = "Segment id; any other string names no segment (404)", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Apply only at one of these versions (the ETag of a GET), or `*`", pattern = r#"^[ \t]*((\*|(W/)?"[!#-+\-~]*")?([ \t]*,[ \t]*(\*|(W/)?"[!#-+\-~]*")?)*)[ \t]*$"#),
    ),
    request_body = SegmentStatusRequest,
    responses(
        (status = 200, body = StatusUpdated, headers(("ETag" = String, description = "The version after the update"))),
        BodyRejected,
        (status = 404, body = Problem, content_type = PROBLEM, description = "No such journey or segment; `message` is the original's"),
        UpdateRefused,
        Unavailable,
    ))]
pub async fn update_segment(
    State(app): State<AppState>,
    client: Client,
    path: Result<Path<(String, String)>, PathRejection>,
    conditions: Conditions,
    payload: Result<Json<SegmentStatusRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path((journey, segment)) = path?;
    let Json(body) = payload?;
    // The original's one sentence for a missing journey or segment, on this route.
    let missing = || {
        format!(
            "Journey {} or segment {} not found",
            super::problem::quoted(&journey),
            super::problem::quoted(&segment)
        )
    };
    let id = journey_id(&journey).map_err(|e| e.with_not_found_message(missing()))?;
    let segment_id = SegmentId::parse(&*segment).map_err(|e| {
        ApiError::impossible_segment(&journey, &segment, &e).with_not_found_message(missing())
    })?;
    let status = SegmentStatus::parse(&body.status)?;
    apply(
        &app,
        &client,
        &id,
        StatusChange::Segment { segment_id, status },
        &conditions,
    )
    .await
    .map_err(|e| e.with_not_found_message(missing()))
}

/// Sets the journey's own status.
#[utoipa::path(put, path = "/api/journeys/{id}/status", tag = "journeys", operation_id = "updateJourneyStatus",
    params(
        ("id" = String, Path, description = "Journey id; any other string names no journey (404)", pattern = "^[A-Za-z0-9._-]{1,64}$"),
        ("If-Match" = Option<String>, Header, nullable = false, description = "Apply only at one of these versions (the ETag of a GET), or `*`", pattern = r#"^[ \t]*((\*|(W/)?"[!#-+\-~]*")?([ \t]*,[ \t]*(\*|(W/)?"[!#-+\-~]*")?)*)[ \t]*$"#),
    ),
    request_body = JourneyStatusRequest,
    responses(
        (status = 200, body = StatusUpdated, headers(("ETag" = String, description = "The version after the update"))),
        BodyRejected,
        (status = 404, body = Problem, content_type = PROBLEM, description = "No such journey; `message` is the original's"),
        UpdateRefused,
        Unavailable,
    ))]
pub async fn update_journey(
    State(app): State<AppState>,
    client: Client,
    path: Result<Path<String>, PathRejection>,
    conditions: Conditions,
    payload: Result<Json<JourneyStatusRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Path(journey) = path?;
    let Json(body) = payload?;
    let id = journey_id(&journey)?;
    let status = JourneyStatus::parse(&body.status)?;
    apply(
        &app,
        &client,
        &id,
        StatusChange::Journey { status },
        &conditions,
    )
    .await
}

/// A path's journey id; one our rules reject names no journey, so it is a 404.
fn journey_id(raw: &str) -> Result<JourneyId, ApiError> {
    JourneyId::parse(raw).map_err(|e| ApiError::impossible_journey(raw, &e))
}

/// Runs one status change through the store and answers with what it did.
async fn apply(
    app: &AppState,
    client: &Client,
    id: &JourneyId,
    change: StatusChange,
    conditions: &Conditions,
) -> Result<Response, ApiError> {
    let strategy = app.store.strategy();
    app.check_outbox()?;
    app.check_outbox_share(client)?;
    let expected = expected_version(app, id, conditions).await?;
    let target = change.target();
    let outcome = match app.store.update(id, &change, expected).await {
        Ok(outcome) => outcome,
        Err(e) => {
            // What the client asked for was refused by the rules (INFO); the service could not
            // do its part (WARN).
            match e {
                StoreError::Conflict { .. }
                | StoreError::StaleFencingToken { .. }
                | StoreError::NotReplicated { .. }
                | StoreError::ReplicasMissing { .. }
                | StoreError::Corrupt { .. }
                | StoreError::Unavailable { .. } => {
                    tracing::warn!(journey = %id, %target, %strategy, error = %e, kind = e.kind(), "update refused");
                }
                _ => {
                    tracing::info!(journey = %id, %target, %strategy, error = %e, kind = e.kind(), "update refused");
                }
            }
            return Err(e.into());
        }
    };
    if outcome.changed {
        app.record_change(client);
    }
    // One line per acknowledged update is an access log: at DEBUG, so that a busy service does
    // not write megabytes a second by default (RUST_LOG=info,flyrtech_api=debug turns it on).
    // Refusals and failures above are logged every time.
    tracing::debug!(
        journey = %id, %target, %strategy,
        status = change.target_status(),
        attempts = outcome.attempts,
        version = %outcome.version,
        changed = outcome.changed,
        "status updated"
    );
    let new_status = change.target_status();
    let (what, segment_id) = match change {
        StatusChange::Segment { segment_id, .. } => ("Segment", Some(segment_id)),
        _ => ("Journey", None),
    };
    // The common answer is a constant: no sentence made per request.
    let message = match (outcome.changed, what) {
        (true, "Segment") => "Segment status updated successfully".into(),
        (true, _) => "Journey status updated successfully".into(),
        (false, _) => format!("{what} status already was {new_status}; nothing changed").into(),
    };
    Ok((
        [(header::ETAG, etag(outcome.version))],
        Json(StatusUpdated {
            message,
            journey_id: id.clone(),
            segment_id,
            new_status,
            version: outcome.version,
            changed: outcome.changed,
            attempts: outcome.attempts,
        }),
    )
        .into_response())
}

/// The version the strategy must find, from `If-Match`. One tag is checked by the strategy
/// itself, atomically with the write; a list is first resolved against the current version.
async fn expected_version(
    app: &AppState,
    id: &JourneyId,
    conditions: &Conditions,
) -> Result<Option<JourneyVersion>, ApiError> {
    match conditions.if_match()? {
        IfMatch::Absent | IfMatch::Any => Ok(None),
        IfMatch::Versions(list) if list.len() == 1 => Ok(list.first().copied()),
        // A list of tags: the current version is read first. Boxed, so that the common
        // update's future does not carry a read's.
        condition => {
            let current = Box::pin(app.store.get(id)).await?.version;
            if condition.matches(current) {
                Ok(Some(current))
            } else {
                Err(ApiError::precondition_failed(
                    format!("journey {id} is at version {current}, which If-Match does not name"),
                    Some(current),
                ))
            }
        }
    }
}
