//! The audit log end to end, against real processes: an auditor pins the log key and verifies
//! checkpoints, consistency and inclusion with `callvault audit verify`; tampering is caught.

use std::path::Path;
use std::time::Duration;

use callvault_core::codec::VersionedRecord;
use callvault_meta::Command;
use callvault_proto::v1 as pb;
use callvault_tests::{MetaCluster, commit, run_callvault, tx_policy};

const ORIGIN: &str = "callvault.test/audit";

async fn propose(cluster: &MetaCluster, command: Command) {
    cluster.nodes[0]
        .meta()
        .propose(pb::ProposeRequest {
            command: command.encode(),
        })
        .await
        .expect("proposal commits");
}

fn verify(node: &str, vkey: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "audit", "verify", "--node", node, "--vkey", vkey, "--origin", ORIGIN,
    ];
    args.extend_from_slice(extra);
    let out = run_callvault(&args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

async fn logged_cluster(key: &Path) -> MetaCluster {
    let extra = format!(
        "[meta]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\
         [audit]\norigin = \"{ORIGIN}\"\nsigning_key_file = {key:?}\n"
    );
    MetaCluster::start(1, &extra).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_verifies_the_log_and_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("log.key");
    let out = run_callvault(&[
        "audit",
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        key.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(vkey.starts_with(ORIGIN), "{vkey}");

    let mut cluster = logged_cluster(&key).await;
    let addr = cluster.nodes[0].addr.clone();
    propose(&cluster, tx_policy()).await;
    for i in 0..4 {
        propose(&cluster, commit(i)).await;
    }

    // Pin the key, verify inclusion of entries 0 and 3, save the checkpoint.
    let saved = dir.path().join("checkpoint-1");
    let (ok, text) = verify(
        &addr,
        &vkey,
        &[
            "--entry",
            "0",
            "--entry",
            "3",
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("checkpoint: size 5"), "{text}");
    assert!(
        text.contains("entry 3 included: call.recorded call-2"),
        "{text}"
    );

    // The log grows; it still extends the saved checkpoint.
    for i in 4..8 {
        propose(&cluster, commit(i)).await;
    }
    let saved_big = dir.path().join("checkpoint-2");
    let (ok, text) = verify(
        &addr,
        &vkey,
        &[
            "--checkpoint",
            saved.to_str().unwrap(),
            "--save",
            saved_big.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(
        text.contains("consistent with the saved checkpoint of size 5"),
        "{text}"
    );

    // Another key is not the pinned one.
    let other_key = dir.path().join("other.key");
    let out = run_callvault(&[
        "audit",
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        other_key.to_str().unwrap(),
    ]);
    let other_vkey = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let (ok, text) = verify(&addr, &other_vkey, &[]);
    assert!(
        !ok,
        "accepted a checkpoint not signed by the pinned key: {text}"
    );

    // Split view: a forked log signed with the same key, as long as the saved one, differs.
    let fork = logged_cluster(&key).await;
    let fork_addr = fork.nodes[0].addr.clone();
    propose(&fork, tx_policy()).await;
    for i in 100..104 {
        propose(&fork, commit(i)).await;
    }
    let (ok, text) = verify(
        &fork_addr,
        &vkey,
        &["--checkpoint", saved.to_str().unwrap()],
    );
    assert!(!ok, "a forked log passed: {text}");
    // Truncation: the fork is shorter than the larger saved checkpoint.
    let (ok, text) = verify(
        &fork_addr,
        &vkey,
        &["--checkpoint", saved_big.to_str().unwrap()],
    );
    assert!(
        !ok && text.contains("shrank"),
        "a truncated log passed: {text}"
    );
    drop(fork);

    // Tampering with stored entries: change one, and swap two, on disk.
    let data = cluster.nodes[0].data_dir().join("meta");
    assert!(cluster.node(1).stop());
    {
        let sm = callvault_meta::StateMachineStore::open(&data).unwrap();
        let db = sm.db();
        let cf = db
            .cf_handle(callvault_meta::audit_log::CF_AUDIT_ENTRIES)
            .unwrap();
        let get = |seq: u64| db.get_cf(cf, seq.to_be_bytes()).unwrap().unwrap();
        let (one, two, three) = (get(1), get(2), get(3));
        db.put_cf(cf, 1u64.to_be_bytes(), &two).unwrap();
        db.put_cf(cf, 2u64.to_be_bytes(), &one).unwrap();
        let mut changed = three.clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x01;
        db.put_cf(cf, 3u64.to_be_bytes(), &changed).unwrap();
        db.flush_cf(cf).unwrap();
    }
    cluster.node(1).start();
    callvault_tests::eventually("the node to serve again", Duration::from_secs(30), || {
        cluster.nodes[0].status()
    })
    .await;
    for entry in ["1", "2", "3"] {
        let (ok, text) = verify(&addr, &vkey, &["--entry", entry]);
        assert!(!ok, "tampered entry {entry} verified: {text}");
    }
    // Untouched entries still verify.
    let (ok, text) = verify(
        &addr,
        &vkey,
        &["--entry", "4", "--checkpoint", saved.to_str().unwrap()],
    );
    assert!(ok, "{text}");
}
