//! The scrubber: re-hashes every chunk of this shard at a bounded rate, replaces corrupt or
//! missing local copies from a healthy peer, and writes this shard's intact copies to placement
//! targets that lack them. Chunks marked dead are checked but never spread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::chunk::ChunkId;
use crate::client::ReplicatedBlobClient;
use crate::placement::ShardId;
use crate::service::now;
use crate::store::{ChunkStore, StoreError};

/// Chunk ids read per page; the store is re-paged from the last id, so concurrent writes and
/// deletes are fine.
const PAGE: usize = 256;

/// Counters since the shard started, shared with `Status` (and, later, metrics export).
#[derive(Debug, Default)]
pub struct ScrubCounters {
    checked: AtomicU64,
    corrupt: AtomicU64,
    repaired: AtomicU64,
    replicas_restored: AtomicU64,
    passes: AtomicU64,
    last_pass_unix: AtomicU64,
}

/// A consistent-enough copy of [`ScrubCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubSnapshot {
    /// Chunks re-hashed.
    pub checked: u64,
    /// Local copies found corrupt or missing.
    pub corrupt: u64,
    /// Copies repaired: corrupt local copies replaced plus peer replicas restored.
    pub repaired: u64,
    /// Of `repaired`, copies written to placement targets that lacked them.
    pub replicas_restored: u64,
    /// Completed passes.
    pub passes: u64,
    /// Unix seconds of the last completed pass (0: none yet).
    pub last_pass_unix: u64,
}

impl ScrubCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> ScrubSnapshot {
        ScrubSnapshot {
            checked: self.checked.load(Ordering::Relaxed),
            corrupt: self.corrupt.load(Ordering::Relaxed),
            repaired: self.repaired.load(Ordering::Relaxed),
            replicas_restored: self.replicas_restored.load(Ordering::Relaxed),
            passes: self.passes.load(Ordering::Relaxed),
            last_pass_unix: self.last_pass_unix.load(Ordering::Relaxed),
        }
    }
}

/// What one pass found and did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Chunks re-hashed.
    pub checked: u64,
    /// Local copies found corrupt.
    pub corrupt: u64,
    /// Corrupt local copies replaced from a peer.
    pub repaired_local: u64,
    /// Copies written to placement targets that lacked them.
    pub replicas_restored: u64,
    /// Corrupt local copies no peer could replace (retried next pass).
    pub unrepaired: u64,
}

/// A scrubber failure that ends a pass early.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// The local store failed (not a corrupt chunk: those are counted and repaired).
    #[error("scrub pass stopped: {0}")]
    Store(#[from] StoreError),
    /// A blocking task failed.
    #[error("scrub pass stopped: {0}")]
    Task(String),
}

/// Paces reads to a byte rate.
struct Pacer {
    bytes_per_second: u64,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn new(bytes_per_second: u64) -> Self {
        Pacer {
            bytes_per_second,
            started: Instant::now(),
            bytes: 0,
        }
    }

    async fn consume(&mut self, bytes: usize) {
        if self.bytes_per_second == 0 {
            return;
        }
        self.bytes += bytes as u64;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_second as f64);
        let elapsed = self.started.elapsed();
        if due > elapsed {
            tokio::time::sleep(due - elapsed).await;
        }
    }
}

/// One shard's scrubber.
pub struct Scrubber<S> {
    store: Arc<S>,
    shard: ShardId,
    peers: Option<Arc<ReplicatedBlobClient>>,
    bytes_per_second: u64,
    counters: Arc<ScrubCounters>,
}

impl<S: ChunkStore> Scrubber<S> {
    /// A scrubber of `store`, which is shard `shard`. Without `peers` it detects corruption but
    /// cannot repair. `bytes_per_second` of 0 means unlimited.
    pub fn new(
        store: Arc<S>,
        shard: ShardId,
        peers: Option<Arc<ReplicatedBlobClient>>,
        bytes_per_second: u64,
        counters: Arc<ScrubCounters>,
    ) -> Self {
        Scrubber {
            store,
            shard,
            peers,
            bytes_per_second,
            counters,
        }
    }

    /// The counters this scrubber updates.
    pub fn counters(&self) -> &Arc<ScrubCounters> {
        &self.counters
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&S) -> T + Send + 'static,
    ) -> Result<T, ScrubError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ScrubError::Task(e.to_string()))
    }

    /// One pass over every chunk.
    pub async fn run_pass(&self) -> Result<PassReport, ScrubError> {
        let mut report = PassReport::default();
        let mut pacer = Pacer::new(self.bytes_per_second);
        let mut after = None;
        loop {
            let page = self.blocking(move |s| s.ids_after(after, PAGE)).await??;
            let Some(last) = page.last().copied() else {
                break;
            };
            after = Some(last);
            let mut healthy = Vec::with_capacity(page.len());
            for id in page {
                let (read, marked) = self
                    .blocking(move |s| (s.get(id), s.mark(id).map(|m| m.is_some())))
                    .await?;
                report.checked += 1;
                self.counters.checked.fetch_add(1, Ordering::Relaxed);
                match read {
                    Ok(Some(bytes)) => {
                        pacer.consume(bytes.len()).await;
                        if !marked? {
                            healthy.push(id);
                        }
                    }
                    Ok(None) => {} // deleted since the page was read
                    Err(StoreError::Corrupt { reason, .. }) => {
                        tracing::warn!(%id, shard = %self.shard, "scrub found a corrupt copy: {reason}");
                        report.corrupt += 1;
                        self.counters.corrupt.fetch_add(1, Ordering::Relaxed);
                        if self.repair_local(id).await? {
                            report.repaired_local += 1;
                            self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                        } else {
                            report.unrepaired += 1;
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            report.replicas_restored += self.restore_replicas(&healthy).await?;
        }
        self.counters.passes.fetch_add(1, Ordering::Relaxed);
        self.counters
            .last_pass_unix
            .store((now().0 / 1000).max(0) as u64, Ordering::Relaxed);
        crate::metrics::scrub_pass(&self.shard, &report);
        Ok(report)
    }

    /// Replaces a corrupt local copy with a verified copy from a peer; false if none had one.
    async fn repair_local(&self, id: ChunkId) -> Result<bool, ScrubError> {
        let Some(peers) = &self.peers else {
            return Ok(false);
        };
        for shard in peers.placement().ranked(&id) {
            if shard.id == self.shard {
                continue;
            }
            let Some(client) = peers.shard(&shard.id) else {
                continue;
            };
            match client.get(id).await {
                Ok(bytes) => {
                    let put = self.blocking(move |s| s.put(id, &bytes, now())).await?;
                    match put {
                        Ok(_) => {
                            tracing::info!(%id, shard = %self.shard, from = %shard.id, "scrub repaired a corrupt copy");
                            return Ok(true);
                        }
                        Err(e) => {
                            tracing::warn!(%id, "scrub could not rewrite the chunk: {e}");
                            return Ok(false);
                        }
                    }
                }
                Err(status) => {
                    tracing::debug!(%id, peer = %shard.id, "peer has no intact copy: {}", status.message());
                }
            }
        }
        Ok(false)
    }

    /// Writes intact local chunks to the other placement targets that lack them.
    async fn restore_replicas(&self, ids: &[ChunkId]) -> Result<u64, ScrubError> {
        let Some(peers) = &self.peers else {
            return Ok(0);
        };
        let mut by_peer: std::collections::BTreeMap<ShardId, Vec<ChunkId>> = Default::default();
        for id in ids {
            for target in peers.placement().targets(id) {
                if target.id != self.shard {
                    by_peer.entry(target.id.clone()).or_default().push(*id);
                }
            }
        }
        let mut restored = 0;
        for (peer, wanted) in by_peer {
            let Some(client) = peers.shard(&peer) else {
                continue;
            };
            let present = match client.has(&wanted).await {
                Ok(p) => p,
                Err(status) => {
                    tracing::debug!(%peer, "scrub cannot ask peer for its chunks: {}", status.message());
                    continue;
                }
            };
            for (id, _) in wanted.iter().zip(present).filter(|(_, p)| !p) {
                let id = *id;
                let Ok(Some(bytes)) = self.blocking(move |s| s.get(id)).await? else {
                    continue;
                };
                match client.put(id, &bytes).await {
                    Ok(_) => {
                        restored += 1;
                        self.counters.repaired.fetch_add(1, Ordering::Relaxed);
                        self.counters
                            .replicas_restored
                            .fetch_add(1, Ordering::Relaxed);
                    }
                    Err(status) => {
                        tracing::debug!(%id, %peer, "scrub could not restore a replica: {}", status.message());
                    }
                }
            }
        }
        Ok(restored)
    }

    /// Runs passes every `interval` until `shutdown` turns true. A failed pass is logged and
    /// retried at the next interval.
    pub async fn run(self, interval: Duration, mut shutdown: watch::Receiver<bool>) {
        loop {
            tokio::select! {
                result = self.run_pass() => match result {
                    Ok(report) => tracing::info!(shard = %self.shard, ?report, "scrub pass done"),
                    Err(e) => tracing::error!(shard = %self.shard, "{e}"),
                },
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    }
}
