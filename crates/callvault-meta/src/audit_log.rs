//! The audit log inside the state machine: entries and Merkle tree nodes live in column families
//! written by the same atomic `apply` batch as the event they record, so the log and the state can
//! never disagree, and snapshots and replication carry them.

use callvault_audit::{AuditEntry, AuditEntryBuilder, AuditEvent, Hash, MerkleTree, NodeStore};
use callvault_core::codec::VersionedRecord;
use callvault_core::{Jurisdiction, UnixMillis};

use crate::txn::Txn;

/// Audit entries: `sequence` (u64 BE) → the entry's canonical bytes (the Merkle leaf).
pub const CF_AUDIT_ENTRIES: &str = "audit_entries";
/// Merkle nodes of complete subtrees: `level | index` (u8, u64 BE) → 32-byte hash; and the key
/// `size` → the tree size (u64 BE).
pub const CF_AUDIT_TREE: &str = "audit_tree";
const KEY_SIZE: &[u8] = b"size";
/// Entries by subject, for a call's history: `len | subject | sequence` → ∅.
pub const CF_AUDIT_SUBJECTS: &str = "audit_subjects";

/// The prefix of every index key of `subject`.
pub fn subject_prefix(subject: &str) -> Vec<u8> {
    let bytes = subject.as_bytes();
    let len = bytes.len().min(255);
    let mut key = Vec::with_capacity(1 + len + 8);
    key.push(len as u8);
    key.extend_from_slice(&bytes[..len]);
    key
}

/// Why an audit append failed: the store is damaged, or an entry broke a bound.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The tree's stored nodes are inconsistent.
    #[error("audit tree: {0}")]
    Tree(#[from] callvault_audit::TreeError),
    /// An entry field is out of bounds (a bug in the caller: entries are built from checked data).
    #[error("audit entry: {0}")]
    Entry(#[from] callvault_audit::EntryError),
    /// A stored value has the wrong length.
    #[error("audit tree: stored {what} is {len} bytes")]
    Corrupt {
        /// Which value.
        what: &'static str,
        /// Its length.
        len: usize,
    },
}

/// The Merkle tree's nodes inside the current write set.
pub struct TreeNodes<'t, 'a>(pub &'t mut Txn<'a>);

fn node_key(level: u8, index: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(9);
    key.push(level);
    key.extend_from_slice(&index.to_be_bytes());
    key
}

impl NodeStore for TreeNodes<'_, '_> {
    type Error = AuditError;

    fn tree_size(&self) -> Result<u64, AuditError> {
        tree_size(self.0)
    }

    fn set_tree_size(&mut self, size: u64) -> Result<(), AuditError> {
        self.0.put(
            CF_AUDIT_TREE,
            KEY_SIZE.to_vec(),
            size.to_be_bytes().to_vec(),
        );
        Ok(())
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, AuditError> {
        match self.0.get(CF_AUDIT_TREE, &node_key(level, index))? {
            None => Ok(None),
            Some(bytes) => {
                let hash: [u8; 32] =
                    bytes
                        .as_slice()
                        .try_into()
                        .map_err(|_| AuditError::Corrupt {
                            what: "node hash",
                            len: bytes.len(),
                        })?;
                Ok(Some(Hash(hash)))
            }
        }
    }

    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), AuditError> {
        self.0
            .put(CF_AUDIT_TREE, node_key(level, index), hash.0.to_vec());
        Ok(())
    }
}

/// The number of entries in the log, as the write set would leave it.
pub fn tree_size(txn: &Txn<'_>) -> Result<u64, AuditError> {
    match txn.get(CF_AUDIT_TREE, KEY_SIZE)? {
        None => Ok(0),
        Some(bytes) => Ok(u64::from_be_bytes(bytes.as_slice().try_into().map_err(
            |_| AuditError::Corrupt {
                what: "tree size",
                len: bytes.len(),
            },
        )?)),
    }
}

/// One event to record. Built by `apply` from the command it applies.
pub struct Event {
    /// What happened.
    pub event: AuditEvent,
    /// When (the command's time).
    pub time: UnixMillis,
    /// Who acted.
    pub principal: String,
    /// Whose data it concerns.
    pub jurisdiction: Option<Jurisdiction>,
    /// What it happened to (a call id, a policy, a fingerprint prefix); never a number in clear.
    pub subject: String,
    /// The result.
    pub outcome: String,
    /// Extra fields.
    pub details: Vec<(&'static str, String)>,
}

/// Appends `event` as the next entry: its bytes under its sequence and its leaf in the tree.
pub fn append(txn: &mut Txn<'_>, event: Event) -> Result<AuditEntry, AuditError> {
    let sequence = tree_size(txn)?;
    let principal = if event.principal.is_empty() {
        "unknown".to_string()
    } else {
        event.principal
    };
    let mut builder: AuditEntryBuilder =
        AuditEntry::builder(sequence, event.time, event.event, principal)
            .subject(event.subject)
            .outcome(event.outcome);
    if let Some(j) = event.jurisdiction {
        builder = builder.jurisdiction(j);
    }
    for (key, value) in event.details {
        builder = builder.detail(key, value);
    }
    let entry = builder.build()?;
    MerkleTree::new(TreeNodes(txn)).append_entry(&entry)?;
    txn.put(
        CF_AUDIT_ENTRIES,
        sequence.to_be_bytes().to_vec(),
        entry.encode(),
    );
    if !entry.subject().is_empty() {
        let mut key = subject_prefix(entry.subject());
        key.extend_from_slice(&sequence.to_be_bytes());
        txn.put(CF_AUDIT_SUBJECTS, key, Vec::new());
    }
    Ok(entry)
}

/// A short, non-reversible name for a number's fingerprint, for entry subjects.
pub fn fingerprint_subject(fingerprint: &[u8; 32]) -> String {
    let hex: String = fingerprint[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("number:{hex}")
}
