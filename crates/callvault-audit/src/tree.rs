//! The append-only Merkle tree over a [`NodeStore`].
//!
//! Appending leaf `n` stores it at `(0, n)` and then, for every level at which `n` completes a
//! subtree (one per trailing 1-bit of `n`), the new parent: O(log n) reads and writes, one on
//! average. Every hash the RFC 6962 definitions need is the root of an aligned range of leaves
//! `[start, end)`, and such a range splits into at most 64 complete subtrees, so roots at any
//! size and every proof hash cost O(log n) reads of stored nodes, never a recomputation.

use callvault_core::codec::VersionedRecord as _;

use crate::entry::AuditEntry;
use crate::hash::{Hash, empty_root, leaf_hash, node_hash};
use crate::proof::{ConsistencyProof, InclusionProof, MAX_PROOF_HASHES};
use crate::store::NodeStore;

/// Why a tree operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// The node store failed.
    #[error("node store: {0}")]
    Store(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// A node the tree size says must exist is absent: the store is corrupt or was written by
    /// something other than [`MerkleTree::append`].
    #[error("node ({level}, {index}) is missing from a tree of size {tree_size}")]
    MissingNode {
        /// The level.
        level: u8,
        /// The index.
        index: u64,
        /// The stored tree size.
        tree_size: u64,
    },
    /// A size beyond the current tree was asked for.
    #[error("tree size {size} asked for, but the tree has {tree_size} leaves")]
    SizeBeyondTree {
        /// The size asked for.
        size: u64,
        /// The current size.
        tree_size: u64,
    },
    /// A leaf index outside the tree of the given size.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexBeyondSize {
        /// The index.
        index: u64,
        /// The size.
        size: u64,
    },
    /// A consistency proof between sizes that have none (first is 0 or larger than second).
    #[error("no consistency proof from size {first} to size {second}: need 0 < first <= second")]
    InvalidSizes {
        /// The first size.
        first: u64,
        /// The second size.
        second: u64,
    },
    /// An entry whose sequence is not the next leaf index: logging it would make its stated
    /// position disagree with its place in the tree.
    #[error("entry sequence {sequence} appended at leaf index {tree_size}")]
    SequenceMismatch {
        /// The entry's sequence.
        sequence: u64,
        /// The index it would get.
        tree_size: u64,
    },
    /// The tree holds 2^64 - 1 leaves.
    #[error("the tree is full")]
    Full,
}

/// The Merkle tree of the audit log, reading and writing its hashes through `S`.
///
/// Inside a Raft apply, wrap a store that writes into the apply's batch, append every entry of
/// the batch in log order, and commit the batch: see [`NodeStore`] for the one requirement
/// (reads see the batch's own writes).
#[derive(Debug, Clone)]
pub struct MerkleTree<S> {
    store: S,
}

/// The largest power of two strictly below `n`, for `n >= 2`: RFC 6962's split point.
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (63 - (n - 1).leading_zeros())
}

impl<S: NodeStore> MerkleTree<S> {
    /// A tree over `store`, at whatever size the store holds.
    pub fn new(store: S) -> Self {
        MerkleTree { store }
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, mutably (to write the entry bytes into the same batch, for instance).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Gives the store back.
    pub fn into_inner(self) -> S {
        self.store
    }

    fn store_err(e: S::Error) -> TreeError {
        TreeError::Store(Box::new(e))
    }

    /// The number of leaves.
    pub fn size(&self) -> Result<u64, TreeError> {
        self.store.tree_size().map_err(Self::store_err)
    }

    fn node(&self, level: u8, index: u64, tree_size: u64) -> Result<Hash, TreeError> {
        self.store
            .node(level, index)
            .map_err(Self::store_err)?
            .ok_or(TreeError::MissingNode {
                level,
                index,
                tree_size,
            })
    }

    /// Appends a leaf hash and returns its index. Writes the leaf, the O(log n) complete subtrees
    /// it closes, and finally the new size.
    pub fn append(&mut self, leaf: Hash) -> Result<u64, TreeError> {
        let index = self.size()?;
        let new_size = index.checked_add(1).ok_or(TreeError::Full)?;
        self.store
            .put_node(0, index, leaf)
            .map_err(Self::store_err)?;
        let mut hash = leaf;
        let mut level = 0u8;
        let mut i = index;
        while i & 1 == 1 {
            let left = self.node(level, i - 1, index)?;
            hash = node_hash(&left, &hash);
            level += 1;
            i >>= 1;
            self.store
                .put_node(level, i, hash)
                .map_err(Self::store_err)?;
        }
        self.store
            .set_tree_size(new_size)
            .map_err(Self::store_err)?;
        Ok(index)
    }

    /// Appends the exact bytes of an entry (its leaf hash is `H(0x00 || bytes)`); returns the
    /// leaf index and hash.
    pub fn append_entry_bytes(&mut self, entry: &[u8]) -> Result<(u64, Hash), TreeError> {
        let leaf = leaf_hash(entry);
        Ok((self.append(leaf)?, leaf))
    }

    /// Appends an audit entry, whose sequence must be the current size; returns its leaf hash.
    /// The caller stores `entry.encode()` under the sequence in the same batch (those bytes are
    /// what auditors re-hash).
    pub fn append_entry(&mut self, entry: &AuditEntry) -> Result<Hash, TreeError> {
        let tree_size = self.size()?;
        if entry.sequence() != tree_size {
            return Err(TreeError::SequenceMismatch {
                sequence: entry.sequence(),
                tree_size,
            });
        }
        let (_, leaf) = self.append_entry_bytes(&entry.encode())?;
        Ok(leaf)
    }

    /// The stored hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Result<Hash, TreeError> {
        let size = self.size()?;
        if index >= size {
            return Err(TreeError::IndexBeyondSize { index, size });
        }
        self.node(0, index, size)
    }

    /// The root hash at the current size.
    pub fn root(&self) -> Result<Hash, TreeError> {
        let size = self.size()?;
        self.root_of(size, size)
    }

    /// The size and the root at that size, the size read once: what a checkpoint signs. A
    /// store that another writer appends to between two reads (a node serving checkpoints while
    /// it applies) would otherwise pair one size with a larger tree's root, a checkpoint that
    /// no log extends.
    pub fn size_and_root(&self) -> Result<(u64, Hash), TreeError> {
        let size = self.size()?;
        Ok((size, self.root_at(size)?))
    }

    /// The root hash the tree had when it held `size` leaves (for old checkpoints and proofs).
    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        let tree_size = self.checked_size(size)?;
        self.root_of(size, tree_size)
    }

    fn checked_size(&self, size: u64) -> Result<u64, TreeError> {
        let tree_size = self.size()?;
        if size > tree_size {
            return Err(TreeError::SizeBeyondTree { size, tree_size });
        }
        Ok(tree_size)
    }

    fn root_of(&self, size: u64, tree_size: u64) -> Result<Hash, TreeError> {
        if size == 0 {
            return Ok(empty_root());
        }
        self.range_hash(0, size, tree_size)
    }

    /// MTH(D[start:end]) for a range whose `start` is a multiple of a power of two at least
    /// `end - start` (every range RFC 6962's recursion produces is one). Such a range is the
    /// complete subtrees of the set bits of `end - start`, largest first; the right-most is
    /// folded in first, so no allocation is needed.
    fn range_hash(&self, start: u64, end: u64, tree_size: u64) -> Result<Hash, TreeError> {
        debug_assert!(start < end && end <= tree_size);
        let width = end - start;
        debug_assert!(
            width
                .checked_next_power_of_two()
                .map_or(start == 0, |p| start & (p - 1) == 0),
            "unaligned range [{start}, {end})"
        );
        let mut cursor = end;
        let mut acc: Option<Hash> = None;
        let mut bits = width;
        while bits != 0 {
            let level = bits.trailing_zeros() as u8;
            bits &= bits - 1;
            cursor -= 1 << level;
            let subtree = self.node(level, cursor >> level, tree_size)?;
            acc = Some(match acc {
                None => subtree,
                Some(right) => node_hash(&subtree, &right),
            });
        }
        Ok(acc.expect("a non-empty range has at least one subtree"))
    }

    /// The inclusion proof of leaf `index` in the tree of `size` leaves (RFC 9162 §2.1.3.1),
    /// from stored nodes: at most one hash folds several subtrees, so O(log n) reads.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<InclusionProof, TreeError> {
        let tree_size = self.checked_size(size)?;
        if index >= size {
            return Err(TreeError::IndexBeyondSize { index, size });
        }
        // PATH(m, D[lo:hi]) walked from the root down; the RFC lists the hashes leaf first.
        let mut hashes = Vec::with_capacity(MAX_PROOF_HASHES);
        let (mut lo, mut hi) = (0u64, size);
        while hi - lo > 1 {
            let k = split_point(hi - lo);
            if index < lo + k {
                hashes.push(self.range_hash(lo + k, hi, tree_size)?);
                hi = lo + k;
            } else {
                hashes.push(self.range_hash(lo, lo + k, tree_size)?);
                lo += k;
            }
        }
        hashes.reverse();
        Ok(InclusionProof {
            leaf_index: index,
            tree_size: size,
            hashes,
        })
    }

    /// The consistency proof from the tree of `first` leaves to the tree of `second` leaves
    /// (RFC 9162 §2.1.4.1), for `0 < first <= second <= size`.
    pub fn consistency_proof(
        &self,
        first: u64,
        second: u64,
    ) -> Result<ConsistencyProof, TreeError> {
        let tree_size = self.checked_size(second)?;
        if first == 0 || first > second {
            return Err(TreeError::InvalidSizes { first, second });
        }
        // SUBPROOF(m, D[lo:hi], b) walked from the root down, with m = first fixed.
        let mut hashes = Vec::with_capacity(MAX_PROOF_HASHES);
        let (mut lo, mut hi) = (0u64, second);
        let mut first_root_known = true;
        while first != hi {
            let k = split_point(hi - lo);
            if first - lo <= k {
                hashes.push(self.range_hash(lo + k, hi, tree_size)?);
                hi = lo + k;
            } else {
                hashes.push(self.range_hash(lo, lo + k, tree_size)?);
                lo += k;
                first_root_known = false;
            }
        }
        if !first_root_known {
            hashes.push(self.range_hash(lo, hi, tree_size)?);
        }
        hashes.reverse();
        Ok(ConsistencyProof {
            first,
            second,
            hashes,
        })
    }
}

#[cfg(test)]
mod tests;
