//! OpenTelemetry end to end: a dev cluster of real processes exports to an OTLP collector that
//! runs in this test (a tonic server of the OTLP trace and metrics collector services), and the
//! test checks what arrives: the spans of one call, linked parent to child across processes, and
//! the decision counters.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_proto::v1 as pb;
use callvault_tests::{DevCluster, TestCall, eventually, flip_on_disk};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use tokio_stream::wrappers::TcpListenerStream;

const ATTORNEY: &str = "(512) 555-0142";
const CHUNKS: u32 = 3;
/// The blocks ingest cuts a call's CHUNKS × 16 kB into (1 MiB blocks): one.
const BLOCKS: u32 = 1;

/// A span as received, with the node that sent it.
#[derive(Debug, Clone)]
struct Received {
    node: String,
    span: Span,
}

/// Everything the collector received.
#[derive(Debug, Default)]
struct Inbox {
    spans: Vec<Received>,
    /// (node, metric), in arrival order.
    metrics: Vec<(String, Metric)>,
}

/// The in-process OTLP collector: it records every export.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Inbox>>);

fn text(value: &Option<AnyValue>) -> Option<String> {
    match value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        _ => None,
    }
}

fn attribute(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| text(&kv.value))
}

/// Attributes as sorted `(key, value)` text pairs.
fn sorted(attributes: &[KeyValue]) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = attributes
        .iter()
        .map(|kv| (kv.key.clone(), text(&kv.value).unwrap_or_default()))
        .collect();
    pairs.sort();
    pairs
}

fn node_of(resource: &Option<Resource>) -> String {
    resource
        .as_ref()
        .and_then(|r| attribute(&r.attributes, "service.instance.id"))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut inbox = self.0.lock().expect("inbox");
        for resource_spans in request.into_inner().resource_spans {
            let node = node_of(&resource_spans.resource);
            for scope in resource_spans.scope_spans {
                inbox
                    .spans
                    .extend(scope.spans.into_iter().map(|span| Received {
                        node: node.clone(),
                        span,
                    }));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let mut inbox = self.0.lock().expect("inbox");
        for resource_metrics in request.into_inner().resource_metrics {
            let node = node_of(&resource_metrics.resource);
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    inbox.metrics.push((node.clone(), metric));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves the collector on a free loopback port until `stop` fires; returns its endpoint.
    async fn serve(&self, stop: tokio::sync::oneshot::Receiver<()>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("collector port");
        let addr = listener.local_addr().expect("collector address");
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self.clone()))
            .add_service(MetricsServiceServer::new(self.clone()));
        tokio::spawn(async move {
            router
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = stop.await;
                })
                .await
                .expect("collector serves");
        });
        format!("http://{addr}")
    }

    /// The spans of trace `trace_id`.
    fn trace(&self, trace_id: &[u8]) -> Vec<Received> {
        let inbox = self.0.lock().expect("inbox");
        inbox
            .spans
            .iter()
            .filter(|r| r.span.trace_id == trace_id)
            .cloned()
            .collect()
    }

    /// The latest cumulative value of counter `name` per attribute set, summed over nodes.
    fn counter(&self, name: &str) -> BTreeMap<Vec<(String, String)>, i64> {
        let inbox = self.0.lock().expect("inbox");
        let mut latest: HashMap<(String, Vec<(String, String)>), i64> = HashMap::new();
        for (node, metric) in inbox.metrics.iter().filter(|(_, m)| m.name == name) {
            let Some(metric::Data::Sum(sum)) = &metric.data else {
                panic!("{name} is not a sum: {metric:?}");
            };
            assert!(sum.is_monotonic, "{name} is a counter");
            for point in &sum.data_points {
                let attributes = sorted(&point.attributes);
                let value = match point.value {
                    Some(number_data_point::Value::AsInt(v)) => v,
                    Some(number_data_point::Value::AsDouble(v)) => v as i64,
                    None => 0,
                };
                // Cumulative temporality: a later export replaces an earlier one.
                latest.insert((node.clone(), attributes), value);
            }
        }
        let mut totals = BTreeMap::new();
        for ((_, attributes), value) in latest {
            *totals.entry(attributes).or_insert(0) += value;
        }
        totals
    }

    /// The latest cumulative count of histogram `name`, summed over nodes and attribute sets.
    fn histogram_count(&self, name: &str) -> u64 {
        let inbox = self.0.lock().expect("inbox");
        let mut latest: HashMap<(String, Vec<(String, String)>), u64> = HashMap::new();
        for (node, metric) in inbox.metrics.iter().filter(|(_, m)| m.name == name) {
            let Some(metric::Data::Histogram(histogram)) = &metric.data else {
                panic!("{name} is not a histogram: {metric:?}");
            };
            for point in &histogram.data_points {
                let attributes = sorted(&point.attributes);
                latest.insert((node.clone(), attributes), point.count);
            }
        }
        latest.values().sum()
    }

    /// The nodes that exported metric `name`.
    fn nodes_exporting(&self, name: &str) -> Vec<String> {
        let inbox = self.0.lock().expect("inbox");
        let mut nodes: Vec<String> = inbox
            .metrics
            .iter()
            .filter(|(_, m)| m.name == name)
            .map(|(n, _)| n.clone())
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }
}

/// A trace id and a parent span id the test makes up, as a platform's own tracing would.
struct TestParent {
    trace_id: [u8; 16],
    span_id: [u8; 8],
}

impl TestParent {
    fn new(seed: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos();
        let hash = blake3::hash(format!("{seed}/{nanos}").as_bytes());
        let bytes = hash.as_bytes();
        TestParent {
            trace_id: bytes[..16].try_into().expect("16 bytes"),
            span_id: bytes[16..24].try_into().expect("8 bytes"),
        }
    }

    fn traceparent(&self) -> String {
        format!("00-{}-{}-01", hex(&self.trace_id), hex(&self.span_id))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Streams `call` to node `node`'s Ingest with `parent` as its W3C trace context.
async fn send_traced(
    cluster: &DevCluster,
    node: u64,
    call: &TestCall,
    parent: &TestParent,
) -> pb::RecordCallResponse {
    let mut request = tonic::Request::new(tokio_stream::iter(call.messages()));
    request.metadata_mut().insert(
        "traceparent",
        parent.traceparent().parse().expect("ascii traceparent"),
    );
    cluster
        .ingest(node, cluster.token("platform"))
        .record_call(request)
        .await
        .expect("call answered")
        .into_inner()
}

/// A trace's spans by span id, with helpers to walk parent links.
struct Trace<'a> {
    spans: &'a [Received],
    by_id: HashMap<&'a [u8], &'a Received>,
}

impl<'a> Trace<'a> {
    fn new(spans: &'a [Received]) -> Self {
        let by_id = spans
            .iter()
            .map(|r| (r.span.span_id.as_slice(), r))
            .collect();
        Trace { spans, by_id }
    }

    fn named(&self, name: &str) -> Vec<&'a Received> {
        self.spans.iter().filter(|r| r.span.name == name).collect()
    }

    fn parent(&self, span: &Received) -> Option<&'a Received> {
        self.by_id.get(span.span.parent_span_id.as_slice()).copied()
    }

    /// Names from `span` up to the root of what was received (bounded by the span count).
    fn ancestry(&self, span: &'a Received) -> Vec<&'a str> {
        let mut names = vec![span.span.name.as_str()];
        let mut at = span;
        for _ in 0..self.spans.len() {
            match self.parent(at) {
                Some(parent) => {
                    names.push(parent.span.name.as_str());
                    at = parent;
                }
                None => break,
            }
        }
        names
    }

    fn describe(&self) -> String {
        self.spans
            .iter()
            .map(|r| {
                format!(
                    "{} [{}] <- {}",
                    r.span.name,
                    r.node,
                    hex(&r.span.parent_span_id)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

const RECORD_CALL: &str = "callvault.v1.Ingest/RecordCall";
const PUT_CHUNK: &str = "callvault.v1.BlobShard/PutChunk";
const PROPOSE: &str = "callvault.v1.MetaStore/Propose";

/// Whether a recorded call's trace is complete: the ingest span, its apply, and at least W
/// replica writes of each block.
fn recorded_trace_complete(spans: &[Received]) -> bool {
    let trace = Trace::new(spans);
    !trace.named(RECORD_CALL).is_empty()
        && !trace.named("raft.apply").is_empty()
        && trace.named(PUT_CHUNK).len() >= 2 * BLOCKS as usize
}

#[tokio::test(flavor = "multi_thread")]
async fn one_calls_spans_and_the_decision_counters_reach_an_otlp_collector() {
    let collector = Collector::default();
    let (stop_collector, stopped) = tokio::sync::oneshot::channel();
    let endpoint = collector.serve(stopped).await;
    let (mut cluster, _slot) = DevCluster::start_with_env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
        ("OTEL_METRIC_EXPORT_INTERVAL", "500"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
        ("CALLVAULT_LOG_FORMAT", "json"),
        ("CALLVAULT_LOG", "info,openraft=warn,callvault=debug"),
    ])
    .await;
    // Node 1 registers the attorney; calls go in through node 2, so the trace crosses processes.
    cluster.register_attorney("US-TX", ATTORNEY).await;

    let calls = [
        ("tx-otel-1", "(512) 555-7788", pb::Decision::Recorded),
        ("tx-otel-2", "(512) 555-7789", pb::Decision::Recorded),
        ("tx-otel-3", ATTORNEY, pb::Decision::NotRecordedPrivileged),
    ];
    let mut parents = Vec::new();
    for (seed, (call_id, number, expected)) in calls.into_iter().enumerate() {
        let parent = TestParent::new(call_id);
        let call = TestCall::new(call_id, "US-TX", number, CHUNKS, seed as u8 + 1);
        let answer = send_traced(&cluster, 2, &call, &parent).await;
        assert_eq!(
            answer.decision, expected as i32,
            "{call_id}: {}",
            answer.reason
        );
        parents.push(parent);
    }
    let (recorded, privileged) = (&parents[0], &parents[2]);

    check_recorded_trace(&collector, recorded).await;
    check_privileged_trace(&collector, privileged).await;
    check_counters(&collector).await;
    check_json_log(&cluster, recorded);
    check_scrub_findings(&collector, &mut cluster, "tx-otel-1").await;

    drop(cluster);
    let _ = stop_collector.send(());
}

/// The recorded call's spans: everything under the platform's parent, linked across nodes.
async fn check_recorded_trace(collector: &Collector, recorded: &TestParent) {
    let spans = eventually(
        "the recorded call's spans at the collector",
        Duration::from_secs(30),
        || async {
            let spans = collector.trace(&recorded.trace_id);
            recorded_trace_complete(&spans).then_some(spans)
        },
    )
    .await;
    let trace = Trace::new(&spans);
    let record_call = trace.named(RECORD_CALL);
    assert_eq!(
        record_call.len(),
        1,
        "one ingest span:\n{}",
        trace.describe()
    );
    let record_call = record_call[0];
    assert_eq!(
        record_call.span.parent_span_id, recorded.span_id,
        "the ingest span is a child of the platform's traceparent"
    );
    assert_eq!(record_call.span.kind, SpanKind::Server as i32);
    assert_eq!(record_call.node, "node-2");
    assert_eq!(
        attribute(&record_call.span.attributes, "callvault.ingest.outcome").as_deref(),
        Some("recorded")
    );

    // Chunk writes: RecordCall → blob.put → blob.shard.put (client) → PutChunk (on a shard).
    for put_chunk in trace.named(PUT_CHUNK) {
        assert_eq!(put_chunk.span.kind, SpanKind::Server as i32);
        assert_eq!(
            trace.ancestry(put_chunk),
            [PUT_CHUNK, "blob.shard.put", "blob.put", RECORD_CALL],
            "chunk write links:\n{}",
            trace.describe()
        );
    }
    let mut shard_nodes: Vec<&str> = trace
        .named(PUT_CHUNK)
        .iter()
        .map(|r| r.node.as_str())
        .collect();
    shard_nodes.sort();
    shard_nodes.dedup();
    assert!(
        shard_nodes.len() >= 2,
        "replica writes reached the shards of several nodes: {shard_nodes:?}"
    );
    assert_eq!(trace.named("blob.put").len(), BLOCKS as usize);

    // The commit: RecordCall → meta.client.propose → Propose (a meta node; a follower forwards
    // to the leader, adding a hop) → meta.propose → raft.apply.
    let applies = trace.named("raft.apply");
    assert_eq!(applies.len(), 1, "one apply:\n{}", trace.describe());
    let ancestry = trace.ancestry(applies[0]);
    assert_eq!(ancestry[..3], ["raft.apply", "meta.propose", PROPOSE]);
    assert_eq!(ancestry.last(), Some(&RECORD_CALL), "{ancestry:?}");
    assert_eq!(ancestry[ancestry.len() - 2], "meta.client.propose");
    assert!(
        ancestry[2..ancestry.len() - 2]
            .iter()
            .all(|n| *n == PROPOSE),
        "only forwarding hops between the client and the leader: {ancestry:?}"
    );
    let apply = applies[0];
    let propose = trace.parent(apply).expect("meta.propose");
    assert_eq!(
        apply.node, propose.node,
        "the apply is recorded by the leader that proposed"
    );
    assert!(
        apply.span.start_time_unix_nano >= propose.span.start_time_unix_nano
            && apply.span.end_time_unix_nano <= propose.span.end_time_unix_nano,
        "the apply happens within its proposal"
    );
    assert_eq!(
        attribute(&apply.span.attributes, "raft.index"),
        attribute(&propose.span.attributes, "raft.index"),
    );
}

/// The privileged call: decided and committed, and not one chunk write in its trace.
async fn check_privileged_trace(collector: &Collector, privileged: &TestParent) {
    let spans = eventually(
        "the privileged call's spans at the collector",
        Duration::from_secs(30),
        || async {
            let spans = collector.trace(&privileged.trace_id);
            let trace = Trace::new(&spans);
            (!trace.named(RECORD_CALL).is_empty() && !trace.named("raft.apply").is_empty())
                .then_some(spans)
        },
    )
    .await;
    let trace = Trace::new(&spans);
    assert!(
        trace.named("blob.put").is_empty() && trace.named(PUT_CHUNK).is_empty(),
        "a privileged call wrote chunks:\n{}",
        trace.describe()
    );
    let record_call = trace.named(RECORD_CALL)[0];
    assert_eq!(
        attribute(&record_call.span.attributes, "callvault.ingest.outcome").as_deref(),
        Some("privileged")
    );
    assert_eq!(
        trace.ancestry(trace.named("raft.apply")[0]).last(),
        Some(&RECORD_CALL)
    );
}

fn attributes(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decision counters (two recorded, one privileged, all in US-TX, none rejected), and the
/// other counters of the same calls.
async fn check_counters(collector: &Collector) {
    let key = |decision: &str| attributes(&[("decision", decision), ("jurisdiction", "US-TX")]);
    let decisions = eventually(
        "decision counters at the collector",
        Duration::from_secs(30),
        || async {
            let decisions = collector.counter("callvault.ingest.decisions");
            let done = decisions.get(&key("recorded")) == Some(&2)
                && decisions.get(&key("privileged")) == Some(&1);
            done.then_some(decisions)
        },
    )
    .await;
    assert_eq!(decisions.get(&key("rejected")), None, "{decisions:?}");
    assert_eq!(decisions.len(), 2, "{decisions:?}");
    let calls = collector.counter("callvault.ingest.calls");
    assert_eq!(
        calls.get(&attributes(&[("outcome", "recorded")])),
        Some(&2),
        "{calls:?}"
    );
    assert_eq!(
        calls.get(&attributes(&[("outcome", "privileged")])),
        Some(&1),
        "{calls:?}"
    );
    let bytes = collector.counter("callvault.ingest.bytes");
    assert_eq!(
        bytes.get(&attributes(&[("jurisdiction", "US-TX")])),
        // Only the two recorded calls' audio is read; the privileged call's never is.
        Some(&(2 * i64::from(CHUNKS) * 16_000)),
        "{bytes:?}"
    );
    // Every block of the two recorded calls on all three shards (R = 3), written once each.
    let stored = attributes(&[("outcome", "stored")]);
    eventually(
        "chunk-write counters of the shards",
        Duration::from_secs(30),
        || async {
            let written = collector.counter("callvault.blob.chunks.written");
            (written.get(&stored) == Some(&(2 * 3 * i64::from(BLOCKS)))).then_some(())
        },
    )
    .await;
    // Raft state from every meta member, and the commit latencies of the leader's proposals
    // (the registration and the three calls at least).
    eventually(
        "raft gauges from every node and commit latencies",
        Duration::from_secs(30),
        || async {
            (collector.nodes_exporting("callvault.raft.term").len() == 3
                && collector
                    .nodes_exporting("callvault.raft.log.entries")
                    .len()
                    == 3
                && collector.histogram_count("callvault.meta.commit.duration") >= 4)
                .then_some(())
        },
    )
    .await;
}

/// JSON logs carry the trace id of the call they were logged in.
fn check_json_log(cluster: &DevCluster, recorded: &TestParent) {
    let log = cluster.nodes[1].log();
    let trace_id = hex(&recorded.trace_id);
    let line = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| l["trace_id"] == trace_id.as_str() && l["message"] == "RecordCall answered")
        .unwrap_or_else(|| panic!("no JSON log line of trace {trace_id} in:\n{log}"));
    assert_eq!(line["fields"]["outcome"], "recorded", "{line}");
    assert_eq!(line["level"], "DEBUG", "{line}");
    assert!(
        line["span_id"].as_str().is_some_and(|s| s.len() == 16),
        "{line}"
    );
}

/// A byte flipped in node 3's copy of a chunk: its scrubber (which runs a pass as the shard
/// starts) finds it corrupt and repairs it from a peer, and the findings reach the collector.
async fn check_scrub_findings(collector: &Collector, cluster: &mut DevCluster, call_id: &str) {
    let read = cluster
        .meta(1)
        .read_call(pb::ReadCallRequest {
            jurisdiction: "US-TX".into(),
            call_id: call_id.into(),
            local: false,
        })
        .await
        .expect("read call")
        .into_inner();
    let chunk_id = read.chunk_ids.first().expect("a chunk").clone();
    let mut copy = Vec::new();
    let mut pieces = cluster
        .shard(3)
        .get_chunk(pb::GetChunkRequest { chunk_id })
        .await
        .expect("node 3 holds every chunk (R = 3)")
        .into_inner();
    while let Some(piece) = pieces.message().await.expect("chunk piece") {
        copy.extend_from_slice(&piece.data);
    }
    assert!(cluster.nodes[2].stop(), "node 3 stops cleanly");
    let flipped = flip_on_disk(&cluster.nodes[2].data_dir(), &copy[200..264]);
    assert!(flipped >= 1, "node 3's copy is on disk");
    cluster.nodes[2].start();
    let finding = |kind: &str| attributes(&[("finding", kind), ("shard", "blob-3")]);
    eventually(
        "scrub findings of node 3 at the collector",
        Duration::from_secs(60),
        || async {
            let findings = collector.counter("callvault.blob.scrub.findings");
            (findings.get(&finding("corrupt")) >= Some(&1)
                && findings.get(&finding("repaired")) >= Some(&1))
            .then_some(())
        },
    )
    .await;
}
