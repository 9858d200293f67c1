//! Exactly-once proposals against a real metadata store: a real openraft node on RocksDB behind
//! a real gRPC server on loopback, whose network loses the answer of a proposal after it
//! applied. The client cannot tell that from a proposal that never arrived, so it retries; the
//! retry must not apply the command a second time (a second hold, a quota charged twice).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::client::MetaClient;
use callvault_meta::command::{AccessDecision, AccessQuota, AccessRequest};
use callvault_meta::{Command, CommandResult, MetaConfig, MetaNode};
use callvault_proto::identity::Credential;
use callvault_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

/// Loses the answers of the next `armed` proposals after they applied, as a connection that
/// breaks at the wrong moment does: the client sees `UNAVAILABLE`.
#[derive(Clone)]
struct LoseAnswers<S> {
    inner: S,
    armed: Arc<AtomicUsize>,
}

impl<S> tower::Layer<S> for LoseAnswersLayer {
    type Service = LoseAnswers<S>;

    fn layer(&self, inner: S) -> LoseAnswers<S> {
        LoseAnswers {
            inner,
            armed: self.armed.clone(),
        }
    }
}

#[derive(Clone)]
struct LoseAnswersLayer {
    armed: Arc<AtomicUsize>,
}

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

impl<S, B> tower::Service<http::Request<B>> for LoseAnswers<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let lose = request.uri().path() == "/callvault.v1.MetaStore/Propose"
            && self
                .armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let answer = answer.await?;
            if !lose {
                return Ok(answer);
            }
            // The proposal applied; its answer is dropped on the way back.
            drop(answer);
            Ok(tonic::Status::unavailable("connection reset (injected)").into_http())
        })
    }
}

struct Node {
    node: Arc<MetaNode>,
    client: MetaClient,
    armed: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn start() -> Node {
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = MetaNode::start(MetaConfig::new(1, dir.path().join("node"), addr.clone()))
        .await
        .unwrap();
    let armed = Arc::new(AtomicUsize::new(0));
    let server = tonic::transport::Server::builder()
        .layer(LoseAnswersLayer {
            armed: armed.clone(),
        })
        .add_service(node.service.raft_server())
        .add_service(node.service.meta_store_server())
        .add_service(node.service.cluster_server())
        .serve_with_incoming(TcpListenerStream::new(listener));
    tokio::spawn(server);
    use pb::cluster_server::Cluster;
    node.service
        .init(tonic::Request::new(pb::InitRequest {}))
        .await
        .unwrap();
    let client = MetaClient::new(&[addr], &Credential::none()).unwrap();
    let policy = Command::PutPolicy {
        jurisdiction: Jurisdiction::Tx,
        policy: RetentionPolicy {
            recording_retention_days: 365,
            call_detail_retention_days: 730,
            privileged_retention: PrivilegedRetention::CallDetail,
            hold_requires_review_date: false,
            hold_max_review_days: 365,
            sweep_interval_seconds: 60,
            shortening_notice_seconds: 0,
            source: "test".into(),
        },
        expected_version: 0,
        principal: "op".into(),
        at: UnixMillis(1),
    };
    assert_eq!(
        client.propose(&policy).await.unwrap().1,
        CommandResult::PolicyPut { version: 1 }
    );
    Node {
        node,
        client,
        armed,
        _dir: dir,
    }
}

fn call_id() -> CallId {
    CallId::new("once-1").unwrap()
}

/// Commits a one-chunk recording started a minute ago.
async fn commit(client: &MetaClient) {
    let now = callvault_core::UnixMillis(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let call = CallRecord {
        call_id: call_id(),
        jurisdiction: Jurisdiction::Tx,
        facility_id: "fac-1".into(),
        inmate_id: "inm-1".into(),
        number_fingerprint: [7; 32],
        direction: Direction::Outbound,
        started_at: UnixMillis(now.0 - 60_000),
        ended_at: now,
        byte_length: 1000,
        chunk_count: 1,
        plaintext_digest: [1; 32],
        committed_under_policy: 0,
        sealed: false,
        lifecycle: Lifecycle::Live,
        holds: Vec::new(),
    };
    let result = client
        .propose(&Command::CommitCall {
            call,
            wrapped_key: vec![1; 72],
            chunk_ids: vec![[2; 32]],
            principal: "platform".into(),
            at: now,
        })
        .await
        .unwrap()
        .1;
    assert!(
        matches!(result, CommandResult::CallCommitted { .. }),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_hold_whose_answer_was_lost_is_placed_once() {
    let node = start().await;
    commit(&node.client).await;
    let hold = Command::PlaceHold {
        jurisdiction: Jurisdiction::Tx,
        call_id: call_id(),
        issuer: "da".into(),
        agency: "da-office".into(),
        case_number: "2026-CR-1".into(),
        reason: "trial".into(),
        review_date: None,
        at: UnixMillis(5),
    };
    node.armed.store(1, Ordering::SeqCst);
    let result = tokio::time::timeout(Duration::from_secs(30), node.client.propose(&hold))
        .await
        .expect("the retry answers")
        .unwrap()
        .1;
    assert_eq!(node.armed.load(Ordering::SeqCst), 0, "an answer was lost");
    let CommandResult::HoldPlaced { hold_id } = result else {
        panic!("{result:?}")
    };
    let call = node
        .client
        .call(Jurisdiction::Tx, &call_id())
        .await
        .unwrap()
        .unwrap();
    let ids: Vec<u64> = call.holds.iter().map(|h| h.id).collect();
    assert_eq!(ids, [hold_id], "the retried hold was placed once");
    node.node.shutdown().await;
}

#[tokio::test]
async fn an_access_whose_answer_was_lost_is_charged_once() {
    let node = start().await;
    commit(&node.client).await;
    let access = Command::RecordAccess(AccessRequest {
        jurisdiction: Jurisdiction::Tx,
        call_id: call_id(),
        principal: "agency-tx".into(),
        case_number: "2026-CR-9".into(),
        reason: "review".into(),
        elevated: false,
        denial: None,
        // One call an hour: a second charge for the same access would refuse it.
        quota: AccessQuota {
            calls_per_hour: 1,
            bytes_per_hour: u64::MAX,
        },
        at: UnixMillis(10),
    });
    node.armed.store(1, Ordering::SeqCst);
    let result = node.client.propose(&access).await.unwrap().1;
    assert_eq!(node.armed.load(Ordering::SeqCst), 0, "an answer was lost");
    assert!(
        matches!(
            result,
            CommandResult::AccessDecided {
                decision: AccessDecision::Allowed { .. },
                ..
            }
        ),
        "the retry of an allowed access is the same allowed access: {result:?}"
    );
    node.node.shutdown().await;
}
