//! openraft's types to and from `callvault.v1` protobuf messages. The same messages serve the
//! network and the disk (log entries, vote, membership), so one bounded decoder guards both.

use crate::member::MetaMember;
use std::collections::{BTreeMap, BTreeSet};

use callvault_core::codec::{DecodeError, VersionedRecord};
use callvault_proto::v1 as pb;
use openraft::error::SnapshotMismatch;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{CommittedLeaderId, EntryPayload, Membership, SnapshotSegmentId};
use prost::Message;

use crate::command::Command;
use crate::types::{Entry, LogId, NodeId, SnapshotMeta, StoredMembership, TypeConfig, Vote};

/// Most voter sets and nodes in a membership; clusters have 3 or 5 voters.
const MAX_MEMBERS: usize = 64;

/// A protobuf message from a peer or the disk that does not make an openraft value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    /// A required field is absent.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// A field is out of bounds or malformed.
    #[error("invalid field {field}: {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// Protobuf bytes do not decode.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// The embedded command does not decode.
    #[error("command: {0}")]
    Command(#[from] DecodeError),
}

fn required<T>(value: Option<T>, field: &'static str) -> Result<T, ConvertError> {
    value.ok_or(ConvertError::Missing(field))
}

/// `LogId` to protobuf.
pub fn log_id_to_pb(id: &LogId) -> pb::LogId {
    pb::LogId {
        leader_id: Some(pb::LeaderId {
            term: id.leader_id.term,
            node_id: id.leader_id.node_id,
        }),
        index: id.index,
    }
}

/// Protobuf to `LogId`.
pub fn log_id_from_pb(id: &pb::LogId) -> Result<LogId, ConvertError> {
    let leader = required(id.leader_id.as_ref(), "log_id.leader_id")?;
    Ok(LogId {
        leader_id: CommittedLeaderId::new(leader.term, leader.node_id),
        index: id.index,
    })
}

/// Optional `LogId` from an optional message field.
pub fn opt_log_id_from_pb(id: Option<&pb::LogId>) -> Result<Option<LogId>, ConvertError> {
    id.map(log_id_from_pb).transpose()
}

/// `Vote` to protobuf.
pub fn vote_to_pb(vote: &Vote) -> pb::RaftVote {
    pb::RaftVote {
        leader_id: Some(pb::LeaderId {
            term: vote.leader_id.term,
            node_id: vote.leader_id.node_id,
        }),
        committed: vote.committed,
    }
}

/// Protobuf to `Vote`.
pub fn vote_from_pb(vote: &pb::RaftVote) -> Result<Vote, ConvertError> {
    let leader = required(vote.leader_id.as_ref(), "vote.leader_id")?;
    Ok(if vote.committed {
        Vote::new_committed(leader.term, leader.node_id)
    } else {
        Vote::new(leader.term, leader.node_id)
    })
}

/// `Membership` to protobuf.
pub fn membership_to_pb(membership: &Membership<u64, MetaMember>) -> pb::Membership {
    pb::Membership {
        configs: membership
            .get_joint_config()
            .iter()
            .map(|set| pb::NodeIdSet {
                ids: set.iter().copied().collect(),
            })
            .collect(),
        nodes: membership
            .nodes()
            .map(|(id, node)| {
                (
                    *id,
                    pb::RaftNode {
                        addr: node.addr.clone(),
                        incarnation: node.incarnation,
                    },
                )
            })
            .collect(),
    }
}

/// Protobuf to `Membership`, checking sizes and that every voter has an address.
pub fn membership_from_pb(
    membership: &pb::Membership,
) -> Result<Membership<u64, MetaMember>, ConvertError> {
    if membership.configs.len() > 2 || membership.configs.is_empty() {
        return Err(ConvertError::Invalid {
            field: "membership.configs",
            reason: format!("{} configs (1 or 2 expected)", membership.configs.len()),
        });
    }
    if membership.nodes.len() > MAX_MEMBERS {
        return Err(ConvertError::Invalid {
            field: "membership.nodes",
            reason: format!("{} nodes", membership.nodes.len()),
        });
    }
    let configs: Vec<BTreeSet<u64>> = membership
        .configs
        .iter()
        .map(|set| set.ids.iter().copied().collect())
        .collect();
    let nodes: BTreeMap<u64, MetaMember> = membership
        .nodes
        .iter()
        .map(|(id, node)| (*id, MetaMember::new(node.addr.clone(), node.incarnation)))
        .collect();
    for id in configs.iter().flatten() {
        if !nodes.contains_key(id) {
            return Err(ConvertError::Invalid {
                field: "membership.nodes",
                reason: format!("voter {id} has no address"),
            });
        }
    }
    Ok(Membership::new(configs, nodes))
}

/// `StoredMembership` to protobuf.
pub fn stored_membership_to_pb(stored: &StoredMembership) -> pb::StoredMembership {
    pb::StoredMembership {
        log_id: stored.log_id().as_ref().map(log_id_to_pb),
        membership: Some(membership_to_pb(stored.membership())),
    }
}

/// Protobuf to `StoredMembership`.
pub fn stored_membership_from_pb(
    stored: &pb::StoredMembership,
) -> Result<StoredMembership, ConvertError> {
    let membership = match &stored.membership {
        Some(m) if !m.configs.is_empty() => membership_from_pb(m)?,
        _ => Membership::default(),
    };
    Ok(StoredMembership::new(
        opt_log_id_from_pb(stored.log_id.as_ref())?,
        membership,
    ))
}

/// `Entry` to protobuf.
pub fn entry_to_pb(entry: &Entry) -> pb::LogEntry {
    let payload = match &entry.payload {
        EntryPayload::Blank => pb::log_entry::Payload::Blank(pb::Empty {}),
        EntryPayload::Normal(command) => pb::log_entry::Payload::Command(command.encode()),
        EntryPayload::Membership(m) => pb::log_entry::Payload::Membership(membership_to_pb(m)),
    };
    pb::LogEntry {
        log_id: Some(log_id_to_pb(&entry.log_id)),
        payload: Some(payload),
    }
}

/// Protobuf to `Entry`.
pub fn entry_from_pb(entry: &pb::LogEntry) -> Result<Entry, ConvertError> {
    let log_id = log_id_from_pb(required(entry.log_id.as_ref(), "entry.log_id")?)?;
    let payload = match required(entry.payload.as_ref(), "entry.payload")? {
        pb::log_entry::Payload::Blank(_) => EntryPayload::Blank,
        pb::log_entry::Payload::Command(bytes) => EntryPayload::Normal(Command::decode(bytes)?),
        pb::log_entry::Payload::Membership(m) => EntryPayload::Membership(membership_from_pb(m)?),
    };
    Ok(Entry { log_id, payload })
}

/// `SnapshotMeta` to protobuf.
pub fn snapshot_meta_to_pb(meta: &SnapshotMeta) -> pb::SnapshotMeta {
    pb::SnapshotMeta {
        last_log_id: meta.last_log_id.as_ref().map(log_id_to_pb),
        last_membership: Some(stored_membership_to_pb(&meta.last_membership)),
        snapshot_id: meta.snapshot_id.clone(),
    }
}

/// Protobuf to `SnapshotMeta`.
pub fn snapshot_meta_from_pb(meta: &pb::SnapshotMeta) -> Result<SnapshotMeta, ConvertError> {
    if meta.snapshot_id.len() > 256 {
        return Err(ConvertError::Invalid {
            field: "snapshot_id",
            reason: "longer than 256 bytes".into(),
        });
    }
    Ok(SnapshotMeta {
        last_log_id: opt_log_id_from_pb(meta.last_log_id.as_ref())?,
        last_membership: stored_membership_from_pb(required(
            meta.last_membership.as_ref(),
            "last_membership",
        )?)?,
        snapshot_id: meta.snapshot_id.clone(),
    })
}

fn required_vote(vote: Option<&pb::RaftVote>) -> Result<Vote, ConvertError> {
    vote_from_pb(required(vote, "vote")?)
}

/// An `AppendEntries` request to protobuf.
pub fn append_entries_request_to_pb(
    rpc: &AppendEntriesRequest<TypeConfig>,
) -> pb::AppendEntriesRequest {
    pb::AppendEntriesRequest {
        vote: Some(vote_to_pb(&rpc.vote)),
        prev_log_id: rpc.prev_log_id.as_ref().map(log_id_to_pb),
        entries: rpc.entries.iter().map(entry_to_pb).collect(),
        leader_commit: rpc.leader_commit.as_ref().map(log_id_to_pb),
    }
}

/// Protobuf to an `AppendEntries` request, every entry decoded and bounded.
pub fn append_entries_request_from_pb(
    r: &pb::AppendEntriesRequest,
) -> Result<AppendEntriesRequest<TypeConfig>, ConvertError> {
    Ok(AppendEntriesRequest {
        vote: required_vote(r.vote.as_ref())?,
        prev_log_id: opt_log_id_from_pb(r.prev_log_id.as_ref())?,
        entries: r
            .entries
            .iter()
            .map(entry_from_pb)
            .collect::<Result<_, _>>()?,
        leader_commit: opt_log_id_from_pb(r.leader_commit.as_ref())?,
    })
}

/// An `AppendEntries` response to protobuf.
pub fn append_entries_response_to_pb(
    response: &AppendEntriesResponse<NodeId>,
) -> pb::AppendEntriesResponse {
    use pb::append_entries_response::Result as R;
    let result = match response {
        AppendEntriesResponse::Success => R::Success(pb::Empty {}),
        AppendEntriesResponse::PartialSuccess(matching) => R::PartialSuccess(pb::PartialSuccess {
            matching: matching.as_ref().map(log_id_to_pb),
        }),
        AppendEntriesResponse::Conflict => R::Conflict(pb::Empty {}),
        AppendEntriesResponse::HigherVote(vote) => R::HigherVote(vote_to_pb(vote)),
    };
    pb::AppendEntriesResponse {
        result: Some(result),
    }
}

/// Protobuf to an `AppendEntries` response.
pub fn append_entries_response_from_pb(
    r: &pb::AppendEntriesResponse,
) -> Result<AppendEntriesResponse<NodeId>, ConvertError> {
    use pb::append_entries_response::Result as R;
    Ok(match required(r.result.as_ref(), "result")? {
        R::Success(_) => AppendEntriesResponse::Success,
        R::PartialSuccess(p) => {
            AppendEntriesResponse::PartialSuccess(opt_log_id_from_pb(p.matching.as_ref())?)
        }
        R::Conflict(_) => AppendEntriesResponse::Conflict,
        R::HigherVote(v) => AppendEntriesResponse::HigherVote(vote_from_pb(v)?),
    })
}

/// A `Vote` request to protobuf.
pub fn vote_request_to_pb(rpc: &VoteRequest<NodeId>) -> pb::VoteRequest {
    pb::VoteRequest {
        vote: Some(vote_to_pb(&rpc.vote)),
        last_log_id: rpc.last_log_id.as_ref().map(log_id_to_pb),
    }
}

/// Protobuf to a `Vote` request.
pub fn vote_request_from_pb(r: &pb::VoteRequest) -> Result<VoteRequest<NodeId>, ConvertError> {
    Ok(VoteRequest {
        vote: required_vote(r.vote.as_ref())?,
        last_log_id: opt_log_id_from_pb(r.last_log_id.as_ref())?,
    })
}

/// A `Vote` response to protobuf.
pub fn vote_response_to_pb(response: &VoteResponse<NodeId>) -> pb::VoteResponse {
    pb::VoteResponse {
        vote: Some(vote_to_pb(&response.vote)),
        vote_granted: response.vote_granted,
        last_log_id: response.last_log_id.as_ref().map(log_id_to_pb),
    }
}

/// Protobuf to a `Vote` response.
pub fn vote_response_from_pb(r: &pb::VoteResponse) -> Result<VoteResponse<NodeId>, ConvertError> {
    Ok(VoteResponse {
        vote: required_vote(r.vote.as_ref())?,
        vote_granted: r.vote_granted,
        last_log_id: opt_log_id_from_pb(r.last_log_id.as_ref())?,
    })
}

/// An `InstallSnapshot` request to protobuf (the chunk's bytes move, not copied).
pub fn install_snapshot_request_to_pb(
    rpc: InstallSnapshotRequest<TypeConfig>,
) -> pb::InstallSnapshotRequest {
    pb::InstallSnapshotRequest {
        vote: Some(vote_to_pb(&rpc.vote)),
        meta: Some(snapshot_meta_to_pb(&rpc.meta)),
        offset: rpc.offset,
        data: rpc.data,
        done: rpc.done,
    }
}

/// Protobuf to an `InstallSnapshot` request (the chunk's bytes move, not copied).
pub fn install_snapshot_request_from_pb(
    r: pb::InstallSnapshotRequest,
) -> Result<InstallSnapshotRequest<TypeConfig>, ConvertError> {
    Ok(InstallSnapshotRequest {
        vote: required_vote(r.vote.as_ref())?,
        meta: snapshot_meta_from_pb(required(r.meta.as_ref(), "meta")?)?,
        offset: r.offset,
        data: r.data,
        done: r.done,
    })
}

fn segment_to_pb(segment: &SnapshotSegmentId) -> pb::SnapshotSegment {
    pb::SnapshotSegment {
        id: segment.id.clone(),
        offset: segment.offset,
    }
}

fn segment_from_pb(segment: Option<&pb::SnapshotSegment>) -> SnapshotSegmentId {
    let segment = segment.cloned().unwrap_or_default();
    SnapshotSegmentId {
        id: segment.id,
        offset: segment.offset,
    }
}

/// An `InstallSnapshot` answer to protobuf: the receiver's vote, or the segment it expected.
pub fn install_snapshot_response_to_pb(
    response: Result<&InstallSnapshotResponse<NodeId>, &SnapshotMismatch>,
) -> pb::InstallSnapshotResponse {
    match response {
        Ok(response) => pb::InstallSnapshotResponse {
            vote: Some(vote_to_pb(&response.vote)),
            mismatch: None,
        },
        Err(mismatch) => pb::InstallSnapshotResponse {
            vote: None,
            mismatch: Some(pb::SnapshotMismatch {
                expect: Some(segment_to_pb(&mismatch.expect)),
                got: Some(segment_to_pb(&mismatch.got)),
            }),
        },
    }
}

/// Protobuf to an `InstallSnapshot` answer: a mismatch wins over a vote.
pub fn install_snapshot_response_from_pb(
    r: &pb::InstallSnapshotResponse,
) -> Result<Result<InstallSnapshotResponse<NodeId>, SnapshotMismatch>, ConvertError> {
    if let Some(mismatch) = &r.mismatch {
        return Ok(Err(SnapshotMismatch {
            expect: segment_from_pb(mismatch.expect.as_ref()),
            got: segment_from_pb(mismatch.got.as_ref()),
        }));
    }
    Ok(Ok(InstallSnapshotResponse {
        vote: required_vote(r.vote.as_ref())?,
    }))
}

/// A version byte in front of protobuf bytes, for records kept on disk.
const DISK_VERSION: u8 = 1;

/// Encodes a protobuf message for disk: version byte, then the message.
pub fn to_disk<M: Message>(message: &M) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(1 + message.encoded_len());
    bytes.push(DISK_VERSION);
    message
        .encode(&mut bytes)
        .expect("a Vec grows to fit the message");
    bytes
}

/// Decodes a protobuf message written by [`to_disk`].
pub fn from_disk<M: Message + Default>(
    record: &'static str,
    bytes: &[u8],
) -> Result<M, ConvertError> {
    match bytes.split_first() {
        None => Err(ConvertError::Command(DecodeError::Empty { record })),
        Some((&DISK_VERSION, rest)) => {
            M::decode(rest).map_err(|e| ConvertError::Protobuf(format!("{record}: {e}")))
        }
        Some((&version, _)) => Err(ConvertError::Command(DecodeError::UnsupportedVersion {
            record,
            version,
            newest: DISK_VERSION,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::tests::commit;

    #[test]
    fn entries_of_every_payload_round_trip_through_protobuf_and_disk() {
        let log_id = LogId {
            leader_id: CommittedLeaderId::new(3, 2),
            index: 17,
        };
        let membership = Membership::new(
            vec![BTreeSet::from([1, 2, 3])],
            BTreeMap::from([
                (1, MetaMember::new("127.0.0.1:1", 101)),
                (2, MetaMember::new("127.0.0.1:2", 202)),
                (3, MetaMember::new("127.0.0.1:3", 303)),
                (4, MetaMember::new("127.0.0.1:4", 404)),
            ]),
        );
        for payload in [
            EntryPayload::Blank,
            EntryPayload::Normal(commit("c-1", 1, 0)),
            EntryPayload::Membership(membership),
        ] {
            let entry = Entry { log_id, payload };
            let back = entry_from_pb(&entry_to_pb(&entry)).unwrap();
            assert_eq!(back, entry);
            let disk: pb::LogEntry = from_disk("entry", &to_disk(&entry_to_pb(&entry))).unwrap();
            assert_eq!(entry_from_pb(&disk).unwrap(), entry);
        }
    }

    #[test]
    fn a_membership_naming_a_voter_without_address_is_refused() {
        let bad = pb::Membership {
            configs: vec![pb::NodeIdSet { ids: vec![1, 9] }],
            nodes: [(
                1,
                pb::RaftNode {
                    addr: "a".into(),
                    incarnation: 0,
                },
            )]
            .into(),
        };
        assert!(membership_from_pb(&bad).is_err());
    }
}
