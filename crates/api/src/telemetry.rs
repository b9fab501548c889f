//! Logs and traces: what every `flyrtech` process installs before it runs its command.
//!
//! - **Logs** go to stderr through a thread of their own (`tracing-appender`), filtered by
//!   `RUST_LOG` (default `info`). They never show spans: the log lines are the same whether
//!   traces are on or off.
//! - **Traces** are OpenTelemetry's, exported over OTLP, and configured only by the standard
//!   variables ([`TraceSettings::from_env`]). They are **off** unless an endpoint is set
//!   (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//!   `OTEL_TRACES_EXPORTER=otlp` for the default `localhost` one), and `OTEL_SDK_DISABLED=true` or
//!   `OTEL_TRACES_EXPORTER=none` turns them off whatever else is set. Every span of the service has
//!   the target `flyrtech::trace`, which the log filter turns off: off, the subscriber is the plain
//!   log subscriber with one global filter, every span is a call site disabled once and for all,
//!   and nothing is added to the outbox entries or the messages (docs/lab.md measures it).
//!
//! The OpenTelemetry SDK reads the rest itself: `OTEL_EXPORTER_OTLP_PROTOCOL` (`http/protobuf`,
//! the default, or `grpc`), `OTEL_EXPORTER_OTLP_HEADERS` and `_TIMEOUT`, `OTEL_TRACES_SAMPLER`
//! and `_ARG` (default `parentbased_always_on`: a client's sampled `traceparent` is honoured),
//! `OTEL_BSP_SCHEDULE_DELAY` and the other batch settings, `OTEL_RESOURCE_ATTRIBUTES`. The
//! service name is `OTEL_SERVICE_NAME` when set, else the command's own
//! (`flyrtech-serve`, `flyrtech-relay`, `flyrtech-project`, …).
//!
//! Spans are batched and exported by the SDK's own thread; [`Telemetry::shutdown`] exports what
//! is left when the command ends (a SIGTERM included, which ends `serve`, `relay` and `project`
//! normally).

use std::time::Duration;

use flyrtech_infrastructure::telemetry::trace_context::SPANS;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, Targets};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// How long [`Telemetry::shutdown`] waits for the last spans to be exported.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// Why telemetry could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built from the `OTEL_*` settings.
    #[error("cannot export traces over OTLP: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
    /// Another subscriber was installed first.
    #[error("cannot install the log and trace subscriber: {0}")]
    Subscriber(#[from] tracing_subscriber::util::TryInitError),
}

/// Whether to export traces, read from the environment's `OTEL_*` variables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceSettings {
    /// Export spans over OTLP.
    pub export: bool,
    /// `OTEL_SERVICE_NAME`, when set.
    pub service_name: Option<String>,
}

impl TraceSettings {
    /// The settings `variable` (a lookup such as `std::env::var`) gives.
    pub fn from_lookup(variable: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| variable(name).filter(|v| !v.trim().is_empty());
        let exporter = set("OTEL_TRACES_EXPORTER").map(|v| v.trim().to_ascii_lowercase());
        let disabled = set("OTEL_SDK_DISABLED").is_some_and(|v| v.trim() == "true")
            || exporter.as_deref() == Some("none");
        let asked = set("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
            || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_some()
            || exporter.as_deref() == Some("otlp");
        Self {
            export: asked && !disabled,
            service_name: set("OTEL_SERVICE_NAME"),
        }
    }

    /// The settings of this process' environment.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }
}

/// The installed subscriber's parts that must outlive the command: the log writer's thread and
/// the tracer provider. Dropped (or [`Telemetry::shutdown`]) when the command is done.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    _log: tracing_appender::non_blocking::WorkerGuard,
}

impl Telemetry {
    /// Installs logging, and tracing when `settings` say so, for the process of `command`
    /// (its service name is `flyrtech-<command>` unless `OTEL_SERVICE_NAME` names one). With
    /// traces on over gRPC, call it inside the Tokio runtime (its client lives there).
    ///
    /// # Errors
    /// [`TelemetryError`].
    pub fn install(command: &str, settings: &TraceSettings) -> Result<Self, TelemetryError> {
        // Log lines are written by a thread of their own, batched into one write when several
        // are waiting: under load, one `write(2)` per line on the request path cost `serve`
        // about 7 % of its CPU (perf: docs/lab.md, "The HTTP path and its ceiling"). Not lossy:
        // a full queue slows logging callers down rather than dropping lines.
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("flyrtech-log")
            .finish(std::io::BufWriter::with_capacity(
                64 * 1024,
                std::io::stderr(),
            ));
        // The spans' target is off for the log lines, whatever RUST_LOG says: decided once per
        // call site (a filter that looked at each span would cost every request).
        let mut log_filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
        if let Ok(spans_off) = format!("{SPANS}=off").parse() {
            log_filter = log_filter.add_directive(spans_off);
        }
        let provider = if settings.export {
            Some(provider(command, settings)?)
        } else {
            None
        };
        match &provider {
            // Off: one global filter, as a plain log subscriber has.
            None => Registry::default()
                .with(log_filter)
                .with(log_lines(writer))
                .try_init()?,
            // On: the log lines keep their filter; the OpenTelemetry layer takes the spans, and
            // the service's warnings and errors as events of the span they happen in.
            Some(provider) => Registry::default()
                .with(log_lines(writer).with_filter(log_filter))
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("flyrtech"))
                        .with_filter(
                            Targets::new()
                                .with_target(SPANS, Level::INFO)
                                .with_target("flyrtech_api", Level::WARN)
                                .with_target("flyrtech_infrastructure", Level::WARN),
                        ),
                )
                .try_init()?,
        }
        Ok(Self {
            provider,
            _log: guard,
        })
    }

    /// Exports the spans not yet exported (waiting at most five seconds), then stops the
    /// exporter. Call it before the Tokio runtime is dropped (a gRPC exporter's client runs
    /// there).
    pub fn shutdown(mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!(error = %e, "some spans were not exported");
        }
    }
}

/// The log lines' layer, writing to `writer`, in colour on a terminal.
fn log_lines<S>(writer: tracing_appender::non_blocking::NonBlocking) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
}

/// The tracer provider: the OTLP exporter the `OTEL_*` variables describe, batched.
fn provider(command: &str, settings: &TraceSettings) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder().build()?;
    let resource = match &settings.service_name {
        // The SDK's own detector reads OTEL_SERVICE_NAME.
        Some(_) => Resource::builder().build(),
        None => Resource::builder()
            .with_service_name(format!("flyrtech-{command}"))
            .build(),
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> TraceSettings {
        TraceSettings::from_lookup(|name| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn traces_are_off_unless_an_endpoint_is_set() {
        assert!(!settings(&[]).export);
        assert!(!settings(&[("OTEL_SERVICE_NAME", "x")]).export);
        assert!(!settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).export);
        assert!(settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318")]).export);
        assert!(settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c/v1/traces")]).export);
        assert!(settings(&[("OTEL_TRACES_EXPORTER", "otlp")]).export);
    }

    #[test]
    fn the_standard_switches_turn_them_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318");
        assert!(!settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).export);
        assert!(!settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).export);
        assert!(settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")]).export);
    }

    #[test]
    fn the_service_name_is_read() {
        assert_eq!(
            settings(&[("OTEL_SERVICE_NAME", "edge")])
                .service_name
                .as_deref(),
            Some("edge")
        );
        assert_eq!(settings(&[]).service_name, None);
    }
}
