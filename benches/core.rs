//! Costs of the pure decisions on the ingest and apply paths: number normalization (every call
//! and every registry entry) and call-record encoding (every apply).

use std::hint::black_box;

use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::codec::VersionedRecord;
use callvault_core::{Jurisdiction, UnixMillis, normalize};
use criterion::{Criterion, criterion_group, criterion_main};

fn sample_call() -> CallRecord {
    CallRecord {
        call_id: CallId::new("tx-huntsville-2026-11-24-000123").unwrap(),
        jurisdiction: Jurisdiction::Tx,
        facility_id: "huntsville-unit".into(),
        inmate_id: "TDCJ-01234567".into(),
        number_fingerprint: [7; 32],
        direction: Direction::Outbound,
        started_at: UnixMillis(1_764_000_000_000),
        ended_at: UnixMillis(1_764_000_900_000),
        byte_length: 7_200_000,
        chunk_count: 28,
        plaintext_digest: [9; 32],
        committed_under_policy: 3,
        sealed: false,
        lifecycle: Lifecycle::Live,
        holds: Vec::new(),
    }
}

fn phone(c: &mut Criterion) {
    let mut group = c.benchmark_group("phone");
    for (name, input) in [
        ("nanp_formatted", "(512) 555-0100"),
        ("international", "011 44 20 7946 0958"),
        ("rejected_letters", "1-800-FLOWERS"),
    ] {
        group.bench_function(name, |b| b.iter(|| normalize(black_box(input))));
    }
    group.finish();
}

fn records(c: &mut Criterion) {
    let call = sample_call();
    let bytes = call.encode();
    let mut group = c.benchmark_group("call_record");
    group.bench_function("encode", |b| b.iter(|| black_box(&call).encode()));
    group.bench_function("decode", |b| {
        b.iter(|| CallRecord::decode(black_box(&bytes)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, phone, records);
criterion_main!(benches);
