//! The `Content` service: the only path that returns audio.
//!
//! Every attempt that names a well-formed jurisdiction and call id is recorded through Raft
//! before anything else happens, allowed or not: `apply` decides it (the call is readable,
//! sealed calls need the elevated role, the principal's hourly quota) and appends the access
//! record to the audit log in the same write. Only then are the data key and chunks read, with a
//! linearizable read, so a purge or expiry that applied first always wins.

use std::pin::Pin;
use std::sync::Arc;

use callvault_blob::{CallOpener, ChunkId, KeyRing, ReplicatedBlobClient, WrappedDataKey};
use callvault_meta::CommandResult;
use callvault_meta::client::MetaClient;
use callvault_meta::command::{AccessDecision, AccessQuota};
use callvault_meta::intents::{self, call_id, jurisdiction, no_call};
use callvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::auth::caller;
use crate::ingest::now;

/// Serves `Content.Playback`.
#[derive(Clone)]
pub struct ContentService {
    meta: MetaClient,
    blobs: ReplicatedBlobClient,
    keys: Arc<KeyRing>,
    quota: AccessQuota,
}

type AudioStream = Pin<Box<dyn Stream<Item = Result<pb::PlaybackResponse, Status>> + Send>>;

impl ContentService {
    /// Playback of calls committed through `meta`, read from `blobs`, opened with `keys`.
    pub fn new(
        meta: MetaClient,
        blobs: ReplicatedBlobClient,
        keys: KeyRing,
        quota: AccessQuota,
    ) -> Self {
        ContentService {
            meta,
            blobs,
            keys: Arc::new(keys),
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
        let r = request.into_inner();
        let (command, refusal) = intents::record_access(&who, &r, now(), self.quota)?;
        let (j, call_id) = (jurisdiction(&r.jurisdiction)?, call_id(&r.call_id)?);
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

        let Some(content) = self.meta.content(j, &call_id).await? else {
            // Purged or expired between the access record and now.
            return Err(no_call(j, &r.call_id));
        };
        let (call, chunk_ids) = (content.call, content.chunk_ids);
        let wrapped = WrappedDataKey::from_bytes(&content.wrapped_key)
            .map_err(|e| Status::internal(format!("stored data key: {e}")))?;
        let opener = CallOpener::new(self.keys.as_ref(), &call_id, j, &wrapped).map_err(|e| {
            Status::failed_precondition(format!(
                "this node cannot open {}'s recordings: {e}",
                j.code()
            ))
        })?;
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
