//! The protobuf messages of every Raft RPC and of the Raft log's disk records, into openraft
//! values: whatever converts converts back to a message that converts to the same value.

use std::fmt::Debug;

use callvault_meta::convert::{self, ConvertError};
use callvault_meta::types::TypeConfig;
use callvault_proto::v1 as pb;
use openraft::raft::AppendEntriesRequest;
use prost::Message;

/// A message type: bytes to a value (or a refusal), and the value back to a message.
fn round_trip<M, V, E>(bytes: &[u8], from_pb: fn(&M) -> Result<V, E>, to_pb: fn(&V) -> M)
where
    M: Message + Default + PartialEq + Debug,
    V: PartialEq + Debug,
{
    let Ok(message) = M::decode(bytes) else {
        return;
    };
    let Ok(value) = from_pb(&message) else {
        return;
    };
    let again = to_pb(&value);
    let Ok(back) = from_pb(&again) else {
        panic!("{value:?} converts to a message that does not convert back");
    };
    assert_eq!(back, value, "the round trip changed the value");
    assert_eq!(to_pb(&back), again, "one value, two messages");
}

/// `AppendEntriesRequest` has no `PartialEq`: its parts are compared.
fn append_entries_parts(rpc: &AppendEntriesRequest<TypeConfig>) -> impl PartialEq + Debug {
    (
        rpc.vote,
        rpc.prev_log_id,
        rpc.entries.clone(),
        rpc.leader_commit,
    )
}

fn append_entries_request(bytes: &[u8]) {
    let Ok(message) = pb::AppendEntriesRequest::decode(bytes) else {
        return;
    };
    let Ok(rpc) = convert::append_entries_request_from_pb(&message) else {
        return;
    };
    let again = convert::append_entries_request_to_pb(&rpc);
    let back =
        convert::append_entries_request_from_pb(&again).expect("a converted request converts back");
    assert_eq!(append_entries_parts(&back), append_entries_parts(&rpc));
}

fn install_snapshot_request(bytes: &[u8]) {
    let Ok(message) = pb::InstallSnapshotRequest::decode(bytes) else {
        return;
    };
    let Ok(rpc) = convert::install_snapshot_request_from_pb(message) else {
        return;
    };
    let again = convert::install_snapshot_request_to_pb(rpc.clone());
    let back = convert::install_snapshot_request_from_pb(again)
        .expect("a converted request converts back");
    assert_eq!(back, rpc);
}

fn install_snapshot_response(bytes: &[u8]) {
    let Ok(message) = pb::InstallSnapshotResponse::decode(bytes) else {
        return;
    };
    let Ok(answer) = convert::install_snapshot_response_from_pb(&message) else {
        return;
    };
    let again = convert::install_snapshot_response_to_pb(answer.as_ref());
    let back = convert::install_snapshot_response_from_pb(&again)
        .expect("a converted answer converts back");
    // `SnapshotMismatch` has no `PartialEq`: compare its debug form.
    assert_eq!(format!("{back:?}"), format!("{answer:?}"));
}

/// A record of the Raft log on disk: a version byte, then a protobuf message.
fn disk<M, V>(bytes: &[u8], from_pb: fn(&M) -> Result<V, ConvertError>, to_pb: fn(&V) -> M)
where
    M: Message + Default,
    V: PartialEq + Debug,
{
    let Ok(message) = convert::from_disk::<M>("fuzzed record", bytes) else {
        return;
    };
    let Ok(value) = from_pb(&message) else {
        return;
    };
    let stored = convert::to_disk(&to_pb(&value));
    let back: M = convert::from_disk("fuzzed record", &stored).expect("written records read back");
    assert_eq!(from_pb(&back).ok(), Some(value));
}

/// The `raft_messages` target: the first byte picks the message, the rest are its bytes. The
/// list only grows at its end, so corpus files keep their meaning.
pub fn message(input: &[u8]) {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    match which {
        0 => append_entries_request(bytes),
        1 => round_trip(
            bytes,
            convert::append_entries_response_from_pb,
            convert::append_entries_response_to_pb,
        ),
        2 => round_trip(
            bytes,
            convert::vote_request_from_pb,
            convert::vote_request_to_pb,
        ),
        3 => round_trip(
            bytes,
            convert::vote_response_from_pb,
            convert::vote_response_to_pb,
        ),
        4 => install_snapshot_request(bytes),
        5 => install_snapshot_response(bytes),
        6 => round_trip(
            bytes,
            convert::snapshot_meta_from_pb,
            convert::snapshot_meta_to_pb,
        ),
        7 => disk(bytes, convert::entry_from_pb, convert::entry_to_pb),
        8 => disk(bytes, convert::vote_from_pb, convert::vote_to_pb),
        9 => disk(bytes, convert::log_id_from_pb, convert::log_id_to_pb),
        10 => disk(
            bytes,
            convert::stored_membership_from_pb,
            convert::stored_membership_to_pb,
        ),
        _ => {}
    }
}
