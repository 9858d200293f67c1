//! The `MetaStore` RPCs of key custody and of audited metadata reads: what the keys role reads of
//! a grant and of a released key, the api's content read bound to an allowed access, and the
//! metadata reads the store makes for a principal's signed request and records with their count.
//!
//! Every one of them is linearizable: a follower forwards it to the leader.

use callvault_core::codec::VersionedRecord;
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::v1 as pb;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use tonic::Status;

use crate::command::{Command, CommandResult};
use crate::custody::{self, RELEASE_WINDOW_MS};
use crate::metadata::{MetadataDecision, MetadataQuery, MetadataRead};
use crate::principal_proof::PrincipalProof;
use crate::reads;
use crate::service::MetaService;

fn not_found(access: u64) -> Status {
    Status::not_found(format!("no grant for access record {access}"))
}

impl MetaService {
    /// `ReadAccess`: the grant of an allowed access.
    pub(crate) async fn serve_read_access(
        &self,
        r: pb::ReadAccessRequest,
    ) -> Result<pb::ReadAccessResponse, Status> {
        if let Some(channel) = self.linearizable_or_leader().await? {
            return Ok(MetaStoreClient::new(channel)
                .read_access(r)
                .await?
                .into_inner());
        }
        let access = r.access_record;
        let grant = self
            .read(move |db| Ok(custody::grant(db, access)?))
            .await?
            .ok_or_else(|| not_found(access))?;
        Ok(pb::ReadAccessResponse {
            grant: grant.encode(),
        })
    }

    /// `ReadReleasedKey`: the wrapped key of a released grant's call.
    pub(crate) async fn serve_read_released_key(
        &self,
        r: pb::ReadAccessRequest,
    ) -> Result<pb::ReadReleasedKeyResponse, Status> {
        if let Some(channel) = self.linearizable_or_leader().await? {
            return Ok(MetaStoreClient::new(channel)
                .read_released_key(r)
                .await?
                .into_inner());
        }
        let access = r.access_record;
        let wrapped_key = self
            .read(move |db| Ok(custody::released_key(db, access)?))
            .await?
            .ok_or_else(|| not_found(access))?;
        Ok(pb::ReadReleasedKeyResponse { wrapped_key })
    }

    /// `ReadContent`: a live call's record and chunk ids, for an access allowed for that call
    /// within the release window.
    pub(crate) async fn serve_read_content(
        &self,
        r: pb::ReadContentRequest,
    ) -> Result<pb::ReadContentResponse, Status> {
        let jurisdiction = Jurisdiction::from_code(&r.jurisdiction)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let call_id =
            CallId::new(&r.call_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        // Always linearizable: content must never be served from a replica that has not yet
        // applied the purge or expiry.
        if let Some(channel) = self.linearizable_or_leader().await? {
            return Ok(MetaStoreClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .read_content(r)
                .await?
                .into_inner());
        }
        let access = r.access_record;
        let grant = self.read(move |db| Ok(custody::grant(db, access)?)).await?;
        // The grant first: a caller without one learns nothing of the call, not even its deadline.
        let current = grant.is_some_and(|g| {
            g.jurisdiction == jurisdiction
                && g.call_id.as_str() == r.call_id
                && self.proof_clock().0 - g.at.0 <= RELEASE_WINDOW_MS
        });
        if !current {
            return Err(Status::permission_denied(format!(
                "access record {access} allows no content of {}/{}",
                r.jurisdiction, r.call_id
            )));
        }
        let content = self
            .read(move |db| reads::content(db, jurisdiction, &call_id))
            .await?
            .ok_or_else(|| {
                Status::not_found(format!(
                    "no readable content for call {} in {}",
                    r.call_id, r.jurisdiction
                ))
            })?;
        Ok(pb::ReadContentResponse {
            record: content.call.encode(),
            chunk_ids: content.chunk_ids.iter().map(|id| id.to_vec()).collect(),
        })
    }

    /// `ReadMetadata`: checks the principal's signed read, makes it, records it with the number
    /// of records, and answers only if the access is allowed.
    pub(crate) async fn serve_read_metadata(
        &self,
        r: pb::ReadMetadataRequest,
    ) -> Result<pb::ReadMetadataResponse, Status> {
        // The read and the record of it happen on the leader, one after the other.
        if let Some(channel) = self.linearizable_or_leader().await? {
            return Ok(MetaStoreClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .read_metadata(r)
                .await?
                .into_inner());
        }
        let command = Command::decode(&r.command)
            .map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        let (proof, read) = signed_read(command)?;
        let read = match self.gate().check(
            &proof,
            &Command::RecordMetadataRead(read),
            self.proof_clock(),
        )? {
            Command::RecordMetadataRead(read) => read,
            _ => return Err(Status::internal("the gate changed the command's kind")),
        };
        let (answer, records) = self.read_for(&read, proof.time).await?;
        let command = Command::Signed {
            proof,
            command: Box::new(Command::RecordMetadataRead(MetadataRead {
                records,
                ..read
            })),
        };
        let bytes = command.encode();
        let result = self.propose_here(command, bytes.len()).await?;
        let allowed = matches!(
            result,
            CommandResult::MetadataReadDecided {
                decision: MetadataDecision::Allowed,
                ..
            }
        );
        Ok(pb::ReadMetadataResponse {
            result: result.encode(),
            answer: allowed.then_some(answer),
        })
    }

    /// Makes a metadata read; its answer and how many records it holds.
    async fn read_for(
        &self,
        read: &MetadataRead,
        as_of: UnixMillis,
    ) -> Result<(pb::read_metadata_response::Answer, u32), Status> {
        use pb::read_metadata_response::Answer;
        let j = read.jurisdiction;
        match read.query.clone() {
            MetadataQuery::ListCalls {
                filter,
                page_size,
                page_token,
            } => {
                let page = self
                    .read(move |db| reads::list_calls(db, j, &filter, page_size, &page_token))
                    .await?;
                let count = page.items.len() as u32;
                Ok((
                    Answer::Calls(pb::ListCallRecordsResponse {
                        records: page.items.iter().map(|c| c.encode()).collect(),
                        next_page_token: page.next_token.unwrap_or_default(),
                    }),
                    count,
                ))
            }
            MetadataQuery::CallStatus { call_id } => {
                let call = self.read_call_here(j, &call_id).await?;
                let count = u32::from(!call.record.is_empty());
                Ok((Answer::Call(call), count))
            }
            MetadataQuery::JurisdictionStatus => {
                let counters = self.read_counters_here(j, as_of).await?;
                Ok((Answer::Counters(counters), 1))
            }
        }
    }
}

/// The proof and the metadata read of a `Signed` `RecordMetadataRead`.
fn signed_read(command: Command) -> Result<(PrincipalProof, MetadataRead), Status> {
    match command {
        Command::Signed { proof, command } => match *command {
            Command::RecordMetadataRead(read) => Ok((proof, read)),
            other => Err(Status::invalid_argument(format!(
                "ReadMetadata carries a metadata read, not {}",
                other.kind()
            ))),
        },
        other => Err(Status::unauthenticated(format!(
            "a metadata read acts for a person and must carry the person's proof, not a bare {}",
            other.kind()
        ))),
    }
}
