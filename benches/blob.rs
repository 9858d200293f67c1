//! Blob-path costs: sealing + naming audio chunks on one core (ingest's CPU cost per byte), and
//! fsync'd chunk puts on one shard's RocksDB store.
//!
//! `cargo bench --workspace --bench blob`

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callvault_blob::ChunkId;
use callvault_blob::envelope::{CallSealer, KeyEncryptionKey, KeyRing};
use callvault_blob::store::{ChunkStore, RocksChunkStore, StoreOptions};
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};

const SIZES: [usize; 3] = [16 << 10, 64 << 10, 1 << 20];

fn audio(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 + i / 7) as u8).collect()
}

/// Seal (AES-256-GCM with AAD) + blake3 chunk id, per core; and each half alone for reference.
fn seal_and_hash(c: &mut Criterion) {
    let mut ring = KeyRing::new();
    ring.insert(Jurisdiction::Tx, KeyEncryptionKey::from_bytes([7; 32]));
    let call = CallId::new("tx-bench-call").unwrap();
    let sealer = CallSealer::new(&ring, &call, Jurisdiction::Tx).unwrap();
    let raw_key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[9; 32]).unwrap());

    let mut group = c.benchmark_group("chunk_crypto");
    for size in SIZES {
        let plain = audio(size);
        group.throughput(Throughput::Bytes(size as u64));
        let mut seq = 0u64;
        group.bench_with_input(BenchmarkId::new("seal+blake3", size), &plain, |b, plain| {
            b.iter(|| {
                seq += 1;
                black_box(sealer.seal(seq, plain))
            })
        });
        let mut buf = plain.clone();
        group.bench_with_input(
            BenchmarkId::new("aes256gcm_in_place", size),
            &size,
            |b, _| {
                let mut n = 0u64;
                b.iter(|| {
                    n += 1;
                    let mut nonce = [0u8; 12];
                    nonce[4..].copy_from_slice(&n.to_be_bytes());
                    black_box(
                        raw_key
                            .seal_in_place_separate_tag(
                                Nonce::assume_unique_for_key(nonce),
                                Aad::from(b"aad"),
                                &mut buf,
                            )
                            .unwrap(),
                    )
                })
            },
        );
        group.bench_with_input(BenchmarkId::new("blake3", size), &plain, |b, plain| {
            b.iter(|| black_box(ChunkId::of(plain)))
        });
    }
    group.finish();
}

/// Fsync'd puts of distinct 64 KiB chunks into one shard's store. `writers` threads put at once:
/// RocksDB folds concurrent synced writes into one WAL fsync (group commit), which is how a shard
/// serving many ingest streams batches without a batch API. Each iteration is one put per writer.
fn store_put(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let store = RocksChunkStore::open(&dir.path().join("shard"), &StoreOptions::default()).unwrap();
    let counter = AtomicU64::new(0);
    let size = 64 << 10;
    let mut group = c.benchmark_group("store_put_fsync");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(10));
    for writers in [1usize, 8] {
        group.throughput(Throughput::Bytes((size * writers) as u64));
        group.bench_function(BenchmarkId::new("64KiB_writers", writers), |b| {
            b.iter_custom(|iters| {
                // Chunks are made outside the timed region: hashing is measured above.
                let chunks: Vec<Vec<(ChunkId, Vec<u8>)>> = (0..writers)
                    .map(|_| {
                        (0..iters)
                            .map(|_| {
                                let mut bytes = audio(size);
                                let n = counter.fetch_add(1, Ordering::Relaxed);
                                bytes[..8].copy_from_slice(&n.to_le_bytes());
                                (ChunkId::of(&bytes), bytes)
                            })
                            .collect()
                    })
                    .collect();
                let started = Instant::now();
                std::thread::scope(|s| {
                    for mine in &chunks {
                        let store = &store;
                        s.spawn(move || {
                            for (id, bytes) in mine {
                                store.put(*id, bytes, UnixMillis(0)).unwrap();
                            }
                        });
                    }
                });
                started.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, seal_and_hash, store_put);
criterion_main!(benches);
