//! The background work that keeps callvault's promises over time, on meta nodes:
//!
//! - the **sweeper** (the sweep leader only; see [`crate::sweeper`]) expires recordings and
//!   call-detail records at the cluster time, continues paged purges and effects changes whose
//!   notice ended; `apply` re-checks every one;
//! - the **shredder** (every meta node) makes shredded data keys physically unreadable on its own
//!   disks — compacts the key family, builds a fresh snapshot, purges its Raft log past the
//!   entries that carried the keys and rewrites the log's files — then proposes its receipt;
//! - the **collector** (Raft leader only) removes shredded calls' chunks from every blob shard,
//!   checks they are gone, and proposes the blob receipt;
//! - the **orphan sweep** (Raft leader only; see [`crate::orphans`]) removes chunks no committed
//!   call references once they are older than the grace.
//!
//! Time enters only here, in the commands proposed: `apply` never reads a clock. All state lives
//! in the metadata store, so a new leader picks up exactly where the old one stopped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_blob::client::ShardClient;
use callvault_blob::{ChunkId, ReplicatedBlobClient, ShredMode};
use callvault_core::{CallId, Jurisdiction};
use callvault_meta::Command;
use callvault_meta::MetaNode;
use callvault_meta::client::MetaClient;
use callvault_meta::command::MAX_RECEIPT_BATCH;
use callvault_meta::lifecycle::ShredKind;
use callvault_meta::reads::{self, PendingShred};
use tokio::sync::watch;

use crate::config::LifecycleSection;
use crate::ingest::now;
use crate::sweeper::{SweepState, Sweeper};

/// Longest wait for a snapshot build or a log purge the shredder asked for.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Most chunk ids one collector round shreds, bounding its memory and each shard's pass.
const MAX_CHUNKS_PER_ROUND: usize = 200_000;
/// Most shreds one shredder round confirms: one forced round (a pass over the store) serves
/// them all, their receipts sent in batches.
const MAX_SHREDS_PER_ROUND: usize = 200_000;

/// The lifecycle workers of one meta node.
pub struct Lifecycle {
    node: Arc<MetaNode>,
    node_id: u64,
    meta: MetaClient,
    blobs: Option<ReplicatedBlobClient>,
    config: LifecycleSection,
}

impl Lifecycle {
    /// Workers for `node`, proposing through `meta`; `blobs` is the shard set the collector
    /// cleans (without it, chunks of shredded calls stay until a node that has it leads).
    pub fn new(
        node: Arc<MetaNode>,
        node_id: u64,
        meta: MetaClient,
        blobs: Option<ReplicatedBlobClient>,
        config: LifecycleSection,
    ) -> Self {
        Lifecycle {
            node,
            node_id,
            meta,
            blobs,
            config,
        }
    }

    /// Runs the three workers until `stop` turns true.
    pub fn spawn(self, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let this = Arc::new(self);
        let mut tasks = Vec::new();
        if this.config.sweep {
            let sweeper = Arc::new(Sweeper::new(
                this.node.clone(),
                this.node_id,
                this.meta.clone(),
                this.config.clone(),
            ));
            tasks.push(tokio::spawn(every(
                Duration::from_millis(this.config.sweep_tick_ms.max(100)),
                stop.clone(),
                SweepState::default(),
                move |state| {
                    let sweeper = sweeper.clone();
                    async move { sweeper.tick(state).await }
                },
            )));
        }
        let shredder = this.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(this.config.shred_tick_ms.max(100)),
            stop.clone(),
            (),
            move |()| {
                let shredder = shredder.clone();
                async move {
                    if let Err(e) = shredder.shred_round().await {
                        tracing::warn!(error = %e, "shredder round failed; retrying");
                    }
                }
            },
        )));
        if let (Some(blobs), true) = (&this.blobs, this.config.orphan_sweep_seconds > 0) {
            let sweep = Arc::new(crate::orphans::OrphanSweep::new(
                this.node.clone(),
                this.node_id,
                blobs.clone(),
                Duration::from_secs(this.config.orphan_grace_seconds),
            ));
            tasks.push(tokio::spawn(every(
                Duration::from_secs(this.config.orphan_sweep_seconds),
                stop.clone(),
                (),
                move |()| {
                    let sweep = sweep.clone();
                    async move {
                        if let Err(e) = sweep.run_once().await {
                            tracing::warn!(error = %e, "orphan sweep failed; retrying");
                        }
                    }
                },
            )));
        }
        if this.blobs.is_some() {
            let collector = this.clone();
            tasks.push(tokio::spawn(every(
                Duration::from_millis(this.config.collect_tick_ms.max(100)),
                stop,
                (),
                move |()| {
                    let collector = collector.clone();
                    async move {
                        if let Err(e) = collector.collect_round().await {
                            tracing::warn!(error = %e, "collector round failed; retrying");
                        }
                    }
                },
            )));
        } else {
            tracing::warn!(
                "blob.shards is not set on this meta node: it will not collect chunks of \
                 purged or expired calls while it leads"
            );
        }
        tasks
    }

    fn is_leader(&self) -> bool {
        self.node.raft.metrics().borrow().current_leader == Some(self.node_id)
    }

    /// One shredder round: confirms the shreds this node has not yet confirmed once their keys
    /// are off its disks. Purges force that at once (compaction, a fresh snapshot, a log purge
    /// and rewrite: a pass over the store). Expiries wait for the node's ordinary snapshot and
    /// log purge to pass them, so their cost follows what they delete, unless one has waited
    /// longer than `expiry_receipt_max_seconds`; then one forced round serves them all.
    async fn shred_round(&self) -> anyhow::Result<()> {
        let db = self.node.state_machine.db();
        let node_id = self.node_id;
        let mine = off_runtime(db.clone(), move |db| {
            all_pending(db, MAX_SHREDS_PER_ROUND, |s| {
                !s.record.meta_receipts.contains(&node_id)
            })
        })
        .await?;
        if mine.is_empty() {
            return Ok(());
        }
        let started = Instant::now();
        let forced = match self.forced_round_through(&mine) {
            Some(through) => {
                self.force_keys_off_disk(through).await?;
                true
            }
            None => false,
        };
        let (purged, snapshot) = {
            let metrics = self.node.raft.metrics().borrow().clone();
            (
                metrics.purged.map_or(0, |p| p.index),
                metrics.snapshot.map_or(0, |p| p.index),
            )
        };
        let done: Vec<PendingShred> = mine
            .into_iter()
            .filter(|s| {
                let passed = purged >= s.record.key_entry && snapshot >= s.record.shred_entry;
                passed && (forced || s.record.kind == ShredKind::Expiry)
            })
            .collect();
        if !done.is_empty() {
            callvault_meta::failpoint!("shred-before-receipt");
        }
        for receipts in done.chunks(MAX_RECEIPT_BATCH) {
            let calls: Vec<(Jurisdiction, CallId)> = receipts
                .iter()
                .map(|s| (s.jurisdiction, s.call_id.clone()))
                .collect();
            self.meta
                .propose(&Command::KeysShredded {
                    node_id: self.node_id,
                    calls,
                    at: now(),
                })
                .await?;
            record_completed(&db, receipts);
        }
        if !done.is_empty() {
            tracing::info!(
                calls = done.len(),
                forced,
                log_purged_through = purged,
                snapshot_index = snapshot,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "shredded data keys are gone from this node's log and snapshot"
            );
        }
        Ok(())
    }

    /// The log index a forced round must purge through, when one is needed: a purge is pending,
    /// or an expiry has waited too long for the ordinary snapshot and log purge.
    fn forced_round_through(&self, mine: &[PendingShred]) -> Option<u64> {
        let max_wait = i64::try_from(self.config.expiry_receipt_max_seconds)
            .unwrap_or(i64::MAX)
            .saturating_mul(1000);
        let now = now();
        let urgent = mine.iter().any(|s| {
            s.record.kind == ShredKind::Purge
                || now.0.saturating_sub(s.record.started_at.0) >= max_wait
        });
        urgent.then(|| mine.iter().map(|s| s.record.key_entry).max().unwrap_or(0))
    }

    /// Makes the shredded keys physically unreadable on this node now: the state machine's
    /// files, its snapshot and its Raft log through `through`.
    async fn force_keys_off_disk(&self, through: u64) -> anyhow::Result<()> {
        let sm = &self.node.state_machine;
        // 1. The deleted keys leave the state machine's files and its write-ahead log.
        let state = sm.clone();
        tokio::task::spawn_blocking(move || state.compact_shredded_keys()).await??;
        callvault_meta::failpoint!("shred-after-compact");

        // 2. A snapshot that starts after that compaction replaces the one that may hold keys.
        let before = sm.snapshot_builds_started().await;
        self.wait_for(
            "a snapshot without the shredded keys",
            || sm.last_snapshot_built() > before,
            || {
                let raft = self.node.raft.clone();
                async move { raft.trigger().snapshot().await }
            },
        )
        .await?;
        callvault_meta::failpoint!("shred-after-snapshot");

        // 3. The log is purged past the entries that carried the keys, and its files rewritten.
        let raft = &self.node.raft;
        self.wait_for(
            "the raft log purge",
            || {
                raft.metrics()
                    .borrow()
                    .purged
                    .is_some_and(|p| p.index >= through)
            },
            || {
                let raft = raft.clone();
                async move { raft.trigger().purge_log(through).await }
            },
        )
        .await?;
        let log = self.node.log.clone();
        tokio::task::spawn_blocking(move || log.compact_purged(through)).await??;
        Ok(())
    }

    /// Calls `kick` until `done` holds, re-kicking every few seconds, for at most
    /// [`STEP_TIMEOUT`].
    async fn wait_for<F, K, Fut>(&self, what: &str, done: F, kick: K) -> anyhow::Result<()>
    where
        F: Fn() -> bool,
        K: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), openraft::error::Fatal<u64>>>,
    {
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut last_kick: Option<Instant> = None;
        while !done() {
            if Instant::now() > deadline {
                anyhow::bail!("timed out waiting for {what}");
            }
            if last_kick.is_none_or(|at| at.elapsed() > Duration::from_secs(5)) {
                kick().await?;
                last_kick = Some(Instant::now());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// One collector round (leader only): removes the chunks of shreds without a blob receipt
    /// from every shard, checks every shard no longer has them, and proposes the receipt.
    async fn collect_round(&self) -> anyhow::Result<()> {
        let Some(blobs) = &self.blobs else {
            return Ok(());
        };
        if !self.is_leader() {
            return Ok(());
        }
        let db = self.node.state_machine.db();
        let mut chunks = 0;
        let pending = off_runtime(db.clone(), |db| {
            all_pending(db, MAX_RECEIPT_BATCH, |s| !s.record.blob_done)
        })
        .await?;
        let batch: Vec<PendingShred> = pending
            .into_iter()
            .take(MAX_RECEIPT_BATCH)
            .take_while(|s| {
                chunks += s.record.chunk_ids.len();
                chunks <= MAX_CHUNKS_PER_ROUND
            })
            .collect();
        if batch.is_empty() {
            return Ok(());
        }
        let ids_of = |kind: ShredKind| -> Vec<ChunkId> {
            batch
                .iter()
                .filter(|s| s.record.kind == kind)
                .flat_map(|s| s.record.chunk_ids.iter().map(|id| ChunkId::from_bytes(*id)))
                .collect()
        };
        let (purged, expired) = (ids_of(ShredKind::Purge), ids_of(ShredKind::Expiry));
        let shards: Vec<ShardClient> = blobs
            .placement()
            .shards()
            .iter()
            .map(|shard| {
                blobs
                    .shard(&shard.id)
                    .cloned()
                    .ok_or_else(|| anyhow::anyhow!("no client for shard {}", shard.id))
            })
            .collect::<anyhow::Result<_>>()?;
        // Every shard removes and tombstones first; only then is absence checked everywhere, so
        // no copy can travel back (repair, scrub) from a shard not yet done to one already done.
        let shredded = futures::future::join_all(
            shards
                .iter()
                .map(|client| shred_on(client, &purged, &expired)),
        )
        .await;
        shredded.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let all: Vec<ChunkId> = purged.iter().chain(&expired).copied().collect();
        let confirmed =
            futures::future::join_all(shards.iter().map(|client| confirm_gone(client, &all))).await;
        confirmed.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let shard_ids: Vec<String> = shards.iter().map(|c| c.info().id.to_string()).collect();
        let ids_len = all.len();
        let calls: Vec<(Jurisdiction, CallId)> = batch
            .iter()
            .map(|s| (s.jurisdiction, s.call_id.clone()))
            .collect();
        self.meta
            .propose(&Command::ChunksCollected {
                shards: shard_ids,
                calls,
                at: now(),
            })
            .await?;
        record_completed(&db, &batch);
        tracing::info!(
            calls = batch.len(),
            chunks = ids_len,
            "removed shredded calls' chunks from every shard"
        );
        Ok(())
    }
}

/// Shreds a collector round's chunks on one shard: purged calls' chunks with a rewrite of the
/// shard's files (their receipt promises the bytes are off the disk), expired calls' chunks
/// deferred to the shard's ordinary compaction, so an expiry costs what it deletes.
async fn shred_on(
    client: &ShardClient,
    purged: &[ChunkId],
    expired: &[ChunkId],
) -> anyhow::Result<()> {
    let id = &client.info().id;
    for (ids, mode) in [
        (purged, ShredMode::RewriteFiles),
        (expired, ShredMode::Deferred),
    ] {
        if !ids.is_empty() {
            client
                .shred(ids, mode)
                .await
                .map_err(|s| anyhow::anyhow!("shard {id}: {}", s.message()))?;
        }
    }
    Ok(())
}

/// Checks that one shard holds none of `ids` and keeps a tombstone for each.
async fn confirm_gone(client: &ShardClient, ids: &[ChunkId]) -> anyhow::Result<()> {
    let id = &client.info().id;
    let presence = client
        .presence(ids)
        .await
        .map_err(|s| anyhow::anyhow!("shard {id}: {}", s.message()))?;
    if presence
        .iter()
        .any(|(held, tombstoned)| *held || !tombstoned)
    {
        anyhow::bail!("shard {id} still holds shredded chunks or lacks their tombstones");
    }
    Ok(())
}

/// Records the latency of the shreds in `batch` that the receipt just proposed completed (those
/// whose record this node no longer has).
fn record_completed(db: &rocksdb::DB, batch: &[PendingShred]) {
    for shred in batch {
        if let Ok(None) = reads::shred_of(db, shred.jurisdiction, &shred.call_id) {
            let reason = match shred.record.kind {
                ShredKind::Purge => "privilege",
                ShredKind::Expiry => "expiry",
            };
            let latency = now().0 - shred.record.started_at.0;
            callvault_meta::metrics::purge_completed(
                reason,
                Duration::from_millis(latency.max(0) as u64),
            );
        }
    }
}

/// Runs `read` of the state machine's store on the blocking pool. The lifecycle's scans grow
/// with the backlog (a registration's purge leaves ~150,000 pending shreds, each tick walks them
/// on every node); run on the async workers they held up the Raft core's heartbeats and appends
/// and the clock attester: elections, and cluster time stalled (issue 14).
pub(crate) async fn off_runtime<T: Send + 'static>(
    db: Arc<rocksdb::DB>,
    read: impl FnOnce(&rocksdb::DB) -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    tokio::task::spawn_blocking(move || read(&db)).await?
}

/// Pending shreds matching `wanted`, reading the whole (normally short) list page by page.
fn all_pending(
    db: &rocksdb::DB,
    limit: usize,
    wanted: impl Fn(&PendingShred) -> bool,
) -> anyhow::Result<Vec<PendingShred>> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = reads::pending_shreds(db, after.as_deref(), 1000)?;
        out.extend(page.into_iter().filter(&wanted));
        if out.len() >= limit {
            out.truncate(limit);
            return Ok(out);
        }
        match next {
            Some(key) => after = Some(key),
            None => return Ok(out),
        }
    }
}

/// Runs `step` every `period` (carrying its state) until `stop` turns true.
async fn every<S, F, Fut>(period: Duration, mut stop: watch::Receiver<bool>, state: S, step: F)
where
    S: Send,
    F: Fn(S) -> Fut,
    Fut: std::future::Future<Output = S>,
{
    let mut state = Some(state);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let current = state.take().expect("state is put back after each step");
        state = Some(step(current).await);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One runtime thread: if the scan ran on it, the task the scan waits for could never run.
    #[tokio::test(flavor = "current_thread")]
    async fn a_store_scan_leaves_the_runtime_to_raft_and_the_clock() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Arc::new(rocksdb::DB::open_default(dir.path()).expect("open"));
        let (heartbeat, heard) = std::sync::mpsc::channel();
        let raft = tokio::spawn(async move { heartbeat.send(()).expect("the scan listens") });
        let heard_during_scan = off_runtime(db, move |_| {
            Ok(heard.recv_timeout(Duration::from_secs(10)).is_ok())
        })
        .await
        .expect("scan");
        assert!(
            heard_during_scan,
            "no other task of the runtime ran while the scan was reading"
        );
        raft.await.expect("task");
    }
}
