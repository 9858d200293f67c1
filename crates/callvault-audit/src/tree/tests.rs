//! The tree against the RFC 6962 test vectors and against a naive recursive implementation of
//! the RFC 9162 definitions, for every tree size up to 300.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::OnceLock;

use proptest::prelude::*;

use super::*;
use crate::proof::{
    consistency_proof_len, inclusion_proof_len, verify_consistency, verify_inclusion,
};
use crate::store::{MemoryNodeStore, MemoryStoreError};

fn hx(s: &str) -> Hash {
    Hash::from_slice(&hex::decode(s).unwrap()).unwrap()
}

/// The eight leaves of the Certificate Transparency Merkle tree tests, as in
/// transparency-dev/merkle `testonly/constants.go` (`LeafInputs`, commit 417fb0c3) and
/// certificate-transparency's `merkle_tree_test.cc`.
const CT_LEAVES: [&str; 8] = [
    "",
    "00",
    "10",
    "2021",
    "3031",
    "40414243",
    "5051525354555657",
    "606162636465666768696a6b6c6d6e6f",
];

/// Roots for sizes 1..=8 (`RootHashes` in the same file).
const CT_ROOTS: [&str; 8] = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
];

/// Every complete subtree of the 8-leaf tree by (level, index) (`NodeHashes`, same file).
const CT_NODES: [&[&str]; 4] = [
    &[
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    &[
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    &[
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    &["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
];

/// (leaf index, tree size, proof) from transparency-dev/merkle `proof/verify_test.go` at commit
/// 9ca563d3ac2bab915317cf153ed4f952f6e74c07 (`inclusionProofs`; the Go table is 1-based, these
/// indexes are 0-based), the vectors of certificate-transparency's `merkle_tree_test.cc`.
const CT_INCLUSION: [(u64, u64, &[&str]); 4] = [
    (
        0,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        &[
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        3,
        &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"],
    ),
    (
        1,
        5,
        &[
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
];

/// (first, second, proof) from the same file (`consistencyProofs`).
const CT_CONSISTENCY: [(u64, u64, &[&str]); 5] = [
    (1, 1, &[]),
    (
        1,
        8,
        &[
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        &[
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        &[
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
];

fn ct_tree() -> MerkleTree<MemoryNodeStore> {
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    for leaf in CT_LEAVES {
        tree.append_entry_bytes(&hex::decode(leaf).unwrap())
            .unwrap();
    }
    tree
}

fn hashes(list: &[&str]) -> Vec<Hash> {
    list.iter().map(|h| hx(h)).collect()
}

#[test]
fn ct_vectors_roots_for_every_size() {
    let tree = ct_tree();
    assert_eq!(tree.root_at(0).unwrap(), empty_root());
    for (i, root) in CT_ROOTS.iter().enumerate() {
        assert_eq!(
            tree.root_at(i as u64 + 1).unwrap(),
            hx(root),
            "size {}",
            i + 1
        );
    }
    assert_eq!(tree.root().unwrap(), hx(CT_ROOTS[7]));
}

#[test]
fn ct_vectors_stored_nodes_are_the_complete_subtrees() {
    let tree = ct_tree();
    for (level, nodes) in CT_NODES.iter().enumerate() {
        for (index, node) in nodes.iter().enumerate() {
            assert_eq!(
                tree.store().node(level as u8, index as u64).unwrap(),
                Some(hx(node)),
                "node ({level}, {index})"
            );
        }
    }
    // 8 + 4 + 2 + 1 nodes: nothing but complete subtrees is stored.
    assert_eq!(tree.store().node_count(), 15);
}

#[test]
fn ct_vectors_inclusion_proofs() {
    let tree = ct_tree();
    for (index, size, want) in CT_INCLUSION {
        let proof = tree.inclusion_proof(index, size).unwrap();
        assert_eq!(proof.hashes, hashes(want), "index {index} size {size}");
        let leaf = leaf_hash(&hex::decode(CT_LEAVES[index as usize]).unwrap());
        proof
            .verify(&leaf, &hx(CT_ROOTS[size as usize - 1]))
            .unwrap();
    }
    // The single-leaf tree has an empty proof.
    let proof = tree.inclusion_proof(0, 1).unwrap();
    assert!(proof.hashes.is_empty());
    proof.verify(&hx(CT_ROOTS[0]), &hx(CT_ROOTS[0])).unwrap();
}

#[test]
fn ct_vectors_consistency_proofs() {
    let tree = ct_tree();
    for (first, second, want) in CT_CONSISTENCY {
        let proof = tree.consistency_proof(first, second).unwrap();
        assert_eq!(proof.hashes, hashes(want), "{first} -> {second}");
        proof
            .verify(
                &hx(CT_ROOTS[first as usize - 1]),
                &hx(CT_ROOTS[second as usize - 1]),
            )
            .unwrap();
    }
}

/// The RFC 9162 §2.1 definitions, recursively, over leaf hashes. The cache only remembers
/// MTH(D[lo:hi]) so the exhaustive test runs in seconds; the recursion is the RFC's.
struct Reference<'a> {
    leaves: &'a [Hash],
    mth_cache: HashMap<(usize, usize), Hash>,
}

impl Reference<'_> {
    fn split(n: usize) -> usize {
        let mut k = 1;
        while k * 2 < n {
            k *= 2;
        }
        k
    }

    fn mth(&mut self, lo: usize, hi: usize) -> Hash {
        if let Some(h) = self.mth_cache.get(&(lo, hi)) {
            return *h;
        }
        let h = match hi - lo {
            0 => empty_root(),
            1 => self.leaves[lo],
            n => {
                let k = Self::split(n);
                let left = self.mth(lo, lo + k);
                let right = self.mth(lo + k, hi);
                node_hash(&left, &right)
            }
        };
        self.mth_cache.insert((lo, hi), h);
        h
    }

    /// PATH(m, D[lo:hi]).
    fn path(&mut self, m: usize, lo: usize, hi: usize) -> Vec<Hash> {
        let n = hi - lo;
        if n == 1 {
            return Vec::new();
        }
        let k = Self::split(n);
        if m < k {
            let mut p = self.path(m, lo, lo + k);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.path(m - k, lo + k, hi);
            p.push(self.mth(lo, lo + k));
            p
        }
    }

    /// SUBPROOF(m, D[lo:hi], b).
    fn subproof(&mut self, m: usize, lo: usize, hi: usize, b: bool) -> Vec<Hash> {
        let n = hi - lo;
        if m == n {
            return if b {
                Vec::new()
            } else {
                vec![self.mth(lo, hi)]
            };
        }
        let k = Self::split(n);
        if m <= k {
            let mut p = self.subproof(m, lo, lo + k, b);
            p.push(self.mth(lo + k, hi));
            p
        } else {
            let mut p = self.subproof(m - k, lo + k, hi, false);
            p.push(self.mth(lo, lo + k));
            p
        }
    }
}

fn leaves(n: u64) -> Vec<Hash> {
    (0..n)
        .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
        .collect()
}

fn grown(leaves: &[Hash]) -> MerkleTree<MemoryNodeStore> {
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    for leaf in leaves {
        tree.append(*leaf).unwrap();
    }
    tree
}

/// Issue 7's property: for every tree size 1..=300, every root, every inclusion proof and every
/// consistency proof equals the naive recursive recomputation and verifies.
#[test]
fn every_size_to_300_matches_the_naive_definitions() {
    const N: u64 = 300;
    let leaves = leaves(N);
    let tree = grown(&leaves);
    let mut reference = Reference {
        leaves: &leaves,
        mth_cache: HashMap::new(),
    };
    for n in 1..=N {
        let root = tree.root_at(n).unwrap();
        assert_eq!(root, reference.mth(0, n as usize), "root at size {n}");
        for i in 0..n {
            let proof = tree.inclusion_proof(i, n).unwrap();
            let want = reference.path(i as usize, 0, n as usize);
            assert_eq!(proof.hashes, want, "inclusion of {i} in {n}");
            assert_eq!(Some(proof.hashes.len()), inclusion_proof_len(i, n));
            verify_inclusion(&leaves[i as usize], i, n, &proof.hashes, &root)
                .unwrap_or_else(|e| panic!("inclusion of {i} in {n}: {e}"));
        }
        // Every first size, not a sample: 45,150 consistency proofs in all.
        for m in 1..=n {
            let proof = tree.consistency_proof(m, n).unwrap();
            let want = reference.subproof(m as usize, 0, n as usize, true);
            assert_eq!(proof.hashes, want, "consistency {m} -> {n}");
            assert_eq!(Some(proof.hashes.len()), consistency_proof_len(m, n));
            let first_root = tree.root_at(m).unwrap();
            verify_consistency(m, n, &first_root, &root, &proof.hashes)
                .unwrap_or_else(|e| panic!("consistency {m} -> {n}: {e}"));
        }
    }
}

#[test]
fn roots_of_earlier_sizes_never_change_as_the_tree_grows() {
    let leaves = leaves(130);
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    let mut roots = vec![tree.root().unwrap()];
    for leaf in &leaves {
        tree.append(*leaf).unwrap();
        roots.push(tree.root().unwrap());
    }
    for (size, root) in roots.iter().enumerate() {
        assert_eq!(tree.root_at(size as u64).unwrap(), *root, "size {size}");
    }
}

#[test]
fn every_altered_proof_fails() {
    let leaves = leaves(40);
    let tree = grown(&leaves);
    for n in 1..=40u64 {
        let root = tree.root_at(n).unwrap();
        for i in 0..n {
            let proof = tree.inclusion_proof(i, n).unwrap();
            let leaf = leaves[i as usize];
            for j in 0..proof.hashes.len() {
                let mut bad = proof.hashes.clone();
                bad[j].0[j % 32] ^= 1;
                assert!(verify_inclusion(&leaf, i, n, &bad, &root).is_err());
                let mut dropped = proof.hashes.clone();
                dropped.remove(j);
                assert!(verify_inclusion(&leaf, i, n, &dropped, &root).is_err());
            }
            let mut extra = proof.hashes.clone();
            extra.push(root);
            assert!(verify_inclusion(&leaf, i, n, &extra, &root).is_err());
            // Another leaf at this index, this leaf at another index, another size.
            assert!(
                verify_inclusion(&leaves[(i as usize + 1) % 40], i, n, &proof.hashes, &root)
                    .is_err()
            );
            if n > 1 {
                let other = (i + 1) % n;
                assert!(verify_inclusion(&leaf, other, n, &proof.hashes, &root).is_err());
            }
            // (A proof is not bound to its size when two sizes give the path the same shape,
            // e.g. leaf 0 in 3 or 4 leaves: RFC 9162 verification takes the size from the
            // signed checkpoint that also gives the root, so only the pair matters.)
            assert!(verify_inclusion(&leaf, n, n, &proof.hashes, &root).is_err());
        }
        for m in 1..n {
            let proof = tree.consistency_proof(m, n).unwrap();
            let first = tree.root_at(m).unwrap();
            for j in 0..proof.hashes.len() {
                let mut bad = proof.hashes.clone();
                bad[j].0[0] ^= 0x80;
                assert!(
                    verify_consistency(m, n, &first, &root, &bad).is_err(),
                    "{m}->{n} #{j}"
                );
            }
            assert!(verify_consistency(m, n, &root, &first, &proof.hashes).is_err());
            // The roots of neighbouring sizes are other trees: the proof must not accept them.
            // (Mutating only the sizes is not a test: a size and its root travel together in a
            // signed checkpoint, and RFC 9162 paths of neighbouring sizes can share a shape.)
            let next_first = tree.root_at(m + 1).unwrap();
            assert!(verify_consistency(m, n, &next_first, &root, &proof.hashes).is_err());
            let previous_second = tree.root_at(n - 1).unwrap();
            assert!(verify_consistency(m, n, &first, &previous_second, &proof.hashes).is_err());
            assert!(verify_consistency(n, m, &root, &first, &proof.hashes).is_err());
        }
    }
}

#[test]
fn sizes_outside_the_tree_are_errors_not_panics() {
    let tree = grown(&leaves(5));
    assert!(matches!(
        tree.root_at(6),
        Err(TreeError::SizeBeyondTree {
            size: 6,
            tree_size: 5
        })
    ));
    assert!(matches!(
        tree.inclusion_proof(5, 5),
        Err(TreeError::IndexBeyondSize { index: 5, size: 5 })
    ));
    assert!(matches!(
        tree.inclusion_proof(0, 6),
        Err(TreeError::SizeBeyondTree { .. })
    ));
    assert!(matches!(
        tree.consistency_proof(0, 5),
        Err(TreeError::InvalidSizes { .. })
    ));
    assert!(matches!(
        tree.consistency_proof(4, 3),
        Err(TreeError::InvalidSizes { .. })
    ));
    assert!(matches!(
        tree.leaf(5),
        Err(TreeError::IndexBeyondSize { .. })
    ));
    assert_eq!(tree.leaf(4).unwrap(), leaves(5)[4]);
    let empty = MerkleTree::new(MemoryNodeStore::new());
    assert_eq!(empty.root().unwrap(), empty_root());
    assert!(empty.inclusion_proof(0, 0).is_err());
}

#[test]
fn a_store_missing_nodes_is_reported() {
    let mut store = MemoryNodeStore::new();
    store.set_tree_size(3).unwrap();
    let tree = MerkleTree::new(store);
    assert!(matches!(
        tree.root(),
        Err(TreeError::MissingNode {
            level: 0,
            index: 2,
            tree_size: 3
        })
    ));
    // Appending after a lost leaf is refused too (the in-memory store sees the gap first).
    let mut tree = tree;
    assert!(matches!(
        tree.append(leaf_hash(b"x")),
        Err(TreeError::Store(_))
    ));
}

#[test]
fn store_errors_surface_with_their_source() {
    let mut store = MemoryNodeStore::new();
    store.put_node(0, 0, leaf_hash(b"already here")).unwrap();
    let mut tree = MerkleTree::new(store);
    let err = tree.append(leaf_hash(b"new")).unwrap_err();
    let TreeError::Store(source) = err else {
        panic!("expected a store error, got {err:?}");
    };
    assert_eq!(
        source.downcast_ref::<MemoryStoreError>(),
        Some(&MemoryStoreError::Rewritten { level: 0, index: 0 })
    );
}

/// Counts reads and writes, to hold the tree to O(log n) work.
#[derive(Default)]
struct CountingStore {
    inner: MemoryNodeStore,
    reads: Cell<u64>,
    writes: u64,
}

impl NodeStore for CountingStore {
    type Error = MemoryStoreError;
    fn tree_size(&self) -> Result<u64, Self::Error> {
        self.inner.tree_size()
    }
    fn set_tree_size(&mut self, size: u64) -> Result<(), Self::Error> {
        self.inner.set_tree_size(size)
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error> {
        self.reads.set(self.reads.get() + 1);
        self.inner.node(level, index)
    }
    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), Self::Error> {
        self.writes += 1;
        self.inner.put_node(level, index, hash)
    }
}

#[test]
fn appends_roots_and_proofs_do_logarithmic_work() {
    let mut tree = MerkleTree::new(CountingStore::default());
    for n in 0u64..5000 {
        let before = (tree.store().reads.get(), tree.store().writes);
        tree.append(leaf_hash(&n.to_le_bytes())).unwrap();
        let closes = u64::from(n.trailing_ones());
        assert_eq!(
            tree.store().writes - before.1,
            1 + closes,
            "writes for leaf {n}"
        );
        assert_eq!(
            tree.store().reads.get() - before.0,
            closes,
            "reads for leaf {n}"
        );
    }
    let reads = |tree: &MerkleTree<CountingStore>, f: &dyn Fn(&MerkleTree<CountingStore>)| {
        let before = tree.store().reads.get();
        f(tree);
        tree.store().reads.get() - before
    };
    for size in [1u64, 2, 3, 1000, 4095, 4096, 4097, 4999, 5000] {
        let r = reads(&tree, &|t| {
            t.root_at(size).unwrap();
        });
        assert_eq!(r, u64::from(size.count_ones()), "root at {size}");
        let r = reads(&tree, &|t| {
            t.inclusion_proof(size / 2, size).unwrap();
        });
        assert!(r <= 2 * 13, "inclusion proof at {size}: {r} reads");
        let r = reads(&tree, &|t| {
            t.consistency_proof(size.div_ceil(3), size).unwrap();
        });
        assert!(r <= 3 * 13, "consistency proof at {size}: {r} reads");
    }
}

fn big_tree() -> &'static (Vec<Hash>, MerkleTree<MemoryNodeStore>) {
    static TREE: OnceLock<(Vec<Hash>, MerkleTree<MemoryNodeStore>)> = OnceLock::new();
    TREE.get_or_init(|| {
        let leaves = leaves(20_000);
        let tree = grown(&leaves);
        (leaves, tree)
    })
}

proptest! {
    #[test]
    fn proofs_in_a_large_tree_verify_and_tampering_fails(
        size in 1u64..=20_000,
        index_seed in any::<u64>(),
        first_seed in any::<u64>(),
        flip in any::<(usize, u8)>(),
    ) {
        let (leaves, tree) = big_tree();
        let index = index_seed % size;
        let root = tree.root_at(size).unwrap();
        let proof = tree.inclusion_proof(index, size).unwrap();
        prop_assert!(proof.verify(&leaves[index as usize], &root).is_ok());
        if !proof.hashes.is_empty() {
            let mut bad = proof.clone();
            let j = flip.0 % bad.hashes.len();
            bad.hashes[j].0[flip.0 % 32] ^= flip.1 | 1;
            prop_assert!(bad.verify(&leaves[index as usize], &root).is_err());
        }
        let first = 1 + first_seed % size;
        let proof = tree.consistency_proof(first, size).unwrap();
        let first_root = tree.root_at(first).unwrap();
        prop_assert!(proof.verify(&first_root, &root).is_ok());
        prop_assert_eq!(Some(proof.hashes.len()), consistency_proof_len(first, size));
        if first < size && size <= 2048 {
            // A tree whose last leaf differs is not an extension of the first.
            let mut forked = grown(&leaves[..size as usize - 1]);
            forked.append(leaf_hash(b"forged")).unwrap();
            let forked_root = forked.root().unwrap();
            prop_assert!(proof.verify(&first_root, &forked_root).is_err());
        }
    }
}

/// A store another writer appends to between reads: the size grows by one leaf after each read.
struct GrowingStore {
    inner: MemoryNodeStore,
    more: Cell<usize>,
    leaves: Vec<Hash>,
}

impl NodeStore for GrowingStore {
    type Error = MemoryStoreError;
    fn tree_size(&self) -> Result<u64, Self::Error> {
        let size = self.inner.tree_size()?;
        // The next read sees one leaf more (its nodes are already stored: an apply writes them
        // before the size).
        let next = self.more.get() + 1;
        if next < self.leaves.len() {
            self.more.set(next);
        }
        Ok(size.min(self.more.get() as u64))
    }
    fn set_tree_size(&mut self, size: u64) -> Result<(), Self::Error> {
        self.inner.set_tree_size(size)
    }
    fn node(&self, level: u8, index: u64) -> Result<Option<Hash>, Self::Error> {
        self.inner.node(level, index)
    }
    fn put_node(&mut self, level: u8, index: u64, hash: Hash) -> Result<(), Self::Error> {
        self.inner.put_node(level, index, hash)
    }
}

/// Found by the fault suite (seed 1501): a checkpoint signed with a size and the root of a
/// larger tree, because the root re-read a size that an apply had just grown.
#[test]
fn a_checkpoint_pairs_a_size_with_the_root_at_that_size_while_the_tree_grows() {
    let leaves: Vec<Hash> = (0u64..40).map(|n| leaf_hash(&n.to_le_bytes())).collect();
    let full = grown(&leaves);
    for start in 1..leaves.len() - 1 {
        let tree = MerkleTree::new(GrowingStore {
            inner: grown(&leaves).into_inner(),
            more: Cell::new(start - 1),
            leaves: leaves.clone(),
        });
        let (size, root) = tree.size_and_root().unwrap();
        assert_eq!(size, start as u64);
        assert_eq!(root, full.root_at(size).unwrap(), "size {size}");
    }
}
