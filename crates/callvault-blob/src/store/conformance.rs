//! The conformance suite every [`ChunkStore`] must pass, in the spirit of `openraft::testing`.
//!
//! An implementation's test calls [`run`] with a [`StoreHarness`] that makes fresh stores and
//! reopens them (to check durability). Failures panic with a message naming the broken rule.

use callvault_core::UnixMillis;

use super::{ChunkStore, MarkState, PutOutcome, ShredMode, StoreError, StoreStats};
use crate::chunk::{ChunkId, MAX_CHUNK_BYTES};

/// Makes stores for the suite.
pub trait StoreHarness {
    /// The store under test.
    type Store: ChunkStore;
    /// A new, empty store.
    fn fresh(&mut self) -> Self::Store;
    /// Closes `store` and opens the same one again.
    fn reopen(&mut self, store: Self::Store) -> Self::Store;
}

/// Deterministic chunk bytes of `len` bytes, distinct per `seed`.
pub fn chunk_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 32);
    let mut counter = 0u64;
    while out.len() < len {
        let mut hasher = blake3::Hasher::new();
        hasher.update(&seed.to_le_bytes());
        hasher.update(&counter.to_le_bytes());
        out.extend_from_slice(hasher.finalize().as_bytes());
        counter += 1;
    }
    out.truncate(len);
    out
}

fn chunk(seed: u64, len: usize) -> (ChunkId, Vec<u8>) {
    let bytes = chunk_bytes(seed, len);
    (ChunkId::of(&bytes), bytes)
}

const T0: UnixMillis = UnixMillis(1_000_000);

/// Runs every rule against stores from `harness`.
pub fn run<H: StoreHarness>(harness: &mut H) {
    put_get_round_trip_and_counts(harness);
    put_is_idempotent(harness);
    put_refuses_wrong_ids_and_oversized_chunks(harness);
    has_answers_in_order(harness);
    delete_removes_only_that_chunk(harness);
    ids_after_pages_every_chunk_once(harness);
    marks_keep_the_earliest_time_and_chunks_stay_readable(harness);
    collect_removes_only_chunks_marked_before_the_cutoff(harness);
    shredded_chunks_are_refused_forever(harness);
    orphan_sweeps_see_and_remove_only_old_unmarked_chunks(harness);
    everything_survives_reopen(harness);
    concurrent_puts_are_all_stored(harness);
}

fn put_get_round_trip_and_counts<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    assert_eq!(store.stats().chunks, 0, "a fresh store is empty");
    let mut total = 0;
    for (seed, len) in [(1, 0), (2, 1), (3, 1000), (4, 5000), (5, 300_000)] {
        let (id, bytes) = chunk(seed, len);
        assert_eq!(store.put(id, &bytes, T0).unwrap(), PutOutcome::Stored);
        assert_eq!(
            store.get(id).unwrap().as_deref(),
            Some(&bytes[..]),
            "get returns put bytes"
        );
        total += len as u64;
    }
    let stats = store.stats();
    assert_eq!(
        (stats.chunks, stats.bytes),
        (5, total),
        "counts follow puts"
    );
    assert_eq!(
        store.get(chunk(99, 10).0).unwrap(),
        None,
        "absent chunk is None"
    );
}

fn put_is_idempotent<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (id, bytes) = chunk(7, 4096);
    assert_eq!(store.put(id, &bytes, T0).unwrap(), PutOutcome::Stored);
    for _ in 0..3 {
        assert_eq!(
            store.put(id, &bytes, T0).unwrap(),
            PutOutcome::AlreadyPresent,
            "a second put of an intact chunk writes nothing"
        );
    }
    assert_eq!(
        store.stats().chunks,
        1,
        "idempotent puts do not double count"
    );
    assert_eq!(store.stats().bytes, 4096);
}

fn put_refuses_wrong_ids_and_oversized_chunks<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (id, mut bytes) = chunk(8, 2048);
    bytes[100] ^= 1;
    assert!(
        matches!(
            store.put(id, &bytes, T0),
            Err(StoreError::InvalidChunk { .. })
        ),
        "bytes that do not hash to the id are refused"
    );
    let (big_id, big) = chunk(9, MAX_CHUNK_BYTES + 1);
    assert!(
        matches!(
            store.put(big_id, &big, T0),
            Err(StoreError::InvalidChunk { .. })
        ),
        "a chunk over the size limit is refused"
    );
    let (max_id, max) = chunk(10, MAX_CHUNK_BYTES);
    assert_eq!(store.put(max_id, &max, T0).unwrap(), PutOutcome::Stored);
    assert_eq!(
        store.get(id).unwrap(),
        None,
        "a refused chunk is not stored"
    );
    assert_eq!(store.stats().chunks, 1);
}

fn has_answers_in_order<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let chunks: Vec<_> = (0..50).map(|s| chunk(100 + s, 1500)).collect();
    for (id, bytes) in chunks.iter().step_by(2) {
        store.put(*id, bytes, T0).unwrap();
    }
    let mut ids: Vec<ChunkId> = chunks.iter().map(|(id, _)| *id).collect();
    ids.push(chunks[0].0); // duplicates answer each time
    let present = store.has(&ids).unwrap();
    assert_eq!(present.len(), ids.len());
    for (i, p) in present.iter().enumerate().take(50) {
        assert_eq!(*p, i % 2 == 0, "has({i}) follows the puts");
    }
    assert!(present[50]);
    assert_eq!(store.has(&[]).unwrap(), Vec::<bool>::new());
}

fn delete_removes_only_that_chunk<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (a, a_bytes) = chunk(20, 3000);
    let (b, b_bytes) = chunk(21, 3000);
    store.put(a, &a_bytes, T0).unwrap();
    store.put(b, &b_bytes, T0).unwrap();
    assert!(store.delete(a).unwrap());
    assert!(
        !store.delete(a).unwrap(),
        "deleting an absent chunk reports false"
    );
    assert_eq!(store.get(a).unwrap(), None);
    assert_eq!(store.has(&[a, b]).unwrap(), [false, true]);
    assert_eq!(store.get(b).unwrap().as_deref(), Some(&b_bytes[..]));
    assert_eq!(store.stats().chunks, 1);
    assert_eq!(store.stats().bytes, 3000);
    assert_eq!(store.put(a, &a_bytes, T0).unwrap(), PutOutcome::Stored);
}

fn ids_after_pages_every_chunk_once<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let mut expected: Vec<ChunkId> = (0..237)
        .map(|s| {
            let (id, bytes) = chunk(1000 + s, 1100);
            store.put(id, &bytes, T0).unwrap();
            id
        })
        .collect();
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.ids_after(after, 50).unwrap();
        assert!(page.len() <= 50, "a page respects its limit");
        if page.is_empty() {
            break;
        }
        after = page.last().copied();
        seen.extend(page);
    }
    assert_eq!(seen, expected, "pages list every chunk once, ascending");
    assert!(store.ids_after(Some(expected[236]), 10).unwrap().is_empty());
    assert_eq!(store.ids_after(None, 0).unwrap(), Vec::<ChunkId>::new());
}

fn marks_keep_the_earliest_time_and_chunks_stay_readable<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (a, a_bytes) = chunk(30, 2000);
    let (absent, _) = chunk(31, 2000);
    store.put(a, &a_bytes, T0).unwrap();
    assert_eq!(store.mark_dead(&[a, absent, a], T0).unwrap(), 2);
    assert_eq!(
        store.mark_dead(&[a], UnixMillis(T0.0 + 50_000)).unwrap(),
        1,
        "re-marking counts as marked"
    );
    let mark = store.mark(a).unwrap().expect("marked");
    assert_eq!(
        (mark.state, mark.at),
        (MarkState::Marked, T0),
        "the first mark time is kept"
    );
    assert_eq!(
        store.get(a).unwrap().as_deref(),
        Some(&a_bytes[..]),
        "a marked chunk stays readable until collected"
    );
    assert_eq!(store.stats().marked_dead, 2);
    assert!(store.mark(chunk(32, 10).0).unwrap().is_none());
}

fn collect_removes_only_chunks_marked_before_the_cutoff<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (old, old_bytes) = chunk(40, 2000);
    let (young, young_bytes) = chunk(41, 2000);
    let (live, live_bytes) = chunk(42, 2000);
    let (never_held, never_held_bytes) = chunk(43, 2000);
    for (id, bytes) in [
        (old, &old_bytes),
        (young, &young_bytes),
        (live, &live_bytes),
    ] {
        store.put(id, bytes, T0).unwrap();
    }
    store.mark_dead(&[old, never_held], T0).unwrap();
    store
        .mark_dead(&[young], UnixMillis(T0.0 + 10_000))
        .unwrap();
    let removed = store
        .collect(UnixMillis(T0.0 + 5_000), UnixMillis(T0.0 + 20_000))
        .unwrap();
    assert_eq!(
        removed,
        vec![old],
        "only chunks held and marked by the cutoff are removed"
    );
    assert_eq!(store.get(old).unwrap(), None);
    assert_eq!(store.has(&[old, young, live]).unwrap(), [false, true, true]);
    assert_eq!(
        store.mark(old).unwrap().unwrap().state,
        MarkState::Collected
    );
    assert!(
        matches!(
            store.put(old, &old_bytes, T0),
            Err(StoreError::Collected { .. })
        ),
        "a collected chunk is not resurrected by a late copy"
    );
    assert!(
        matches!(
            store.put(never_held, &never_held_bytes, T0),
            Err(StoreError::Collected { .. })
        ),
        "a chunk marked while absent is refused after collection too"
    );
    let stats = store.stats();
    assert_eq!((stats.chunks, stats.bytes, stats.marked_dead), (2, 4000, 1));
    // Collecting again removes nothing new; the young mark is collected once it is old enough.
    assert!(
        store
            .collect(UnixMillis(T0.0 + 5_000), T0)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.collect(UnixMillis(T0.0 + 10_000), T0).unwrap(),
        vec![young]
    );
    assert_eq!(store.get(live).unwrap().as_deref(), Some(&live_bytes[..]));
}

fn shredded_chunks_are_refused_forever<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let (a, a_bytes) = chunk(60, 3000);
    let (b, b_bytes) = chunk(61, 3000);
    let (never_held, never_held_bytes) = chunk(62, 3000);
    let (kept, kept_bytes) = chunk(63, 3000);
    for (id, bytes) in [(a, &a_bytes), (b, &b_bytes), (kept, &kept_bytes)] {
        store.put(id, bytes, T0).unwrap();
    }
    store.mark_dead(&[b], T0).unwrap();
    assert_eq!(
        store
            .shred(&[a, never_held], T0, ShredMode::Deferred)
            .unwrap(),
        1,
        "shred reports the copies it held"
    );
    assert_eq!(store.shred(&[b], T0, ShredMode::RewriteFiles).unwrap(), 1);
    assert_eq!(store.has(&[a, b, kept]).unwrap(), [false, false, true]);
    assert_eq!(
        store.shredded(&[a, b, never_held, kept]).unwrap(),
        [true, true, true, false],
        "every shredded id keeps a tombstone, held or not"
    );
    assert!(store.mark(b).unwrap().is_none(), "a shred drops the mark");
    for (id, bytes) in [
        (a, &a_bytes),
        (b, &b_bytes),
        (never_held, &never_held_bytes),
    ] {
        assert!(
            matches!(store.put(id, bytes, T0), Err(StoreError::Shredded { .. })),
            "a shredded chunk is refused: a late write, a repair or a scrub copy cannot bring it back"
        );
    }
    let stats = store.stats();
    assert_eq!((stats.chunks, stats.bytes, stats.marked_dead), (1, 3000, 0));
    let store = h.reopen(store);
    assert!(
        matches!(store.put(a, &a_bytes, T0), Err(StoreError::Shredded { .. })),
        "the tombstone survives reopen"
    );
    assert_eq!(store.get(kept).unwrap().as_deref(), Some(&kept_bytes[..]));
}

fn orphan_sweeps_see_and_remove_only_old_unmarked_chunks<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let old: Vec<_> = (0..30).map(|s| chunk(700 + s, 1200)).collect();
    let young: Vec<_> = (0..10).map(|s| chunk(800 + s, 1200)).collect();
    for (id, bytes) in &old {
        store.put(*id, bytes, T0).unwrap();
    }
    for (id, bytes) in &young {
        store.put(*id, bytes, UnixMillis(T0.0 + 60_000)).unwrap();
    }
    let cutoff = UnixMillis(T0.0 + 1_000);
    let mut seen = Vec::new();
    let mut after = None;
    for _ in 0..100 {
        let page = store.orphan_candidates(after, cutoff, 7, 11).unwrap();
        assert!(page.ids.len() <= 7, "a page respects its limit");
        seen.extend(page.ids);
        match page.resume_after {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut expected: Vec<ChunkId> = old.iter().map(|(id, _)| *id).collect();
    expected.sort();
    assert_eq!(seen, expected, "every old chunk once, no young one");

    let marked = old[0].0;
    store.mark_dead(&[marked], T0).unwrap();
    let mut asked: Vec<ChunkId> = old.iter().map(|(id, _)| *id).collect();
    asked.push(young[0].0);
    assert_eq!(
        store.remove_orphans(&asked, cutoff).unwrap(),
        (29, 29 * 1200),
        "old unmarked chunks go; young and marked ones stay"
    );
    assert_eq!(
        store.has(&[marked, young[0].0, old[1].0]).unwrap(),
        [true, true, false]
    );
    assert_eq!(store.stats().chunks, 11);
    assert_eq!(
        store.put(old[1].0, &old[1].1, T0).unwrap(),
        PutOutcome::Stored,
        "an orphan leaves no tombstone"
    );
}

fn everything_survives_reopen<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let chunks: Vec<_> = (0..20).map(|s| chunk(500 + s, 2000 + s as usize)).collect();
    for (id, bytes) in &chunks {
        store.put(*id, bytes, T0).unwrap();
    }
    store.mark_dead(&[chunks[0].0, chunks[1].0], T0).unwrap();
    store.collect(T0, T0).unwrap();
    store.mark_dead(&[chunks[2].0], T0).unwrap();
    let counts = |s: StoreStats| (s.chunks, s.bytes, s.marked_dead);
    let before = counts(store.stats());
    let store = h.reopen(store);
    // The sync counters count since the store opened; the contents' counts persist.
    assert_eq!(counts(store.stats()), before, "counts survive reopen");
    for (i, (id, bytes)) in chunks.iter().enumerate() {
        let got = store.get(*id).unwrap();
        if i < 2 {
            assert_eq!(got, None, "collected chunk {i} stays gone");
        } else {
            assert_eq!(
                got.as_deref(),
                Some(&bytes[..]),
                "chunk {i} survives reopen"
            );
        }
    }
    assert_eq!(
        store.mark(chunks[2].0).unwrap().unwrap().state,
        MarkState::Marked
    );
    assert!(matches!(
        store.put(chunks[0].0, &chunks[0].1, T0),
        Err(StoreError::Collected { .. })
    ));
}

/// Puts from many threads at once (which a shard serves, and which share log syncs) each
/// return only when stored: all of them read back, before and after a reopen.
fn concurrent_puts_are_all_stored<H: StoreHarness>(h: &mut H) {
    let store = h.fresh();
    let chunks: Vec<_> = (0..64).map(|s| chunk(9000 + s, 64 << 10)).collect();
    std::thread::scope(|scope| {
        for mine in chunks.chunks(4) {
            let store = &store;
            scope.spawn(move || {
                for (id, bytes) in mine {
                    assert_eq!(store.put(*id, bytes, T0).unwrap(), PutOutcome::Stored);
                }
            });
        }
    });
    let stats = store.stats();
    assert_eq!((stats.chunks, stats.bytes), (64, 64 * (64 << 10)));
    assert!(
        stats.log_syncs <= stats.durable_puts,
        "never more syncs than puts: {stats:?}"
    );
    let store = h.reopen(store);
    for (id, bytes) in &chunks {
        assert_eq!(store.get(*id).unwrap().as_deref(), Some(&bytes[..]));
    }
}
