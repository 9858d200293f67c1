//! `Ingest.RecordCall`: the front door for call platforms.
//!
//! The privilege decision comes first, from a linearizable read of the registry, before any
//! audio byte is stored. A recorded call's chunks are encrypted and written to W of R blob
//! replicas as they stream, with bounded memory; the call is acknowledged only after its commit
//! applied, and `apply` re-checks privilege at the commit index.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callvault_blob::{CallSealer, KeyRing, ReplicatedBlobClient};
use callvault_core::call::{CallRecord, Direction, Lifecycle};
use callvault_core::ingest::{
    Accepted, CallStart, CallStartFields, CallStream, StreamError, StreamLimits, StreamPart,
    StreamedAudio,
};
use callvault_core::privilege::{decide_ingest, number_fingerprint};
use callvault_core::{
    IngestDecision, Jurisdiction, NumberStanding, PrivilegeKind, PrivilegedRetention, UnixMillis,
};
use callvault_meta::apply::LogPosition;
use callvault_meta::client::MetaClient;
use callvault_meta::{Command, CommandResult, CommitOutcome, Refusal};
use callvault_proto::v1 as pb;
use callvault_proto::v1::record_call_request::Part;
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status, Streaming};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::auth::{AccessRole, caller};

mod blocks;
mod clock_check;

use blocks::{BlockWriter, Blocks};
pub use blocks::{MAX_BLOCK_BYTES, MIN_BLOCK_BYTES};

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
    /// Block writes in flight per call.
    pub chunk_writes_in_flight: usize,
    /// Size of the blocks the audio is cut into before sealing
    /// ([`MIN_BLOCK_BYTES`]..=[`MAX_BLOCK_BYTES`]).
    pub block_bytes: usize,
}

impl IngestLimits {
    fn stream(&self) -> StreamLimits {
        StreamLimits {
            max_call_seconds: self.max_call_seconds,
            max_call_bytes: self.max_call_bytes,
        }
    }
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

/// A checked `CallStart` and the keyed hash of its number.
struct Start {
    call: CallStart,
    fingerprint: [u8; 32],
}

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

/// The wall clock, for the times commands carry (`apply` itself reads none).
pub(crate) fn now() -> UnixMillis {
    UnixMillis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    )
}

fn millis(t: Option<&prost_types::Timestamp>) -> Option<UnixMillis> {
    t.and_then(|t| UnixMillis::from_timestamp(t.seconds, t.nanos))
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

fn invalid(error: StreamError) -> Status {
    Status::invalid_argument(error.reason)
}

fn start_fields(start: &pb::CallStart) -> CallStartFields {
    CallStartFields {
        call_id: start.call_id.clone(),
        jurisdiction: start.jurisdiction.clone(),
        facility_id: start.facility_id.clone(),
        inmate_id: start.inmate_id.clone(),
        dialed_number: start.dialed_number.clone(),
        direction: match pb::CallDirection::try_from(start.direction) {
            Ok(pb::CallDirection::Outbound) => Some(Direction::Outbound),
            Ok(pb::CallDirection::Inbound) => Some(Direction::Inbound),
            _ => None,
        },
        started_at: millis(start.started_at.as_ref()),
        notice_accepted: start.recording_notice_accepted,
    }
}

/// Checks one stream message against the stream's rules.
fn check(rules: &mut CallStream, message: &pb::RecordCallRequest) -> Result<Accepted, Status> {
    let fields;
    let part = match &message.part {
        None => StreamPart::Empty,
        Some(Part::Start(start)) => {
            fields = start_fields(start);
            StreamPart::Start(&fields)
        }
        Some(Part::Chunk(chunk)) => StreamPart::Chunk {
            seq: chunk.seq,
            data: &chunk.data,
        },
        Some(Part::End(end)) => StreamPart::End {
            ended_at: millis(end.ended_at.as_ref()),
            byte_length: end.byte_length,
            plaintext_blake3: &end.plaintext_blake3,
        },
    };
    rules.accept(part).map_err(invalid)
}

fn out_of_step() -> Status {
    Status::internal("the stream's rules and the ingest service are out of step")
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
        let call = &start.call;
        CallRecord {
            call_id: call.call_id.clone(),
            jurisdiction: call.jurisdiction,
            facility_id: call.facility_id.clone(),
            inmate_id: call.inmate_id.clone(),
            number_fingerprint: start.fingerprint,
            direction: call.direction,
            started_at: call.started_at,
            ended_at: call.started_at,
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

    /// Reads the next stream message, bounded by the idle timeout, and checks it against the
    /// stream's rules; `None` when the stream closed where it may.
    async fn next(
        stream: &mut Streaming<pb::RecordCallRequest>,
        rules: &mut CallStream,
    ) -> Result<Option<(Accepted, pb::RecordCallRequest)>, Status> {
        match tokio::time::timeout(IDLE_TIMEOUT, stream.message()).await {
            Err(_) => Err(Status::deadline_exceeded(format!(
                "no message for {}s; nothing was committed",
                IDLE_TIMEOUT.as_secs()
            ))),
            Ok(Err(status)) => Err(status),
            Ok(Ok(None)) => rules.finish().map(|()| None).map_err(invalid),
            Ok(Ok(Some(message))) => Ok(Some((check(rules, &message)?, message))),
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

    /// The call's sealer: a fresh data key, wrapped for the jurisdiction.
    fn sealer(&self, start: &Start) -> Result<Arc<CallSealer>, Status> {
        CallSealer::new(
            self.keys.as_ref(),
            &start.call.call_id,
            start.call.jurisdiction,
        )
        .map(Arc::new)
        .map_err(|e| Status::failed_precondition(format!("cannot encrypt this call: {e}")))
    }

    /// Reads the audio until `CallEnd`, cutting it into blocks written through `writer` (none on
    /// a retry, whose audio is only checked), and checks that only the stream's close follows.
    async fn receive_audio(
        &self,
        start: &Start,
        stream: &mut Streaming<pb::RecordCallRequest>,
        rules: &mut CallStream,
        mut writer: Option<&mut BlockWriter>,
        streaming_since: std::time::Instant,
    ) -> Result<StreamedAudio, Status> {
        let mut blocks = Blocks::new(self.limits.block_bytes, self.buffer.clone());
        let audio = loop {
            let chunk = match Self::next(stream, rules).await? {
                Some((Accepted::Ended(audio), _)) => break audio,
                Some((Accepted::Chunk, message)) => match message.part {
                    Some(Part::Chunk(chunk)) => chunk,
                    _ => return Err(out_of_step()),
                },
                _ => return Err(out_of_step()),
            };
            self.check_stream_time(streaming_since)?;
            crate::metrics::audio_received(start.call.jurisdiction, chunk.data.len());
            if let Some(writer) = writer.as_deref_mut() {
                for block in blocks.push(&chunk.data).await? {
                    writer.write(block).await?;
                }
            }
        };
        if let (Some(writer), Some(last)) = (writer, blocks.finish()) {
            writer.write(last).await?;
        }
        // Only the close of the stream may follow CallEnd.
        if Self::next(stream, rules).await?.is_some() {
            return Err(out_of_step());
        }
        Ok(audio)
    }

    /// Streams, encrypts and writes the audio as blocks, then commits the call. `existing` is
    /// the call's record when this is a retry: then nothing is written and the content is
    /// compared.
    async fn stream_and_commit(
        &self,
        start: &Start,
        sealed: bool,
        existing: Option<(CallRecord, LogPosition)>,
        stream: &mut Streaming<pb::RecordCallRequest>,
        rules: &mut CallStream,
        principal: &str,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let mut writer = match existing {
            Some(_) => None,
            None => Some(BlockWriter::new(
                self.sealer(start)?,
                self.blobs.clone(),
                self.limits.chunk_writes_in_flight,
            )),
        };
        // Blocks are written as they fill, so a stream's wall time bounds how long its chunks
        // may wait for their commit: the orphan sweep's grace rests on this bound.
        let streaming_since = std::time::Instant::now();
        let audio = self
            .receive_audio(start, stream, rules, writer.as_mut(), streaming_since)
            .await?;
        let mut call = self.record(start, sealed);
        call.ended_at = audio.ended_at;
        call.byte_length = audio.byte_length;
        call.plaintext_digest = audio.plaintext_digest;

        let Some(writer) = writer else {
            let (existing, at) = existing.expect("no writer only for a retry");
            // The block count follows from the node's block size, which may have changed since:
            // the content is its digest and length.
            call.chunk_count = existing.chunk_count;
            return if existing.same_content(&call) {
                Ok(answer(
                    pb::Decision::Recorded,
                    "recorded (already committed)",
                    Some(receipt(&existing, at, existing.committed_under_policy)),
                ))
            } else {
                Err(refused(Refusal::CallIdConflict, &call))
            };
        };
        let wrapped_key = writer.sealer().wrapped_key().as_bytes().to_vec();
        let chunk_ids = writer.finish().await?;
        // The chunks are on the shards; nothing is committed yet.
        callvault_meta::failpoint!("ingest-before-commit");
        call.chunk_count = u32::try_from(chunk_ids.len())
            .map_err(|_| Status::invalid_argument("too many blocks in one call"))?;
        self.check_stream_time(streaming_since)?;
        self.commit(call, wrapped_key, chunk_ids, principal).await
    }

    /// Proposes a recorded call's commit and answers the platform with what apply decided.
    async fn commit(
        &self,
        call: CallRecord,
        wrapped_key: Vec<u8>,
        chunk_ids: Vec<[u8; 32]>,
        principal: &str,
    ) -> Result<Response<pb::RecordCallResponse>, Status> {
        let command = Command::CommitCall {
            call: call.clone(),
            wrapped_key,
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
        let mut rules = CallStream::new(self.limits.stream(), now());
        let Some((Accepted::Started(call), _)) = Self::next(&mut stream, &mut rules).await? else {
            return Err(out_of_step());
        };
        principal.require(AccessRole::Platform, call.jurisdiction)?;
        let start = Start {
            fingerprint: number_fingerprint(&self.index_key, call.jurisdiction, &call.number),
            call,
        };
        let jurisdiction = start.call.jurisdiction;
        seen.jurisdiction = Some(jurisdiction);
        let standing = self
            .meta
            .standing(jurisdiction, &start.fingerprint, Some(&start.call.call_id))
            .await?;
        seen.retry = standing.existing.is_some();
        clock_check::refuse_if_behind(standing.cluster_time, now())?;
        let Some(policy) = standing.policy else {
            return Err(Status::failed_precondition(format!(
                "{} has no retention policy; nothing can be recorded for it",
                jurisdiction.code()
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
                start.call.call_id.as_str()
            )));
        }
        let number = if standing.privileged {
            NumberStanding::Privileged(PrivilegeKind::Other)
        } else if standing.sensitive {
            NumberStanding::Sensitive
        } else {
            NumberStanding::Ordinary
        };
        match decide_ingest(number, start.call.notice_accepted, &policy.policy) {
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
                    &mut rules,
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
