//! `[bootstrap] mode = "auto"` and readiness, as Kubernetes uses them, with real `callvault serve`
//! processes on loopback: the first node forms the cluster and the others join with no manual
//! step; a scale-up adds learners and promotes them; a rolling restart that waits for readiness
//! never loses quorum; a node that lost its volume rejoins its cluster instead of forming a new
//! one; and the local config set in `deploy/local/` runs as three processes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use callvault_core::codec::VersionedRecord;
use callvault_meta::Command;
use callvault_proto::auth::Bearer;
use callvault_proto::v1 as pb;
use callvault_tests::{LocalSet, NodeProcess, Role, commit, eventually, role_token, tx_policy};

/// Fast elections so a test's restarts fit its time.
const FAST_RAFT: &str =
    "[meta]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n";

/// `size` meta nodes (ids 1..=size) in `dir`, in auto bootstrap mode with the first `seeds`
/// nodes as seeds, not started.
fn auto_nodes(dir: &std::path::Path, size: u64, seeds: usize) -> Vec<NodeProcess> {
    let nodes: Vec<NodeProcess> = (1..=size)
        .map(|id| NodeProcess::new(dir, id, FAST_RAFT))
        .collect();
    let seed_list: Vec<String> = nodes[..seeds]
        .iter()
        .map(|n| format!("{:?}", n.addr))
        .collect();
    for node in &nodes {
        node.append_config(&format!(
            "[bootstrap]\nmode = \"auto\"\nseeds = [{}]\njoin_timeout_seconds = 120\n",
            seed_list.join(", ")
        ));
    }
    nodes
}

/// The voters as `node` sees them.
async fn voters(node: &NodeProcess) -> Option<BTreeSet<u64>> {
    let status = node.status().await?;
    Some(
        status
            .members
            .iter()
            .filter(|m| m.voter)
            .map(|m| m.node_id)
            .collect(),
    )
}

/// Waits until every node of `ids` reports ready and sees exactly `ids` as voters.
async fn all_ready(nodes: &[NodeProcess], ids: &[u64], timeout: Duration) {
    let want: BTreeSet<u64> = ids.iter().copied().collect();
    eventually(
        &format!("nodes {ids:?} ready as the voters"),
        timeout,
        || async {
            for node in nodes.iter().filter(|n| want.contains(&n.id)) {
                if !node.is_ready().await || voters(node).await? != want {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}

/// Proposes `command` through any of `addrs` until one commits it, for at most `budget`;
/// returns how long it took, or `None` if the budget ran out.
async fn propose_within(addrs: &[String], command: &Command, budget: Duration) -> Option<Duration> {
    let bytes = command.encode();
    let started = Instant::now();
    let mut attempt = 0usize;
    while started.elapsed() < budget {
        let addr = &addrs[attempt % addrs.len()];
        attempt += 1;
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("valid uri")
            .connect_timeout(Duration::from_millis(300))
            .timeout(Duration::from_secs(3))
            .connect_lazy();
        let mut client = pb::meta_store_client::MetaStoreClient::new(
            Bearer::new(&role_token(Role::Meta))
                .expect("token")
                .channel(channel),
        );
        if client
            .propose(pb::ProposeRequest {
                command: bytes.clone(),
            })
            .await
            .is_ok()
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
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

/// Waits until `nodes` agree on the applied index and state digest.
async fn converged(nodes: &[NodeProcess]) -> (u64, Vec<u8>) {
    eventually(
        "every replica at the same state",
        Duration::from_secs(60),
        || async {
            let mut seen = BTreeSet::new();
            for node in nodes {
                seen.insert(digest(node).await?);
            }
            (seen.len() == 1).then(|| seen.into_iter().next().expect("one"))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_bootstrap_forms_the_cluster_scales_up_and_survives_a_rolling_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = auto_nodes(dir.path(), 5, 3);

    // Without node 1, nodes 2 and 3 may not form a cluster: they wait, not ready.
    nodes[1].start();
    nodes[2].start();
    eventually(
        "nodes 2 and 3 to answer",
        Duration::from_secs(30),
        || async { Some((nodes[1].status().await?, nodes[2].status().await?)) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in &nodes[1..3] {
        let status = node.status().await.expect("answers");
        assert!(
            status.members.is_empty(),
            "node {} joined something without node 1: {status:?}",
            node.id
        );
        assert_eq!(
            node.health(callvault_tests::META_READINESS_SERVICE).await,
            Some(callvault_tests::ServingStatus::NotServing),
            "node {} is ready without a cluster",
            node.id
        );
        assert_eq!(
            node.health("").await,
            Some(callvault_tests::ServingStatus::Serving),
            "the process itself is live"
        );
    }

    // Node 1 finds a majority of empty seeds, initializes; 2 and 3 join and are promoted.
    let formed = Instant::now();
    nodes[0].start();
    all_ready(&nodes, &[1, 2, 3], Duration::from_secs(60)).await;
    eprintln!("3 voters formed and ready in {:?}", formed.elapsed());
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    assert!(
        propose_within(&addrs[..3], &tx_policy(), Duration::from_secs(10))
            .await
            .is_some()
    );

    // Scale-up: nodes 4 and 5 know only the three seeds; they join as learners and are promoted.
    let scaled = Instant::now();
    nodes[3].start();
    nodes[4].start();
    all_ready(&nodes, &[1, 2, 3, 4, 5], Duration::from_secs(60)).await;
    eprintln!("scaled to 5 voters in {:?}", scaled.elapsed());

    // A rolling restart, highest ordinal first as a StatefulSet does it, moving on only when the
    // restarted node is ready again; writes go on throughout, and none may wait past an election.
    let stop_writing = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let slowest_ms = Arc::new(AtomicU64::new(0));
    let writer = {
        let (stop, written, slowest) = (stop_writing.clone(), written.clone(), slowest_ms.clone());
        let addrs = addrs.clone();
        tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && i < 100_000 {
                let took = propose_within(&addrs, &commit(i), Duration::from_secs(15)).await;
                let Some(took) = took else {
                    return Err(format!("commit {i} was not accepted within 15s"));
                };
                slowest.fetch_max(took.as_millis() as u64, Ordering::Relaxed);
                written.fetch_add(1, Ordering::Relaxed);
                i += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    };
    let rolling = Instant::now();
    for id in (1..=5u64).rev() {
        let node = &mut nodes[(id - 1) as usize];
        assert!(
            node.stop(),
            "node {id} did not stop cleanly:\n{}",
            node.log()
        );
        node.start();
        all_ready(&nodes, &[1, 2, 3, 4, 5], Duration::from_secs(60)).await;
    }
    let rolled = rolling.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop_writing.store(true, Ordering::Relaxed);
    writer.await.unwrap().unwrap();
    let written = written.load(Ordering::Relaxed);
    eprintln!(
        "rolling restart of 5 voters in {rolled:?}: {written} commits, slowest {} ms",
        slowest_ms.load(Ordering::Relaxed)
    );
    assert!(written > 10, "only {written} commits during the restart");
    let (applied, _) = converged(&nodes).await;
    assert!(
        applied > written,
        "applied index {applied} < {written} commits"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_node_that_lost_its_volume_rejoins_instead_of_forming_a_second_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = auto_nodes(dir.path(), 3, 3);
    for node in &mut nodes {
        node.start();
    }
    all_ready(&nodes, &[1, 2, 3], Duration::from_secs(60)).await;
    let addrs: Vec<String> = nodes.iter().map(|n| n.addr.clone()).collect();
    for command in std::iter::once(tx_policy()).chain((0..20).map(commit)) {
        assert!(
            propose_within(&addrs, &command, Duration::from_secs(10))
                .await
                .is_some()
        );
    }
    let before = converged(&nodes).await;

    // Node 1 (the one that initializes) loses its data directory: a new PVC, say.
    nodes[0].kill();
    std::fs::remove_dir_all(nodes[0].data_dir()).unwrap();
    nodes[0].start();
    all_ready(&nodes, &[1, 2, 3], Duration::from_secs(60)).await;
    // The leader replaced node 1's old volume (a removal, then the new one as a learner, then
    // promoted): those membership changes are in the log, so the state moved on, equal on all.
    let (applied, _) = converged(&nodes).await;
    assert!(applied > before.0, "the replacement changed the membership");
    for i in 0..20 {
        let local = nodes[0]
            .meta()
            .read_call(pb::ReadCallRequest {
                jurisdiction: "US-TX".into(),
                call_id: format!("call-{i}"),
                local: true,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(
            !local.record.is_empty(),
            "node 1 lacks call-{i} after rejoining"
        );
    }
    let members: BTreeSet<u64> = nodes[1]
        .status()
        .await
        .unwrap()
        .members
        .iter()
        .map(|m| m.node_id)
        .collect();
    assert_eq!(members, BTreeSet::from([1, 2, 3]));
    let leader_seen_by_1 = nodes[0].status().await.unwrap().leader_id;
    let leader_seen_by_2 = nodes[1].status().await.unwrap().leader_id;
    assert_eq!(leader_seen_by_1, leader_seen_by_2, "two clusters");
    // Its log spans both lives: it initialized once, the first time only.
    let log = nodes[0].log();
    assert_eq!(log.matches("initialized a new cluster").count(), 1, "{log}");
}

/// `deploy/local/` as operators run it, with only its ports and directories moved so tests
/// can run side by side: secrets (the audit key too) from `callvault dev --init-only`, three
/// `callvault serve` processes that form the cluster by themselves, then a call ingested through one node and read through another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_config_set_runs_as_three_processes_that_form_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let mut set = LocalSet::write(dir.path());
    set.start_and_wait_ready().await;
    let nodes = &set.nodes;
    let token = |name: &str| set.token(name);
    // The harness's operator token is not this cluster's: the voter set comes from a member's view.
    let peer = set.role_token(Role::Meta);
    let status = pb::cluster_client::ClusterClient::new(nodes[2].with_token(&peer))
        .status(pb::StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status.members.iter().filter(|m| m.voter).count(),
        3,
        "{status:?}"
    );

    let out = callvault_tests::run_callvault_as(
        &token("OPERATOR"),
        &[
            "policy",
            "put-all",
            "--file",
            "deploy/policies/default.toml",
            "--addr",
            &nodes[0].addr,
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let call = callvault_tests::TestCall::new("local-set-1", "US-TX", "+15125550100", 3, 1);
    let mut ingest = pb::ingest_client::IngestClient::new(nodes[1].with_token(&token("PLATFORM")));
    let ack = call
        .send(&mut ingest)
        .await
        .expect("ingested through node 2");
    assert_eq!(ack.decision, pb::Decision::Recorded as i32, "{ack:?}");
    let mut query = pb::query_client::QueryClient::new(nodes[2].with_token(&token("AGENCY_TX")));
    let status = query
        .call_status(pb::CallStatusRequest {
            call_id: "local-set-1".into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("read through node 3")
        .into_inner();
    assert_eq!(status.state, pb::CallState::Stored as i32, "{status:?}");
}
