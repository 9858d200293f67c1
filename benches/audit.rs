//! Costs of the audit log: appends into the in-memory node store (the tree alone); appends inside
//! the metadata store's state machine (entry bytes, subject index and tree nodes in RocksDB
//! column families, written by the same atomic batch as an apply); and proofs at 10,000,000
//! entries: their sizes (what an auditor downloads per check) and the time to generate and
//! verify them.
//!
//! `cargo bench --workspace --bench audit` prints the proof sizes before the timings.
//! `CALLVAULT_BENCH_AUDIT_PREFILL` (default 1,000,000) is how many entries the state machine holds
//! before its appends are timed; the fill rate is printed too.

use std::hint::black_box;
use std::time::Instant;

use callvault_audit::proof::{consistency_proof_len, inclusion_proof_len};
use callvault_audit::{
    AccessDecision, AuditEntry, AuditEvent, Hash, MemoryNodeStore, MerkleTree, leaf_hash,
};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::Command;
use callvault_meta::StateMachineStore;
use callvault_meta::apply::{LogPosition, apply_command};
use callvault_meta::audit_log::{self, Event};
use callvault_meta::auth_failures::{AuthFailureReport, MAX_SOURCES_PER_REPORT, SourceFailures};
use callvault_meta::txn::Txn;
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

/// A content access as the playback path will log it: the heaviest common entry.
fn access_event(i: u64) -> Event {
    Event {
        event: AuditEvent::ContentAccess(AccessDecision::Allowed),
        time: UnixMillis(1_764_000_000_000 + i as i64),
        principal: "investigator:tx-ag-0042".into(),
        jurisdiction: Some(Jurisdiction::Tx),
        subject: format!("tx-huntsville-2026-11-24-{i:09}"),
        outcome: "allowed".into(),
        details: vec![
            ("case_number", "2026-CR-00917".into()),
            ("reason", "subpoena review".into()),
        ],
    }
}

/// Appends `count` entries in atomic writes of `per_write`, as applies do.
fn append_in_state_machine(sm: &StateMachineStore, first: u64, count: u64, per_write: u64) {
    let db = sm.db();
    let mut i = first;
    while i < first + count {
        let mut txn = Txn::new(&db);
        for _ in 0..per_write.min(first + count - i) {
            audit_log::append(&mut txn, access_event(i)).expect("append");
            i += 1;
        }
        db.write(txn.into_batch()).expect("write");
    }
}

fn state_machine_appends(c: &mut Criterion) {
    let prefill: u64 = std::env::var("CALLVAULT_BENCH_AUDIT_PREFILL")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let sm = StateMachineStore::open(dir.path()).expect("state machine");
    let started = Instant::now();
    append_in_state_machine(&sm, 0, prefill, 1024);
    let took = started.elapsed();
    println!(
        "audit: filled the state machine with {prefill} entries in {took:.2?} \
         ({:.0} entries/s in writes of 1024)",
        prefill as f64 / took.as_secs_f64()
    );
    let mut next = prefill;
    let mut group = c.benchmark_group("audit_state_machine");
    for per_write in [1u64, 64, 1024] {
        group.throughput(Throughput::Elements(per_write));
        group.bench_function(format!("append_{per_write}_per_apply"), |b| {
            b.iter(|| {
                append_in_state_machine(&sm, next, per_write, per_write);
                next += per_write;
            })
        });
    }
    // The whole apply path of one command that logs many entries: a failed-authentication
    // report of the most sources a report may name.
    let report = Command::RecordAuthFailures(AuthFailureReport {
        node_id: 1,
        window_start: UnixMillis(1_764_000_000_000),
        window_end: UnixMillis(1_764_000_060_000),
        sources: (0..MAX_SOURCES_PER_REPORT as u32)
            .map(|i| SourceFailures {
                peer: Some(std::net::IpAddr::V4(std::net::Ipv4Addr::from(
                    0xc633_6400 + i,
                ))),
                missing: 0,
                malformed: 0,
                unknown: 1000 + i,
                first_at: UnixMillis(1_764_000_000_001),
                last_at: UnixMillis(1_764_000_059_999),
                token_hash_prefix: Some(i.to_be_bytes()),
                distinct_tokens: 16,
            })
            .collect(),
        other_failures: 0,
        reports_lost: 0,
    });
    let db = sm.db();
    let mut index = 1u64;
    group.throughput(Throughput::Elements(MAX_SOURCES_PER_REPORT as u64));
    group.bench_function("apply_auth_failure_report_256_sources", |b| {
        b.iter(|| {
            let mut txn = Txn::new(&db);
            apply_command(&mut txn, &report, LogPosition { term: 1, index }).expect("apply");
            db.write(txn.into_batch()).expect("write");
            index += 1;
        })
    });
    group.finish();
}

/// Proof sizes follow from the tree size alone (RFC 6962), so they are computed for the whole
/// range at 10M, where the tree-building bench below samples them.
fn print_proof_sizes_at_ten_million() {
    let sizes: Vec<usize> = (0..LARGE)
        .step_by(997)
        .chain([LARGE - 1])
        .filter_map(|i| inclusion_proof_len(i, LARGE))
        .collect();
    let (min, max) = (
        sizes.iter().min().copied().unwrap_or(0),
        sizes.iter().max().copied().unwrap_or(0),
    );
    let mean = sizes.iter().sum::<usize>() as f64 / sizes.len() as f64;
    println!(
        "audit: inclusion proofs at {LARGE} entries (every 997th leaf): {min}..={max} hashes, \
         mean {mean:.1} ({}..={} bytes)",
        min * 32,
        max * 32
    );
    let consistency: Vec<usize> = (1..LARGE)
        .step_by(9_973)
        .filter_map(|first| consistency_proof_len(first, LARGE))
        .collect();
    let (min, max) = (
        consistency.iter().min().copied().unwrap_or(0),
        consistency.iter().max().copied().unwrap_or(0),
    );
    println!(
        "audit: consistency proofs to {LARGE} entries (every 9973rd first size): {min}..={max} \
         hashes ({}..={} bytes)",
        min * 32,
        max * 32
    );
}

fn proof_size_table(_: &mut Criterion) {
    print_proof_sizes_at_ten_million();
}

criterion_group!(
    benches,
    proof_size_table,
    append,
    state_machine_appends,
    proofs_at_ten_million
);
criterion_main!(benches);
