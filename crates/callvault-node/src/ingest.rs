//! `Ingest.RecordCall`: the front door for call platforms.
//!
//! The privilege decision comes first, from a linearizable read of the registry, before any
//! audio byte is stored. A recorded call's chunks are encrypted and written to W of R blob
//! replicas as they stream, with bounded memory; the call is acknowledged only after its commit
//! applied, and `apply` re-checks privilege at the commit index.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callvault_blob::{CallSealer, KeyRing, ReplicatedBlobClient};
use callvault_core::call::{CallRecord, Direction, Lifecycle, check_party_id};
use callvault_core::privilege::{decide_ingest, number_fingerprint};
use callvault_core::{
    CallId, IngestDecision, Jurisdiction, NumberStanding, PrivilegeKind, PrivilegedRetention,
    UnixMillis, normalize,
};
use callvault_meta::apply::LogPosition;
use callvault_meta::client::MetaClient;
use callvault_meta::{Command, CommandResult, CommitOutcome, Refusal};
use callvault_proto::v1 as pb;
use callvault_proto::v1::record_call_request::Part;
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::{AccessRole, caller};

/// Largest audio chunk, in bytes.
pub const MAX_AUDIO_CHUNK: usize = 1 << 20;
/// How long a stream may stay silent before it is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The limits of the ingest role.
#[derive(Debug, Clone)]
pub struct IngestLimits {
    /// Longest call, seconds.
    pub max_call_seconds: u64,
    /// Most audio bytes per call.
    pub max_call_bytes: u64,
    /// Calls streaming at once on this node.
    pub max_concurrent_calls: usize,
    /// Audio bytes held in memory across all streams.
    pub max_buffered_bytes: u64,
    /// Chunk writes in flight per call.
    pub chunk_writes_in_flight: usize,
}

/// The ingest service of one node.
#[derive(Clone)]
pub struct IngestService {
    meta: MetaClient,
    blobs: ReplicatedBlobClient,
    keys: Arc<KeyRing>,
    index_key: Arc<[u8; 32]>,
    limits: IngestLimits,
    streams: Arc<Semaphore>,
    /// One permit per KiB of audio in memory.
    buffer: Arc<Semaphore>,
}

/// A validated `CallStart`.
struct Start {
    call_id: CallId,
    jurisdiction: Jurisdiction,
    facility_id: String,
    inmate_id: String,
    fingerprint: [u8; 32],
    direction: Direction,
    started_at: UnixMillis,
    notice_accepted: bool,
}

/// The wall clock, for the times commands carry (`apply` itself reads none).
/// How much longer than the longest call a stream may take to arrive (network, slow platform).
pub const STREAM_SLACK: std::time::Duration = std::time::Duration::from_secs(30);
/// How long after its proposal a commit may still apply: `apply` refuses a later one.
pub const COMMIT_WINDOW: std::time::Duration =
    std::time::Duration::from_millis(callvault_meta::retention::MAX_COMMIT_DELAY_MS as u64);

/// The longest a stream may last, from its start to its commit proposal.
pub fn longest_stream(max_call_seconds: u64) -> std::time::Duration {
    std::time::Duration::from_secs(max_call_seconds) + STREAM_SLACK
}

/// The shortest orphan grace that cannot take a chunk of a call that may still commit: the
/// longest stream plus the commit window.
pub fn orphan_grace_floor(max_call_seconds: u64) -> std::time::Duration {
    longest_stream(max_call_seconds) + COMMIT_WINDOW
}

pub(crate) fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

fn millis(t: &prost_types::Timestamp) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos / 1_000_000))
}

fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).max(1) as u32
}

/// The receipt's content digest: BLAKE3 over the call's content identity.
fn content_digest(call: &CallRecord) -> Vec<u8> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(b"callvault.receipt.v1\0");
    hasher.update(&call.plaintext_digest);
    hasher.update(&call.byte_length.to_be_bytes());
    hasher.update(&call.chunk_count.to_be_bytes());
    hasher.finalize().as_bytes().to_vec()
}

fn receipt(call: &CallRecord, at: LogPosition, policy_version: u32) -> pb::CommitReceipt {
    pb::CommitReceipt {
        call_id: call.call_id.as_str().to_string(),
        jurisdiction: call.jurisdiction.code().to_string(),
        raft_term: at.term,
        raft_index: at.index,
        content_digest: content_digest(call),
        chunk_count: call.chunk_count,
        byte_length: call.byte_length,
        policy_version,
    }
}

fn answer(
    decision: pb::Decision,
    reason: impl Into<String>,
    receipt: Option<pb::CommitReceipt>,
) -> Response<pb::RecordCallResponse> {
    Response::new(pb::RecordCallResponse {
        decision: decision as i32,
        reason: reason.into(),
        receipt,
    })
}

fn refused(refusal: Refusal, call: &CallRecord) -> Status {
    let id = call.call_id.as_str();
    match refusal {
        Refusal::CallIdConflict => Status::already_exists(format!(
            "call {id} was already committed with different content"
        )),
        Refusal::CallIdPurged => Status::failed_precondition(format!(
            "call {id} was purged as privileged; its id is refused forever"
        )),
        Refusal::CallIdRetired => Status::already_exists(format!(
            "call {id} was deleted at its call-detail deadline; its id is refused forever"
        )),
        // A commit that reached the metadata store too late to be safe: the platform retries.
        Refusal::NotAllowed(reason) => Status::aborted(reason),
        Refusal::NoPolicy => Status::failed_precondition(format!(
            "{} has no retention policy; nothing can be recorded for it",
            call.jurisdiction.code()
        )),
        Refusal::Invalid(reason) => Status::invalid_argument(reason),
        other => Status::internal(format!("unexpected refusal {other:?}")),
    }
}

fn validate_start(
    start: pb::CallStart,
    principal: &crate::auth::Principal,
    index_key: &[u8; 32],
    limits: &IngestLimits,
) -> Result<Start, Status> {
    let bad = |field: &str, reason: String| Status::invalid_argument(format!("{field}: {reason}"));
    let jurisdiction = Jurisdiction::from_code(&start.jurisdiction)
        .map_err(|e| bad("jurisdiction", e.to_string()))?;
    principal.require(AccessRole::Platform, jurisdiction)?;
    let call_id = CallId::new(&start.call_id).map_err(|e| bad("call_id", e.to_string()))?;
    check_party_id("facility id", &start.facility_id)
        .map_err(|e| bad("facility_id", e.to_string()))?;
    check_party_id("inmate id", &start.inmate_id).map_err(|e| bad("inmate_id", e.to_string()))?;
    // Never guessed: a number that does not normalize is not recorded by default.
    let number = normalize(&start.dialed_number)
        .map_err(|e| bad("dialed_number", format!("{e}; the call was not recorded")))?;
    let direction = match pb::CallDirection::try_from(start.direction) {
        Ok(pb::CallDirection::Outbound) => Direction::Outbound,
        Ok(pb::CallDirection::Inbound) => Direction::Inbound,
        _ => return Err(bad("direction", "must be OUTBOUND or INBOUND".into())),
    };
    let started_at = start
        .started_at
        .as_ref()
        .and_then(millis)
        .ok_or_else(|| bad("started_at", "missing or out of range".into()))?;
    let now = now().0;
    if started_at > now + 5 * 60_000 {
        return Err(bad(
            "started_at",
            "more than 5 minutes in the future".into(),
        ));
    }
    if started_at < now - (limits.max_call_seconds as i64 + 86_400) * 1000 {
        return Err(bad(
            "started_at",
            "older than a day plus the longest call; live ingest only".into(),
        ));
    }
    Ok(Start {
        fingerprint: number_fingerprint(index_key, jurisdiction, &number),
        call_id,
        jurisdiction,
        facility_id: start.facility_id,
        inmate_id: start.inmate_id,
        direction,
        started_at: UnixMillis(started_at),
        notice_accepted: start.recording_notice_accepted,
    })
}

impl IngestService {
    /// An ingest service writing to `blobs` and committing through `meta`.
    pub fn new(
        meta: MetaClient,
        blobs: ReplicatedBlobClient,
        keys: KeyRing,
        index_key: [u8; 32],
        limits: IngestLimits,
    ) -> Self {
        let permits = (limits.max_buffered_bytes / 1024).min(u64::from(u32::MAX >> 3)) as usize;
        IngestService {
            meta,
            blobs,
            keys: Arc::new(keys),
            index_key: Arc::new(index_key),
            streams: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            buffer: Arc::new(Semaphore::new(permits)),
            limits,
        }
    }

    /// The gRPC server, with message bounds.
    pub fn server(self) -> pb::ingest_server::IngestServer<Self> {
        pb::ingest_server::IngestServer::new(self)
            .max_decoding_message_size(callvault_proto::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(callvault_proto::MAX_MESSAGE_BYTES)
    }

    fn record(&self, start: &Start, sealed: bool) -> CallRecord {
        CallRecord {
            call_id: start.call_id.clone(),
            jurisdiction: start.jurisdiction,
            facility_id: start.facility_id.clone(),
            inmate_id: start.inmate_id.clone(),
            number_fingerprint: start.fingerprint,
            direction: start.direction,
            started_at: start.started_at,
            ended_at: start.started_at,
            byte_length: 0,
            chunk_count: 0,
            plaintext_digest: [0; 32],
            committed_under_policy: 0,
            sealed,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        }
    }

    /// Commits what the policy keeps of a privileged call; its audio is never read.
    async fn block(
        &self,
        start: &Start,
        principal: &str,
        keep: PrivilegedRetention,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let mut call = self.record(start, false);
        call.lifecycle = Lifecycle::Blocked;
        let command = Command::CommitCall {
            call: call.clone(),
            wrapped_key: Vec::new(),
            chunk_ids: Vec::new(),
            principal: principal.to_string(),
            at: now(),
        };
        let (_, result) = self.meta.propose(&command).await?;
        match result {
            CommandResult::CallCommitted {
                outcome: CommitOutcome::Blocked,
                policy_version,
                committed_at,
                ..
            } => {
                // Only a call-detail record leaves something to show a receipt for.
                let kept = keep == PrivilegedRetention::CallDetail;
                Ok(answer(
                    pb::Decision::NotRecordedPrivileged,
                    "not recorded: privileged number; no audio was stored",
                    kept.then(|| receipt(&call, committed_at, policy_version)),
                ))
            }
            CommandResult::CallCommitted { .. } => Err(Status::already_exists(format!(
                "call {} was already committed as a recording",
                call.call_id.as_str()
            ))),
            CommandResult::Refused(refusal) => Err(refused(refusal, &call)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    /// Reads the next stream message, bounded by the idle timeout.
    async fn next(stream: &mut Streaming<pb::RecordCallRequest>) -> Result<Option<Part>, Status> {
        match tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no message for {}s; nothing was committed",
                IDLE_TIMEOUT.as_secs()
            ))),
            Ok(Err(status)) => Err(status),
            Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(message))) => match message.part {
                Some(part) => Ok(Some(part)),
                None => Err(Status::invalid_argument("a message with no part")),
            },
        }
    }

    /// Refuses a stream that has lasted longer than the longest call plus [`STREAM_SLACK`]:
    /// nothing of it is committed, and its chunks are orphans for the sweep.
    fn check_stream_time(&self, since: std::time::Instant) -> Result<(), Status> {
        let limit = longest_stream(self.limits.max_call_seconds);
        if since.elapsed() > limit {
            return Err(Status::deadline_exceeded(format!(
                "the stream lasted longer than {}s; nothing was committed",
                limit.as_secs()
            )));
        }
        Ok(())
    }

    /// Streams, encrypts and writes the audio, then commits the call. `existing` is the call's
    /// record when this is a retry: then nothing is written and the content is compared.
    async fn stream_and_commit(
        &self,
        start: &Start,
        sealed: bool,
        existing: Option<(CallRecord, LogPosition)>,
        stream: &mut Streaming<pb::RecordCallRequest>,
        principal: &str,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let sealer = match existing {
            Some(_) => None,
            None => Some(Arc::new(
                CallSealer::new(self.keys.as_ref(), &start.call_id, start.jurisdiction).map_err(
                    |e| Status::failed_precondition(format!("cannot encrypt this call: {e}")),
                )?,
            )),
        };
        // Chunks are written as they arrive, so a stream's wall time bounds how long its chunks
        // may wait for their commit: the orphan sweep's grace rests on this bound.
        let streaming_since = std::time::Instant::now();
        let mut hasher = blake3::Hasher::new();
        let mut next_seq: u32 = 0;
        let mut total: u64 = 0;
        let mut writes = FuturesOrdered::new();
        let mut chunk_ids: Vec<[u8; 32]> = Vec::new();
        let end = loop {
            match Self::next(stream).await? {
                None => {
                    return Err(Status::invalid_argument(
                        "the stream ended without CallEnd; nothing was committed",
                    ));
                }
                Some(Part::Start(_)) => {
                    return Err(Status::invalid_argument("a second CallStart"));
                }
                Some(Part::End(end)) => break end,
                Some(Part::Chunk(chunk)) => {
                    self.check_stream_time(streaming_since)?;
                    if chunk.seq != next_seq {
                        return Err(Status::invalid_argument(format!(
                            "chunk seq {} {}: expected {next_seq}; nothing was committed",
                            chunk.seq,
                            if chunk.seq < next_seq {
                                "repeated"
                            } else {
                                "out of order"
                            }
                        )));
                    }
                    if chunk.data.is_empty() || chunk.data.len() > MAX_AUDIO_CHUNK {
                        return Err(Status::invalid_argument(format!(
                            "chunk {} has {} bytes: chunks carry 1 byte to 1 MiB",
                            chunk.seq,
                            chunk.data.len()
                        )));
                    }
                    total += chunk.data.len() as u64;
                    crate::metrics::audio_received(start.jurisdiction, chunk.data.len());
                    if total > self.limits.max_call_bytes {
                        return Err(Status::invalid_argument(format!(
                            "the call exceeds {} bytes of audio; nothing was committed",
                            self.limits.max_call_bytes
                        )));
                    }
                    next_seq = next_seq
                        .checked_add(1)
                        .ok_or_else(|| Status::invalid_argument("too many chunks in one call"))?;
                    if next_seq as usize > callvault_meta::command::MAX_CHUNKS_PER_CALL {
                        return Err(Status::invalid_argument(
                            "more than 100,000 chunks in one call",
                        ));
                    }
                    hasher.update(&chunk.data);
                    let Some(sealer) = &sealer else { continue };
                    // Wait for room in the node's audio budget before holding more.
                    let permit = self
                        .buffer
                        .clone()
                        .acquire_many_owned(kib(chunk.data.len()))
                        .await
                        .map_err(|_| Status::unavailable("ingest is shutting down"))?;
                    let (sealer, blobs) = (sealer.clone(), self.blobs.clone());
                    // The call's span: each chunk write is part of the call's trace.
                    let span = tracing::Span::current();
                    writes.push_back(tokio::spawn(async move {
                        let sealed = sealer.seal(u64::from(chunk.seq), &chunk.data);
                        drop(chunk);
                        let id = sealed.id;
                        let written = blobs.put(id, Arc::new(sealed.bytes)).instrument(span).await;
                        drop(permit);
                        written.map(|_| *id.as_bytes())
                    }));
                    while writes.len() >= self.limits.chunk_writes_in_flight {
                        chunk_ids.push(Self::written(writes.next().await)?);
                    }
                }
            }
        };
        while let Some(done) = writes.next().await {
            chunk_ids.push(Self::written(Some(done))?);
        }
        if Self::next(stream).await?.is_some() {
            return Err(Status::invalid_argument(
                "messages after CallEnd; nothing was committed",
            ));
        }

        let ended_at = end
            .ended_at
            .as_ref()
            .and_then(millis)
            .ok_or_else(|| Status::invalid_argument("ended_at: missing or out of range"))?;
        if ended_at < start.started_at.0 {
            return Err(Status::invalid_argument("ended_at is before started_at"));
        }
        if (ended_at - start.started_at.0) as u64 > self.limits.max_call_seconds * 1000 {
            return Err(Status::invalid_argument(format!(
                "the call is longer than {} seconds",
                self.limits.max_call_seconds
            )));
        }
        if end.byte_length != total {
            return Err(Status::invalid_argument(format!(
                "CallEnd says {} bytes but {total} were sent; nothing was committed",
                end.byte_length
            )));
        }
        let digest = hasher.finalize();
        if end.plaintext_blake3.as_slice() != digest.as_bytes() {
            return Err(Status::invalid_argument(
                "plaintext_blake3 does not match the audio received; nothing was committed",
            ));
        }

        let mut call = self.record(start, sealed);
        call.ended_at = UnixMillis(ended_at);
        call.byte_length = total;
        call.chunk_count = next_seq;
        call.plaintext_digest = *digest.as_bytes();

        if let Some((existing, at)) = existing {
            // A retry: same content, same receipt; anything else is a conflict.
            return if existing.same_content(&call) {
                Ok(answer(
                    pb::Decision::Recorded,
                    "recorded (already committed)",
                    Some(receipt(&existing, at, existing.committed_under_policy)),
                ))
            } else {
                Err(refused(Refusal::CallIdConflict, &call))
            };
        }

        let sealer = sealer.expect("a new call has a sealer");
        self.check_stream_time(streaming_since)?;
        let command = Command::CommitCall {
            call: call.clone(),
            wrapped_key: sealer.wrapped_key().as_bytes().to_vec(),
            chunk_ids,
            principal: principal.to_string(),
            at: now(),
        };
        let (_, result) = self.meta.propose(&command).await?;
        match result {
            CommandResult::CallCommitted {
                outcome: CommitOutcome::Recorded,
                policy_version,
                committed_at,
                ..
            } => Ok(answer(
                pb::Decision::Recorded,
                "recorded",
                Some(receipt(&call, committed_at, policy_version)),
            )),
            CommandResult::CallCommitted {
                outcome: CommitOutcome::PurgedAtCommit,
                ..
            } => Ok(answer(
                pb::Decision::NotRecordedPrivileged,
                "not recorded: the number was registered privileged while the call streamed; \
                 its data key was never stored",
                None,
            )),
            CommandResult::CallCommitted {
                outcome: CommitOutcome::Blocked,
                ..
            } => Err(Status::already_exists(format!(
                "call {} was already committed as blocked",
                call.call_id.as_str()
            ))),
            CommandResult::Refused(refusal) => Err(refused(refusal, &call)),
            other => Err(Status::internal(format!("unexpected result {other:?}"))),
        }
    }

    fn written(
        done: Option<
            Result<Result<[u8; 32], callvault_blob::ReplicationError>, tokio::task::JoinError>,
        >,
    ) -> Result<[u8; 32], Status> {
        match done {
            Some(Ok(Ok(id))) => Ok(id),
            Some(Ok(Err(e))) => Err(Status::unavailable(format!(
                "a chunk could not be stored on enough blob replicas: {e}; nothing was committed"
            ))),
            Some(Err(e)) => Err(Status::internal(format!("chunk write task: {e}"))),
            None => Err(Status::internal("no chunk write pending")),
        }
    }
}

impl IngestService {
    /// Answers one `RecordCall` stream, noting in `seen` what its metrics need.
    async fn answer_call(
        &self,
        request: Request<Streaming<pb::RecordCallRequest>>,
        seen: &mut Seen,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let principal = caller(&request)?;
        principal.require_role(&[AccessRole::Platform])?;
        let _slot = self.streams.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this ingest node is streaming its limit of {} calls; retry shortly",
                self.limits.max_concurrent_calls
            ))
        })?;
        let mut stream = request.into_inner();
        let start = match Self::next(&mut stream).await? {
            Some(Part::Start(start)) => start,
            Some(_) => {
                return Err(Status::invalid_argument(
                    "the first message must be CallStart",
                ));
            }
            None => return Err(Status::invalid_argument("an empty stream")),
        };
        let start = validate_start(start, &principal, &self.index_key, &self.limits)?;
        seen.jurisdiction = Some(start.jurisdiction);
        let standing = self
            .meta
            .standing(start.jurisdiction, &start.fingerprint, Some(&start.call_id))
            .await?;
        seen.retry = standing.existing.is_some();
        let Some(policy) = standing.policy else {
            return Err(Status::failed_precondition(format!(
                "{} has no retention policy; nothing can be recorded for it",
                start.jurisdiction.code()
            )));
        };
        if let Some((existing, _)) = &standing.existing
            && matches!(
                existing.lifecycle,
                Lifecycle::Purged { .. } | Lifecycle::PrivilegedUnderSeal { .. }
            )
        {
            return Err(refused(Refusal::CallIdPurged, existing));
        }
        if standing.retired && !standing.privileged {
            // Only a tombstone is left of the id: nothing of this stream may be written.
            return Err(Status::already_exists(format!(
                "call {} is retired (its record was deleted or purged); its id is refused forever",
                start.call_id.as_str()
            )));
        }
        let number = if standing.privileged {
            NumberStanding::Privileged(PrivilegeKind::Other)
        } else if standing.sensitive {
            NumberStanding::Sensitive
        } else {
            NumberStanding::Ordinary
        };
        match decide_ingest(number, start.notice_accepted, &policy.policy) {
            IngestDecision::NotRecordedPrivileged { keep } => {
                // Answered before reading any audio; dropping the stream drops what is in flight.
                drop(stream);
                self.block(&start, &principal.name, keep).await
            }
            IngestDecision::RejectedNoNotice => Ok(answer(
                pb::Decision::Rejected,
                "rejected: the recording notice was not played and accepted; nothing was stored",
                None,
            )),
            IngestDecision::Record { sealed } => {
                self.stream_and_commit(
                    &start,
                    sealed,
                    standing.existing,
                    &mut stream,
                    &principal.name,
                )
                .await
            }
        }
    }
}

/// What `RecordCall` learned of a call before answering, for its metrics and its span.
#[derive(Debug, Default)]
struct Seen {
    /// Known once the `CallStart` validated.
    jurisdiction: Option<Jurisdiction>,
    /// The call id was committed before this stream: an answer is not a new decision.
    retry: bool,
}

#[tonic::async_trait]
impl pb::ingest_server::Ingest for IngestService {
    async fn record_call(
        &self,
        request: Request<Streaming<pb::RecordCallRequest>>,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let mut seen = Seen::default();
        let answered = self.answer_call(request, &mut seen).await;
        let outcome = crate::metrics::CallOutcome::of(&answered, seen.retry);
        crate::metrics::call_answered(seen.jurisdiction, outcome);
        // On the request's span (no call id or number: traces leave the cluster's trust zone).
        let span = tracing::Span::current();
        if let Some(jurisdiction) = seen.jurisdiction {
            span.set_attribute("callvault.jurisdiction", jurisdiction.code());
        }
        span.set_attribute("callvault.ingest.outcome", outcome.label());
        tracing::debug!(
            outcome = %outcome.label(),
            jurisdiction = seen.jurisdiction.map(|j| j.code()),
            "RecordCall answered"
        );
        answered
    }
}
