//! The collector: staged deletion of dead chunks across the shard set.
//!
//! Stage 1 marks chunks dead on every shard. Only a mark that every shard acknowledged yields a
//! [`MarkReceipt`]; stage 2 needs one, and runs once the grace period has passed since the
//! acknowledgement, asking each shard to remove chunks marked at least the grace period ago.
//! A marked chunk stays readable until stage 2, so a mistaken or late mark can be noticed
//! (the dead-chunk list will come from the metadata store, which only lists chunks of dead
//! calls), and a collected chunk leaves a tombstone on its shard so neither the scrubber nor read
//! repair can bring it back from a replica that missed the mark.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::chunk::ChunkId;
use crate::client::{Failures, ReplicatedBlobClient, ShardFailure};
use crate::placement::ShardId;

/// Proof that every shard of the set acknowledged marking a list of chunks dead.
#[derive(Debug, Clone)]
pub struct MarkReceipt {
    chunks: usize,
    acked_by: Vec<ShardId>,
    acked_at: Instant,
}

impl MarkReceipt {
    /// How many chunks were marked.
    pub fn chunks(&self) -> usize {
        self.chunks
    }

    /// The shards that acknowledged (all of the set).
    pub fn acked_by(&self) -> &[ShardId] {
        &self.acked_by
    }
}

/// Why a collection step did not complete.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Some shards did not acknowledge the mark; no receipt, so no removal on its account.
    /// Marks are idempotent: retry the same list.
    #[error(
        "mark acknowledged by {acked:?} but not by: {failed}; retry the mark before collecting"
    )]
    PartialMark {
        /// Shards that acknowledged.
        acked: Vec<ShardId>,
        /// Shards that did not, and why.
        failed: Failures,
    },
    /// The grace period since the acknowledged mark has not passed.
    #[error("the grace period has {remaining:?} left")]
    GraceNotElapsed {
        /// Time left.
        remaining: Duration,
    },
    /// Some shards failed to collect; the others did.
    #[error("collected {removed} chunks, but these shards failed: {failed}")]
    PartialCollect {
        /// Chunks removed by the shards that succeeded.
        removed: u64,
        /// Shards that failed, and why.
        failed: Failures,
    },
}

/// Drives staged deletion over the whole shard set.
#[derive(Debug, Clone)]
pub struct Collector {
    shards: Arc<ReplicatedBlobClient>,
    grace: Duration,
}

impl Collector {
    /// A collector over `shards`' set with grace period `grace` (at least each shard's minimum).
    pub fn new(shards: Arc<ReplicatedBlobClient>, grace: Duration) -> Self {
        Collector { shards, grace }
    }

    /// Stage 1: marks `ids` dead on every shard of the set (not only their placement targets:
    /// a stray copy left by an earlier shard set must go too).
    pub async fn mark_dead(&self, ids: &[ChunkId]) -> Result<MarkReceipt, CollectError> {
        let calls = self.shards.placement().shards().iter().map(|s| {
            let client = self
                .shards
                .shard(&s.id)
                .expect("a client per shard")
                .clone();
            async move { (s.id.clone(), client.mark_dead(ids).await) }
        });
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for (shard, result) in futures::future::join_all(calls).await {
            match result {
                Ok(_) => acked.push(shard),
                Err(status) => failed.push(ShardFailure {
                    shard,
                    code: status.code(),
                    message: status.message().to_string(),
                }),
            }
        }
        if failed.is_empty() {
            Ok(MarkReceipt {
                chunks: ids.len(),
                acked_by: acked,
                acked_at: Instant::now(),
            })
        } else {
            Err(CollectError::PartialMark {
                acked,
                failed: Failures(failed),
            })
        }
    }

    /// Stage 2: once the grace period has passed since `receipt`, asks every shard to remove
    /// the chunks marked at least the grace period ago. Returns how many copies were removed.
    pub async fn collect(&self, receipt: &MarkReceipt) -> Result<u64, CollectError> {
        let waited = receipt.acked_at.elapsed();
        if waited < self.grace {
            return Err(CollectError::GraceNotElapsed {
                remaining: self.grace - waited,
            });
        }
        let calls = self.shards.placement().shards().iter().map(|s| {
            let client = self
                .shards
                .shard(&s.id)
                .expect("a client per shard")
                .clone();
            let grace = self.grace;
            async move { (s.id.clone(), client.collect(grace).await) }
        });
        let mut removed = 0;
        let mut failed = Vec::new();
        for (shard, result) in futures::future::join_all(calls).await {
            match result {
                Ok(n) => removed += n,
                Err(status) => failed.push(ShardFailure {
                    shard,
                    code: status.code(),
                    message: status.message().to_string(),
                }),
            }
        }
        if failed.is_empty() {
            Ok(removed)
        } else {
            Err(CollectError::PartialCollect {
                removed,
                failed: Failures(failed),
            })
        }
    }
}
