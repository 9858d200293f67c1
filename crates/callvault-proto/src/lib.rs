//! callvault's gRPC API, package `callvault.v1`, generated from `proto/callvault/v1/` at build time.
//!
//! Public services: `Ingest`, `Query`, `Admin`, `Content`, `Audit`, `Cluster`.
//! Internal services (callers with a role, see [`identity`]): `Raft`, `BlobShard`, `MetaStore`.

pub mod auth;
pub mod identity;
pub mod proof;
pub mod tls;
pub mod trace_context;

/// Generated messages, clients and servers of `callvault.v1`.
pub mod v1 {
    #![allow(clippy::all, clippy::pedantic, missing_docs)]
    tonic::include_proto!("callvault.v1");
}

/// The encoded `FileDescriptorSet` of every `callvault.v1` file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/callvault_v1_descriptor.bin"));

/// Upper bound on any decoded gRPC message, so a peer cannot make a node allocate without limit.
/// Audio chunks are at most 1 MiB and snapshot chunks 4 MiB; 8 MiB leaves room for framing.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).unwrap();
        let services: Vec<String> = set
            .file
            .iter()
            .flat_map(|f| f.service.iter().map(|s| s.name().to_string()))
            .collect();
        for expected in [
            "Ingest",
            "Query",
            "Admin",
            "Content",
            "Audit",
            "Cluster",
            "Raft",
            "BlobShard",
        ] {
            assert!(services.iter().any(|s| s == expected), "missing {expected}");
        }
    }

    #[test]
    fn oneof_stream_message_round_trips() {
        use super::v1::{AudioChunk, RecordCallRequest, record_call_request::Part};
        let msg = RecordCallRequest {
            part: Some(Part::Chunk(AudioChunk {
                seq: 7,
                data: vec![1, 2, 3],
            })),
        };
        let decoded = RecordCallRequest::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded, msg);
    }
}
