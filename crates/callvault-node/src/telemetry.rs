//! A serving node's telemetry: logs on stderr (text, or JSON lines carrying trace ids), and
//! OpenTelemetry traces and metrics exported over OTLP/gRPC.
//!
//! Configured by environment variables only, the standard `OTEL_*` ones where they exist:
//!
//! - Export is off unless an OTLP endpoint is set: `OTEL_EXPORTER_OTLP_ENDPOINT` for both
//!   signals, or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` / `OTEL_EXPORTER_OTLP_METRICS_ENDPOINT` for
//!   one. `OTEL_SDK_DISABLED=true` turns everything off; `OTEL_TRACES_EXPORTER=none` or
//!   `OTEL_METRICS_EXPORTER=none` turns one signal off. Only gRPC is spoken: an
//!   `OTEL_EXPORTER_OTLP_PROTOCOL` other than `grpc` is refused at start-up rather than ignored.
//! - The OpenTelemetry SDK reads the rest itself: `OTEL_EXPORTER_OTLP_{,TRACES_,METRICS_}`
//!   `TIMEOUT`/`HEADERS`, `OTEL_SERVICE_NAME` (default `callvault`),
//!   `OTEL_RESOURCE_ATTRIBUTES`, `OTEL_TRACES_SAMPLER`(`_ARG`), `OTEL_BSP_*` (batching of
//!   spans) and `OTEL_METRIC_EXPORT_INTERVAL`.
//! - `CALLVAULT_LOG` is the log filter (`info,openraft=warn` by default); `CALLVAULT_LOG_FORMAT`
//!   is `text` (default) or `json`: one JSON object per line with `timestamp`, `level`,
//!   `target`, `message`, `fields`, `span`, and `trace_id`/`span_id` when the line was logged
//!   inside a traced request. JSON logs turn tracing on even without export, so log lines of one
//!   call carry the same trace id on every node it touched.
//!
//! Trace context crosses nodes as W3C `traceparent` gRPC metadata (`callvault_proto::trace_context`).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use anyhow::{Context as _, bail};
use opentelemetry::trace::{TraceContextExt as _, TracerProvider as _};
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (tracing-subscriber's default format).
    Text,
    /// One JSON object per line, with trace and span ids.
    Json,
}

/// What the environment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Export spans over OTLP.
    pub export_traces: bool,
    /// Export metrics over OTLP.
    pub export_metrics: bool,
    /// The log format.
    pub log_format: LogFormat,
}

impl Settings {
    /// Reads the settings through `var` (the process environment in [`init`]).
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let set = |name: &str| var(name).is_some_and(|v| !v.trim().is_empty());
        let is = |name: &str, value: &str| {
            var(name).is_some_and(|v| v.trim().eq_ignore_ascii_case(value))
        };
        let log_format = match var("CALLVAULT_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => bail!("CALLVAULT_LOG_FORMAT={other:?}: expected text or json"),
        };
        if is("OTEL_SDK_DISABLED", "true") {
            return Ok(Settings {
                export_traces: false,
                export_metrics: false,
                log_format,
            });
        }
        let generic = set("OTEL_EXPORTER_OTLP_ENDPOINT");
        let export_traces = (generic || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
            && !is("OTEL_TRACES_EXPORTER", "none");
        let export_metrics = (generic || set("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"))
            && !is("OTEL_METRICS_EXPORTER", "none");
        for (name, on) in [
            (
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                export_traces || export_metrics,
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", export_traces),
            ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", export_metrics),
        ] {
            if let Some(protocol) = var(name).filter(|p| on && !p.trim().is_empty())
                && protocol.trim() != "grpc"
            {
                bail!("{name}={protocol:?}: callvault exports OTLP over gRPC only (set grpc)");
            }
        }
        Ok(Settings {
            export_traces,
            export_metrics,
            log_format,
        })
    }
}

/// The installed providers; [`Telemetry::shutdown`] flushes them.
#[must_use = "call shutdown() on exit so the last spans and metrics are exported"]
pub struct Telemetry {
    tracer: Option<SdkTracerProvider>,
    meter: Option<SdkMeterProvider>,
}

/// How long a stopping node waits for its last spans and metrics to be exported: an unreachable
/// collector must not hold a node past its orchestrator's grace period.
pub const SHUTDOWN_FLUSH_LIMIT: Duration = Duration::from_secs(5);

impl Telemetry {
    /// Exports what is buffered and stops the exporters, giving up after `limit`; returns
    /// whether it finished. Blocking: call it off the runtime's worker threads (the exporters
    /// reach the collector through the runtime, which must keep running meanwhile).
    pub fn shutdown(self, limit: Duration) -> bool {
        if self.tracer.is_none() && self.meter.is_none() {
            return true;
        }
        let (done, finished) = std::sync::mpsc::channel();
        // On a thread of its own, so a hung export is abandoned at exit rather than waited for.
        std::thread::spawn(move || {
            if let Some(meter) = self.meter
                && let Err(e) = meter.shutdown()
            {
                tracing::warn!("telemetry: flushing metrics on shutdown: {e}");
            }
            if let Some(tracer) = self.tracer
                && let Err(e) = tracer.shutdown()
            {
                tracing::warn!("telemetry: flushing spans on shutdown: {e}");
            }
            let _ = done.send(());
        });
        let flushed = finished.recv_timeout(limit).is_ok();
        if !flushed {
            tracing::warn!(
                "telemetry: gave up exporting the last spans and metrics after {}s",
                limit.as_secs()
            );
        }
        flushed
    }
}

/// Installs logging and, when configured, OpenTelemetry export for node `node_id`. Must run
/// inside the tokio runtime (the gRPC exporters open their channels on it).
pub fn init(node_id: u64) -> anyhow::Result<Telemetry> {
    let settings = Settings::from_env(|name| std::env::var(name).ok())?;
    let mut resource = opentelemetry_sdk::Resource::builder().with_attributes([
        opentelemetry::KeyValue::new("service.instance.id", format!("node-{node_id}")),
        opentelemetry::KeyValue::new("callvault.node_id", node_id as i64),
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    ]);
    if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
        resource = resource.with_service_name("callvault");
    }
    let resource = resource.build();

    let tracer = if settings.export_traces || settings.log_format == LogFormat::Json {
        let mut builder = SdkTracerProvider::builder().with_resource(resource.clone());
        if settings.export_traces {
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .build()
                .context("OTLP span exporter")?;
            builder = builder.with_batch_exporter(exporter);
        }
        Some(builder.build())
    } else {
        None
    };
    let meter = if settings.export_metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .context("OTLP metric exporter")?;
        Some(
            SdkMeterProvider::builder()
                .with_resource(resource)
                .with_periodic_exporter(exporter)
                .build(),
        )
    } else {
        None
    };

    // Before any role starts: instruments are created from the global provider on first use.
    if let Some(meter) = &meter {
        opentelemetry::global::set_meter_provider(meter.clone());
    }
    if let Some(tracer) = &tracer {
        opentelemetry::global::set_tracer_provider(tracer.clone());
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        callvault_proto::trace_context::enable_server_spans(true);
    }

    let filter = EnvFilter::try_from_env("CALLVAULT_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,openraft=warn"));
    let logs = match settings.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .event_format(JsonLines)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed(),
    };
    // Spans of callvault's own crates only, whatever the log filter says: openraft's internal
    // spans would swamp a trace, and a quiet log should not silence traces.
    // Per-span extras off (busy/idle timing, code location, thread, context activation on every
    // poll): ingest opens several spans per audio chunk, and callvault reads span contexts
    // explicitly (`OpenTelemetrySpanExt::context`), never `opentelemetry::Context::current()`.
    let spans = tracer.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("callvault"))
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_context_activation(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("callvault", tracing::Level::INFO),
            )
    });
    tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .context("a global tracing subscriber was already installed")?;
    if settings.export_traces || settings.export_metrics {
        tracing::info!(
            traces = settings.export_traces,
            metrics = settings.export_metrics,
            "exporting telemetry over OTLP/gRPC"
        );
    }
    Ok(Telemetry { tracer, meter })
}

/// JSON lines: `timestamp`, `level`, `target`, `message`, `fields`, `span`, `trace_id`,
/// `span_id`.
struct JsonLines;

/// Collects an event's fields as JSON values.
struct JsonFields(BTreeMap<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields {
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }
}

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut fields = JsonFields(BTreeMap::new());
        event.record(&mut fields);
        let meta = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert("timestamp".into(), timestamp.into());
        line.insert("level".into(), meta.level().as_str().into());
        line.insert("target".into(), meta.target().into());
        if let Some(message) = fields.0.remove("message") {
            line.insert("message".into(), message);
        }
        if !fields.0.is_empty() {
            line.insert(
                "fields".into(),
                serde_json::Value::Object(fields.0.into_iter().collect()),
            );
        }
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            // The event's span is the current one; its OpenTelemetry context has the ids.
            let context = tracing::Span::current().context();
            let span_context = context.span().span_context().clone();
            if span_context.is_valid() {
                line.insert(
                    "trace_id".into(),
                    span_context.trace_id().to_string().into(),
                );
                line.insert("span_id".into(), span_context.span_id().to_string().into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        Settings::from_env(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_set() {
        let none = settings(&[]).unwrap();
        assert!(!none.export_traces && !none.export_metrics);
        assert_eq!(none.log_format, LogFormat::Text);
        let both = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")]).unwrap();
        assert!(both.export_traces && both.export_metrics);
        let traces = settings(&[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4317")]).unwrap();
        assert!(traces.export_traces && !traces.export_metrics);
        let blank = settings(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]).unwrap();
        assert!(!blank.export_traces && !blank.export_metrics);
    }

    #[test]
    fn the_sdk_switches_and_per_signal_exporters_turn_export_off() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        let disabled = settings(&[endpoint, ("OTEL_SDK_DISABLED", "true")]).unwrap();
        assert!(!disabled.export_traces && !disabled.export_metrics);
        let no_metrics = settings(&[endpoint, ("OTEL_METRICS_EXPORTER", "none")]).unwrap();
        assert!(no_metrics.export_traces && !no_metrics.export_metrics);
        let no_traces = settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap();
        assert!(!no_traces.export_traces && no_traces.export_metrics);
    }

    #[test]
    fn only_grpc_is_accepted_and_log_formats_are_checked() {
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317");
        assert!(settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).is_ok());
        let http = settings(&[endpoint, ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")]);
        assert!(http.unwrap_err().to_string().contains("gRPC only"));
        // Without export the protocol does not matter.
        assert!(settings(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]).is_ok());
        let json = settings(&[("CALLVAULT_LOG_FORMAT", "json")]).unwrap();
        assert_eq!(json.log_format, LogFormat::Json);
        assert!(settings(&[("CALLVAULT_LOG_FORMAT", "yaml")]).is_err());
    }
}
