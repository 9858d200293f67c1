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
use callvault_core::Jurisdiction;
use callvault_meta::client::MetaClient;
use callvault_meta::command::{AccessDecision, AccessQuota, AccessRequest, MAX_TEXT};
use callvault_meta::{Command, CommandResult};
use callvault_proto::v1 as pb;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use crate::api::{call_id, jurisdiction};
use crate::auth::{AccessRole, caller};
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

fn no_call(j: Jurisdiction, call_id: &str) -> Status {
    Status::not_found(format!("no call {}/{call_id}", j.code()))
}

/// A required free-text field, trimmed and bounded; empty is `None`.
fn required_text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.chars().take(MAX_TEXT / 4).collect())
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
        // Without a jurisdiction and call id there is nothing an access record could name.
        let j = jurisdiction(&r.jurisdiction)?;
        let call_id = call_id(&r.call_id)?;
        let case_number = required_text(&r.case_number);
        let reason = required_text(&r.reason);

        // What this node refuses on its own; recorded all the same.
        let refusal: Option<(String, Status)> = if who.role != AccessRole::Agency {
            Some((
                format!("role {} may not play back content", who.role),
                Status::permission_denied(format!(
                    "{} has role {}; playback needs an agency principal",
                    who.name, who.role
                )),
            ))
        } else if !who.may(AccessRole::Agency, j) {
            Some((
                "outside the principal's jurisdictions".into(),
                no_call(j, &r.call_id),
            ))
        } else if case_number.is_none() {
            Some((
                "no case number".into(),
                Status::invalid_argument("case_number is required for playback"),
            ))
        } else if reason.is_none() {
            Some((
                "no reason".into(),
                Status::invalid_argument("reason is required for playback"),
            ))
        } else {
            None
        };
        let command = Command::RecordAccess(AccessRequest {
            jurisdiction: j,
            call_id: call_id.clone(),
            principal: who.name.clone(),
            case_number: case_number.unwrap_or_default(),
            reason: reason.unwrap_or_default(),
            elevated: who.elevated,
            denial: refusal.as_ref().map(|(text, _)| text.clone()),
            quota: self.quota,
            at: now(),
        });
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
                return Err(refusal
                    .map(|(_, status)| status)
                    .unwrap_or_else(|| Status::permission_denied("refused")));
            }
            AccessDecision::NotFound => return Err(no_call(j, &r.call_id)),
            AccessDecision::SealedNeedsElevation => {
                return Err(Status::permission_denied(
                    "this call is sealed: playback needs an elevated agency principal",
                ));
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
