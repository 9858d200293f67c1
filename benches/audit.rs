//! Costs of the audit log: appends into the in-memory node store (every audited event pays one
//! inside a Raft apply), and proofs at 10,000,000 entries: their sizes (what an auditor
//! downloads per check) and the time to generate and verify them.
//!
//! `cargo bench --workspace --bench audit` prints the proof sizes before the timings.

use std::hint::black_box;
use std::time::Instant;

use callvault_audit::proof::{consistency_proof_len, inclusion_proof_len};
use callvault_audit::{
    AccessDecision, AuditEntry, AuditEvent, Hash, MemoryNodeStore, MerkleTree, leaf_hash,
};
use callvault_core::{Jurisdiction, UnixMillis};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

const BATCH: u64 = 10_000;
const LARGE: u64 = 10_000_000;

fn entry(sequence: u64) -> AuditEntry {
    AuditEntry::builder(
        sequence,
        UnixMillis(1_764_000_000_000 + sequence as i64),
        AuditEvent::ContentAccess(AccessDecision::Allowed),
        "investigator:tx-ag-0042",
    )
    .jurisdiction(Jurisdiction::Tx)
    .subject(format!("tx-huntsville-2026-11-24-{sequence:06}"))
    .outcome("allowed")
    .detail("case_number", "2026-CR-00917")
    .detail("reason", "subpoena review")
    .build()
    .expect("valid entry")
}

fn append(c: &mut Criterion) {
    let leaves: Vec<Hash> = (0..BATCH).map(|i| leaf_hash(&i.to_le_bytes())).collect();
    let entries: Vec<AuditEntry> = (0..BATCH).map(entry).collect();
    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("leaf_hashes_10k", |b| {
        b.iter_batched(
            || MerkleTree::new(MemoryNodeStore::new()),
            |mut tree| {
                for leaf in &leaves {
                    tree.append(*leaf).expect("append");
                }
                tree
            },
            BatchSize::LargeInput,
        )
    });
    // The whole per-event cost: canonical encoding, leaf hash, tree append.
    group.bench_function("entries_10k", |b| {
        b.iter_batched(
            || MerkleTree::new(MemoryNodeStore::new()),
            |mut tree| {
                for e in &entries {
                    tree.append_entry(e).expect("append");
                }
                tree
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

fn proofs_at_ten_million(c: &mut Criterion) {
    let started = Instant::now();
    let mut tree = MerkleTree::new(MemoryNodeStore::new());
    for i in 0..LARGE {
        tree.append(leaf_hash(&i.to_le_bytes())).expect("append");
    }
    let built = started.elapsed();
    let root = tree.root().expect("root");
    println!(
        "audit: built a {LARGE}-leaf tree in {:.2?} ({:.0} leaves/s, {} stored nodes, {} MiB)",
        built,
        LARGE as f64 / built.as_secs_f64(),
        tree.store().node_count(),
        tree.store().node_count() * 32 / (1024 * 1024),
    );

    let inclusion_sizes: Vec<usize> = [0, LARGE / 2, LARGE - 2, LARGE - 1]
        .into_iter()
        .map(|i| tree.inclusion_proof(i, LARGE).expect("proof").hashes.len())
        .collect();
    let worst_inclusion = (0..LARGE)
        .step_by(9_973)
        .filter_map(|i| inclusion_proof_len(i, LARGE))
        .max()
        .unwrap_or(0);
    println!(
        "audit: inclusion proof at {LARGE} entries (leaf 0, middle, last two): {:?} hashes; \
         largest {} hashes = {} bytes",
        inclusion_sizes,
        worst_inclusion,
        worst_inclusion * 32
    );
    for first in [1, 1_000, LARGE / 2, LARGE - 1_000, LARGE - 1] {
        let proof = tree.consistency_proof(first, LARGE).expect("proof");
        assert_eq!(
            Some(proof.hashes.len()),
            consistency_proof_len(first, LARGE)
        );
        println!(
            "audit: consistency proof {first} -> {LARGE}: {} hashes = {} bytes",
            proof.hashes.len(),
            proof.hashes.len() * 32
        );
    }

    let mut group = c.benchmark_group("audit_proofs_10m");
    let index = LARGE / 2 + 12_345;
    let leaf = leaf_hash(&index.to_le_bytes());
    group.bench_function("inclusion_generate", |b| {
        b.iter(|| {
            tree.inclusion_proof(black_box(index), LARGE)
                .expect("proof")
        })
    });
    let proof = tree.inclusion_proof(index, LARGE).expect("proof");
    group.bench_function("inclusion_verify", |b| {
        b.iter(|| proof.verify(black_box(&leaf), &root).expect("verifies"))
    });
    let first = LARGE - 123_457;
    let first_root = tree.root_at(first).expect("root");
    group.bench_function("consistency_generate", |b| {
        b.iter(|| {
            tree.consistency_proof(black_box(first), LARGE)
                .expect("proof")
        })
    });
    let proof = tree.consistency_proof(first, LARGE).expect("proof");
    group.bench_function("consistency_verify", |b| {
        b.iter(|| {
            proof
                .verify(black_box(&first_root), &root)
                .expect("verifies")
        })
    });
    group.bench_function("root_at_old_size", |b| {
        b.iter(|| tree.root_at(black_box(first)).expect("root"))
    });
    group.finish();
}

criterion_group!(benches, append, proofs_at_ten_million);
criterion_main!(benches);
