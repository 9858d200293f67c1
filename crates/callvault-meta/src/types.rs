//! The openraft type configuration of the metadata store.

use crate::command::{Command, CommandResult};

openraft::declare_raft_types!(
    /// callvault's Raft types: our commands and results, u64 node ids, nodes addressed by their
    /// internal gRPC endpoint and volume incarnation, snapshots as files.
    pub TypeConfig:
        D = Command,
        R = CommandResult,
        NodeId = u64,
        Node = crate::member::MetaMember,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A metadata-store node id.
pub type NodeId = u64;
/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig>;
/// A log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// A log id.
pub type LogId = openraft::LogId<NodeId>;
/// A vote.
pub type Vote = openraft::Vote<NodeId>;
/// Membership with its log id.
pub type StoredMembership = openraft::StoredMembership<NodeId, crate::member::MetaMember>;
/// Snapshot metadata.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, crate::member::MetaMember>;
/// Storage errors as openraft wants them.
pub type StorageError = openraft::StorageError<NodeId>;
