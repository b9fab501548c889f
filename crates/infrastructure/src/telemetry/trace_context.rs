//! W3C trace context across the service's hops: the HTTP request, the outbox entry, the bus
//! message and the projection row (docs/operations.md, "Traces").
//!
//! A change crosses three processes and two stores before it is projected: `serve` writes it and
//! its outbox entry, the relay publishes the entry, a projector applies it. Each hop is a span,
//! and what joins them into one trace is the `traceparent` value ([W3C Trace Context]) carried
//! with the change: in the outbox entry's `traceparent` field (as Debezium's outbox carries
//! `tracingspancontext`), then in the NATS message's `traceparent` header. Here are the three
//! operations every hop needs, on `tracing` spans that the `tracing-opentelemetry` layer turns
//! into OpenTelemetry spans:
//!
//! - [`current`]: the current span's context as a `traceparent` value, to carry onwards;
//! - [`adopt`]: make a span the child of a carried `traceparent`;
//! - [`trace_id`]: the trace id a carried value names, for the projection row.
//!
//! # What it costs when tracing is off
//! Without an OpenTelemetry layer (no `OTEL_*` endpoint set) no span is enabled, the current
//! span has no OpenTelemetry context and [`current`] answers `None` after one thread-local
//! lookup: nothing is formatted, nothing is added to the outbox entry or the message.
//!
//! Values are parsed and formatted by the SDK's `TraceContextPropagator`, never by hand: a
//! malformed `traceparent` from a client is ignored (a new trace starts), as the W3C
//! specification asks.
//!
//! [W3C Trace Context]: https://www.w3.org/TR/trace-context/

use std::collections::HashMap;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header, outbox field and message header that carry the context.
pub const TRACEPARENT: &str = "traceparent";

/// The target of every span the service makes. The log lines never show them (the log filter
/// turns this target off), and only the OpenTelemetry layer, when installed, turns it on: both are
/// decided once per call site, so with traces off a span costs one cached check.
pub const SPANS: &str = "flyrtech::trace";

/// Whether spans are recorded: an OpenTelemetry layer is installed. One cached check of a call
/// site's interest.
pub fn on() -> bool {
    tracing::enabled!(target: SPANS, tracing::Level::INFO)
}

/// The current span's context as a `traceparent` value; `None` when there is no sampled or
/// remote context to carry (tracing off, or no span).
pub fn current() -> Option<String> {
    if !on() {
        return None;
    }
    let span = tracing::Span::current();
    if span.is_disabled() {
        return None;
    }
    of_context(&span.context())
}

/// `span`'s context as a `traceparent` value (for a span that is not the current one, such as
/// a producer span whose context goes into the message it sends).
pub fn of_span(span: &tracing::Span) -> Option<String> {
    if span.is_disabled() {
        return None;
    }
    of_context(&span.context())
}

fn of_context(context: &opentelemetry::Context) -> Option<String> {
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::with_capacity(1);
    TraceContextPropagator::new().inject_context(context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the context `traceparent` carries. A disabled span, an absent value
/// or a malformed one leaves the span as it was (a root, or the child of the current span).
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    let Some(value) = traceparent else { return };
    if span.is_disabled() {
        return;
    }
    if let Some(context) = extract(value) {
        // Fails only for a span already started with another parent: then it keeps that one.
        let _ = span.set_parent(context);
    }
}

/// The trace id (32 lowercase hex digits) a `traceparent` value names; `None` when it is
/// malformed.
pub fn trace_id(traceparent: &str) -> Option<String> {
    extract(traceparent).map(|context| context.span().span_context().trace_id().to_string())
}

fn extract(traceparent: &str) -> Option<opentelemetry::Context> {
    let context = TraceContextPropagator::new().extract(&One(traceparent));
    context.span().span_context().is_valid().then_some(context)
}

/// A carrier holding one `traceparent` value.
struct One<'a>(&'a str);

impl Extractor for One<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        (key == TRACEPARENT).then_some(self.0)
    }

    fn keys(&self) -> Vec<&str> {
        vec![TRACEPARENT]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARRIED: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_carried_value_names_its_trace() {
        assert_eq!(
            trace_id(CARRIED).as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
    }

    #[test]
    fn malformed_values_are_ignored() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01x",
        ] {
            assert_eq!(trace_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn without_a_tracing_layer_nothing_is_carried() {
        let span = tracing::info_span!(target: SPANS, "request");
        let _entered = span.enter();
        adopt(&span, Some(CARRIED));
        assert_eq!(current(), None);
        assert_eq!(of_span(&span), None);
    }
}
