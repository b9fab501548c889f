//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api-docs/openapi.json`; Swagger UI (vendored, no network) at `/swagger-ui`.

use utoipa::OpenApi;

use super::{cache, journeys, ops, problem};

/// The API's OpenAPI 3.1 document.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "FlyrTech Journey Service",
        description = "Journeys and their segments on Redis, with the concurrency strategy chosen at start-up. Errors are application/problem+json; GET returns an ETag and PUT honours If-Match."
    ),
    paths(
        journeys::list, journeys::get, journeys::create, journeys::update_segment,
        journeys::update_journey, cache::demo, cache::get, cache::set, cache::remove,
        ops::health, ops::ready, ops::metrics,
    ),
    components(schemas(problem::Problem)),
    tags(
        (name = "journeys", description = "Journeys and status updates"),
        (name = "cache", description = "The general-purpose cache, in its own key namespace"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;
