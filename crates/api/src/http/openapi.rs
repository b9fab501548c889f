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
        journeys::update_journey, cache::demo, cache::set_demo, cache::remove_demo, cache::get,
        cache::set, cache::remove,
        ops::health, ops::ready, ops::metrics,
    ),
    components(schemas(problem::Problem, flyrtech_core::SegmentStatus, flyrtech_core::JourneyStatus)),
    tags(
        (name = "journeys", description = "Journeys and status updates"),
        (name = "cache", description = "The general-purpose cache, in its own key namespace"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// The document as served. utoipa 5.5 serializes a response link's fields in snake case
/// (`operation_id`); OpenAPI names them `operationId`, `operationRef`, `requestBody`, and clients
/// and fuzzers ignore links otherwise. The fix is applied once, when the server is built.
pub fn document() -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_links(&mut doc);
    doc
}

fn fix_links(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(links)) = map.get_mut("links") {
                for link in links.values_mut() {
                    if let serde_json::Value::Object(link) = link {
                        for (from, to) in [
                            ("operation_id", "operationId"),
                            ("operation_ref", "operationRef"),
                            ("request_body", "requestBody"),
                        ] {
                            if let Some(v) = link.remove(from) {
                                link.insert(to.to_owned(), v);
                            }
                        }
                    }
                }
            }
            map.values_mut().for_each(fix_links);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fix_links),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What schemathesis relies on (`just api-check` runs it): kept here too, so a change that
    /// loosens the document fails `cargo test` before it reaches the fuzzer.
    #[test]
    fn the_document_states_what_the_service_enforces() {
        let doc = document();
        let paths = &doc["paths"];
        for (path, method) in [
            ("/api/journeys", "post"),
            ("/api/journeys/{id}/status", "put"),
            ("/api/journeys/{id}/segments/{segmentId}/status", "put"),
            ("/api/cache/{key}", "post"),
            ("/api/cache/demo", "post"),
        ] {
            let responses = &paths[path][method]["responses"];
            for status in ["400", "413", "415", "422", "503"] {
                assert!(
                    responses.get(status).is_some(),
                    "{method} {path}: no {status}"
                );
            }
        }
        for method in ["get", "post", "delete"] {
            assert!(
                paths["/api/cache/demo"].get(method).is_some(),
                "{method} demo"
            );
        }
        let id = &paths["/api/journeys/{id}"]["get"]["parameters"][0];
        assert_eq!(id["schema"]["pattern"], "^[A-Za-z0-9._-]{1,64}$", "{id}");
        let statuses = &doc["components"]["schemas"]["SegmentStatus"]["enum"];
        assert!(
            statuses.as_array().is_some_and(|s| s.len() == 6),
            "{statuses}"
        );
        let retry_after = &paths["/api/journeys/{id}"]["get"]["responses"]["503"]["headers"];
        assert!(retry_after.get("Retry-After").is_some(), "{retry_after}");
    }

    #[test]
    fn links_use_the_openapi_field_names() {
        let doc = document();
        let link =
            &doc["paths"]["/api/journeys"]["post"]["responses"]["201"]["links"]["GetJourney"];
        assert_eq!(link["operationId"], "getJourney", "{link}");
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
        assert!(link.get("operation_id").is_none(), "{link}");
    }
}
