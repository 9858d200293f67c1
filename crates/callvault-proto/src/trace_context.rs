//! W3C trace context (`traceparent`, `tracestate`) over gRPC metadata, so one call's trace
//! follows it from ingest through the blob shards and the metadata store.
//!
//! - Clients: [`crate::auth::Bearer`], the interceptor every internal and CLI client already
//!   goes through, also calls [`inject`], which writes the context of the current `tracing` span.
//! - Servers: [`server_span`] is given to `tonic::transport::Server::trace_fn`; it opens one span
//!   per request whose parent is the context the request carries.
//!
//! Both use the process's global text-map propagator. Until the binary installs one (its
//! telemetry set-up does, when tracing is on), the global propagator is a no-op: nothing is
//! written or read, and [`server_span`] opens no span.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector};
use tonic::metadata::{MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Whether servers open a span per request (set once by the binary's telemetry set-up).
static SERVER_SPANS: AtomicBool = AtomicBool::new(false);

/// Turns per-request server spans on (or off). The binary calls this when it installs an
/// OpenTelemetry tracer; without one, per-request spans would only cost time.
pub fn enable_server_spans(on: bool) {
    SERVER_SPANS.store(on, Ordering::Relaxed);
}

/// Longest `traceparent`/`tracestate` value read from a request; longer ones are ignored, so a
/// caller cannot make a server parse without bound (W3C caps `tracestate` at 32 members).
const MAX_CONTEXT_HEADER: usize = 1024;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(key), Ok(value)) = (
            MetadataKey::from_bytes(key.as_bytes()),
            MetadataValue::try_from(value.as_str()),
        ) {
            self.0.insert(key, value);
        }
    }
}

struct HeaderExtractor<'a>(&'a tonic::codegen::http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= MAX_CONTEXT_HEADER)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Writes the current span's trace context into outgoing request metadata (nothing when there
/// is no sampled span or no propagator).
pub fn inject(metadata: &mut MetadataMap) {
    let context = tracing::Span::current().context();
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.inject_context(&context, &mut MetadataInjector(metadata));
    });
}

/// The trace context an incoming request carries (empty when it carries none).
pub fn extract(headers: &tonic::codegen::http::HeaderMap) -> opentelemetry::Context {
    opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(headers))
    })
}

/// Services whose requests get no span: Raft's heartbeats and appends are per-cluster, not
/// per-call, and would flood the trace backend; health and reflection are probes.
const UNTRACED_SERVICES: &[&str] = &[
    "callvault.v1.Raft",
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The span of one incoming gRPC request, a child of the context the request carries; for
/// `tonic::transport::Server::trace_fn`. Named like OpenTelemetry's RPC conventions
/// (`callvault.v1.Ingest/RecordCall`, kind `server`).
pub fn server_span(request: &tonic::codegen::http::Request<()>) -> tracing::Span {
    if !SERVER_SPANS.load(Ordering::Relaxed) {
        return tracing::Span::none();
    }
    let path = request.uri().path();
    let (service, method) = path
        .trim_start_matches('/')
        .split_once('/')
        .unwrap_or((path, ""));
    if UNTRACED_SERVICES.contains(&service) {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "grpc.server",
        otel.name = %path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = %service,
        rpc.method = %method,
    );
    // A request with no (or a malformed) traceparent starts a new trace.
    let _ = span.set_parent(extract(request.headers()));
    span
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
    use tracing_subscriber::layer::SubscriberExt;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request(path: &str, traceparent: Option<&str>) -> tonic::codegen::http::Request<()> {
        let mut builder = tonic::codegen::http::Request::builder().uri(path);
        if let Some(value) = traceparent {
            builder = builder.header("traceparent", value);
        }
        builder.body(()).expect("request")
    }

    #[test]
    fn a_server_span_continues_the_callers_trace_and_clients_pass_it_on() {
        opentelemetry::global::set_text_map_propagator(
            opentelemetry_sdk::propagation::TraceContextPropagator::new(),
        );
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            enable_server_spans(true);
            let span = server_span(&request("/callvault.v1.MetaStore/Propose", Some(PARENT)));
            let context = span.context();
            let own = context.span().span_context().clone();
            assert_eq!(
                own.trace_id().to_string(),
                "4bf92f3577b34da6a3ce929d0e0e4736"
            );
            assert_ne!(own.span_id().to_string(), "00f067aa0ba902b7");

            // A client call made inside the span carries the span's own context onward.
            let mut metadata = MetadataMap::new();
            span.in_scope(|| inject(&mut metadata));
            let sent = metadata
                .get("traceparent")
                .and_then(|v| v.to_str().ok())
                .expect("traceparent sent");
            assert_eq!(sent, format!("00-{}-{}-01", own.trace_id(), own.span_id()));

            // Without a caller's context a request starts a trace of its own.
            let root = server_span(&request("/callvault.v1.Ingest/RecordCall", None));
            let root = root.context().span().span_context().clone();
            assert!(root.is_valid());
            assert_ne!(root.trace_id(), own.trace_id());

            // Raft's RPCs and probes are not traced; outside any span nothing is sent.
            assert!(
                server_span(&request("/callvault.v1.Raft/AppendEntries", Some(PARENT))).is_none()
            );
            assert!(server_span(&request("/grpc.health.v1.Health/Check", None)).is_none());
            let mut untouched = MetadataMap::new();
            inject(&mut untouched);
            assert!(untouched.get("traceparent").is_none());

            // An oversized traceparent is ignored rather than parsed.
            let long = format!("{PARENT}{}", "0".repeat(MAX_CONTEXT_HEADER));
            let fresh = server_span(&request("/callvault.v1.Ingest/RecordCall", Some(&long)));
            assert_ne!(
                fresh.context().span().span_context().trace_id(),
                own.trace_id()
            );
            enable_server_spans(false);
            assert!(server_span(&request("/callvault.v1.Ingest/RecordCall", None)).is_none());
        });
    }
}
