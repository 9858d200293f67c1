//! Where the tree's hashes live. The metadata store keeps them in a RocksDB column family written
//! by its Raft state machine; tests and benches use [`MemoryNodeStore`].
//!
//! A node is addressed by `(level, index)`: level 0 holds leaf hashes, and the node at level `l`,
//! index `i` is the root of the complete subtree over leaves `[i * 2^l, (i + 1) * 2^l)`. Only
//! complete subtrees are stored, so a stored node never changes once written: roots of the
//! current and of every earlier tree size are folded from them on demand.

use crate::hash::Hash;

/// Storage for the hashes of complete subtrees and the tree size.
///
/// Implementations must read their own writes: [`crate::MerkleTree::append`] reads nodes that an
/// earlier append of the same Raft apply may have written (for RocksDB: read through the pending
/// write batch, e.g. a `WriteBatchWithIndex` or an overlay map, and commit the batch atomically
/// with the entry it logs). [`conformance::run`] checks an implementation.
pub trait NodeStore {
    /// Why the store could not be read or written.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The number of leaves appended so far.
    fn tree_size(&self) -> Result<u64, Self::Error>;

    /// Records the number of leaves; written after the nodes of an append.
    fn set_tree_size(&mut self, size: u64) -> Result<(), Self::Error>;

    /// The hash of the complete subtree at `(level, index)`, if stored.
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error>;

    /// Stores the hash of the complete subtree at `(level, index)`. Nodes are written once, in
    /// increasing index order within a level.
    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), Self::Error>;
}

impl<S: NodeStore + ?Sized> NodeStore for &mut S {
    type Error = S::Error;
    fn tree_size(&self) -> Result<u64, Self::Error> {
        (**self).tree_size()
    }
    fn set_tree_size(&mut self, size: u64) -> Result<(), Self::Error> {
        (**self).set_tree_size(size)
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error> {
        (**self).node(level, index)
    }
    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), Self::Error> {
        (**self).put_node(level, index, hash)
    }
}

/// Why [`MemoryNodeStore`] refused a write: both are bugs in the tree code, which the in-memory
/// store exists to catch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryStoreError {
    /// A node written past the end of its level (a gap would be left).
    #[error("node ({level}, {index}) written with only {len} nodes on its level")]
    Gap {
        /// The level.
        level: u8,
        /// The index written.
        index: u64,
        /// Nodes already on the level.
        len: u64,
    },
    /// A stored node rewritten with a different hash: complete subtrees are immutable.
    #[error("node ({level}, {index}) rewritten with a different hash")]
    Rewritten {
        /// The level.
        level: u8,
        /// The index.
        index: u64,
    },
}

/// Nodes in memory, one vector per level (32 bytes per node, about 64 bytes per leaf).
#[derive(Debug, Default, Clone)]
pub struct MemoryNodeStore {
    levels: Vec<Vec<Hash>>,
    size: u64,
}

impl MemoryNodeStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The number of stored nodes, over all levels.
    pub fn node_count(&self) -> usize {
        self.levels.iter().map(Vec::len).sum()
    }
}

impl NodeStore for MemoryNodeStore {
    type Error = MemoryStoreError;

    fn tree_size(&self) -> Result<u64, Self::Error> {
        Ok(self.size)
    }

    fn set_tree_size(&mut self, size: u64) -> Result<(), Self::Error> {
        self.size = size;
        Ok(())
    }

    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error> {
        let Ok(index) = usize::try_from(index) else {
            return Ok(None);
        };
        Ok(self
            .levels
            .get(usize::from(level))
            .and_then(|l| l.get(index))
            .copied())
    }

    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), Self::Error> {
        let level_ix = usize::from(level);
        if self.levels.len() <= level_ix {
            self.levels.resize_with(level_ix + 1, Vec::new);
        }
        let nodes = &mut self.levels[level_ix];
        let len = nodes.len() as u64;
        match index.cmp(&len) {
            std::cmp::Ordering::Equal => {
                nodes.push(hash);
                Ok(())
            }
            std::cmp::Ordering::Less if nodes[index as usize] == hash => Ok(()),
            std::cmp::Ordering::Less => Err(MemoryStoreError::Rewritten { level, index }),
            std::cmp::Ordering::Greater => Err(MemoryStoreError::Gap { level, index, len }),
        }
    }
}

/// A conformance suite for [`NodeStore`] implementations, in the spirit of `openraft::testing`:
/// the metadata store runs it against its RocksDB-backed store. Each check panics with a message
/// naming the property that failed.
pub mod conformance {
    use super::NodeStore;
    use crate::MerkleTree;
    use crate::hash::{Hash, leaf_hash};

    /// Runs every check, each on a fresh store from `new_store`.
    pub fn run<S: NodeStore, F: FnMut() -> S>(mut new_store: F) {
        empty_store_has_size_zero_and_no_nodes(new_store());
        nodes_read_back_and_absent_nodes_are_none(new_store());
        reads_see_unflushed_writes(new_store());
    }

    /// A fresh store is an empty tree.
    pub fn empty_store_has_size_zero_and_no_nodes<S: NodeStore>(store: S) {
        assert_eq!(store.tree_size().expect("tree_size"), 0, "fresh store size");
        assert_eq!(store.node(0, 0).expect("node"), None, "fresh store node");
    }

    /// Written nodes and sizes read back exactly; unwritten addresses are `None`, including the
    /// extremes of the address space.
    pub fn nodes_read_back_and_absent_nodes_are_none<S: NodeStore>(mut store: S) {
        let a = Hash([1; 32]);
        let b = Hash([2; 32]);
        store.put_node(0, 0, a).expect("put (0,0)");
        store.put_node(0, 1, b).expect("put (0,1)");
        store.put_node(1, 0, Hash([3; 32])).expect("put (1,0)");
        store.set_tree_size(2).expect("set_tree_size");
        assert_eq!(store.node(0, 0).expect("node"), Some(a));
        assert_eq!(store.node(0, 1).expect("node"), Some(b));
        assert_eq!(store.node(1, 0).expect("node"), Some(Hash([3; 32])));
        assert_eq!(store.node(0, 2).expect("node"), None, "(0,2) never written");
        assert_eq!(store.node(1, 1).expect("node"), None, "(1,1) never written");
        assert_eq!(
            store.node(63, 0).expect("node"),
            None,
            "(63,0) never written"
        );
        assert_eq!(store.node(0, u64::MAX).expect("node"), None, "(0,max)");
        assert_eq!(store.tree_size().expect("tree_size"), 2);
    }

    /// A tree grown through the store (as one Raft apply appends several entries before its
    /// batch commits) has the same root as one grown in memory.
    pub fn reads_see_unflushed_writes<S: NodeStore>(store: S) {
        let mut tree = MerkleTree::new(store);
        let mut reference = MerkleTree::new(super::MemoryNodeStore::new());
        for i in 0u32..67 {
            let leaf = leaf_hash(&i.to_le_bytes());
            tree.append(leaf).expect("append to the store under test");
            reference.append(leaf).expect("append in memory");
        }
        assert_eq!(tree.size().expect("size"), 67);
        for size in [1, 2, 3, 31, 32, 33, 64, 67] {
            assert_eq!(
                tree.root_at(size).expect("root_at"),
                reference.root_at(size).expect("root_at"),
                "root at size {size}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_store_passes_the_conformance_suite() {
        conformance::run(MemoryNodeStore::new);
    }

    #[test]
    fn memory_store_refuses_gaps_and_rewrites() {
        let mut s = MemoryNodeStore::new();
        s.put_node(0, 0, Hash([1; 32])).unwrap();
        assert_eq!(
            s.put_node(0, 2, Hash([1; 32])),
            Err(MemoryStoreError::Gap {
                level: 0,
                index: 2,
                len: 1
            })
        );
        assert_eq!(
            s.put_node(0, 0, Hash([9; 32])),
            Err(MemoryStoreError::Rewritten { level: 0, index: 0 })
        );
        // Rewriting the same hash is harmless (an apply replayed after a crash).
        s.put_node(0, 0, Hash([1; 32])).unwrap();
        assert_eq!(s.node_count(), 1);
    }
}
