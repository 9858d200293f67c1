//! The metadata store as real `callvault serve` processes on loopback: crashes, catch-up by
//! snapshot, and damaged data.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use callvault_core::codec::VersionedRecord;
use callvault_meta::{Command, CommandResult};
use callvault_proto::v1 as pb;
use callvault_tests::{MetaCluster, NodeProcess, commit, eventually, tx_policy};

/// Fast elections so failover fits a test's time.
const FAST_RAFT: &str =
    "[meta]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";

/// Proposes `command` through the nodes in turn until one commits it, for at most `timeout`.
async fn propose(nodes: &[(u64, String)], command: &Command, timeout: Duration) -> CommandResult {
    let bytes = command.encode();
    let deadline = Instant::now() + timeout;
    let mut attempt = 0usize;
    loop {
        let (_, addr) = &nodes[attempt % nodes.len()];
        attempt += 1;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = callvault_proto::auth::Bearer::new(&callvault_tests::role_token(
            callvault_tests::Role::Meta,
        ))
        .unwrap()
        .channel(channel);
        let mut client = pb::meta_store_client::MetaStoreClient::new(channel);
        match client
            .propose(pb::ProposeRequest {
                command: bytes.clone(),
            })
            .await
        {
            Ok(response) => return CommandResult::decode(&response.into_inner().result).unwrap(),
            Err(status) => {
                assert!(
                    Instant::now() < deadline,
                    "proposal not committed within {timeout:?}: {status}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

fn addresses(cluster: &MetaCluster) -> Vec<(u64, String)> {
    cluster
        .nodes
        .iter()
        .map(|n| (n.id, n.addr.clone()))
        .collect()
}

async fn digest(node: &NodeProcess) -> Option<(u64, Vec<u8>)> {
    let r = node
        .meta()
        .state_digest(pb::StateDigestRequest {})
        .await
        .ok()?
        .into_inner();
    Some((r.applied_index, r.digest))
}

/// Waits until every running node is at the same applied index with the same state digest.
async fn converged(cluster: &MetaCluster) -> (u64, Vec<u8>) {
    eventually(
        "every replica at the same position and state",
        Duration::from_secs(60),
        || async {
            let mut seen = BTreeSet::new();
            for node in &cluster.nodes {
                seen.insert(digest(node).await?);
            }
            (seen.len() == 1).then(|| seen.into_iter().next().unwrap())
        },
    )
    .await
}

async fn local_counters(node: &NodeProcess) -> pb::ReadCountersResponse {
    node.meta()
        .read_counters(pb::ReadCountersRequest {
            jurisdiction: "US-TX".into(),
            local: true,
            as_of_ms: 0,
        })
        .await
        .expect("counters")
        .into_inner()
}

/// Invariant 4: an acknowledged call survives the loss of any minority of meta voters. 10,000
/// commits from 16 concurrent clients while the leader is killed with SIGKILL and restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledged_writes_survive_a_leader_crash() {
    const WRITES: usize = 10_000;
    const CLIENTS: usize = 16;
    let mut cluster = MetaCluster::start(3, FAST_RAFT).await;
    let nodes = addresses(&cluster);
    assert_eq!(
        propose(&nodes, &tx_policy(), Duration::from_secs(30)).await,
        CommandResult::PolicyPut { version: 1 }
    );
    let first_leader = cluster.leader().await;
    let first_term = cluster.node(first_leader).status().await.unwrap().term;

    let next = Arc::new(AtomicUsize::new(0));
    let acked = Arc::new(AtomicUsize::new(0));
    let mut writers = Vec::new();
    for client in 0..CLIENTS {
        let (next, acked, nodes) = (next.clone(), acked.clone(), nodes.clone());
        // Each client starts at a different node so load spreads like real ingest nodes.
        let nodes: Vec<_> = nodes.iter().cycle().skip(client).take(3).cloned().collect();
        writers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= WRITES {
                    return mine;
                }
                match propose(&nodes, &commit(i), Duration::from_secs(60)).await {
                    CommandResult::CallCommitted { .. } => {
                        acked.fetch_add(1, Ordering::SeqCst);
                        mine.push(i);
                    }
                    other => panic!("call-{i}: {other:?}"),
                }
            }
        }));
    }

    eventually(
        "3,000 acknowledged writes",
        Duration::from_secs(120),
        || {
            let acked = acked.clone();
            async move { (acked.load(Ordering::SeqCst) >= 3_000).then_some(()) }
        },
    )
    .await;
    cluster.node(first_leader).kill();
    // The survivors elect a new leader in a later term before the old one comes back (a leader
    // restarted quickly may otherwise resume its committed term, which is also correct Raft).
    let survivors: Vec<&NodeProcess> = cluster
        .nodes
        .iter()
        .filter(|n| n.id != first_leader)
        .collect();
    let new_leader = eventually(
        "a new leader among the survivors",
        Duration::from_secs(30),
        || async {
            for node in &survivors {
                if let Some(status) = node.status().await
                    && status.role == "leader"
                    && status.term > first_term
                {
                    return Some(status.node_id);
                }
            }
            None
        },
    )
    .await;
    assert_ne!(new_leader, first_leader);
    cluster.node(first_leader).start();

    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.expect("writer task"));
    }
    assert_eq!(acknowledged.len(), WRITES);

    // Concurrent proposals share batch entries, so the log is shorter than the number of calls.
    converged(&cluster).await;
    for node in &cluster.nodes {
        let mut meta = node.meta();
        for i in &acknowledged {
            let record = meta
                .read_call(pb::ReadCallRequest {
                    jurisdiction: "US-TX".into(),
                    call_id: format!("call-{i}"),
                    local: true,
                })
                .await
                .expect("read")
                .into_inner()
                .record;
            assert!(!record.is_empty(), "call-{i} missing on node {}", node.id);
        }
        // Retried proposals commit once: every call counted exactly once.
        let counters = local_counters(node).await;
        assert_eq!(counters.calls_total, WRITES as u64, "node {}", node.id);
        assert_eq!(counters.live, WRITES as u64, "node {}", node.id);
    }
}

/// A follower stopped while the log is purged past its position catches up by snapshot, and its
/// state equals the leader's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_behind_the_purged_log_catches_up_by_snapshot() {
    let extra =
        format!("{FAST_RAFT}snapshot_after_entries = 200\nlog_entries_kept_after_snapshot = 0\n");
    let mut cluster = MetaCluster::start(3, &extra).await;
    let nodes = addresses(&cluster);
    propose(&nodes, &tx_policy(), Duration::from_secs(30)).await;
    for i in 0..100 {
        propose(&nodes, &commit(i), Duration::from_secs(30)).await;
    }
    let lagging = if cluster.leader().await == 3 { 2 } else { 3 };
    converged(&cluster).await;
    let position = cluster.node(lagging).status().await.unwrap().last_log_index;
    assert!(cluster.node(lagging).stop(), "SIGTERM shuts down cleanly");

    let up: Vec<_> = nodes
        .iter()
        .filter(|(id, _)| *id != lagging)
        .cloned()
        .collect();
    for i in 100..1_100 {
        propose(&up, &commit(i), Duration::from_secs(30)).await;
    }
    let leader = cluster.leader().await;
    let purged = cluster.node(leader).status().await.unwrap().purged_index;
    assert!(
        purged > position,
        "the leader's log must be purged past the follower ({purged} <= {position})"
    );

    cluster.node(lagging).start();
    converged(&cluster).await;
    let status = cluster.node(lagging).status().await.unwrap();
    assert!(
        status.snapshot_index > position,
        "caught up without a snapshot? snapshot at {} (was at {position})\n{}",
        status.snapshot_index,
        cluster.node(lagging).log()
    );
    assert_eq!(
        local_counters(cluster.node(lagging)).await.calls_total,
        1_100
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Corrupt or truncated files on restart give a clear error, never a silently empty state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_data_refuses_to_start_with_a_clear_error() {
    let mut cluster = MetaCluster::start(1, FAST_RAFT).await;
    let nodes = addresses(&cluster);
    propose(&nodes, &tx_policy(), Duration::from_secs(30)).await;
    for i in 0..20 {
        propose(&nodes, &commit(i), Duration::from_secs(30)).await;
    }
    let original = cluster.node(1).data_dir();
    assert!(cluster.node(1).stop());

    type Damage = fn(&std::path::Path);
    let cases: [(&str, Damage, &str); 4] = [
        (
            "state-machine pointer removed",
            |d| std::fs::remove_file(d.join("meta/sm/CURRENT")).unwrap(),
            "damaged",
        ),
        (
            "raft log manifest truncated",
            |d| {
                let log = d.join("meta/raft-log");
                for entry in std::fs::read_dir(&log).unwrap() {
                    let path = entry.unwrap().path();
                    if path
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .starts_with("MANIFEST")
                    {
                        let len = std::fs::metadata(&path).unwrap().len();
                        std::fs::OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .unwrap()
                            .set_len(len / 2)
                            .unwrap();
                    }
                }
            },
            "does not open",
        ),
        (
            "raft log CURRENT removed",
            |d| std::fs::remove_file(d.join("meta/raft-log/CURRENT")).unwrap(),
            "does not open",
        ),
        (
            "identity file removed beside data",
            |d| std::fs::remove_file(d.join("meta/node-id")).unwrap(),
            "damaged",
        ),
    ];
    for (name, damage, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let node = NodeProcess::new(dir.path(), 1, FAST_RAFT);
        copy_dir(&original, &node.data_dir());
        damage(&node.data_dir());
        let out = node.run_to_exit(Duration::from_secs(20));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: started anyway\n{stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: unclear error:\n{stderr}"
        );
    }

    // The undamaged data still starts and holds every call.
    let restored = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::new(restored.path(), 1, FAST_RAFT);
    copy_dir(&original, &node.data_dir());
    node.start();
    let counters = eventually(
        "the restored node to answer",
        Duration::from_secs(30),
        || async {
            node.meta()
                .read_counters(pb::ReadCountersRequest {
                    jurisdiction: "US-TX".into(),
                    local: true,
                    as_of_ms: 0,
                })
                .await
                .ok()
                .map(|r| r.into_inner())
        },
    )
    .await;
    assert_eq!(counters.calls_total, 20);
    node.kill();
}

/// The call `i` as a linearizable read through `node` sees it: `Some(true)` stored, `Some(false)`
/// unknown, `None` no answer.
async fn has_call(node: &NodeProcess, i: usize) -> Option<bool> {
    let r = node
        .meta()
        .read_call(pb::ReadCallRequest {
            jurisdiction: "US-TX".into(),
            call_id: format!("call-{i}"),
            local: false,
        })
        .await
        .ok()?
        .into_inner();
    Some(!r.record.is_empty())
}

/// Invariant 4 against a lost volume. A voter whose volume is wiped comes back with an empty log
/// and no memory of its votes; under its old identity it would vote for a peer that lacks writes
/// it had itself acknowledged. Here a write is acknowledged by A (the leader) and C while B is
/// down; then A dies and C loses its volume. B and the new C are a majority, and without
/// volume incarnations C grants B its vote and the acknowledged write is gone. With them, C
/// refuses every RPC meant for its old volume: no leader until A is back, the write survives,
/// and C rejoins as a learner through `AddMember` before it votes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voter_that_lost_its_volume_cannot_elect_a_leader_missing_acknowledged_writes() {
    let mut cluster = MetaCluster::start(3, FAST_RAFT).await;
    let nodes = addresses(&cluster);
    propose(&nodes, &tx_policy(), Duration::from_secs(30)).await;
    let a = cluster.leader().await;
    let (b, c) = match a {
        1 => (2, 3),
        2 => (1, 3),
        _ => (1, 2),
    };
    // B is down (not paused: a paused process's kernel still queues the entries sent to it).
    cluster.node(b).kill();
    let leader_addr = vec![(a, cluster.node(a).addr.clone())];
    let acked = propose(&leader_addr, &commit(1), Duration::from_secs(30)).await;
    assert!(
        matches!(acked, CommandResult::CallCommitted { .. }),
        "{acked:?}"
    );

    cluster.node(a).kill();
    cluster.node(c).kill();
    std::fs::remove_dir_all(cluster.node(c).data_dir()).unwrap();
    cluster.node(c).start();
    cluster.node(b).start();

    // Many election timeouts: B must not become leader with the wiped C's vote.
    let watch_until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < watch_until {
        for id in [b, c] {
            if let Some(status) = cluster.node(id).status().await {
                assert_ne!(
                    status.role, "leader",
                    "node {id} leads term {} without the acknowledged write's holder",
                    status.term
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    cluster.node(a).start();
    let node_b = &cluster.nodes[(b - 1) as usize];
    let found = eventually("a linearizable read", Duration::from_secs(30), || {
        has_call(node_b, 1)
    })
    .await;
    assert!(found, "the acknowledged call was lost");

    // The operator (or auto bootstrap) adds C back: its new volume replaces the old one.
    let leader = cluster.leader().await;
    let c_addr = cluster.node(c).addr.clone();
    cluster
        .node(leader)
        .cluster()
        .add_member(pb::AddMemberRequest {
            node_id: c,
            addr: c_addr,
            learner_only: false,
        })
        .await
        .expect("the wiped node rejoins");
    let status = cluster.node(leader).status().await.unwrap();
    let member = status.members.iter().find(|m| m.node_id == c).unwrap();
    assert!(member.voter, "{status:?}");
    converged(&cluster).await;
    assert_eq!(has_call(cluster.node(c), 1).await, Some(true));
}

/// A tmpfs mounted for one test (a volume that can fill), unmounted when dropped.
struct SmallVolume(std::path::PathBuf);

impl SmallVolume {
    fn mount(at: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .expect("mount runs");
        assert!(status.success(), "mounting a tmpfs needs root, as CI has");
        SmallVolume(at.to_path_buf())
    }

    /// Fills the volume to its last byte, in a file the test can remove.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.0.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let block = vec![0u8; 64 << 10];
        while file.write_all(&block).is_ok() {}
        let _ = file.write_all(&[0u8; 512]);
        path
    }
}

impl Drop for SmallVolume {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A member whose disk fills cannot write its log; its Raft core stops. The process must then
/// exit non-zero (fail-stop) rather than live on as a member that never votes or serves again,
/// so a supervisor restarts it; restarted with room on its disk, it has every acknowledged write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_disk_fills_exits_and_comes_back_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = NodeProcess::new(
        dir.path(),
        1,
        &format!("{FAST_RAFT}\n[lifecycle]\nenabled = false\n"),
    );
    let volume = SmallVolume::mount(&node.data_dir(), "96m");
    node.start();
    eventually("node 1 to answer", Duration::from_secs(30), || {
        node.status()
    })
    .await;
    node.cluster().init(pb::InitRequest {}).await.expect("init");
    let nodes = vec![(1, node.addr.clone())];
    propose(&nodes, &tx_policy(), Duration::from_secs(30)).await;

    let filler = volume.fill();
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = node.exit_status() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the node lives on with a full disk\n{}",
            node.log()
        );
        let i = 1000 + acknowledged.len();
        let mut client = node.meta();
        let proposal = client.propose(pb::ProposeRequest {
            command: commit(i).encode(),
        });
        if let Ok(Ok(reply)) = tokio::time::timeout(Duration::from_secs(2), proposal).await {
            let result = CommandResult::decode(&reply.into_inner().result).unwrap();
            assert!(
                matches!(result, CommandResult::CallCommitted { .. }),
                "{result:?}"
            );
            acknowledged.push(i);
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert!(!status.success(), "{status}\n{}", node.log());
    assert!(
        node.log().contains("the Raft member failed"),
        "{}",
        node.log()
    );

    std::fs::remove_file(filler).unwrap();
    node.start();
    for i in acknowledged {
        let found = eventually("a linearizable read", Duration::from_secs(30), || {
            has_call(&node, i)
        })
        .await;
        assert!(found, "acknowledged call {i} lost\n{}", node.log());
    }
    node.kill();
}
