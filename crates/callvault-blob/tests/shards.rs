//! Blob shards end to end: real RocksDB stores in temp dirs, real tonic servers on 127.0.0.1
//! ephemeral ports, the replicated client, the scrubber and the collector.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callvault_blob::client::ShardClient;
use callvault_blob::store::conformance::{self, StoreHarness};
use callvault_blob::store::{RocksChunkStore, StoreOptions};
use callvault_blob::{
    CallSealer, ChunkId, CollectError, Collector, KeyEncryptionKey, KeyRing, ReplicatedBlobClient,
    ReplicationConfig, ReplicationError, ScrubSnapshot, Scrubber, SealedChunk, ServeError, Shard,
    ShardConfig, ShardId, ShardInfo, ShredMode, StoreError,
};
use callvault_core::{CallId, Jurisdiction};
use callvault_proto::v1::blob_shard_client::BlobShardClient;
use callvault_proto::v1::{
    HasChunksRequest, PutChunkHeader, PutChunkRequest, put_chunk_request::Part,
};
use futures::StreamExt as _;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::Code;

/// Upper bound on any single wait in these tests.
const PATIENCE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// The store on its own.

struct RocksHarness {
    root: tempfile::TempDir,
    next: usize,
}

impl StoreHarness for RocksHarness {
    type Store = RocksChunkStore;

    fn fresh(&mut self) -> RocksChunkStore {
        self.next += 1;
        let dir = self.root.path().join(format!("store-{}", self.next));
        RocksChunkStore::open(&dir, &StoreOptions::default()).unwrap()
    }

    fn reopen(&mut self, store: RocksChunkStore) -> RocksChunkStore {
        let dir = store.path().to_path_buf();
        drop(store);
        RocksChunkStore::open(&dir, &StoreOptions::default()).unwrap()
    }
}

#[test]
fn rocks_store_passes_the_chunk_store_conformance_suite() {
    let mut harness = RocksHarness {
        root: tempfile::tempdir().unwrap(),
        next: 0,
    };
    conformance::run(&mut harness);
}

fn files_with_suffix(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    out.sort();
    out
}

/// A store with a few chunks, flushed to SST and blob files, then closed.
fn populated_store(dir: &Path) -> Vec<(ChunkId, Vec<u8>)> {
    let store = RocksChunkStore::open(dir, &StoreOptions::default()).unwrap();
    let chunks: Vec<_> = (0..10)
        .map(|i| {
            let bytes = conformance::chunk_bytes(i, 4000);
            (ChunkId::of(&bytes), bytes)
        })
        .collect();
    for (id, bytes) in &chunks {
        callvault_blob::ChunkStore::put(&store, *id, bytes, callvault_core::UnixMillis(1)).unwrap();
    }
    store.flush().unwrap();
    drop(store);
    chunks
}

fn open_err(dir: &Path) -> String {
    match RocksChunkStore::open(dir, &StoreOptions::default()) {
        Ok(_) => panic!("opening the damaged store at {} succeeded", dir.display()),
        Err(e) => {
            assert!(matches!(e, StoreError::Open { .. }), "{e}");
            e.to_string()
        }
    }
}

#[test]
fn damaged_or_foreign_directories_fail_to_open_instead_of_coming_up_empty() {
    let root = tempfile::tempdir().unwrap();

    // A non-empty directory that is not a chunk store.
    let foreign = root.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), "hello").unwrap();
    assert!(open_err(&foreign).contains("not a callvault chunk store"));

    // RocksDB's files deleted, the marker left: must not be recreated empty.
    let wiped = root.path().join("wiped");
    populated_store(&wiped);
    for entry in std::fs::read_dir(&wiped).unwrap() {
        let path = entry.unwrap().path();
        if !path.ends_with("CALLVAULT-CHUNK-STORE") {
            std::fs::remove_file(path).unwrap();
        }
    }
    assert!(open_err(&wiped).contains("RocksDB refused the existing store"));

    // CURRENT missing.
    let no_current = root.path().join("no-current");
    populated_store(&no_current);
    std::fs::remove_file(no_current.join("CURRENT")).unwrap();
    open_err(&no_current);

    // MANIFEST damaged.
    let bad_manifest = root.path().join("bad-manifest");
    populated_store(&bad_manifest);
    let manifest = files_with_suffix(&bad_manifest, "")
        .into_iter()
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
        })
        .unwrap();
    let mut bytes = std::fs::read(&manifest).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&manifest, bytes).unwrap();
    open_err(&bad_manifest);

    // An SST truncated.
    let short_sst = root.path().join("short-sst");
    populated_store(&short_sst);
    let ssts = files_with_suffix(&short_sst, ".sst");
    assert!(!ssts.is_empty(), "the flush wrote SST files");
    for sst in ssts {
        let len = std::fs::metadata(&sst).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&sst)
            .unwrap()
            .set_len(len / 2)
            .unwrap();
    }
    open_err(&short_sst);

    // A blob file truncated: RocksDB itself would only notice when a chunk in it is read.
    let short_blob = root.path().join("short-blob");
    populated_store(&short_blob);
    let blobs = files_with_suffix(&short_blob, ".blob");
    assert!(!blobs.is_empty(), "chunks went to blob files");
    let len = std::fs::metadata(&blobs[0]).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&blobs[0])
        .unwrap()
        .set_len(len - 100)
        .unwrap();
    assert!(open_err(&short_blob).contains("blob file"));

    // A blob file a flush had only begun when the process was killed: no version references
    // it, so it is an obsolete leftover, not damage.
    let leftover = root.path().join("leftover-blob");
    populated_store(&leftover);
    // Numbered below the store's newest file, as a file of the crashed process would be.
    let numbers: Vec<u64> = std::fs::read_dir(&leftover)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            name.split('.').next()?.parse().ok()
        })
        .collect();
    let unused = (2..*numbers.iter().max().unwrap())
        .find(|n| !numbers.contains(n))
        .expect("a free number below the newest file");
    let unsealed = leftover.join(format!("{unused:06}.blob"));
    std::fs::write(&unsealed, b"").unwrap();
    RocksChunkStore::open(&leftover, &StoreOptions::default())
        .expect("an unreferenced, unsealed blob file does not stop the store");
    assert!(!unsealed.exists(), "the leftover was purged");

    // The intact store still opens, with its chunks.
    let intact = root.path().join("intact");
    let chunks = populated_store(&intact);
    let store = RocksChunkStore::open(&intact, &StoreOptions::default()).unwrap();
    for (id, bytes) in &chunks {
        assert_eq!(
            callvault_blob::ChunkStore::get(&store, *id)
                .unwrap()
                .as_ref(),
            Some(bytes)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// A cluster of shards served over gRPC.

struct Node {
    id: ShardId,
    addr: SocketAddr,
    dir: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
    scrubber: Option<Scrubber<RocksChunkStore>>,
}

struct Cluster {
    _root: tempfile::TempDir,
    nodes: Vec<Node>,
    shards: Vec<ShardInfo>,
    min_grace_seconds: u64,
}

impl Cluster {
    async fn start(n: usize, min_grace_seconds: u64) -> Cluster {
        let root = tempfile::tempdir().unwrap();
        let mut listeners = Vec::new();
        let mut shards = Vec::new();
        for i in 0..n {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            shards.push(ShardInfo {
                id: ShardId::new(&format!("blob-{i}")).unwrap(),
                addr: addr.to_string(),
            });
            listeners.push(listener);
        }
        let mut cluster = Cluster {
            nodes: shards
                .iter()
                .map(|s| Node {
                    id: s.id.clone(),
                    addr: s.addr.parse().unwrap(),
                    dir: root.path().join(s.id.as_str()),
                    stop: None,
                    task: None,
                    scrubber: None,
                })
                .collect(),
            _root: root,
            shards,
            min_grace_seconds,
        };
        for (i, listener) in listeners.into_iter().enumerate() {
            cluster.serve(i, listener).await;
        }
        cluster
    }

    fn config(&self, i: usize) -> ShardConfig {
        let node = &self.nodes[i];
        let mut config = ShardConfig::new(node.id.clone(), node.dir.clone());
        config.listen_addr = node.addr;
        config.shards = self.shards.clone();
        config.scrub_interval_seconds = 0; // passes are run on demand below
        config.scrub_bytes_per_second = 0;
        config.collect_min_grace_seconds = self.min_grace_seconds;
        config.orphan_min_age_seconds = self.min_grace_seconds;
        config.peer_request_timeout_ms = 5_000;
        config
    }

    async fn serve(&mut self, i: usize, listener: TcpListener) {
        let config = self.config(i);
        let shard = tokio::task::spawn_blocking(move || Shard::open(config))
            .await
            .unwrap()
            .unwrap();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let node = &mut self.nodes[i];
        node.scrubber = Some(shard.scrubber());
        node.stop = Some(stop_tx);
        node.task = Some(tokio::spawn(shard.serve(listener, async {
            let _ = stop_rx.await;
        })));
    }

    /// Stops shard `i` gracefully and waits until its store is closed.
    async fn stop(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.scrubber = None; // it holds the store open
        node.stop.take().expect("running").send(()).unwrap();
        let task = node.task.take().unwrap();
        tokio::time::timeout(PATIENCE, task)
            .await
            .expect("shard stops in time")
            .unwrap()
            .expect("shard shuts down cleanly");
    }

    /// Restarts shard `i` on the same address and data directory.
    async fn restart(&mut self, i: usize) {
        let listener = TcpListener::bind(self.nodes[i].addr).await.unwrap();
        self.serve(i, listener).await;
    }

    async fn scrub(&self, i: usize) -> callvault_blob::scrub::PassReport {
        let scrubber = self.nodes[i].scrubber.as_ref().expect("running");
        tokio::time::timeout(PATIENCE, scrubber.run_pass())
            .await
            .expect("scrub pass in time")
            .unwrap()
    }

    fn client(&self) -> ReplicatedBlobClient {
        let config = ReplicationConfig {
            request_timeout: Duration::from_secs(5),
            ..ReplicationConfig::default()
        };
        ReplicatedBlobClient::new(self.shards.clone(), &config).unwrap()
    }

    fn shard_client(&self, i: usize) -> ShardClient {
        ShardClient::connect_lazy(self.shards[i].clone(), &ReplicationConfig::default()).unwrap()
    }

    async fn shutdown(mut self) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].task.is_some() {
                self.stop(i).await;
            }
        }
    }
}

fn key_ring() -> KeyRing {
    let mut ring = KeyRing::new();
    ring.insert(Jurisdiction::Tx, KeyEncryptionKey::from_bytes([0x42; 32]));
    ring
}

/// Seals `n` chunks of a call, 2 to 6 KiB each, so they land in blob files.
fn call_chunks(ring: &KeyRing, call: &str, n: u64) -> Vec<SealedChunk> {
    let sealer = CallSealer::new(ring, &CallId::new(call).unwrap(), Jurisdiction::Tx).unwrap();
    (0..n)
        .map(|seq| {
            let audio = conformance::chunk_bytes(seq, 2048 + (seq as usize * 37) % 4096);
            sealer.seal(seq, &audio)
        })
        .collect()
}

async fn holders_everywhere(cluster: &Cluster, ids: &[ChunkId]) -> Vec<Vec<bool>> {
    let mut out = Vec::new();
    for i in 0..cluster.nodes.len() {
        out.push(cluster.shard_client(i).has(ids).await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_shard_restart_and_repair_restores_three_replicas() {
    let mut cluster = Cluster::start(3, 0).await;
    let client = Arc::new(cluster.client());
    let chunks = Arc::new(call_chunks(&key_ring(), "tx-call-restart", 1000));
    let acks = Arc::new(AtomicUsize::new(0));

    // Writer: all 1000 chunks, 8 in flight, recording which were acknowledged.
    let writer = {
        let (client, chunks, acks) = (client.clone(), chunks.clone(), acks.clone());
        tokio::spawn(async move {
            let results: Vec<(usize, Result<_, ReplicationError>)> =
                futures::stream::iter(0..chunks.len())
                    .map(|i| {
                        let (client, chunks, acks) = (client.clone(), chunks.clone(), acks.clone());
                        async move {
                            let r = client.put_sealed(&chunks[i]).await;
                            if r.is_ok() {
                                acks.fetch_add(1, Ordering::SeqCst);
                            }
                            (i, r)
                        }
                    })
                    .buffer_unordered(8)
                    .collect()
                    .await;
            results
        })
    };

    // While it writes: stop shard 2 after 250 acks, restart it after 650.
    let wait_for = |n: usize| {
        let acks = acks.clone();
        async move {
            let started = Instant::now();
            while acks.load(Ordering::SeqCst) < n {
                assert!(started.elapsed() < PATIENCE, "writes stalled at {n}");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(250).await;
    cluster.stop(2).await;
    let stopped_at = acks.load(Ordering::SeqCst);
    wait_for(stopped_at + 400).await;
    cluster.restart(2).await;

    let results = tokio::time::timeout(PATIENCE, writer)
        .await
        .unwrap()
        .unwrap();
    let acked: Vec<usize> = results
        .iter()
        .filter_map(|(i, r)| r.as_ref().ok().map(|_| *i))
        .collect();
    for (i, r) in &results {
        if let Err(e) = r {
            panic!("chunk {i} not acknowledged with one shard of three down: {e}");
        }
    }
    assert_eq!(acked.len(), 1000);
    // Every write reached W=2 replicas before it returned.
    assert!(
        results
            .iter()
            .all(|(_, r)| r.as_ref().unwrap().acked.len() >= 2)
    );

    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    let before = holders_everywhere(&cluster, &ids).await;
    let missing_on_2 = before[2].iter().filter(|p| !**p).count();
    assert!(
        missing_on_2 >= 300,
        "shard 2 missed only {missing_on_2} chunks"
    );
    assert!(
        before[0].iter().chain(&before[1]).all(|p| *p),
        "the live shards hold everything"
    );

    // Every acknowledged chunk reads back byte for byte (after the restart, through whichever
    // replica placement tries first).
    for &i in &acked {
        let got = client.get(chunks[i].id).await.unwrap();
        assert_eq!(got.bytes, chunks[i].bytes, "chunk {i}");
    }

    // A repair pass on every shard restores the third replica of every chunk.
    let mut restored = 0;
    for i in 0..3 {
        let report = cluster.scrub(i).await;
        assert_eq!(report.corrupt, 0);
        restored += report.replicas_restored;
    }
    let after = holders_everywhere(&cluster, &ids).await;
    for (shard, present) in after.iter().enumerate() {
        let missing = present.iter().filter(|p| !**p).count();
        assert_eq!(
            missing, 0,
            "shard {shard} still lacks {missing} chunks after repair"
        );
    }
    assert!(restored > 0, "the scrubbers restored no replica");
    for i in 0..3 {
        let status = cluster.shard_client(i).status().await.unwrap();
        assert_eq!(status.chunks, 1000, "shard {i}");
        assert!(status.scrub_last_pass_unix > 0);
        assert!(status.scrub_checked >= 1000);
    }
    cluster.shutdown().await;
}

/// Finds `needle` in the blob files of `dir` and flips one byte of each occurrence.
fn flip_on_disk(dir: &Path, needle: &[u8]) -> usize {
    let mut flipped = 0;
    for path in files_with_suffix(dir, ".blob") {
        let mut bytes = std::fs::read(&path).unwrap();
        let mut changed = false;
        let mut at = 0;
        while let Some(pos) = bytes[at..].windows(needle.len()).position(|w| w == needle) {
            bytes[at + pos + needle.len() / 2] ^= 0x01;
            at += pos + needle.len();
            changed = true;
            flipped += 1;
        }
        if changed {
            std::fs::write(&path, bytes).unwrap();
        }
    }
    flipped
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_byte_flipped_on_disk_is_read_around_and_scrubbed() {
    let mut cluster = Cluster::start(3, 0).await;
    let client = cluster.client();
    let chunks = call_chunks(&key_ring(), "tx-call-corrupt", 60);
    for chunk in &chunks {
        let receipt = client.put_sealed(chunk).await.unwrap();
        assert!(receipt.acked.len() >= 2);
    }
    // Let the background writes to the third replica land.
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    let started = Instant::now();
    while holders_everywhere(&cluster, &ids)
        .await
        .iter()
        .any(|p| p.contains(&false))
    {
        assert!(started.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Two chunks whose first choice is shard 0: one is healed by a read, one by the scrubber.
    let first_on_0: Vec<&SealedChunk> = chunks
        .iter()
        .filter(|c| client.placement().ranked(&c.id)[0].id.as_str() == "blob-0")
        .take(2)
        .collect();
    assert_eq!(first_on_0.len(), 2);
    let (read_healed, scrub_healed) = (first_on_0[0], first_on_0[1]);

    cluster.stop(0).await; // flushes memtables: the chunks are now in blob files
    for chunk in [read_healed, scrub_healed] {
        let needle = &chunk.bytes[200..264];
        assert!(
            flip_on_disk(&cluster.nodes[0].dir, needle) >= 1,
            "chunk found on disk"
        );
    }
    cluster.restart(0).await;

    let shard0 = cluster.shard_client(0);
    for chunk in [read_healed, scrub_healed] {
        let status = shard0.get(chunk.id).await.unwrap_err();
        assert_eq!(status.code(), Code::DataLoss, "{status:?}");
    }
    // Reads still return the right bytes, from another replica, and repair shard 0.
    let read = client.get(read_healed.id).await.unwrap();
    assert_eq!(read.bytes, read_healed.bytes);
    assert_ne!(read.served_by.as_str(), "blob-0");
    assert_eq!(read.repaired, vec![ShardId::new("blob-0").unwrap()]);
    assert_eq!(shard0.get(read_healed.id).await.unwrap(), read_healed.bytes);

    // The scrubber finds the other one and repairs it from a peer; at a limited rate.
    let status_before = shard0.status().await.unwrap();
    assert_eq!(status_before.scrub_corrupt, 0);
    let report = cluster.scrub(0).await;
    assert_eq!(report.checked, 60);
    assert_eq!(report.corrupt, 1);
    assert_eq!(report.repaired_local, 1);
    assert_eq!(report.unrepaired, 0);
    assert_eq!(
        shard0.get(scrub_healed.id).await.unwrap(),
        scrub_healed.bytes
    );
    let status = shard0.status().await.unwrap();
    assert_eq!(status.scrub_corrupt, 1);
    assert!(status.scrub_repaired >= 1);
    assert!(status.scrub_last_pass_unix > 0);
    // A second pass finds nothing wrong.
    assert_eq!(cluster.scrub(0).await.corrupt, 0);
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_scrubber_keeps_to_its_byte_rate() {
    let root = tempfile::tempdir().unwrap();
    let store = Arc::new(RocksChunkStore::open(root.path(), &StoreOptions::default()).unwrap());
    let mut total = 0;
    for i in 0..40 {
        let bytes = conformance::chunk_bytes(i, 25_000);
        total += bytes.len();
        callvault_blob::ChunkStore::put(
            &*store,
            ChunkId::of(&bytes),
            &bytes,
            callvault_core::UnixMillis(0),
        )
        .unwrap();
    }
    let rate = 1_000_000u64; // 1 MB/s: 1 MB of chunks takes about a second
    let counters = Arc::new(callvault_blob::ScrubCounters::default());
    let scrubber = Scrubber::new(
        store,
        ShardId::new("solo").unwrap(),
        None,
        rate,
        counters.clone(),
    );
    let started = Instant::now();
    let report = scrubber.run_pass().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(report.checked, 40);
    let expected = Duration::from_secs_f64(total as f64 / rate as f64);
    assert!(
        elapsed >= expected.mul_f64(0.95),
        "{elapsed:?} < {expected:?}"
    );
    assert!(elapsed < expected * 3, "{elapsed:?} far above {expected:?}");
    let snap: ScrubSnapshot = counters.snapshot();
    assert_eq!((snap.checked, snap.passes), (40, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn collection_removes_a_dead_calls_chunks_everywhere_and_keeps_the_live_call() {
    let mut cluster = Cluster::start(3, 0).await;
    let client = Arc::new(cluster.client());
    let ring = key_ring();
    let dead = call_chunks(&ring, "tx-call-dead", 25);
    let live = call_chunks(&ring, "tx-call-live", 25);
    for chunk in dead.iter().chain(&live) {
        client.put_sealed(chunk).await.unwrap();
    }
    let dead_ids: Vec<ChunkId> = dead.iter().map(|c| c.id).collect();
    let live_ids: Vec<ChunkId> = live.iter().map(|c| c.id).collect();
    // Third replicas land in the background; wait for them so the counts below are exact.
    let started = Instant::now();
    let all: Vec<ChunkId> = dead_ids.iter().chain(&live_ids).copied().collect();
    while holders_everywhere(&cluster, &all)
        .await
        .iter()
        .any(|p| p.contains(&false))
    {
        assert!(started.elapsed() < PATIENCE);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // A mark that a stopped shard missed yields no receipt.
    cluster.stop(1).await;
    let collector = Collector::new(client.clone(), Duration::ZERO);
    match collector.mark_dead(&dead_ids).await {
        Err(CollectError::PartialMark { acked, failed }) => {
            assert_eq!(acked.len(), 2);
            assert_eq!(failed.0.len(), 1);
            assert_eq!(failed.0[0].shard.as_str(), "blob-1");
        }
        other => panic!("partial mark accepted: {other:?}"),
    }
    cluster.restart(1).await;

    // Marked chunks stay readable; a collector with a grace period refuses to collect early,
    // and a shard asked to collect with a grace longer than the marks' age removes nothing.
    let receipt = collector.mark_dead(&dead_ids).await.unwrap();
    assert_eq!(receipt.acked_by().len(), 3);
    assert_eq!(client.get(dead_ids[0]).await.unwrap().bytes, dead[0].bytes);
    let patient = Collector::new(client.clone(), Duration::from_secs(3600));
    assert!(matches!(
        patient.collect(&receipt).await,
        Err(CollectError::GraceNotElapsed { .. })
    ));
    assert_eq!(
        cluster
            .shard_client(0)
            .collect(Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    for i in 0..3 {
        assert_eq!(
            cluster.shard_client(i).status().await.unwrap().marked_dead,
            25
        );
    }

    // Stage 2: every replica of the dead call goes; the live call stays whole.
    let removed = collector.collect(&receipt).await.unwrap();
    assert_eq!(removed, 75, "25 chunks x 3 replicas");
    let dead_holders = holders_everywhere(&cluster, &dead_ids).await;
    let live_holders = holders_everywhere(&cluster, &live_ids).await;
    for i in 0..3 {
        assert!(
            dead_holders[i].iter().all(|p| !p),
            "shard {i} kept dead chunks"
        );
        assert!(
            live_holders[i].iter().all(|p| *p),
            "shard {i} lost live chunks"
        );
        let status = cluster.shard_client(i).status().await.unwrap();
        assert_eq!((status.chunks, status.marked_dead), (25, 0));
    }
    assert!(matches!(
        client.get(dead_ids[3]).await,
        Err(ReplicationError::NotFound { .. })
    ));
    for chunk in &live {
        assert_eq!(client.get(chunk.id).await.unwrap().bytes, chunk.bytes);
    }
    // A late copy of a dead chunk is refused, and scrubbing cannot bring one back.
    match client.put_sealed(&dead[0]).await {
        Err(ReplicationError::WriteQuorum { failed, .. }) => {
            assert!(
                failed.0.iter().all(|f| f.code == Code::FailedPrecondition),
                "{failed}"
            );
        }
        other => panic!("a collected chunk was stored again: {other:?}"),
    }
    for i in 0..3 {
        cluster.scrub(i).await;
    }
    let dead_holders = holders_everywhere(&cluster, &dead_ids).await;
    assert!(dead_holders.iter().flatten().all(|p| !p));
    cluster.shutdown().await;
}

/// Issue 14: a shredded chunk never comes back. The chunk is shredded on one shard while a read
/// repair, a scrub pass and a late write all try to put it back there, then on the others; in
/// the end no shard holds it, every shard keeps its tombstone, and no path can store it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_shredded_chunk_never_comes_back_through_repair_scrub_or_a_late_write() {
    let cluster = Cluster::start(3, 0).await;
    let client = Arc::new(cluster.client());
    let chunks = call_chunks(&key_ring(), "tx-call-shredded", 40);
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    // Every chunk on its placement targets except shard 2, which the racers will try to fill.
    for chunk in &chunks {
        for target in client.placement().targets(&chunk.id) {
            if target.id.as_str() != "blob-2" {
                client
                    .shard(&target.id)
                    .unwrap()
                    .put(chunk.id, &chunk.bytes)
                    .await
                    .unwrap();
            }
        }
    }
    let third = cluster.shard_client(2);
    let racers = {
        let (client, chunks, late) = (client.clone(), chunks.clone(), chunks.clone());
        let scrubber_of_0 = cluster.nodes[0].scrubber.as_ref().unwrap();
        let third = third.clone();
        let repairs = async move {
            for chunk in &chunks {
                // Reads through placement order; a replica lacking the chunk is rewritten.
                let _ = client.get(chunk.id).await;
            }
        };
        let late_writes = async move {
            for chunk in &late {
                let _ = third.put(chunk.id, &chunk.bytes).await;
            }
        };
        async move {
            let (_, _, scrubbed) = tokio::join!(repairs, late_writes, scrubber_of_0.run_pass());
            scrubbed.expect("the racing scrub pass completes");
        }
    };
    // The shred on shard 2 races them; then the other shards shred too.
    let (_, shredded) = tokio::join!(racers, async {
        tokio::time::sleep(Duration::from_millis(5)).await;
        third.shred(&ids, ShredMode::Deferred).await
    });
    shredded.unwrap();
    // Whatever landed before the shred is gone, and nothing can land after it.
    for chunk in &chunks {
        let refused = third.put(chunk.id, &chunk.bytes).await.unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    }
    assert!(third.has(&ids).await.unwrap().iter().all(|held| !held));
    let _ = cluster.scrub(0).await;
    let _ = cluster.scrub(1).await;
    for chunk in chunks.iter().take(5) {
        let _ = client.get(chunk.id).await;
    }
    assert!(
        third.has(&ids).await.unwrap().iter().all(|held| !held),
        "scrub passes and read repairs after the shred brought nothing back"
    );

    // The other shards shred (purge mode, rewriting files), and then every shard confirms.
    for i in 0..2 {
        cluster
            .shard_client(i)
            .shred(&ids, ShredMode::RewriteFiles)
            .await
            .unwrap();
    }
    for i in 0..3 {
        let presence = cluster.shard_client(i).presence(&ids).await.unwrap();
        assert!(
            presence
                .iter()
                .all(|(held, tombstoned)| !held && *tombstoned),
            "shard {i} holds a shredded chunk or lacks its tombstone"
        );
    }
    match client.put_sealed(&chunks[0]).await {
        Err(ReplicationError::WriteQuorum { failed, .. }) => {
            assert!(
                failed.0.iter().all(|f| f.code == Code::FailedPrecondition),
                "{failed}"
            );
        }
        other => panic!("a shredded chunk was stored again: {other:?}"),
    }
    assert!(matches!(
        client.get(ids[0]).await,
        Err(ReplicationError::NotFound { .. })
    ));
    // The shards that rewrote their files hold no shredded chunk's id in any data file: the
    // tombstones are filed under a hash of it. (A MANIFEST may still name a key range.)
    for i in 0..2 {
        for path in std::fs::read_dir(&cluster.nodes[i].dir).unwrap() {
            let path = path.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("MANIFEST-")
            {
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            for id in &ids {
                assert!(
                    !bytes.windows(32).any(|w| w == id.as_bytes()),
                    "{} names a shredded chunk",
                    path.display()
                );
            }
        }
    }
    cluster.shutdown().await;
}

/// The orphan sweep's two requests: a listing of old-enough chunks, and a removal that the shard
/// re-checks, refusing ages below its floor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_requests_list_old_chunks_and_refuse_ages_below_the_floor() {
    // A floor of one second.
    let cluster = Cluster::start(1, 1).await;
    let shard = cluster.shard_client(0);
    let chunks = call_chunks(&key_ring(), "tx-call-orphan", 12);
    for chunk in &chunks {
        shard.put(chunk.id, &chunk.bytes).await.unwrap();
    }
    // An age of an hour finds nothing yet; an age below the floor is refused.
    let (young, resume) = shard
        .orphan_candidates(None, Duration::from_secs(3600), 100)
        .await
        .unwrap();
    assert!(young.is_empty() && resume.is_none());
    let refused = shard
        .orphan_candidates(None, Duration::ZERO, 100)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let refused = shard
        .remove_orphans(&[chunks[0].id], Duration::ZERO)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, resume) = shard
            .orphan_candidates(after, Duration::from_secs(1), 5)
            .await
            .unwrap();
        seen.extend(page);
        match resume {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let mut ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    ids.sort();
    assert_eq!(seen, ids);
    let (removed, bytes) = shard
        .remove_orphans(&ids[..4], Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(removed, 4);
    assert_eq!(
        bytes,
        chunks
            .iter()
            .filter(|c| ids[..4].contains(&c.id))
            .map(|c| c.bytes.len() as u64)
            .sum::<u64>()
    );
    assert_eq!(
        shard
            .remove_orphans(&ids[4..], Duration::from_secs(3600))
            .await
            .unwrap(),
        (0, 0),
        "a chunk younger than the age asked for stays"
    );
    cluster.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_refuses_bad_requests_with_clear_statuses() {
    let cluster = Cluster::start(1, 60).await;
    let addr = cluster.shards[0].addr.clone();
    let mut raw = BlobShardClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let shard = cluster.shard_client(0);

    let put = |header: Option<PutChunkHeader>, data: Vec<Vec<u8>>| {
        let mut messages = Vec::new();
        if let Some(h) = header {
            messages.push(PutChunkRequest {
                part: Some(Part::Header(h)),
            });
        }
        messages.extend(data.into_iter().map(|d| PutChunkRequest {
            part: Some(Part::Data(d)),
        }));
        tokio_stream_iter(messages)
    };
    let bytes = conformance::chunk_bytes(1, 5000);
    let id = ChunkId::of(&bytes);
    let header = |id: &ChunkId, length: u64| {
        Some(PutChunkHeader {
            chunk_id: id.as_bytes().to_vec(),
            length,
        })
    };

    let cases: Vec<(
        &str,
        futures::stream::Iter<std::vec::IntoIter<PutChunkRequest>>,
    )> = vec![
        ("no header", put(None, vec![bytes.clone()])),
        (
            "short id",
            put(
                Some(PutChunkHeader {
                    chunk_id: vec![1; 31],
                    length: 5000,
                }),
                vec![bytes.clone()],
            ),
        ),
        (
            "too long",
            put(header(&id, 4 * 1024 * 1024 + 1), vec![bytes.clone()]),
        ),
        (
            "wrong hash",
            put(header(&ChunkId::of(b"other"), 5000), vec![bytes.clone()]),
        ),
        ("short data", put(header(&id, 5001), vec![bytes.clone()])),
        ("extra data", put(header(&id, 4999), vec![bytes.clone()])),
    ];
    for (what, stream) in cases {
        let status = raw.put_chunk(stream).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
        assert!(!status.message().is_empty());
    }
    let wrong = raw
        .put_chunk(put(
            header(&ChunkId::of(b"other"), 5000),
            vec![bytes.clone()],
        ))
        .await
        .unwrap_err();
    assert!(wrong.message().contains("blake3"), "{}", wrong.message());

    // A good chunk in two pieces, then again (idempotent).
    let ok = raw
        .put_chunk(put(
            header(&id, 5000),
            vec![bytes[..2000].to_vec(), bytes[2000..].to_vec()],
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!ok.already_present);
    assert!(
        shard.put(id, &bytes).await.unwrap(),
        "second put reports already present"
    );
    assert_eq!(shard.get(id).await.unwrap(), bytes);

    assert_eq!(
        shard.get(ChunkId::of(b"absent")).await.unwrap_err().code(),
        Code::NotFound
    );
    let too_many = HasChunksRequest {
        chunk_ids: vec![id.as_bytes().to_vec(); 10_001],
    };
    assert_eq!(
        raw.has_chunks(too_many).await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let max = HasChunksRequest {
        chunk_ids: vec![id.as_bytes().to_vec(); 10_000],
    };
    assert!(
        raw.has_chunks(max)
            .await
            .unwrap()
            .into_inner()
            .present
            .iter()
            .all(|p| *p)
    );
    // The shard's minimum grace is 60 s.
    assert_eq!(
        shard
            .collect(Duration::from_secs(10))
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    let status = shard.status().await.unwrap();
    assert_eq!((status.chunks, status.bytes), (1, 5000));
    cluster.shutdown().await;
}

fn tokio_stream_iter(
    messages: Vec<PutChunkRequest>,
) -> futures::stream::Iter<std::vec::IntoIter<PutChunkRequest>> {
    futures::stream::iter(messages)
}

#[test]
fn shard_configs_deserialize_from_the_documented_toml() {
    let config: ShardConfig = toml::from_str(
        r#"
        shard_id = "blob-1"
        data_dir = "/var/lib/callvault/blob"
        listen_addr = "0.0.0.0:7400"
        replicas = 3
        scrub_bytes_per_second = 67108864
        scrub_interval_seconds = 86400
        collect_min_grace_seconds = 86400
        shards = [
          { id = "blob-1", addr = "10.0.0.1:7400" },
          { id = "blob-2", addr = "10.0.0.2:7400" },
          { id = "blob-3", addr = "10.0.0.3:7400" },
        ]
        "#,
    )
    .unwrap();
    let by_id: HashMap<_, _> = config
        .shards
        .iter()
        .map(|s| (s.id.as_str(), &s.addr))
        .collect();
    assert_eq!(by_id["blob-2"], "10.0.0.2:7400");
    assert_eq!(config.scrub_bytes_per_second, 64 << 20);
}
