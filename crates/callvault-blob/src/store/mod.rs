//! Where a shard keeps its chunks: the [`ChunkStore`] trait, its conformance suite, and the
//! RocksDB implementation.
//!
//! The store is blocking (RocksDB is); async callers run it on `spawn_blocking`.

pub mod conformance;
mod group_commit;
mod records;
mod rocks;

pub use group_commit::{GroupCommit, SyncCounts};
pub use records::{MarkState, StoredMark};
pub use rocks::{RocksChunkStore, StoreOptions};

use crate::chunk::ChunkId;
use callvault_core::UnixMillis;

/// What went wrong in a chunk store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The bytes do not hash to the id they were offered under, or are too long.
    #[error("chunk {id} refused: {reason}")]
    InvalidChunk {
        /// The id the chunk was offered under.
        id: ChunkId,
        /// Why.
        reason: String,
    },
    /// The stored copy is damaged: it fails its checksum, no longer hashes to its id, or its
    /// bytes are missing while the index lists it.
    #[error("stored copy of chunk {id} is corrupt: {reason}")]
    Corrupt {
        /// The chunk.
        id: ChunkId,
        /// What the check found.
        reason: String,
    },
    /// The chunk was collected; storing it again would resurrect dead data.
    #[error("chunk {id} was collected at {at} ms and cannot be stored again")]
    Collected {
        /// The chunk.
        id: ChunkId,
        /// When it was collected (Unix milliseconds).
        at: i64,
    },
    /// The chunk belonged to a crypto-shredded call; its tombstone refuses it forever, so neither
    /// a late write, read repair nor the scrubber can bring it back.
    #[error("chunk {id} was shredded at {at} ms and can never be stored again")]
    Shredded {
        /// The chunk.
        id: ChunkId,
        /// When it was shredded (Unix milliseconds).
        at: i64,
    },
    /// The data directory cannot be opened as a chunk store.
    #[error("cannot open chunk store at {path}: {reason}")]
    Open {
        /// The data directory.
        path: String,
        /// Why.
        reason: String,
    },
    /// RocksDB or the file system failed.
    #[error("chunk store I/O error: {0}")]
    Io(String),
}

/// Whether a put stored new bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutOutcome {
    /// The chunk was not here; it now is, durably.
    Stored,
    /// An intact copy was already here; nothing was written.
    AlreadyPresent,
    /// A corrupt or missing copy was replaced by these (verified) bytes.
    Repaired,
}

/// Counts a shard reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Chunks held.
    pub chunks: u64,
    /// Bytes of chunk data held.
    pub bytes: u64,
    /// Chunks (held or not) marked dead and not yet collected.
    pub marked_dead: u64,
    /// Puts that wrote new bytes durably since the store opened.
    pub durable_puts: u64,
    /// Log syncs (fsyncs) those puts took: fewer than puts when concurrent puts shared them.
    pub log_syncs: u64,
}

/// How a shred leaves the shard's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShredMode {
    /// Rewrite every file that could hold the chunks now (a pass over the shard): for privilege
    /// purges, whose receipt promises the bytes are gone from the disk.
    RewriteFiles,
    /// Delete and tombstone now; the store's ordinary compaction and blob garbage collection
    /// reclaim the bytes later. For expiries, so their cost follows what they delete.
    Deferred,
}

/// Chunks old enough to be orphans, one page of the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OrphanCandidates {
    /// Held chunks stored at or before the cutoff, ascending.
    pub ids: Vec<ChunkId>,
    /// Where the next page starts (exclusive); `None` when the index was read to its end.
    pub resume_after: Option<ChunkId>,
}

/// A shard's chunk storage. Implementations must pass [`conformance::run`].
///
/// Contract:
/// - `put` checks `blake3(bytes) == id` and the size bound, is idempotent, and returns only
///   once the chunk is durable (survives power loss). Putting over a corrupt copy repairs it.
///   Putting a collected chunk is refused ([`StoreError::Collected`]), and so is putting a shredded
///   one ([`StoreError::Shredded`]), forever.
/// - `get` re-hashes and returns [`StoreError::Corrupt`] rather than wrong bytes.
/// - Marks (collection stage 1) keep the earliest mark time; a marked chunk stays readable.
///   `collect` (stage 2) removes chunks marked at or before `cutoff` and leaves a tombstone.
pub trait ChunkStore: Send + Sync + 'static {
    /// Stores a chunk durably.
    fn put(&self, id: ChunkId, bytes: &[u8], now: UnixMillis) -> Result<PutOutcome, StoreError>;
    /// Reads and verifies a chunk; `Ok(None)` when absent.
    fn get(&self, id: ChunkId) -> Result<Option<Vec<u8>>, StoreError>;
    /// Removes a chunk (and nothing else); `Ok(false)` when it was absent.
    fn delete(&self, id: ChunkId) -> Result<bool, StoreError>;
    /// Which of `ids` are held, in order. Does not read chunk bytes.
    fn has(&self, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError>;
    /// Up to `limit` held chunk ids greater than `after`, ascending: pages for the scrubber
    /// that stay valid while chunks come and go.
    fn ids_after(&self, after: Option<ChunkId>, limit: usize) -> Result<Vec<ChunkId>, StoreError>;
    /// Marks chunks dead at `now` (stage 1); returns how many of `ids` are now marked or
    /// already collected. Chunks not held are marked too, so a late copy cannot linger.
    fn mark_dead(&self, ids: &[ChunkId], now: UnixMillis) -> Result<u64, StoreError>;
    /// The mark on a chunk, if any.
    fn mark(&self, id: ChunkId) -> Result<Option<StoredMark>, StoreError>;
    /// Removes every chunk marked at or before `cutoff` (stage 2), leaving tombstones stamped
    /// `now`; returns the ids removed.
    fn collect(&self, cutoff: UnixMillis, now: UnixMillis) -> Result<Vec<ChunkId>, StoreError>;
    /// Current counts.
    fn stats(&self) -> StoreStats;
    /// Removes `ids` now, with any marks, and leaves a tombstone for each (stamped `now`) that
    /// refuses it forever. With [`ShredMode::RewriteFiles`] the store's files are rewritten so no
    /// copy of their bytes (or ids) stays on disk. Returns how many were held.
    fn shred(&self, ids: &[ChunkId], now: UnixMillis, mode: ShredMode) -> Result<u64, StoreError>;
    /// Which of `ids` carry a shred tombstone, in order.
    fn shredded(&self, ids: &[ChunkId]) -> Result<Vec<bool>, StoreError>;
    /// Up to `limit` held chunks after `after` that were stored at or before `cutoff`, examining
    /// at most `scan` index entries: the candidates of an orphan sweep, page by page.
    fn orphan_candidates(
        &self,
        after: Option<ChunkId>,
        cutoff: UnixMillis,
        limit: usize,
        scan: usize,
    ) -> Result<OrphanCandidates, StoreError>;
    /// Removes those of `ids` still held, stored at or before `cutoff` and not marked: chunks no
    /// committed call references. No tombstone: a chunk is not refused for having been an orphan.
    /// Returns how many chunks and bytes were removed.
    fn remove_orphans(&self, ids: &[ChunkId], cutoff: UnixMillis)
    -> Result<(u64, u64), StoreError>;
}
