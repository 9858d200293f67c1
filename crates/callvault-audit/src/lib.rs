//! callvault's tamper-evident audit log, in the style of Certificate Transparency.
//!
//! - [`hash`]: RFC 6962 / RFC 9162 hashing with SHA-256 (leaf `H(0x00 || entry)`, node
//!   `H(0x01 || left || right)`, empty root `H("")`).
//! - [`store`] and [`tree`]: an append-only Merkle tree whose complete subtrees live in a
//!   [`NodeStore`] (a RocksDB column family in the metadata store's Raft state machine, or
//!   [`MemoryNodeStore`]). An append is O(log n); the root at the current or any earlier size and
//!   every proof cost O(log n) reads.
//! - [`proof`]: inclusion and consistency proofs and the RFC 9162 verification algorithms.
//! - [`note`] and [`checkpoint`]: C2SP signed notes with Ed25519 keys and C2SP tlog-checkpoints.
//! - [`entry`]: [`AuditEntry`] and its canonical, versioned bytes, which are the Merkle leaves.
//!
//! Everything here is pure: no I/O beyond the [`NodeStore`] a caller hands in, no clock, no
//! randomness, no async. SHA-256 and Ed25519 come from `ring`, already in the workspace for TLS
//! and chunk encryption. The crates `signed_note` 0.2, `tlog_tiles` 0.2 (Cloudflare) and
//! `ct-merkle` 0.3 were considered: together they would bring two versions of `sha2` (0.10 and,
//! through `digest` 0.11, 0.11) next to ring's SHA-256, a second Ed25519 (`ed25519-dalek`), a
//! second `base64` (0.21) and, for `tlog_tiles`, `url` with the ICU crates; `ct-merkle` keeps the
//! whole tree in memory with no storage trait; and the Merkle and note code they would replace is
//! a few hundred lines, checked here against the RFC 6962 vectors and Go's `sumdb/note` output.

#![warn(missing_docs)]

pub mod checkpoint;
pub mod entry;
pub mod hash;
pub mod note;
pub mod proof;
pub mod store;
pub mod tree;

pub use checkpoint::{Checkpoint, CheckpointError};
pub use entry::{
    AccessDecision, AuditEntry, AuditEntryBuilder, AuditEvent, EntryError, PurgeReplica,
};
pub use hash::{Hash, empty_root, leaf_hash, node_hash};
pub use note::{KeyError, NoteError, NoteSigner, NoteVerifier};
pub use proof::{
    ConsistencyProof, InclusionProof, VerifyError, verify_consistency, verify_inclusion,
};
pub use store::{MemoryNodeStore, NodeStore};
pub use tree::{MerkleTree, TreeError};
