//! Inclusion and consistency proofs (RFC 9162 §2.1.3 and §2.1.4) and their verification.
//!
//! Verification is pure: it needs only the proof, the sizes and the hashes, never the log. The
//! two `verify_*` functions follow the RFC 9162 algorithms step by step; the expected proof
//! lengths are checked first so that a wrong-length proof fails with an error that says so.

use crate::hash::{Hash, node_hash};

/// The most hashes any proof over a tree of up to 2^64 - 1 leaves can hold.
pub const MAX_PROOF_HASHES: usize = 64;

/// Why a proof does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The leaf index is not inside the tree.
    #[error("leaf index {index} is not inside a tree of size {size}")]
    IndexBeyondSize {
        /// The leaf index.
        index: u64,
        /// The tree size.
        size: u64,
    },
    /// A consistency proof whose first tree is larger than its second.
    #[error("first tree size {first} is larger than the second {second}")]
    SizesOutOfOrder {
        /// The first (older) size.
        first: u64,
        /// The second (newer) size.
        second: u64,
    },
    /// A proof for other sizes than the trees being compared.
    #[error(
        "proof is for sizes {first} -> {second}, but the trees have {want_first} and {want_second} leaves"
    )]
    WrongProofSizes {
        /// The proof's first size.
        first: u64,
        /// The proof's second size.
        second: u64,
        /// The older tree's size.
        want_first: u64,
        /// The newer tree's size.
        want_second: u64,
    },
    /// Consistency with the empty tree proves nothing; RFC 9162 defines proofs for first > 0.
    #[error("a consistency proof from the empty tree is meaningless")]
    EmptyFirstTree,
    /// The proof has the wrong number of hashes for its sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength {
        /// The length the sizes imply.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// A received hash is not 32 bytes.
    #[error("proof hash {position} is {len} bytes, expected 32")]
    MalformedHash {
        /// Its position in the proof.
        position: usize,
        /// Its length.
        len: usize,
    },
    /// An inclusion proof leads to a different root: the entry, its index, or the tree differs.
    #[error("inclusion proof leads to root {computed}, expected {expected}")]
    RootMismatch {
        /// The root the verifier trusts.
        expected: Hash,
        /// The root the proof leads to.
        computed: Hash,
    },
    /// Two trees of the same size with different roots: the log forked or was rewritten.
    #[error("two different roots for tree size {size}: the log forked or was rewritten")]
    DifferentRootsAtSameSize {
        /// The size.
        size: u64,
    },
    /// The consistency proof does not reproduce the first (older) root.
    #[error("consistency proof does not reproduce the first root {expected} (got {computed})")]
    FirstRootMismatch {
        /// The trusted first root.
        expected: Hash,
        /// What the proof reproduced.
        computed: Hash,
    },
    /// The consistency proof does not lead to the second (newer) root: the newer tree does not
    /// extend the older one.
    #[error("consistency proof does not lead to the second root {expected} (got {computed})")]
    SecondRootMismatch {
        /// The second root claimed.
        expected: Hash,
        /// What the proof leads to.
        computed: Hash,
    },
}

/// Proof that the leaf at `leaf_index` is in the tree of `tree_size` leaves: the sibling hashes
/// from the leaf up to the root (RFC 9162 §2.1.3.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InclusionProof {
    /// The leaf's index, from 0.
    pub leaf_index: u64,
    /// The size of the tree the proof is for.
    pub tree_size: u64,
    /// Sibling hashes, leaf to root.
    pub hashes: Vec<Hash>,
}

impl InclusionProof {
    /// Checks that `leaf` (a [`crate::leaf_hash`]) is at this proof's index in the tree whose
    /// root is `root`.
    pub fn verify(&self, leaf: &Hash, root: &Hash) -> Result<(), VerifyError> {
        verify_inclusion(leaf, self.leaf_index, self.tree_size, &self.hashes, root)
    }
}

/// Proof that the tree of `second` leaves extends the tree of `first` leaves
/// (RFC 9162 §2.1.4.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsistencyProof {
    /// The older tree size.
    pub first: u64,
    /// The newer tree size.
    pub second: u64,
    /// The proof's hashes.
    pub hashes: Vec<Hash>,
}

impl ConsistencyProof {
    /// Checks that the tree with root `second_root` extends the tree with root `first_root`.
    pub fn verify(&self, first_root: &Hash, second_root: &Hash) -> Result<(), VerifyError> {
        verify_consistency(
            self.first,
            self.second,
            first_root,
            second_root,
            &self.hashes,
        )
    }
}

/// Converts the `repeated bytes hashes` of a received proof, refusing more than
/// [`MAX_PROOF_HASHES`] entries or any entry that is not 32 bytes.
pub fn hashes_from_bytes<B: AsRef<[u8]>>(hashes: &[B]) -> Result<Vec<Hash>, VerifyError> {
    if hashes.len() > MAX_PROOF_HASHES {
        return Err(VerifyError::WrongProofLength {
            expected: MAX_PROOF_HASHES,
            got: hashes.len(),
        });
    }
    hashes
        .iter()
        .enumerate()
        .map(|(position, h)| {
            Hash::from_slice(h.as_ref()).ok_or(VerifyError::MalformedHash {
                position,
                len: h.as_ref().len(),
            })
        })
        .collect()
}

/// How many hashes an inclusion proof for `index` in a tree of `size` has; `None` when the index
/// is outside the tree. The path splits into the part below the point where the leaf's path
/// leaves the tree's right border (`inner`) and the border part, one hash per set bit above.
pub fn inclusion_proof_len(index: u64, size: u64) -> Option<usize> {
    if index >= size {
        return None;
    }
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = index.checked_shr(inner).unwrap_or(0).count_ones();
    Some((inner + border) as usize)
}

/// How many hashes a consistency proof from `first` to `second` leaves has; `None` when
/// `first` is 0 or larger than `second`.
pub fn consistency_proof_len(first: u64, second: u64) -> Option<usize> {
    if first == 0 || first > second {
        return None;
    }
    if first == second {
        return Some(0);
    }
    let path = inclusion_proof_len(first - 1, second)?;
    let shift = first.trailing_zeros() as usize;
    // The hashes below the subtree of 2^shift leaves that ends at `first` are not needed, and
    // that subtree's own root is sent unless it is the whole first tree.
    let seed = usize::from(!first.is_power_of_two());
    Some(path - shift + seed)
}

/// Verifies an inclusion proof with the algorithm of RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    leaf: &Hash,
    leaf_index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), VerifyError> {
    // Step 1: the index must be inside the tree.
    let expected =
        inclusion_proof_len(leaf_index, tree_size).ok_or(VerifyError::IndexBeyondSize {
            index: leaf_index,
            size: tree_size,
        })?;
    let wrong_length = VerifyError::WrongProofLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    // Steps 2 and 3.
    let mut fnode = leaf_index;
    let mut snode = tree_size - 1;
    let mut r = *leaf;
    // Step 4.
    for p in proof {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    if snode != 0 {
        return Err(wrong_length);
    }
    if r != *root {
        return Err(VerifyError::RootMismatch {
            expected: *root,
            computed: r,
        });
    }
    Ok(())
}

/// Verifies a consistency proof with the algorithm of RFC 9162 §2.1.4.2. Equal sizes need an
/// empty proof and equal roots; a first size of 0 is refused (as transparency-dev/merkle does).
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> Result<(), VerifyError> {
    if first > second {
        return Err(VerifyError::SizesOutOfOrder { first, second });
    }
    if first == 0 {
        return Err(VerifyError::EmptyFirstTree);
    }
    let expected = consistency_proof_len(first, second).expect("0 < first <= second");
    let wrong_length = VerifyError::WrongProofLength {
        expected,
        got: proof.len(),
    };
    if proof.len() != expected {
        return Err(wrong_length);
    }
    if first == second {
        return if first_root == second_root {
            Ok(())
        } else {
            Err(VerifyError::DifferentRootsAtSameSize { size: first })
        };
    }
    // Step 1 (an empty path) is excluded by the length check: first < second needs a hash.
    // Step 2: a power-of-two first tree is itself a node of the second; its root seeds the path.
    let (seed, rest) = if first.is_power_of_two() {
        (*first_root, proof)
    } else {
        (proof[0], &proof[1..])
    };
    // Steps 3 and 4.
    let mut fnode = first - 1;
    let mut snode = second - 1;
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 5.
    let mut fr = seed;
    let mut sr = seed;
    // Step 6.
    for c in rest {
        if snode == 0 {
            return Err(wrong_length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    // Step 7.
    if snode != 0 {
        return Err(wrong_length);
    }
    if fr != *first_root {
        return Err(VerifyError::FirstRootMismatch {
            expected: *first_root,
            computed: fr,
        });
    }
    if sr != *second_root {
        return Err(VerifyError::SecondRootMismatch {
            expected: *second_root,
            computed: sr,
        });
    }
    Ok(())
}
