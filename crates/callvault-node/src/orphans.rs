//! The orphan sweep: chunks that no committed call references — of streams that were rejected,
//! failed, raced a registration or were killed — are found by a mark-and-sweep against the
//! metadata store and removed from the shards.
//!
//! On the Raft leader, every `orphan_sweep_seconds`, for each shard: page through the chunks the
//! shard stored at least the grace ago (by its own clock), confirm with a linearizable read which
//! of them a committed call references (the mark), and ask the shard to remove the rest (the
//! sweep), which it does only for chunks still that old and unmarked. The grace exceeds the
//! longest a stream may last plus its commit window, so a call still streaming keeps its chunks;
//! and because ingest refuses any stream older than that, no chunk removed here can be
//! referenced by a commit that applies later.

use std::sync::Arc;
use std::time::Duration;

use callvault_blob::client::ShardClient;
use callvault_blob::{ChunkId, ReplicatedBlobClient};
use callvault_meta::MetaNode;
use callvault_meta::reads;

/// Chunk ids per page asked of a shard (its per-request limit).
const PAGE: u32 = 10_000;

/// What one sweep found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Chunks old enough to be orphans, over every shard.
    pub examined: u64,
    /// Of those, chunks no committed call referenced, removed.
    pub removed: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// The orphan sweep of one meta node (it acts only while it leads).
pub struct OrphanSweep {
    node: Arc<MetaNode>,
    node_id: u64,
    blobs: ReplicatedBlobClient,
    grace: Duration,
}

impl OrphanSweep {
    /// A sweep of `blobs`' shard set with `grace`.
    pub fn new(
        node: Arc<MetaNode>,
        node_id: u64,
        blobs: ReplicatedBlobClient,
        grace: Duration,
    ) -> Self {
        OrphanSweep {
            node,
            node_id,
            blobs,
            grace,
        }
    }

    /// One sweep over every shard, if this node leads.
    pub async fn run_once(&self) -> anyhow::Result<SweepReport> {
        let mut report = SweepReport::default();
        if self.node.raft.metrics().borrow().current_leader != Some(self.node_id) {
            return Ok(report);
        }
        for shard in self.blobs.placement().shards() {
            let client = self
                .blobs
                .shard(&shard.id)
                .ok_or_else(|| anyhow::anyhow!("no client for shard {}", shard.id))?;
            let found = self.sweep_shard(client).await?;
            report.examined += found.examined;
            report.removed += found.removed;
            report.bytes += found.bytes;
        }
        if report.removed > 0 {
            tracing::info!(
                examined = report.examined,
                removed = report.removed,
                bytes = report.bytes,
                "orphan sweep removed chunks no committed call references"
            );
        }
        Ok(report)
    }

    async fn sweep_shard(&self, client: &ShardClient) -> anyhow::Result<SweepReport> {
        let shard = client.info().id.clone();
        let mut report = SweepReport::default();
        let mut after = None;
        loop {
            let (ids, resume) = client
                .orphan_candidates(after, self.grace, PAGE)
                .await
                .map_err(|s| anyhow::anyhow!("shard {shard}: {}", s.message()))?;
            report.examined += ids.len() as u64;
            let orphans = self.unreferenced(&ids).await?;
            if !orphans.is_empty() {
                let (removed, bytes) = client
                    .remove_orphans(&orphans, self.grace)
                    .await
                    .map_err(|s| anyhow::anyhow!("shard {shard}: {}", s.message()))?;
                report.removed += removed;
                report.bytes += bytes;
            }
            match resume {
                Some(next) => after = Some(next),
                None => return Ok(report),
            }
        }
    }

    /// Those of `ids` no committed call references, read after every write acknowledged so far
    /// has applied here (a read index confirmed by a quorum).
    async fn unreferenced(&self, ids: &[ChunkId]) -> anyhow::Result<Vec<ChunkId>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.node
            .raft
            .ensure_linearizable()
            .await
            .map_err(|e| anyhow::anyhow!("no linearizable read for the orphan sweep: {e}"))?;
        let db = self.node.state_machine.db();
        let raw: Vec<[u8; 32]> = ids.iter().map(|id| *id.as_bytes()).collect();
        let referenced =
            tokio::task::spawn_blocking(move || reads::chunks_referenced(&db, &raw)).await??;
        Ok(ids
            .iter()
            .zip(referenced)
            .filter(|(_, referenced)| !referenced)
            .map(|(id, _)| *id)
            .collect())
    }
}
