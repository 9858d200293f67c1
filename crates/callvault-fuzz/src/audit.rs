//! The audit log's C2SP notes, checkpoints and keys, and its inclusion and consistency proofs.

use std::cell::RefCell;

use arbitrary::{Arbitrary, Unstructured};
use callvault_audit::note::{self, NoteSigner, NoteVerifier};
use callvault_audit::proof::{hashes_from_bytes, verify_consistency, verify_inclusion};
use callvault_audit::{Checkpoint, Hash, MemoryNodeStore, MerkleTree, NodeStore, leaf_hash};

/// The origin and key name of the log the notes are checked against.
pub const ORIGIN: &str = "callvault.example/audit";

/// The log's signer (a fixed seed: corpus notes carry its real signatures).
pub fn signer() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[7; 32]).expect("a valid key")
}

/// A parsed note prints back to exactly its text: the parser accepts one spelling only.
fn note_round_trip(note: &str) {
    use base64::Engine as _;
    let Ok(parsed) = note::parse(note) else {
        return;
    };
    let mut printed = format!("{}\n", parsed.text);
    for line in &parsed.signatures {
        let mut blob = line.key_id.to_be_bytes().to_vec();
        blob.extend_from_slice(&line.signature);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        printed.push_str(&format!("\u{2014} {} {b64}\n", line.name));
    }
    assert_eq!(printed, note, "a parsed note prints differently");
}

/// A note that verifies carries the very signature line the log's key makes for its text
/// (Ed25519 signatures are deterministic and the verifier accepts canonical ones only).
fn note_verifies_only_when_signed(note: &str, signer: &NoteSigner) {
    let Ok(signed_text) = signer.verifier().verify(note) else {
        return;
    };
    let ours = signer
        .sign(signed_text)
        .expect("a verified text can be signed");
    let line = &ours[signed_text.len() + 1..];
    let block = &note[signed_text.len() + 1..];
    assert!(
        block.starts_with(line) || block.contains(&format!("\n{line}")),
        "a note verified without the log's signature of its text: {note:?}"
    );
}

fn checkpoint_body(body: &str) {
    let Ok(checkpoint) = Checkpoint::parse_body(body) else {
        return;
    };
    assert_eq!(
        checkpoint.body(),
        body,
        "a parsed checkpoint prints differently"
    );
    // Signed by a key named after its origin, as callvault's log does.
    let Ok(signer) = NoteSigner::from_seed(checkpoint.origin(), &[7; 32]) else {
        return;
    };
    if let Ok(note) = checkpoint.sign(&signer) {
        let opened = Checkpoint::open(&note, &signer.verifier(), checkpoint.origin())
            .expect("a signed checkpoint opens");
        assert_eq!(opened, checkpoint);
    }
}

fn opened_checkpoint(note: &str, signer: &NoteSigner) {
    let Ok(checkpoint) = Checkpoint::open(note, &signer.verifier(), ORIGIN) else {
        return;
    };
    note_verifies_only_when_signed(note, signer);
    assert_eq!(checkpoint.origin(), ORIGIN);
}

fn vkey(text: &str) {
    if let Ok(verifier) = NoteVerifier::from_vkey(text) {
        assert_eq!(verifier.vkey(), text, "a parsed vkey prints differently");
    }
}

fn skey(text: &str) {
    if let Ok(signer) = NoteSigner::from_encoded(text) {
        let vkey = signer.verifier().vkey();
        let back = NoteVerifier::from_vkey(&vkey).expect("a signer's vkey parses");
        assert_eq!(back, signer.verifier());
    }
}

/// The `audit_notes` target: the first byte picks the parser, the rest is its text. The list
/// only grows at its end, so corpus files keep their meaning.
pub fn notes(input: &[u8]) {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let signer = signer();
    match which {
        0 => {
            note_round_trip(text);
            note_verifies_only_when_signed(text, &signer);
        }
        1 => checkpoint_body(text),
        2 => opened_checkpoint(text, &signer),
        3 => vkey(text),
        4 => skey(text),
        _ => {}
    }
}

/// Leaves in the reference tree: proofs are checked against every size up to this.
pub const TREE_LEAVES: u64 = 300;

type Tree = MerkleTree<MemoryNodeStore>;

thread_local! {
    static TREE: RefCell<Option<Tree>> = const { RefCell::new(None) };
}

fn entry(i: u64) -> Vec<u8> {
    format!("entry {i}").into_bytes()
}

fn with_tree<T>(f: impl FnOnce(&Tree) -> T) -> T {
    TREE.with(|cell| {
        let mut cell = cell.borrow_mut();
        let tree = cell.get_or_insert_with(|| {
            let mut tree = MerkleTree::new(MemoryNodeStore::new());
            for i in 0..TREE_LEAVES {
                tree.append(leaf_hash(&entry(i)))
                    .expect("an in-memory append");
            }
            tree
        });
        f(tree)
    })
}

/// Sizes and indexes: mostly inside the reference tree, sometimes anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Number {
    Small(u16),
    Raw(u64),
}

impl Number {
    fn get(self) -> u64 {
        match self {
            Number::Small(n) => u64::from(n) % (TREE_LEAVES + 2),
            Number::Raw(n) => n,
        }
    }
}

/// Any hash a proof might hold: a node of the reference tree, a root of it, or anything.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum ProofHash {
    Node(u8, u16),
    Root(u16),
    Raw([u8; 32]),
}

impl ProofHash {
    fn resolve(self, tree: &Tree) -> Hash {
        match self {
            ProofHash::Node(level, i) => {
                // Complete subtrees only: 2^level leaves, aligned.
                let level = level % 9;
                let count = (TREE_LEAVES >> level).max(1);
                let node = tree.store().node(level, u64::from(i) % count);
                node.expect("an in-memory read")
                    .expect("a complete subtree")
            }
            ProofHash::Root(n) => tree
                .root_at(u64::from(n) % (TREE_LEAVES + 1))
                .expect("a size of the tree"),
            ProofHash::Raw(bytes) => Hash(bytes),
        }
    }
}

/// A leaf: always a real leaf hash, of an entry of the tree or of other bytes. (The verifier
/// takes a leaf hash; handing it an inner node's hash is the caller's mistake, not a proof.)
#[derive(Arbitrary, Debug, Clone)]
enum Leaf {
    OfTree(u16),
    Other(Vec<u8>),
}

impl Leaf {
    fn resolve(&self) -> Hash {
        match self {
            Leaf::OfTree(i) => leaf_hash(&entry(u64::from(*i) % TREE_LEAVES)),
            Leaf::Other(bytes) => leaf_hash(bytes),
        }
    }
}

/// A trusted root, and the tree it is the root of: what a signed checkpoint vouches for.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Root {
    /// The reference tree's root at the size the proof claims.
    OfClaimedSize,
    /// The root of the one-leaf tree holding entry `i`.
    OneLeaf(u16),
    /// The root of no tree anyone knows.
    Raw([u8; 32]),
}

impl Root {
    fn resolve(self, tree: &Tree, claimed_size: u64) -> Hash {
        match self {
            Root::OfClaimedSize if claimed_size <= TREE_LEAVES => {
                tree.root_at(claimed_size).expect("a size of the tree")
            }
            Root::OfClaimedSize => Hash([0; 32]),
            Root::OneLeaf(i) => leaf_hash(&entry(u64::from(i) % TREE_LEAVES)),
            Root::Raw(bytes) => Hash(bytes),
        }
    }
}

/// Edits that turn the real proof into a near miss.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Edit {
    Drop(u8),
    Duplicate(u8),
    Swap(u8, u8),
    Replace(u8, ProofHash),
    Push(ProofHash),
    Truncate(u8),
}

fn edit(proof: &mut Vec<Hash>, edits: &[Edit], tree: &Tree) {
    for e in edits {
        let len = proof.len();
        let at = |i: u8| usize::from(i) % len.max(1);
        match *e {
            Edit::Drop(i) if len > 0 => {
                proof.remove(at(i));
            }
            Edit::Duplicate(i) if len > 0 => proof.insert(at(i), proof[at(i)]),
            Edit::Swap(i, j) if len > 0 => proof.swap(at(i), at(j)),
            Edit::Replace(i, h) if len > 0 => proof[at(i)] = h.resolve(tree),
            Edit::Push(h) => proof.push(h.resolve(tree)),
            Edit::Truncate(n) => proof.truncate(usize::from(n)),
            _ => {}
        }
    }
}

#[derive(Arbitrary, Debug)]
enum ProofInput {
    Inclusion {
        leaf: Leaf,
        index: Number,
        size: Number,
        root: Root,
        /// The real proof edits start from: of this index in this size.
        proof_of: (Number, Number),
        edits: Vec<Edit>,
    },
    Consistency {
        first: Number,
        second: Number,
        first_root: Root,
        second_root: Root,
        /// The real proof edits start from: between these sizes.
        proof_of: (Number, Number),
        edits: Vec<Edit>,
    },
    /// A proof as a peer sends it: repeated bytes fields.
    Received(Vec<Vec<u8>>),
}

/// An inclusion proof that verifies is a true statement about the tree its root belongs to.
fn inclusion(tree: &Tree, leaf: &Leaf, index: u64, size: u64, root: Root, proof: &[Hash]) {
    let (leaf_hash, root_hash) = (leaf.resolve(), root.resolve(tree, size));
    if verify_inclusion(&leaf_hash, index, size, proof, &root_hash).is_err() {
        return;
    }
    match root {
        Root::OfClaimedSize => {
            assert!(
                size <= TREE_LEAVES,
                "verified for a size no tree had: {size}"
            );
            let real = tree
                .inclusion_proof(index, size)
                .expect("a proof of the tree");
            assert_eq!(
                leaf_hash,
                tree.leaf(index).expect("a leaf"),
                "wrong leaf verified"
            );
            assert_eq!(
                proof,
                real.hashes.as_slice(),
                "a proof not the tree's verified"
            );
        }
        Root::OneLeaf(_) => {
            assert_eq!(
                (index, size),
                (0, 1),
                "a one-leaf tree verified at {index} of {size}"
            );
            assert_eq!(
                leaf_hash, root_hash,
                "wrong leaf verified in a one-leaf tree"
            );
            assert!(proof.is_empty());
        }
        Root::Raw(_) => panic!("an inclusion proof verified under a root of no known tree"),
    }
}

/// A consistency proof that verifies joins two roots of the same growing tree.
fn consistency(tree: &Tree, first: u64, second: u64, roots: (Root, Root), proof: &[Hash]) {
    let r1 = roots.0.resolve(tree, first);
    let r2 = roots.1.resolve(tree, second);
    if verify_consistency(first, second, &r1, &r2, proof).is_err() {
        return;
    }
    if first == second {
        assert_eq!(r1, r2, "equal sizes verified with different roots");
        assert!(proof.is_empty());
        return;
    }
    assert!(
        matches!(roots.1, Root::OfClaimedSize) && second <= TREE_LEAVES,
        "verified {first} -> {second} into a root of no known tree of that size: {roots:?}"
    );
    assert_eq!(
        r1,
        tree.root_at(first).expect("a size"),
        "wrong first root verified"
    );
    let real = tree
        .consistency_proof(first, second)
        .expect("a proof of the tree");
    assert_eq!(
        proof,
        real.hashes.as_slice(),
        "a proof not the tree's verified"
    );
}

fn real_inclusion(tree: &Tree, (i, n): (Number, Number)) -> Vec<Hash> {
    tree.inclusion_proof(i.get(), n.get())
        .map(|p| p.hashes)
        .unwrap_or_default()
}

fn real_consistency(tree: &Tree, (a, b): (Number, Number)) -> Vec<Hash> {
    tree.consistency_proof(a.get(), b.get())
        .map(|p| p.hashes)
        .unwrap_or_default()
}

/// The `audit_proofs` target: proofs near the reference tree's real ones must verify exactly
/// when they are real.
pub fn proofs(bytes: &[u8]) {
    let Ok(input) = ProofInput::arbitrary_take_rest(Unstructured::new(bytes)) else {
        return;
    };
    with_tree(|tree| match input {
        ProofInput::Inclusion {
            leaf,
            index,
            size,
            root,
            proof_of,
            edits,
        } => {
            let mut proof = real_inclusion(tree, proof_of);
            edit(&mut proof, &edits, tree);
            inclusion(tree, &leaf, index.get(), size.get(), root, &proof);
        }
        ProofInput::Consistency {
            first,
            second,
            first_root,
            second_root,
            proof_of,
            edits,
        } => {
            let mut proof = real_consistency(tree, proof_of);
            edit(&mut proof, &edits, tree);
            let roots = (first_root, second_root);
            consistency(tree, first.get(), second.get(), roots, &proof);
        }
        ProofInput::Received(hashes) => {
            if let Ok(hashes) = hashes_from_bytes(&hashes) {
                let leaf = Leaf::OfTree(7);
                inclusion(tree, &leaf, 7, TREE_LEAVES, Root::OfClaimedSize, &hashes);
            }
        }
    })
}
