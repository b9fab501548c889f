//! Traces: one client request followed through `serve`, the outbox, `relay` and
//! `project` as one OpenTelemetry trace, received by real OTLP receivers (gRPC: the
//! `fake-opentelemetry-collector`; HTTP/protobuf: a receiver of the suite's own on the OTLP
//! protobuf types); and nothing carried when traces are off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fake_opentelemetry_collector::{ExportedSpan, FakeCollectorServer};
use flyrtech_core::JourneyId;
use flyrtech_infrastructure::keys;
use flyrtech_tests::{nats, postgres};

use super::{Serving, flyrtech, http, private_redis};

/// The client's own span: its trace id and span id, as a W3C `traceparent`.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

/// The process environment that sends spans to `endpoint` over `protocol`, exported within
/// 50 ms of their end.
fn otel(endpoint: &str, protocol: &str) -> Vec<(String, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT".into(), endpoint.into()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL".into(), protocol.into()),
        ("OTEL_BSP_SCHEDULE_DELAY".into(), "50".into()),
    ]
}

fn pairs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// Spans received by `collector` until one named `last` of the client's trace has arrived
/// (bounded: 30 s), keyed by name.
async fn spans_until(
    collector: &mut FakeCollectorServer,
    last: &str,
) -> HashMap<String, ExportedSpan> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen: HashMap<String, ExportedSpan> = HashMap::new();
    while !seen.contains_key(last) {
        assert!(
            Instant::now() < deadline,
            "no {last} span within 30 s; got {:?}",
            seen.keys().collect::<Vec<_>>()
        );
        for span in collector
            .exported_spans(1, Duration::from_millis(200))
            .await
        {
            if span.trace_id == CLIENT_TRACE {
                seen.insert(span.name.clone(), span);
            }
        }
    }
    seen
}

/// A span's attribute as text (the collector keeps the OTLP value's debug form, such as
/// `Some(AnyValue { value: Some(StringValue("lua")) })`).
fn attribute(span: &ExportedSpan, key: &str) -> String {
    let shown = span
        .attributes
        .get(key)
        .unwrap_or_else(|| panic!("no {key} on {}: {:?}", span.name, span.attributes));
    let inner = shown
        .split_once("Value(")
        .map_or(shown.as_str(), |(_, rest)| rest);
    inner
        .split(')')
        .next()
        .unwrap_or(inner)
        .trim_matches('"')
        .to_owned()
}

/// Sets JRN-001's first segment Departed with the client's `traceparent` (200), then stops
/// `serving` (SIGTERM: its spans are exported as it exits).
async fn put_traced_then_stop(serving: Serving) {
    let put = http()
        .put(serving.url("/api/journeys/JRN-001/segments/SEG-001-1/status"))
        .header("traceparent", client_traceparent())
        .json(&serde_json::json!({"status": "Departed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");
}

/// A PUT with the client's `traceparent` is one trace: the request's server span (the child of
/// the client's span), the store's update, the relay's publish, and the projector's apply, each
/// the child of the one before; the projection's history row keeps the trace id. Over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_put_is_one_trace_from_the_request_to_the_projection_row() {
    let (Some(nats), Some(pg)) = (nats(), postgres()) else {
        return;
    };
    let (_redis, url, _) = private_redis().await;
    let mut collector = FakeCollectorServer::start().await.unwrap();
    let mut env = otel(&collector.endpoint(), "grpc");
    env.push(("FLYRTECH_REDIS_URL".into(), url.clone()));

    let serving = Serving::start_with(&["--strategy", "lua"], &pairs(&env));
    put_traced_then_stop(serving).await;

    for args in [
        vec!["relay", "--drain", "--bus", &nats.url()],
        vec![
            "project",
            "--drain",
            "--bus",
            &nats.url(),
            "--postgres",
            &pg.url(),
        ],
    ] {
        let done = flyrtech().args(&args).envs(pairs(&env)).output().unwrap();
        assert!(
            done.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }

    let spans = spans_until(&mut collector, "journey.project").await;
    let span = |name: &str| {
        spans
            .get(name)
            .unwrap_or_else(|| panic!("no {name} span in {:?}", spans.keys()))
    };
    let request = span("PUT /api/journeys/{id}/segments/{segmentId}/status");
    let update = span("journey.update");
    let publish = span("journey.publish");
    let project = span("journey.project");
    assert_eq!(request.kind, "SPAN_KIND_SERVER");
    assert_eq!(request.parent_span_id, CLIENT_SPAN);
    assert_eq!(attribute(request, "http.response.status_code"), "200");
    assert_eq!(update.parent_span_id, request.span_id);
    assert_eq!(attribute(update, "strategy"), "lua");
    assert_eq!(attribute(update, "changed"), "true");
    assert_eq!(publish.kind, "SPAN_KIND_PRODUCER");
    assert_eq!(publish.parent_span_id, update.span_id);
    assert_eq!(project.kind, "SPAN_KIND_CONSUMER");
    assert_eq!(project.parent_span_id, publish.span_id);

    let client = flyrtech_infrastructure::projection::connect(&pg.url())
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT trace_id FROM status_history WHERE journey_id = 'JRN-001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<String>>(0).as_deref(),
        Some(CLIENT_TRACE)
    );
}

/// Over OTLP/HTTP protobuf (the SDK's default protocol), to a receiver decoding the OTLP
/// messages itself: the request's span arrives in the client's trace, from a resource named
/// `flyrtech-serve`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_go_over_otlp_http_from_a_service_named_flyrtech_serve() {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    use prost::Message;

    let (sender, mut received) = tokio::sync::mpsc::unbounded_channel::<(String, String, String)>();
    let receiver = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let sender = sender.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).unwrap();
                for resource in request.resource_spans {
                    let service = resource
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|a| a.key == "service.name")
                        .and_then(|a| a.value.as_ref()?.value.as_ref())
                        .map(|v| match v {
                            Value::StringValue(s) => s.clone(),
                            other => format!("{other:?}"),
                        })
                        .unwrap_or_default();
                    for span in resource.scope_spans.into_iter().flat_map(|s| s.spans) {
                        let trace: String =
                            span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                        let _ = sender.send((service.clone(), span.name, trace));
                    }
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, receiver).await });

    let (_redis, url, _) = private_redis().await;
    let mut env = otel(&endpoint, "http/protobuf");
    env.push(("FLYRTECH_REDIS_URL".into(), url));
    let serving = Serving::start_with(&["--strategy", "hash"], &pairs(&env));
    let health = http()
        .get(serving.url("/health"))
        .header("traceparent", client_traceparent())
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let (status, log) = serving.terminate();
    assert!(status.success(), "{log}");

    let deadline = Instant::now() + Duration::from_secs(30);
    let (service, name) = loop {
        let next = tokio::time::timeout_at(deadline.into(), received.recv())
            .await
            .expect("no span of the client's trace within 30 s")
            .expect("the receiver is running");
        if next.2 == CLIENT_TRACE {
            break (next.0, next.1);
        }
    };
    assert_eq!(service, "flyrtech-serve");
    assert_eq!(name, "GET /health");
    server.abort();
}

/// With no `OTEL_*` variable set, traces are off: a client's `traceparent` changes nothing, and
/// the change's outbox entry carries none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_traces_off_nothing_is_carried() {
    let (_redis, url, redis) = private_redis().await;
    let serving = Serving::start_with(&["--strategy", "hash"], &[("FLYRTECH_REDIS_URL", &url)]);
    put_traced_then_stop(serving).await;

    let outbox = keys::journey_outbox(&JourneyId::parse("JRN-001").unwrap());
    let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
        .arg(&outbox)
        .arg("-")
        .arg("+")
        .query_async(&mut redis.shared())
        .await
        .unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    // `<version> <from> <journey> <target> <to> <at> <id>`: no eighth part, the traceparent.
    let change: Vec<&str> = entries[0].1["change"].split(' ').collect();
    assert_eq!(change[4], "Departed", "{entries:?}");
    assert_eq!(change.len(), 7, "{entries:?}");
    assert!(
        !entries[0].1.values().any(|v| v.contains(CLIENT_TRACE)),
        "{entries:?}"
    );
}
