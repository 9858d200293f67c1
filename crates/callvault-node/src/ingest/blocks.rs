//! A call's audio on its way to the blob shards, once `core::ingest::CallStream` accepted each
//! chunk: cut into fixed-size blocks ([`Blocks`]), sealed and written to W of R replicas with a
//! bounded number of writes in flight ([`BlockWriter`]).
//!
//! Blocks, not platform chunks, are what is sealed and stored: a platform that sends 16 KB
//! chunks and one that sends 1 MiB chunks leave the same chunk list, the same number of shard
//! writes (fsyncs) per megabyte and the same number of entries in a shard.

use std::sync::Arc;

use callvault_blob::{CallSealer, ReplicatedBlobClient, ReplicationError};
use futures::stream::{FuturesOrdered, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tonic::Status;
use tracing::Instrument as _;

/// Smallest configurable block: below this the chunk list and the fsyncs grow again.
pub const MIN_BLOCK_BYTES: usize = 256 << 10;
/// Largest configurable block (and the default): one block per MiB of audio.
pub const MAX_BLOCK_BYTES: usize = 1 << 20;

/// Cuts a byte stream into blocks of one size (the last one shorter). Each block's memory is
/// reserved from the node's audio budget when the block is started, never while it fills: a
/// stream that waits for room then holds nothing but writes already in flight, which finish on
/// their own, so streams cannot wait on each other.
pub(super) struct Blocks {
    size: usize,
    budget: Arc<Semaphore>,
    filling: Vec<u8>,
    reserved: Option<OwnedSemaphorePermit>,
}

/// A full block and its share of the audio budget, released when its write is done.
pub(super) struct Block {
    pub bytes: Vec<u8>,
    pub permit: OwnedSemaphorePermit,
}

fn kib(bytes: usize) -> u32 {
    bytes.div_ceil(1024).max(1) as u32
}

impl Blocks {
    /// Blocks of `size` bytes, reserving memory from `budget` (one permit per KiB).
    pub fn new(size: usize, budget: Arc<Semaphore>) -> Self {
        Blocks {
            size,
            budget,
            filling: Vec::new(),
            reserved: None,
        }
    }

    /// Adds `audio`; returns the blocks it completed.
    pub async fn push(&mut self, mut audio: &[u8]) -> Result<Vec<Block>, Status> {
        let mut full = Vec::new();
        while !audio.is_empty() {
            if self.reserved.is_none() {
                let permit = self
                    .budget
                    .clone()
                    .acquire_many_owned(kib(self.size))
                    .await
                    .map_err(|_| Status::unavailable("ingest is shutting down"))?;
                self.reserved = Some(permit);
                self.filling.reserve_exact(self.size);
            }
            let room = self.size - self.filling.len();
            let (now, later) = audio.split_at(room.min(audio.len()));
            self.filling.extend_from_slice(now);
            audio = later;
            if self.filling.len() == self.size {
                full.extend(self.take());
            }
        }
        Ok(full)
    }

    /// The last, partial block, if any audio is left.
    pub fn finish(mut self) -> Option<Block> {
        self.take()
    }

    fn take(&mut self) -> Option<Block> {
        let permit = self.reserved.take()?;
        Some(Block {
            bytes: std::mem::take(&mut self.filling),
            permit,
        })
    }
}

type Write = JoinHandle<Result<[u8; 32], ReplicationError>>;

/// Seals blocks in order and writes them, `in_flight` at a time; collects their chunk ids.
pub(super) struct BlockWriter {
    sealer: Arc<CallSealer>,
    blobs: ReplicatedBlobClient,
    in_flight: usize,
    next_seq: u64,
    writes: FuturesOrdered<Write>,
    ids: Vec<[u8; 32]>,
}

impl BlockWriter {
    pub fn new(sealer: Arc<CallSealer>, blobs: ReplicatedBlobClient, in_flight: usize) -> Self {
        BlockWriter {
            sealer,
            blobs,
            in_flight: in_flight.max(1),
            next_seq: 0,
            writes: FuturesOrdered::new(),
            ids: Vec::new(),
        }
    }

    /// The call's sealer (its wrapped key goes into the commit).
    pub fn sealer(&self) -> &CallSealer {
        &self.sealer
    }

    /// Starts writing `block`; waits while `in_flight` writes are pending.
    pub async fn write(&mut self, block: Block) -> Result<(), Status> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let (sealer, blobs) = (self.sealer.clone(), self.blobs.clone());
        // The call's span: each block write is part of the call's trace.
        let span = tracing::Span::current();
        self.writes.push_back(tokio::spawn(async move {
            let sealed = sealer.seal(seq, &block.bytes);
            drop(block.bytes);
            let id = sealed.id;
            let written = blobs.put(id, Arc::new(sealed.bytes)).instrument(span).await;
            drop(block.permit);
            written.map(|_| *id.as_bytes())
        }));
        while self.writes.len() >= self.in_flight {
            let done = self.writes.next().await;
            self.ids.push(written(done)?);
        }
        Ok(())
    }

    /// Waits for every write; the chunk ids, in block order.
    pub async fn finish(mut self) -> Result<Vec<[u8; 32]>, Status> {
        while let Some(done) = self.writes.next().await {
            self.ids.push(written(Some(done))?);
        }
        Ok(self.ids)
    }
}

fn written(
    done: Option<Result<Result<[u8; 32], ReplicationError>, tokio::task::JoinError>>,
) -> Result<[u8; 32], Status> {
    match done {
        Some(Ok(Ok(id))) => Ok(id),
        Some(Ok(Err(e))) => Err(Status::unavailable(format!(
            "a block could not be stored on enough blob replicas: {e}; nothing was committed"
        ))),
        Some(Err(e)) => Err(Status::internal(format!("block write task: {e}"))),
        None => Err(Status::internal("no block write pending")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn cut(size: usize, pieces: &[usize]) -> Vec<usize> {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let mut blocks = Blocks::new(size, budget);
        let mut out = Vec::new();
        for (n, len) in pieces.iter().enumerate() {
            let audio = vec![n as u8; *len];
            out.extend(
                blocks
                    .push(&audio)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|b| b.bytes.len()),
            );
        }
        out.extend(blocks.finish().map(|b| b.bytes.len()));
        out
    }

    #[tokio::test]
    async fn blocks_do_not_depend_on_how_the_platform_cuts_its_stream() {
        let size = MIN_BLOCK_BYTES;
        let small = cut(size, &[16_000; 100]).await;
        let large = cut(size, &[800_000, 800_000]).await;
        let one = cut(size, &[1_600_000]).await;
        assert_eq!(small, large);
        assert_eq!(small, one);
        assert_eq!(
            small,
            vec![size, size, size, size, size, size, 1_600_000 - 6 * size]
        );
    }

    #[tokio::test]
    async fn an_exact_multiple_leaves_no_empty_block() {
        assert_eq!(
            cut(MIN_BLOCK_BYTES, &[MIN_BLOCK_BYTES * 2]).await,
            vec![MIN_BLOCK_BYTES; 2]
        );
        assert_eq!(cut(MIN_BLOCK_BYTES, &[]).await, Vec::<usize>::new());
    }

    #[tokio::test]
    async fn the_bytes_survive_the_cut_in_order() {
        let budget = Arc::new(Semaphore::new(1 << 20));
        let mut blocks = Blocks::new(MIN_BLOCK_BYTES, budget);
        let audio: Vec<u8> = (0..700_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let mut joined = Vec::new();
        for piece in audio.chunks(12_345) {
            for block in blocks.push(piece).await.unwrap() {
                joined.extend(block.bytes);
            }
        }
        joined.extend(blocks.finish().unwrap().bytes);
        assert_eq!(joined, audio);
    }

    /// Memory is reserved a whole block at a time and returned when the block is dropped
    /// (written): a full budget holds the next block back instead of growing.
    #[tokio::test]
    async fn a_block_reserves_its_memory_from_the_budget() {
        let budget = Arc::new(Semaphore::new(kib(MIN_BLOCK_BYTES) as usize));
        let mut blocks = Blocks::new(MIN_BLOCK_BYTES, budget.clone());
        let first = blocks.push(&[1; 1000]).await.unwrap();
        assert!(first.is_empty());
        assert_eq!(
            budget.available_permits(),
            0,
            "the filling block holds the budget"
        );
        let full = blocks.push(&vec![2; MIN_BLOCK_BYTES - 1000]).await.unwrap();
        assert_eq!(full.len(), 1);
        // A second block cannot start until the first one's memory is returned.
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(100), blocks.push(&[3; 10]))
                .await;
        assert!(waiting.is_err(), "the next block waits for room");
        drop(full);
        assert_eq!(budget.available_permits(), kib(MIN_BLOCK_BYTES) as usize);
    }
}
