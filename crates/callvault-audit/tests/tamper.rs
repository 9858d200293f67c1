//! Invariant 6 of ARCHITECTURE.md: "Every content access and lifecycle event is in the audit log
//! before its effect is visible; the log verifies (inclusion and consistency proofs) and any
//! tampering is detected." Each test tampers with a log the way an insider with write access to
//! the store could, and checks that an auditor holding only the pinned vkey, the last checkpoint
//! it trusted, and what the log serves notices.

use callvault_audit::{
    AccessDecision, AuditEntry, AuditEvent, Checkpoint, CheckpointError, ConsistencyProof, Hash,
    MemoryNodeStore, MerkleTree, NoteError, NoteSigner, NoteVerifier, TreeError, VerifyError,
    leaf_hash,
};
use callvault_core::codec::VersionedRecord;
use callvault_core::{Jurisdiction, UnixMillis};

const ORIGIN: &str = "callvault.example/audit";

fn log_key() -> NoteSigner {
    NoteSigner::from_seed(ORIGIN, &[0x42; 32]).unwrap()
}

fn entry(sequence: u64) -> AuditEntry {
    let event = match sequence % 4 {
        0 => AuditEvent::CallRecorded,
        1 => AuditEvent::ContentAccess(AccessDecision::Allowed),
        2 => AuditEvent::HoldPlaced,
        _ => AuditEvent::ContentAccess(AccessDecision::Denied),
    };
    AuditEntry::builder(
        sequence,
        UnixMillis(1_764_000_000_000 + sequence as i64),
        event,
        "investigator:tx-ag-0042",
    )
    .jurisdiction(Jurisdiction::Tx)
    .subject(format!("tx-huntsville-2026-11-24-{sequence:06}"))
    .outcome("ok")
    .detail("case_number", "2026-CR-00917")
    .build()
    .unwrap()
}

/// What the log serves: the entry bytes, as stored.
fn honest_entries(n: u64) -> Vec<Vec<u8>> {
    (0..n).map(|i| entry(i).encode()).collect()
}

fn tree_of(entries: &[Vec<u8>]) -> MerkleTree<MemoryNodeStore> {
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    for bytes in entries {
        tree.append_entry_bytes(bytes).unwrap();
    }
    tree
}

/// The log's signed checkpoint at its current size.
fn checkpoint_note(tree: &MerkleTree<MemoryNodeStore>) -> String {
    Checkpoint::new(ORIGIN, tree.size().unwrap(), tree.root().unwrap())
        .unwrap()
        .sign(&log_key())
        .unwrap()
}

/// An auditor that pins the vkey (as text, the way it is configured) and trusts a checkpoint.
fn auditor_opens(note: &str) -> Result<Checkpoint, CheckpointError> {
    let vkey = log_key().verifier().vkey();
    Checkpoint::open(note, &NoteVerifier::from_vkey(&vkey).unwrap(), ORIGIN)
}

/// The auditor's full check of served entries against a checkpoint: every entry decodes, sits
/// at its own sequence, and the entries rebuild the checkpoint's root.
fn audit_entries(entries: &[Vec<u8>], checkpoint: &Checkpoint) -> Result<(), String> {
    if entries.len() as u64 != checkpoint.size() {
        return Err(format!(
            "{} entries served for a checkpoint of {}",
            entries.len(),
            checkpoint.size()
        ));
    }
    for (i, bytes) in entries.iter().enumerate() {
        let e = AuditEntry::decode(bytes).map_err(|e| e.to_string())?;
        if e.sequence() != i as u64 {
            return Err(format!("entry {i} says sequence {}", e.sequence()));
        }
    }
    let root = tree_of(entries).root().unwrap();
    if root != *checkpoint.root() {
        return Err(format!(
            "entries rebuild root {root}, checkpoint says {}",
            checkpoint.root()
        ));
    }
    Ok(())
}

#[test]
fn an_honest_log_verifies_end_to_end() {
    let entries = honest_entries(100);
    let tree = tree_of(&entries);
    let trusted = auditor_opens(&checkpoint_note(&tree)).unwrap();
    audit_entries(&entries, &trusted).unwrap();
    for i in [0u64, 1, 37, 99] {
        let proof = tree.inclusion_proof(i, 100).unwrap();
        proof
            .verify(&leaf_hash(&entries[i as usize]), trusted.root())
            .unwrap();
    }
    // The log grows; the auditor accepts the new checkpoint only with a consistency proof.
    let more = honest_entries(150);
    let grown = tree_of(&more);
    let newer = auditor_opens(&checkpoint_note(&grown)).unwrap();
    let proof = grown.consistency_proof(100, 150).unwrap();
    newer.verify_extends(&trusted, &proof).unwrap();
}

#[test]
fn append_entry_refuses_a_sequence_that_is_not_the_next_index() {
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    tree.append_entry(&entry(0)).unwrap();
    assert!(matches!(
        tree.append_entry(&entry(2)),
        Err(TreeError::SequenceMismatch {
            sequence: 2,
            tree_size: 1
        })
    ));
    let leaf = tree.append_entry(&entry(1)).unwrap();
    assert_eq!(leaf, leaf_hash(&entry(1).encode()));
}

#[test]
fn a_changed_entry_is_detected() {
    let entries = honest_entries(100);
    let tree = tree_of(&entries);
    let trusted = auditor_opens(&checkpoint_note(&tree)).unwrap();
    // An insider turns a denied access into an allowed one after the fact.
    let mut served = entries.clone();
    let original = AuditEntry::decode(&served[43]).unwrap();
    assert_eq!(
        original.event(),
        AuditEvent::ContentAccess(AccessDecision::Denied)
    );
    let forged = AuditEntry::builder(
        43,
        original.time(),
        AuditEvent::ContentAccess(AccessDecision::Allowed),
        original.principal(),
    )
    .jurisdiction(Jurisdiction::Tx)
    .subject(original.subject())
    .outcome(original.outcome())
    .detail("case_number", "2026-CR-00917")
    .build()
    .unwrap();
    served[43] = forged.encode();
    assert!(audit_entries(&served, &trusted).is_err());
    // Its inclusion proof from the honest tree does not lead to the checkpoint's root.
    let proof = tree.inclusion_proof(43, 100).unwrap();
    assert!(matches!(
        proof.verify(&leaf_hash(&served[43]), trusted.root()),
        Err(VerifyError::RootMismatch { .. })
    ));
    // Nor does a proof from a tree rebuilt around the forgery.
    let rebuilt = tree_of(&served);
    let proof = rebuilt.inclusion_proof(43, 100).unwrap();
    assert!(
        proof
            .verify(&leaf_hash(&served[43]), trusted.root())
            .is_err()
    );
    // A single flipped bit in any entry is enough.
    for i in [0usize, 50, 99] {
        let mut flipped = entries.clone();
        let last = flipped[i].len() - 1;
        flipped[i][last] ^= 1;
        assert!(
            audit_entries(&flipped, &trusted).is_err(),
            "bit flip in {i}"
        );
    }
}

#[test]
fn a_dropped_last_entry_is_detected() {
    let entries = honest_entries(100);
    let tree = tree_of(&entries);
    let trusted = auditor_opens(&checkpoint_note(&tree)).unwrap();
    let truncated = &entries[..99];
    // Served against the trusted checkpoint: one entry short.
    assert!(audit_entries(truncated, &trusted).is_err());
    // The truncated log signs a fresh checkpoint (the insider holds the key): rolling back
    // is not an extension, whatever proof comes with it.
    let rolled_back = auditor_opens(&checkpoint_note(&tree_of(truncated))).unwrap();
    audit_entries(truncated, &rolled_back).unwrap();
    let proof = ConsistencyProof {
        first: 100,
        second: 99,
        hashes: Vec::new(),
    };
    assert!(matches!(
        rolled_back.verify_extends(&trusted, &proof),
        Err(CheckpointError::Inconsistent(
            VerifyError::SizesOutOfOrder { .. }
        ))
    ));
    // Then re-grows to 100 with a different last entry: a fork at the same size.
    let mut regrown = truncated.to_vec();
    regrown.push(
        AuditEntry::builder(99, UnixMillis(0), AuditEvent::Expiry, "system:sweeper")
            .build()
            .unwrap()
            .encode(),
    );
    let forked = auditor_opens(&checkpoint_note(&tree_of(&regrown))).unwrap();
    let same_size = ConsistencyProof {
        first: 100,
        second: 100,
        hashes: Vec::new(),
    };
    assert!(matches!(
        forked.verify_extends(&trusted, &same_size),
        Err(CheckpointError::Inconsistent(
            VerifyError::DifferentRootsAtSameSize { size: 100 }
        ))
    ));
}

#[test]
fn two_reordered_entries_are_detected() {
    let entries = honest_entries(100);
    let tree = tree_of(&entries);
    let trusted = auditor_opens(&checkpoint_note(&tree)).unwrap();
    let mut swapped = entries.clone();
    swapped.swap(10, 11);
    assert!(audit_entries(&swapped, &trusted).is_err());
    // Even ignoring the sequence field, the swapped leaves rebuild another root...
    assert_ne!(tree_of(&swapped).root().unwrap(), *trusted.root());
    // ...and an entry's proof does not hold at another index.
    let proof = tree.inclusion_proof(10, 100).unwrap();
    assert!(
        callvault_audit::verify_inclusion(
            &leaf_hash(&entries[11]),
            10,
            100,
            &proof.hashes,
            trusted.root()
        )
        .is_err()
    );
}

#[test]
fn a_validly_signed_checkpoint_of_a_forked_log_is_detected() {
    let entries = honest_entries(200);
    let honest = tree_of(&entries);
    let trusted = auditor_opens(&checkpoint_note(&tree_of(&entries[..120]))).unwrap();

    // The fork rewrote entry 77 (before the trusted size) and went on to 200 entries; its
    // checkpoint carries a perfectly valid signature.
    let mut rewritten = entries.clone();
    rewritten[77] = AuditEntry::builder(77, UnixMillis(0), AuditEvent::Expiry, "system:sweeper")
        .build()
        .unwrap()
        .encode();
    let fork = tree_of(&rewritten);
    let fork_checkpoint = auditor_opens(&checkpoint_note(&fork)).unwrap();
    assert_eq!(fork_checkpoint.size(), 200);

    // Neither the fork's own consistency proof nor the honest log's one connects them.
    for proof in [
        fork.consistency_proof(120, 200).unwrap(),
        honest.consistency_proof(120, 200).unwrap(),
    ] {
        assert!(matches!(
            fork_checkpoint.verify_extends(&trusted, &proof),
            Err(CheckpointError::Inconsistent(
                VerifyError::FirstRootMismatch { .. } | VerifyError::SecondRootMismatch { .. }
            ))
        ));
    }
    // The honest checkpoint does extend it.
    let honest_checkpoint = auditor_opens(&checkpoint_note(&honest)).unwrap();
    honest_checkpoint
        .verify_extends(&trusted, &honest.consistency_proof(120, 200).unwrap())
        .unwrap();
    // A proof for other sizes is refused outright.
    assert!(matches!(
        honest_checkpoint.verify_extends(&trusted, &honest.consistency_proof(100, 200).unwrap()),
        Err(CheckpointError::Inconsistent(
            VerifyError::WrongProofSizes { .. }
        ))
    ));
}

#[test]
fn checkpoints_signed_by_another_key_truncated_or_with_junk_fail() {
    let tree = tree_of(&honest_entries(10));
    let note = checkpoint_note(&tree);
    auditor_opens(&note).unwrap();

    let impostor = NoteSigner::from_seed(ORIGIN, &[0x13; 32]).unwrap();
    let cp = Checkpoint::new(ORIGIN, 10, tree.root().unwrap()).unwrap();
    assert!(matches!(
        auditor_opens(&cp.sign(&impostor).unwrap()),
        Err(CheckpointError::Note(NoteError::NotSignedByKey { .. }))
    ));

    // Truncated anywhere: never accepted.
    for n in 0..note.len() {
        if note.is_char_boundary(n) {
            assert!(auditor_opens(&note[..n]).is_err(), "truncated to {n}");
        }
    }
    // Junk before, inside or after.
    for bad in [
        format!("junk\n{note}"),
        format!("{note}junk\n"),
        format!("{note}\n"),
        note.replacen("\n10\n", "\n10 \n", 1),
        note.replacen("\n10\n", "\n11\n", 1),
        note.replace('\n', "\r\n"),
    ] {
        assert!(auditor_opens(&bad).is_err(), "accepted {bad:?}");
    }
    // A checkpoint text that is validly signed but malformed is still refused.
    let malformed = log_key().sign(&format!(
        "{ORIGIN}\n010\n{}\n",
        tree.root().unwrap().to_base64()
    ));
    assert!(matches!(
        auditor_opens(&malformed.unwrap()),
        Err(CheckpointError::MalformedBody { line: 2, .. })
    ));
    // And one for another log is refused by origin.
    let other = Checkpoint::new("other.example/log", 10, Hash([0; 32])).unwrap();
    assert!(matches!(
        auditor_opens(&other.sign(&log_key()).unwrap()),
        Err(CheckpointError::WrongOrigin { .. })
    ));
}
