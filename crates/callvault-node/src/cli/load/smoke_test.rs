//! `run_load` against an in-process Ingest that checks every stream as the contract says.

use std::time::Duration;

use callvault_proto::v1 as pb;
use callvault_proto::v1::ingest_server::{Ingest, IngestServer};
use callvault_proto::v1::record_call_request::Part;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status, Streaming};

use super::{LoadOptions, run_load};

/// Answers calls whose index is a multiple of 7 as privileged on `CallStart`, fails multiples of
/// 11 with UNAVAILABLE, and records the rest after checking seq order, length and digest.
struct CheckingIngest;

#[tonic::async_trait]
impl Ingest for CheckingIngest {
    async fn record_call(
        &self,
        request: Request<Streaming<pb::RecordCallRequest>>,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let auth = request.metadata().get("authorization").cloned();
        if auth.as_ref().and_then(|v| v.to_str().ok()) != Some("Bearer t0ken") {
            return Err(Status::unauthenticated("bad token"));
        }
        let mut stream = request.into_inner();
        let Some(Part::Start(start)) = stream.message().await?.and_then(|m| m.part) else {
            return Err(Status::invalid_argument("no CallStart"));
        };
        let index: u64 = start
            .call_id
            .rsplit('-')
            .next()
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| Status::invalid_argument("call id"))?;
        if index.is_multiple_of(7) {
            return Ok(Response::new(pb::RecordCallResponse {
                decision: pb::Decision::NotRecordedPrivileged as i32,
                ..Default::default()
            }));
        }
        if index.is_multiple_of(11) {
            return Err(Status::unavailable("mock overload"));
        }
        let (mut hasher, mut length, mut next_seq) = (blake3::Hasher::new(), 0u64, 0u32);
        while let Some(message) = stream.message().await? {
            match message.part {
                Some(Part::Chunk(chunk)) if chunk.seq == next_seq => {
                    hasher.update(&chunk.data);
                    length += chunk.data.len() as u64;
                    next_seq += 1;
                }
                Some(Part::End(end))
                    if end.byte_length == length
                        && end.plaintext_blake3 == hasher.finalize().as_bytes() =>
                {
                    return Ok(Response::new(pb::RecordCallResponse {
                        decision: pb::Decision::Recorded as i32,
                        reason: String::new(),
                        receipt: Some(pb::CommitReceipt {
                            call_id: start.call_id,
                            byte_length: length,
                            chunk_count: next_seq,
                            ..Default::default()
                        }),
                    }));
                }
                _ => return Err(Status::invalid_argument("malformed stream")),
            }
        }
        Err(Status::invalid_argument("no CallEnd"))
    }
}

#[tokio::test]
async fn run_load_streams_checks_and_counts_every_call() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IngestServer::new(CheckingIngest))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = crate::cli::connect(&addr.to_string(), Duration::from_secs(30))
        .await
        .expect("connect");
    let options = LoadOptions {
        calls: 40,
        concurrency: 8,
        jurisdictions: vec![callvault_core::jurisdiction::Jurisdiction::Tx],
        attorney_share: 0.05,
        attorneys_per_jurisdiction: 5,
        mean_seconds: 20.0,
        chunk_ms: 500,
        seed: 3,
        run_id: Some("smoke".to_string()),
    };
    let report = run_load(channel, "t0ken", None, &options)
        .await
        .expect("run");
    // Privileged: 0, 7, 14, 21, 28, 35. Unavailable: 11, 22, 33.
    assert_eq!(report.sent, 40);
    assert_eq!(report.not_recorded, 6);
    assert_eq!(report.failed["UNAVAILABLE"].count, 3);
    assert_eq!(report.recorded, 31, "{}", report.to_text());
    assert_eq!(
        report.attorney_calls, 0,
        "no registry token, no attorney calls"
    );
    assert_eq!(report.latencies.len(), 37);
    assert!(report.recorded_bytes >= 31 * 5 * 8000);
    assert!(!report.passed());
}
