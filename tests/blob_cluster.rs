//! Blob shards as real `callvault serve --roles blob` processes on loopback: acknowledged chunks
//! survive a shard crash and regain three replicas, a byte flipped on disk is read around and
//! scrubbed, and collection removes a dead call's chunks everywhere.

use std::sync::Arc;
use std::time::Duration;

use callvault_blob::{
    CallSealer, ChunkId, Collector, KeyEncryptionKey, KeyRing, ReplicatedBlobClient,
    ReplicationConfig, SealedChunk, ShardId, ShardInfo,
};
use callvault_core::{CallId, Jurisdiction};
use callvault_proto::identity::Credential;
use callvault_tests::{NodeProcess, Role, eventually, flip_on_disk, free_port};

struct Shards {
    nodes: Vec<NodeProcess>,
    infos: Vec<ShardInfo>,
    _dir: tempfile::TempDir,
}

impl Shards {
    /// Three shard processes that scrub every second (so repairs happen while the test waits).
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let infos: Vec<ShardInfo> = (1..=3)
            .map(|i| ShardInfo {
                id: ShardId::new(&format!("blob-{i}")).unwrap(),
                addr: format!("127.0.0.1:{}", free_port()),
            })
            .collect();
        let set: Vec<String> = infos
            .iter()
            .map(|s| format!("{{ id = \"{}\", addr = \"{}\" }}", s.id, s.addr))
            .collect();
        let mut nodes = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let extra = format!(
                "[blob]\nlisten_addr = \"{}\"\nshards = [{}]\nscrub_interval_seconds = 1\n\
                 scrub_bytes_per_second = 0\ncollect_min_grace_seconds = 0\n",
                info.addr,
                set.join(", ")
            );
            let mut node = NodeProcess::with_roles(dir.path(), i as u64 + 1, &["blob"], &extra);
            node.start();
            nodes.push(node);
        }
        let shards = Shards {
            nodes,
            infos,
            _dir: dir,
        };
        for i in 0..3 {
            eventually("a shard to answer", Duration::from_secs(30), || async {
                shards
                    .client()
                    .shard(&shards.infos[i].id)?
                    .status()
                    .await
                    .ok()
            })
            .await;
        }
        shards
    }

    /// A client acting as a blob shard (writes, reads, repairs).
    fn client(&self) -> ReplicatedBlobClient {
        self.client_as(Role::Blob)
    }

    /// A client acting as `role` (the collector is the metadata store's).
    fn client_as(&self, role: Role) -> ReplicatedBlobClient {
        let token = callvault_tests::role_token(role);
        let config = ReplicationConfig {
            peer: Credential::new(role, "test", Some(&token)).unwrap(),
            ..ReplicationConfig::default()
        };
        ReplicatedBlobClient::new(self.infos.clone(), &config).unwrap()
    }

    async fn holders(&self, ids: &[ChunkId]) -> Vec<Vec<bool>> {
        let client = self.client();
        let mut out = Vec::new();
        for info in &self.infos {
            out.push(client.shard(&info.id).unwrap().has(ids).await.unwrap());
        }
        out
    }

    async fn all_replicated(&self, ids: &[ChunkId]) {
        eventually(
            "every chunk on all three shards",
            Duration::from_secs(90),
            || async {
                self.holders(ids)
                    .await
                    .iter()
                    .all(|p| p.iter().all(|x| *x))
                    .then_some(())
            },
        )
        .await;
    }
}

fn sealed(call: &str, n: u64) -> Vec<SealedChunk> {
    let mut ring = KeyRing::new();
    ring.insert(Jurisdiction::Tx, KeyEncryptionKey::from_bytes([0x42; 32]));
    let sealer = CallSealer::new(&ring, &CallId::new(call).unwrap(), Jurisdiction::Tx).unwrap();
    (0..n)
        .map(|seq| {
            let audio: Vec<u8> = (0..2048 + (seq as usize * 37) % 4096)
                .map(|i| (i as u64 * 31 + seq) as u8)
                .collect();
            sealer.seal(seq, &audio)
        })
        .collect()
}

/// Invariant 4 for blobs: acknowledged chunks survive the loss of R−W replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_chunks_survive_a_shard_crash_and_regain_three_replicas() {
    let mut shards = Shards::start().await;
    let client = Arc::new(shards.client());
    let chunks = Arc::new(sealed("tx-crash", 1000));
    let writer = {
        let (client, chunks) = (client.clone(), chunks.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for (i, chunk) in chunks.iter().enumerate() {
                let receipt = client.put_sealed(chunk).await.unwrap_or_else(|e| {
                    panic!("chunk {i} refused with one shard of three down: {e}")
                });
                assert!(receipt.acked.len() >= 2);
                acked.push(i);
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    shards.nodes[2].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    shards.nodes[2].start();
    let acked = tokio::time::timeout(Duration::from_secs(120), writer)
        .await
        .expect("writes finish")
        .unwrap();
    assert_eq!(acked.len(), 1000);

    for &i in &acked {
        let read = client.get(chunks[i].id).await.unwrap();
        assert_eq!(read.bytes, chunks[i].bytes, "chunk {i}");
    }
    // The restarted shard's scrubber (and its peers') restore the third replica of everything.
    let ids: Vec<ChunkId> = chunks.iter().map(|c| c.id).collect();
    shards.all_replicated(&ids).await;
    for node in &mut shards.nodes {
        assert!(node.stop(), "shard {} stops cleanly", node.id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flipped_byte_is_read_around_and_scrubbed_and_collection_spares_live_calls() {
    let mut shards = Shards::start().await;
    let client = Arc::new(shards.client());
    let live = sealed("tx-live", 30);
    let dead = sealed("tx-dead", 30);
    for chunk in live.iter().chain(&dead) {
        client.put_sealed(chunk).await.unwrap();
    }
    let live_ids: Vec<ChunkId> = live.iter().map(|c| c.id).collect();
    let dead_ids: Vec<ChunkId> = dead.iter().map(|c| c.id).collect();
    shards.all_replicated(&live_ids).await;
    shards.all_replicated(&dead_ids).await;

    // Flip a byte of one live chunk on shard 1's disk (stopped, so its data is in blob files).
    let victim = &live[7];
    assert!(shards.nodes[0].stop());
    let flipped = flip_on_disk(&shards.nodes[0].data_dir(), &victim.bytes[200..264]);
    assert!(flipped >= 1, "the chunk is on disk");
    shards.nodes[0].start();
    let shard1 = client.shard(&shards.infos[0].id).unwrap().clone();
    eventually("shard 1 back", Duration::from_secs(30), || async {
        shard1.status().await.ok()
    })
    .await;

    // A read still returns the right bytes, whichever replica serves it.
    assert_eq!(client.get(victim.id).await.unwrap().bytes, victim.bytes);
    // Shard 1's scrubber finds and repairs its copy.
    eventually(
        "shard 1 to scrub its bad copy",
        Duration::from_secs(60),
        || async {
            let status = shard1.status().await.ok()?;
            (status.scrub_corrupt >= 1 && status.scrub_repaired >= 1).then_some(())
        },
    )
    .await;
    assert_eq!(shard1.get(victim.id).await.unwrap(), victim.bytes);

    // Collection: mark the dead call's chunks on every shard, then remove them.
    let collector = Collector::new(Arc::new(shards.client_as(Role::Meta)), Duration::ZERO);
    let receipt = collector.mark_dead(&dead_ids).await.unwrap();
    let removed = collector.collect(&receipt).await.unwrap();
    assert!(removed >= 30, "removed {removed}");
    for (i, present) in shards.holders(&dead_ids).await.iter().enumerate() {
        assert!(present.iter().all(|p| !p), "shard {i} kept a dead chunk");
    }
    for (i, present) in shards.holders(&live_ids).await.iter().enumerate() {
        assert!(present.iter().all(|p| *p), "shard {i} lost a live chunk");
    }
    for chunk in &live {
        assert_eq!(client.get(chunk.id).await.unwrap().bytes, chunk.bytes);
    }
    for node in &mut shards.nodes {
        assert!(node.stop());
    }
}
