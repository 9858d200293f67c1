//! The `Content` service: the only path that returns audio.
//!
//! Every attempt that names a well-formed jurisdiction and call id is recorded through Raft
//! before anything else happens, allowed or not, carrying the principal's signed request:
//! the metadata store checks the signature itself, `apply` decides the access (the call is
//! readable, sealed calls need the elevated role, the principal's hourly quota) and appends the
//! access record to the audit log in the same write. Only then are the chunk ids read, with a
//! linearizable read, so a purge or expiry that applied first always wins, and the call's data
//! key is asked of the keys role, which releases it once for this access, sealed to a one-time
//! key this node made for this playback alone. This node holds no key before that, and only
//! this call's after.

use std::pin::Pin;

use callvault_blob::{CallOpener, ChunkId, ReleaseKeyPair, ReplicatedBlobClient};
use callvault_meta::client::MetaClient;
use callvault_meta::command::{AccessDecision, AccessQuota};
use callvault_meta::intents::{self, call_id, jurisdiction, no_call};
use callvault_meta::{Command, CommandResult};
use callvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::{caller, signed};
use crate::keys::KeysClient;

/// Serves `Content.Playback`.
#[derive(Clone)]
pub struct ContentService {
    meta: MetaClient,
    blobs: ReplicatedBlobClient,
    keys: KeysClient,
    quota: AccessQuota,
}

type AudioStream = Pin<Box<dyn Stream<Item = Result<pb::PlaybackResponse, Status>> + Send>>;

impl ContentService {
    /// Playback of calls committed through `meta`, read from `blobs`, opened with keys the
    /// keys role releases.
    pub fn new(
        meta: MetaClient,
        blobs: ReplicatedBlobClient,
        keys: KeysClient,
        quota: AccessQuota,
    ) -> Self {
        ContentService {
            meta,
            blobs,
            keys,
            quota,
        }
    }

    /// The gRPC server.
    pub fn server(self) -> pb::content_server::ContentServer<Self> {
        pb::content_server::ContentServer::new(self)
            .max_encoding_message_size(callvault_proto::MAX_MESSAGE_BYTES)
    }
}

#[tonic::async_trait]
impl pb::content_server::Content for ContentService {
    type PlaybackStream = AudioStream;

    async fn playback(
        &self,
        request: Request<pb::PlaybackRequest>,
    ) -> Result<Response<Self::PlaybackStream>, Status> {
        let who = caller(&request)?;
        let (proof, at) = crate::auth::request_proof(&request)?;
        let r = request.into_inner();
        let (mut command, refusal) = intents::record_access(&who, &r, at, self.quota)?;
        let (j, call_id) = (jurisdiction(&r.jurisdiction)?, call_id(&r.call_id)?);
        // The one-time key the released data key will be sealed to: only this node holds its
        // private half, for this playback only.
        let release = ReleaseKeyPair::generate()
            .map_err(|e| Status::internal(format!("one-time key: {e}")))?;
        if let Command::RecordAccess(access) = &mut command {
            access.recipient = Some(release.public_key());
        }
        let command = signed(&who, proof, intents::rpc::PLAYBACK, &r, command)?;
        let (decision, record) = match self.meta.propose(&command).await?.1 {
            CommandResult::AccessDecided { decision, record } => (decision, record),
            other => {
                return Err(Status::internal(format!(
                    "unexpected result from the metadata store: {other:?}"
                )));
            }
        };
        match decision {
            AccessDecision::Allowed { sealed } => {
                if sealed {
                    tracing::warn!(
                        alert = "sealed_call_access",
                        principal = %who.name,
                        jurisdiction = j.code(),
                        call_id = call_id.as_str(),
                        access_record = record,
                        "a sealed call is being played back with the elevated role"
                    );
                }
            }
            AccessDecision::Refused(_) => {
                return Err(refusal.unwrap_or_else(|| Status::permission_denied("refused")));
            }
            AccessDecision::NotFound => return Err(no_call(j, &r.call_id)),
            AccessDecision::SealedNeedsElevation => {
                return Err(Status::permission_denied(
                    "this call is sealed: playback needs an elevated agency principal",
                ));
            }
            AccessDecision::PastDeadline => {
                return Err(Status::failed_precondition(format!(
                    "call {}/{} is past its retention deadline and can no longer be played back",
                    j.code(),
                    r.call_id
                )));
            }
            AccessDecision::QuotaExceeded => {
                crate::metrics::quota_denied(j, &who.name);
                return Err(Status::resource_exhausted(format!(
                    "{} is over its playback quota ({} calls or {} bytes per hour)",
                    who.name, self.quota.calls_per_hour, self.quota.bytes_per_hour
                )));
            }
        }

        // The chunk ids and the key, at once: the release is the slower of the two.
        let (content, released) = tokio::join!(
            self.meta.content(j, &call_id, record),
            self.keys.release(record)
        );
        let Some(content) = content? else {
            // Purged or expired between the access record and now.
            return Err(no_call(j, &r.call_id));
        };
        let released = released?;
        let key = release
            .open(record, j, &call_id, &released)
            .map_err(|e| Status::internal(format!("the released key does not open: {e}")))?;
        let (call, chunk_ids) = (content.call, content.chunk_ids);
        let opener = CallOpener::with_key(&call_id, j, &key);
        drop(key);
        let header = pb::PlaybackResponse {
            part: Some(pb::playback_response::Part::Header(pb::PlaybackHeader {
                call_id: call_id.as_str().to_string(),
                byte_length: call.byte_length,
                chunk_count: call.chunk_count,
                access_record: record,
            })),
        };
        let blobs = self.blobs.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            if tx.send(Ok(header)).await.is_err() {
                return;
            }
            for (seq, id) in chunk_ids.into_iter().enumerate() {
                let part = match blobs.get(ChunkId::from_bytes(id)).await {
                    Ok(read) => opener
                        .open(seq as u64, &read.bytes)
                        .map_err(|e| Status::data_loss(format!("chunk {seq} does not open: {e}"))),
                    Err(e) => Err(Status::unavailable(format!("chunk {seq}: {e}"))),
                };
                let failed = part.is_err();
                let message = part.map(|audio| pb::PlaybackResponse {
                    part: Some(pb::playback_response::Part::Audio(audio)),
                });
                if tx.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
