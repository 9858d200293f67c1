//! The background work that keeps callvault's promises over time, on meta nodes:
//!
//! - the **sweeper** (Raft leader only) reads the expiry index and proposes `Expire` in bounded
//!   batches at each jurisdiction's sweep interval; `apply` re-checks every deadline and hold;
//! - the **shredder** (every meta node) makes shredded data keys physically unreadable on its own
//!   disks — compacts the key family, builds a fresh snapshot, purges its Raft log past the
//!   entries that carried the keys and rewrites the log's files — then proposes its receipt;
//! - the **collector** (Raft leader only) removes shredded calls' chunks from every blob shard,
//!   checks they are gone, and proposes the blob receipt.
//!
//! Time enters only here, in the commands proposed: `apply` never reads a clock. All state lives
//! in the metadata store, so a new leader picks up exactly where the old one stopped.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use callvault_blob::client::ShardClient;
use callvault_blob::{ChunkId, ReplicatedBlobClient, ShredMode};
use callvault_core::retention::recording_deadline;
use callvault_core::{CallId, Jurisdiction};
use callvault_meta::MetaNode;
use callvault_meta::client::MetaClient;
use callvault_meta::command::{MAX_EXPIRE_BATCH, MAX_RECEIPT_BATCH};
use callvault_meta::lifecycle::ShredKind;
use callvault_meta::reads::{self, PendingShred};
use callvault_meta::{Command, CommandResult};
use tokio::sync::watch;

use crate::config::LifecycleSection;
use crate::ingest::now;

/// Most `Expire` proposals per jurisdiction per sweep, so one sweep cannot starve the others;
/// the rest is taken at the next tick.
const MAX_BATCHES_PER_SWEEP: usize = 100;
/// Longest wait for a snapshot build or a log purge the shredder asked for.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Most chunk ids one collector round shreds, bounding its memory and each shard's pass.
const MAX_CHUNKS_PER_ROUND: usize = 200_000;

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
        let sweeper = this.clone();
        tasks.push(tokio::spawn(every(
            Duration::from_millis(this.config.sweep_tick_ms.max(100)),
            stop.clone(),
            SweepState::default(),
            move |state| {
                let sweeper = sweeper.clone();
                async move { sweeper.sweep(state).await }
            },
        )));
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

    /// One sweeper tick: sweeps every jurisdiction whose interval has passed since its last
    /// sweep on this leader. A new leader starts with no history, so it sweeps at once.
    async fn sweep(&self, mut state: SweepState) -> SweepState {
        if !self.is_leader() {
            state.last.clear();
            return state;
        }
        let db = self.node.state_machine.db();
        let mut pending_purges = 0;
        let mut lag = Duration::ZERO;
        for &jurisdiction in Jurisdiction::ALL {
            let Ok(Some(policy)) = reads::policy(&db, jurisdiction, 0) else {
                continue;
            };
            let interval = Duration::from_secs(u64::from(policy.policy.sweep_interval_seconds));
            if state
                .last
                .get(&jurisdiction)
                .is_some_and(|at| at.elapsed() < interval)
            {
                continue;
            }
            let as_of = now();
            let batch = self.config.expire_batch.clamp(1, MAX_EXPIRE_BATCH);
            let mut expired = 0u64;
            let mut complete = true;
            for _ in 0..MAX_BATCHES_PER_SWEEP {
                let due =
                    match reads::due_for_expiry(&db, jurisdiction, as_of, &policy.policy, batch) {
                        Ok(due) => due,
                        Err(e) => {
                            tracing::error!(error = %e, "sweeper cannot read the expiry index");
                            complete = false;
                            break;
                        }
                    };
                if due.is_empty() {
                    break;
                }
                let full = due.len() == batch;
                let command = Command::Expire {
                    jurisdiction,
                    as_of,
                    calls: due,
                };
                match self.meta.propose(&command).await {
                    Ok((_, CommandResult::Expired { expired: n, .. })) => expired += u64::from(n),
                    Ok((_, other)) => {
                        tracing::warn!(?other, "expiry refused");
                        complete = false;
                        break;
                    }
                    Err(status) => {
                        tracing::warn!(%status, "expiry not committed; the next sweep retries");
                        complete = false;
                        break;
                    }
                }
                if !full {
                    break;
                }
            }
            if expired > 0 {
                tracing::info!(
                    jurisdiction = jurisdiction.code(),
                    expired,
                    as_of = as_of.0,
                    "sweep expired recordings"
                );
            }
            if complete {
                state.last.insert(jurisdiction, Instant::now());
            }
            // What is still due after the sweep: the lag and the overdue alarm.
            if let Ok(status) = reads::jurisdiction_status(&db, jurisdiction, now()) {
                pending_purges += status.counters.purges_pending;
                callvault_meta::metrics::overdue_recordings(jurisdiction, status.overdue);
                if let Some(oldest) = status.oldest_live_started_at {
                    let behind = now().0 - recording_deadline(oldest, &policy.policy).0;
                    lag = lag.max(Duration::from_millis(behind.max(0) as u64));
                }
            }
        }
        callvault_meta::metrics::sweep_lag(lag);
        callvault_meta::metrics::pending_purges(pending_purges);
        state
    }

    /// One shredder round: confirms every shred this node has not yet confirmed.
    async fn shred_round(&self) -> anyhow::Result<()> {
        let sm = &self.node.state_machine;
        let db = sm.db();
        let applied = sm
            .applied()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .map_or(0, |id| id.index);
        let mine: Vec<PendingShred> =
            all_pending(&db, |s| !s.record.meta_receipts.contains(&self.node_id))?
                .into_iter()
                .take(MAX_RECEIPT_BATCH)
                .collect();
        let Some(through) = mine.iter().map(|s| s.record.key_entry).max() else {
            return Ok(());
        };
        let started = Instant::now();

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
        callvault_meta::failpoint!("shred-before-receipt");

        // 4. The receipt.
        let calls: Vec<(Jurisdiction, CallId)> = mine
            .iter()
            .map(|s| (s.jurisdiction, s.call_id.clone()))
            .collect();
        let count = calls.len();
        self.meta
            .propose(&Command::KeysShredded {
                node_id: self.node_id,
                calls,
                at: now(),
            })
            .await?;
        record_completed(&db, &mine);
        tracing::info!(
            calls = count,
            applied,
            log_purged_through = through,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "shredded data keys are gone from this node's disks"
        );
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
        let batch: Vec<PendingShred> = all_pending(&db, |s| !s.record.blob_done)?
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

/// Pending shreds matching `wanted`, reading the whole (normally short) list page by page.
fn all_pending(
    db: &rocksdb::DB,
    wanted: impl Fn(&PendingShred) -> bool,
) -> anyhow::Result<Vec<PendingShred>> {
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let (page, next) = reads::pending_shreds(db, after.as_deref(), 1000)?;
        out.extend(page.into_iter().filter(&wanted));
        if out.len() >= MAX_RECEIPT_BATCH {
            return Ok(out);
        }
        match next {
            Some(key) => after = Some(key),
            None => return Ok(out),
        }
    }
}

/// When the sweeper last swept each jurisdiction, on this leader.
#[derive(Default)]
struct SweepState {
    last: HashMap<Jurisdiction, Instant>,
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
