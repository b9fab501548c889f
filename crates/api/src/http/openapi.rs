//! The OpenAPI document, generated from the handlers' annotations and served at
//! `/api-docs/openapi.json`; Swagger UI (vendored, no network) at `/swagger-ui`.

use utoipa::OpenApi;

use super::auth::{Access, needed};
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
///
/// The document follows the configuration: the bearer scheme only where this service asks for
/// a key (none without keys; reads public with `--open-reads`), so a client (or a fuzzer) told
/// a route needs a key finds that it does.
pub fn document(access: &Access) -> serde_json::Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    fix_links(&mut doc);
    declare_access(&mut doc, access);
    doc
}

/// The answers of the layers in front of every handler, added to every operation rather than
/// repeated in each annotation: the bearer scheme and 401/403 where this service needs a key
/// (the API routes and `/metrics` with keys; reads not with `--open-reads`; nowhere without
/// keys), and 429 from the rate limit everywhere.
fn declare_access(doc: &mut serde_json::Value, access: &Access) {
    use serde_json::json;
    let problem = |description: &str, retry: bool| {
        let mut response = json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        });
        if retry {
            response["headers"] = json!({"Retry-After": {
                "description": "Seconds to wait before retrying",
                "schema": {"type": "integer", "format": "int64", "minimum": 1}
            }});
        }
        response
    };
    if access.keys.is_some() {
        doc["components"]["securitySchemes"] = json!({"bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key made with `flyrtech api-key new NAME --scope read|write|admin` (docs/security.md)"
        }});
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        let Some(operations) = item.as_object_mut() else {
            continue;
        };
        for (method, operation) in operations.iter_mut() {
            let keyed = access.keys.is_some()
                && axum::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
                    .is_ok_and(|m| needed(&m, path, access.open_reads).is_some());
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            // A route that declares 429 itself (an update's outbox share) says what else it
            // means; the rate limit's is added to it.
            let also = responses
                .get("429")
                .and_then(|r| r["description"].as_str())
                .map(|d| format!("; or: {d}"))
                .unwrap_or_default();
            responses.insert(
                "429".into(),
                problem(
                    &format!("Over this client's rate limit (`/problems/too-many-requests`){also}"),
                    true,
                ),
            );
            if keyed {
                responses.insert(
                    "401".into(),
                    problem("No API key, or an unknown one (`/problems/unauthorized`); with `WWW-Authenticate: Bearer`", false),
                );
                responses.insert(
                    "403".into(),
                    problem(
                        "The key's scope does not allow this route (`/problems/forbidden`)",
                        false,
                    ),
                );
                operation["security"] = json!([{"bearer": []}]);
            }
        }
    }
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
        let doc = document(&keyed(false));
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

    fn keyed(open_reads: bool) -> Access {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys");
        super::super::auth::ApiKeys::create(&path, "ci", super::super::auth::Scope::Write)
            .expect("a key");
        Access {
            keys: Some(super::super::auth::ApiKeys::load(&path).expect("keys")),
            open_reads,
        }
    }

    /// Without keys the document asks for none (schemathesis' ST401 found it did); with
    /// `--open-reads`, reads are public and writes still keyed.
    #[test]
    fn the_document_asks_for_keys_only_where_the_service_does() {
        let open = document(&Access::default());
        assert!(open["components"].get("securitySchemes").is_none());
        let reads_open = document(&keyed(true));
        for (doc, get_keyed) in [(&open, false), (&reads_open, false)] {
            for (path, item) in doc["paths"].as_object().expect("paths") {
                for (method, operation) in item.as_object().expect("operations") {
                    let keyed = match method.as_str() {
                        "get" if path == "/metrics" => doc == &reads_open,
                        "get" => get_keyed,
                        _ => doc == &reads_open && path.starts_with("/api/"),
                    };
                    assert_eq!(
                        operation.get("security").is_some(),
                        keyed,
                        "{method} {path}"
                    );
                    let responses = &operation["responses"];
                    assert_eq!(responses.get("401").is_some(), keyed, "{method} {path}");
                    assert!(responses.get("429").is_some(), "{method} {path}");
                }
            }
        }
    }

    /// The layers in front of the handlers are in the contract: the bearer scheme, 401 and 403
    /// on every keyed route, 429 everywhere, probes open.
    #[test]
    fn the_document_declares_keys_scopes_and_the_rate_limit() {
        let doc = document(&keyed(false));
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        let paths = doc["paths"].as_object().expect("paths");
        for (path, item) in paths {
            for (method, operation) in item.as_object().expect("operations") {
                let responses = &operation["responses"];
                assert!(responses.get("429").is_some(), "{method} {path}");
                let keyed = path.starts_with("/api/") || path == "/metrics";
                assert_eq!(responses.get("401").is_some(), keyed, "{method} {path}");
                assert_eq!(responses.get("403").is_some(), keyed, "{method} {path}");
                assert_eq!(
                    operation.get("security").is_some(),
                    keyed,
                    "{method} {path}"
                );
            }
        }
        let cache_set = &doc["paths"]["/api/cache/{key}"]["post"]["responses"];
        assert!(cache_set.get("507").is_some());
        let list = &doc["paths"]["/api/journeys"]["get"];
        assert!(
            list["parameters"].as_array().is_some_and(|p| p.len() == 2),
            "{list}"
        );
    }

    #[test]
    fn links_use_the_openapi_field_names() {
        let doc = document(&Access::default());
        let link =
            &doc["paths"]["/api/journeys"]["post"]["responses"]["201"]["links"]["GetJourney"];
        assert_eq!(link["operationId"], "getJourney", "{link}");
        assert_eq!(link["parameters"]["id"], "$response.body#/id");
        assert!(link.get("operation_id").is_none(), "{link}");
    }
}
