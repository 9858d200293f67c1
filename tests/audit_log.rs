//! The audit log end to end, against real processes: an auditor pins the log key and verifies
//! checkpoints, consistency and inclusion with `callvault audit verify`; every kind of tampering
//! (a changed entry, reordered entries, a truncated log, a forked log) is caught; agencies read
//! only their jurisdictions' entries; failed authentications and membership changes are logged.

use std::io::BufRead;
use std::path::Path;
use std::time::{Duration, Instant};

use callvault_audit::{AuditEntry, MerkleTree, NodeStore};
use callvault_core::codec::VersionedRecord;
use callvault_core::{CallId, Jurisdiction};
use callvault_meta::Command;
use callvault_meta::StateMachineStore;
use callvault_meta::audit_log::{CF_AUDIT_ENTRIES, TreeNodes};
use callvault_meta::txn::Txn;
use callvault_proto::auth::Bearer;
use callvault_proto::v1 as pb;
use callvault_proto::v1::audit_client::AuditClient;
use callvault_tests::{
    AGENCY_CA_TOKEN, AGENCY_TX_TOKEN, AUDITOR_TOKEN, DevCluster, MetaCluster, NodeProcess,
    OPERATOR_TOKEN, TestCall, callvault_bin, commit, eventually, run_callvault, run_callvault_as,
    tx_policy,
};
use tonic::Code;

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
    verify_as(AUDITOR_TOKEN, ORIGIN, node, vkey, extra)
}

fn verify_as(token: &str, origin: &str, node: &str, vkey: &str, extra: &[&str]) -> (bool, String) {
    let mut args = vec![
        "audit", "verify", "--node", node, "--vkey", vkey, "--origin", origin,
    ];
    args.extend_from_slice(extra);
    let out = run_callvault_as(token, &args);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A one-node cluster with a log key (the harness turns the retention sweeper off, so these
/// tests count exactly the entries they cause).
async fn logged_cluster(key: &Path) -> MetaCluster {
    let extra = format!(
        "[meta]\nheartbeat_ms = 100\nelection_timeout_min_ms = 500\nelection_timeout_max_ms = 1000\n\
         [audit]\norigin = \"{ORIGIN}\"\nsigning_key_file = {key:?}\nauth_failure_window_seconds = 1\n"
    );
    MetaCluster::start(1, &extra).await
}

/// Writes a new log key for [`ORIGIN`] to `path`; returns its verifier key.
fn keygen(path: &Path) -> String {
    let out = run_callvault(&[
        "audit",
        "keygen",
        "--name",
        ORIGIN,
        "--out",
        path.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Stops the single node of `cluster`, lets `tamper` change its state machine on disk, and starts
/// it again.
async fn tamper_on_disk(cluster: &mut MetaCluster, tamper: impl FnOnce(&StateMachineStore)) {
    let data = cluster.nodes[0].data_dir().join("meta");
    assert!(cluster.node(1).stop(), "node 1 stops cleanly");
    {
        let sm = StateMachineStore::open(&data).unwrap();
        tamper(&sm);
        let db = sm.db();
        db.flush_cf(db.cf_handle(CF_AUDIT_ENTRIES).unwrap())
            .unwrap();
    }
    cluster.node(1).start();
    eventually("the node to serve again", Duration::from_secs(30), || {
        cluster.nodes[0].status()
    })
    .await;
}

/// The stored bytes of every entry, in sequence order.
fn stored_entries(sm: &StateMachineStore) -> Vec<Vec<u8>> {
    let db = sm.db();
    let cf = db.cf_handle(CF_AUDIT_ENTRIES).unwrap();
    (0u64..)
        .map_while(|sequence| db.get_cf(cf, sequence.to_be_bytes()).unwrap())
        .take(100_000)
        .collect()
}

/// What an insider with the disk and the code would do to hide a rewrite: store `entries` as the
/// whole log and recompute every tree node from them, so the node's own proofs and freshly
/// signed checkpoints agree with the forgery.
fn rewrite_log(sm: &StateMachineStore, entries: &[Vec<u8>]) {
    let db = sm.db();
    let cf = db.cf_handle(CF_AUDIT_ENTRIES).unwrap();
    let stored = stored_entries(sm).len() as u64;
    for sequence in entries.len() as u64..stored {
        db.delete_cf(cf, sequence.to_be_bytes()).unwrap();
    }
    // The entries first: the tree's leaves are read back from them.
    for (sequence, bytes) in entries.iter().enumerate() {
        db.put_cf(cf, (sequence as u64).to_be_bytes(), bytes)
            .unwrap();
    }
    let mut txn = Txn::new(&db);
    {
        let mut nodes = TreeNodes(&mut txn);
        nodes.set_tree_size(0).unwrap();
        let mut tree = MerkleTree::new(nodes);
        for bytes in entries {
            tree.append_entry_bytes(bytes).unwrap();
        }
    }
    db.write(txn.into_batch()).unwrap();
}

/// `entry` re-encoded as if it had sequence `sequence`.
fn with_sequence(entry: &AuditEntry, sequence: u64) -> Vec<u8> {
    let mut b = AuditEntry::builder(sequence, entry.time(), entry.event(), entry.principal())
        .subject(entry.subject())
        .outcome(entry.outcome());
    if let Some(j) = entry.jurisdiction() {
        b = b.jurisdiction(j);
    }
    for (k, v) in entry.details() {
        b = b.detail(k.clone(), v.clone());
    }
    b.build().unwrap().encode()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_verifies_the_log_and_catches_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("log.key");
    let vkey = keygen(&key);
    assert!(vkey.starts_with(ORIGIN), "{vkey}");

    let mut cluster = logged_cluster(&key).await;
    let addr = cluster.nodes[0].addr.clone();
    propose(&cluster, tx_policy()).await;
    for i in 0..4 {
        propose(&cluster, commit(i)).await;
    }

    // Entry 0 is the membership the cluster was initialized with, then the policy and calls.
    // Pin the key, verify inclusion of entries 0 and 4, save the checkpoint.
    let saved = dir.path().join("checkpoint-1");
    let (ok, text) = verify(
        &addr,
        &vkey,
        &[
            "--entry",
            "0",
            "--entry",
            "4",
            "--save",
            saved.to_str().unwrap(),
        ],
    );
    assert!(ok, "{text}");
    assert!(text.contains("checkpoint: size 6"), "{text}");
    assert!(
        text.contains("entry 0 included: cluster.membership_changed raft-membership"),
        "{text}"
    );
    assert!(
        text.contains("entry 4 included: call.recorded call-2"),
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
        text.contains("consistent with the saved checkpoint of size 6"),
        "{text}"
    );

    // Another key is not the pinned one.
    let other_vkey = keygen(&dir.path().join("other.key"));
    let (ok, text) = verify(&addr, &other_vkey, &[]);
    assert!(
        !ok,
        "accepted a checkpoint not signed by the pinned key: {text}"
    );

    // Split view: a forked log signed with the same key, as long as the saved one, differs. (Its
    // entries differ from the first one on: its membership names another address.)
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

    // 1. A changed entry, and two entries swapped, with the tree left alone: their inclusion
    //    proofs against the signed checkpoint fail.
    let mut original = Vec::new();
    tamper_on_disk(&mut cluster, |sm| {
        original = stored_entries(sm);
        let db = sm.db();
        let cf = db.cf_handle(CF_AUDIT_ENTRIES).unwrap();
        db.put_cf(cf, 1u64.to_be_bytes(), &original[2]).unwrap();
        db.put_cf(cf, 2u64.to_be_bytes(), &original[1]).unwrap();
        let mut changed = original[3].clone();
        let last = changed.len() - 1;
        changed[last] ^= 0x01;
        db.put_cf(cf, 3u64.to_be_bytes(), &changed).unwrap();
    })
    .await;
    assert_eq!(original.len(), 10);
    for entry in ["1", "2", "3"] {
        let (ok, text) = verify(&addr, &vkey, &["--entry", entry]);
        assert!(!ok, "tampered entry {entry} verified: {text}");
    }
    // Untouched entries still verify, and the log still extends the saved checkpoint.
    let (ok, text) = verify(
        &addr,
        &vkey,
        &["--entry", "4", "--checkpoint", saved.to_str().unwrap()],
    );
    assert!(ok, "{text}");

    // 2. Reordering done thoroughly: two entries swapped with their sequence numbers rewritten
    //    and every tree node recomputed. The node's own proofs now agree with the forgery, but
    //    the log no longer extends the checkpoints the auditor saved.
    tamper_on_disk(&mut cluster, |sm| {
        let mut forged = original.clone();
        let four = AuditEntry::decode(&original[4]).unwrap();
        let five = AuditEntry::decode(&original[5]).unwrap();
        forged[4] = with_sequence(&five, 4);
        forged[5] = with_sequence(&four, 5);
        rewrite_log(sm, &forged);
    })
    .await;
    let (ok, text) = verify(&addr, &vkey, &["--entry", "4", "--entry", "5"]);
    assert!(
        ok,
        "the forger's own proofs should agree with the forgery: {text}"
    );
    for checkpoint in [&saved, &saved_big] {
        let (ok, text) = verify(
            &addr,
            &vkey,
            &["--checkpoint", checkpoint.to_str().unwrap()],
        );
        assert!(
            !ok && text.contains("does not extend"),
            "a reordered log passed against {}: {text}",
            checkpoint.display()
        );
    }

    // 3. Truncation: the last entry dropped and the tree recomputed without it. A checkpoint
    //    that saw the dropped entry catches it; an older one cannot, and passes.
    tamper_on_disk(&mut cluster, |sm| rewrite_log(sm, &original[..9])).await;
    let (ok, text) = verify(&addr, &vkey, &["--checkpoint", saved_big.to_str().unwrap()]);
    assert!(
        !ok && text.contains("shrank from 10 to 9"),
        "a truncated log passed: {text}"
    );
    let (ok, text) = verify(&addr, &vkey, &["--checkpoint", saved.to_str().unwrap()]);
    assert!(ok, "the first 9 entries are untouched: {text}");
}

/// A California policy and a California call, beside the Texas ones of the test library.
fn ca_policy() -> Command {
    let Command::PutPolicy {
        policy,
        principal,
        at,
        ..
    } = tx_policy()
    else {
        unreachable!()
    };
    Command::PutPolicy {
        jurisdiction: Jurisdiction::Ca,
        policy,
        expected_version: 0,
        principal,
        at,
    }
}

fn ca_commit(i: usize) -> Command {
    let Command::CommitCall {
        mut call,
        wrapped_key,
        chunk_ids,
        principal,
        at,
    } = commit(i)
    else {
        unreachable!()
    };
    call.jurisdiction = Jurisdiction::Ca;
    call.call_id = CallId::new(&format!("ca-call-{i}")).unwrap();
    Command::CommitCall {
        call,
        wrapped_key,
        chunk_ids,
        principal,
        at,
    }
}

fn audit_as(node: &NodeProcess, token: &str) -> AuditClient<callvault_proto::auth::AuthChannel> {
    AuditClient::new(node.with_token(token))
}

async fn all_entries(
    client: &mut AuditClient<callvault_proto::auth::AuthChannel>,
) -> pb::GetEntriesResponse {
    client
        .get_entries(pb::GetEntriesRequest {
            start: 0,
            end: 1000,
        })
        .await
        .expect("entries")
        .into_inner()
}

fn detail(entry: &pb::AuditEntry, key: &str) -> u64 {
    entry
        .details
        .get(key)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agencies_read_their_own_entries_and_failed_logins_and_membership_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("log.key");
    let vkey = keygen(&key);
    let cluster = logged_cluster(&key).await;
    let node = &cluster.nodes[0];
    for command in [tx_policy(), ca_policy(), commit(0), ca_commit(1)] {
        propose(&cluster, command).await;
    }

    // A client sprays tokens, and sends requests with none: every one is refused...
    const SPRAYED: usize = 40;
    for i in 0..SPRAYED {
        let token = format!("sprayed-token-{i:04}-xxxxxxxxxxxx");
        let err = audit_as(node, &token)
            .get_checkpoint(pb::GetCheckpointRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    let mut anonymous = AuditClient::new(Bearer::none().channel(node.channel()));
    for _ in 0..5 {
        let err = anonymous
            .get_entries(pb::GetEntriesRequest { start: 0, end: 10 })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    // ...and they reach the log as per-source counts, within a window or two, never as 45
    // entries and never with a token in them.
    let mut auditor = audit_as(node, AUDITOR_TOKEN);
    let failures = eventually(
        "failed authentications in the log",
        Duration::from_secs(30),
        || {
            let mut auditor = auditor.clone();
            async move {
                let all = all_entries(&mut auditor).await;
                let failures: Vec<pb::AuditEntry> = all
                    .entries
                    .into_iter()
                    .filter(|e| e.event == "auth.failure")
                    .collect();
                let counted: u64 = failures
                    .iter()
                    .map(|e| detail(e, "unknown_token") + detail(e, "missing_token"))
                    .sum();
                (counted == SPRAYED as u64 + 5).then_some(failures)
            }
        },
    )
    .await;
    assert!(
        (1..=3).contains(&failures.len()),
        "coalesced per window: {failures:?}"
    );
    for f in &failures {
        assert_eq!(f.subject, "peer:127.0.0.1");
        assert_eq!(f.principal, "unauthenticated");
        assert_eq!(f.jurisdiction, "");
        let leaf = String::from_utf8_lossy(&f.leaf);
        assert!(
            !leaf.contains("sprayed-token"),
            "a token reached the log: {leaf}"
        );
    }
    let first_prefix = &blake3::hash(b"sprayed-token-0000-xxxxxxxxxxxx").to_hex()[..8];
    assert_eq!(
        failures[0]
            .details
            .get("token_blake3_prefix")
            .map(String::as_str),
        Some(first_prefix)
    );

    // The auditor sees everything: the membership the cluster started with, both states.
    let everything = all_entries(&mut auditor).await;
    let first = &everything.entries[0];
    assert_eq!(
        (
            first.sequence,
            first.event.as_str(),
            first.principal.as_str()
        ),
        (0, "cluster.membership_changed", "raft")
    );
    assert_eq!(first.details.get("voters").map(String::as_str), Some("1"));
    assert_eq!(everything.tree_size, everything.entries.len() as u64);
    let jurisdictions = |r: &pb::GetEntriesResponse| -> Vec<String> {
        r.entries.iter().map(|e| e.jurisdiction.clone()).collect()
    };
    let all_j = jurisdictions(&everything);
    assert!(all_j.contains(&"US-TX".into()) && all_j.contains(&"US-CA".into()));

    // Each agency sees its own jurisdiction's entries and nothing else, filtered on the server.
    for (token, own, call_id) in [
        (AGENCY_TX_TOKEN, "US-TX", "call-0"),
        (AGENCY_CA_TOKEN, "US-CA", "ca-call-1"),
    ] {
        let mut agency = audit_as(node, token);
        let seen = all_entries(&mut agency).await;
        assert_eq!(seen.tree_size, everything.tree_size);
        let events: Vec<(&str, &str)> = seen
            .entries
            .iter()
            .map(|e| (e.event.as_str(), e.subject.as_str()))
            .collect();
        assert_eq!(
            events,
            [
                ("policy.changed", "retention-policy"),
                ("call.recorded", call_id)
            ],
            "{own}"
        );
        assert!(jurisdictions(&seen).iter().all(|j| j == own));
        // An agency checks its own entry against the signed checkpoint like an auditor does...
        let own_entry = seen.entries[1].sequence.to_string();
        let (ok, text) = verify_as(token, ORIGIN, &node.addr, &vkey, &["--entry", &own_entry]);
        assert!(ok, "{text}");
        // ...but is not served another's, nor a cluster-wide one.
        let (ok, text) = verify_as(token, ORIGIN, &node.addr, &vkey, &["--entry", "0"]);
        assert!(!ok && text.contains("not served"), "{text}");
        // A call's history: its own call, yes; the other state's, no.
        let history = agency
            .call_access_history(pb::CallAccessHistoryRequest {
                jurisdiction: own.into(),
                call_id: call_id.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(history.entries.len(), 1);
        let other = if own == "US-TX" { "US-CA" } else { "US-TX" };
        let refused = agency
            .call_access_history(pb::CallAccessHistoryRequest {
                jurisdiction: other.into(),
                call_id: "call-0".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::PermissionDenied);
    }

    // An operator gets checkpoints and proofs (hashes only), never entries.
    let mut operator = audit_as(node, OPERATOR_TOKEN);
    let checkpoint = operator
        .get_checkpoint(pb::GetCheckpointRequest {})
        .await
        .expect("checkpoints are open to any principal")
        .into_inner();
    operator
        .get_inclusion_proof(pb::GetInclusionProofRequest {
            index: 1,
            tree_size: checkpoint.tree_size,
        })
        .await
        .expect("proofs are open to any principal");
    let refused = operator
        .get_entries(pb::GetEntriesRequest { start: 0, end: 10 })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // `audit tail` as an agency follows the log past the entries it may not see.
    let mut tail = std::process::Command::new(callvault_bin())
        .args(["audit", "tail", "--node", &node.addr, "--from", "0"])
        .env("CALLVAULT_TOKEN", AGENCY_CA_TOKEN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = tail.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < 2 && Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    // A later California entry appears too: the tail moved past every gap.
    propose(&cluster, ca_commit(2)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while lines.len() < 3 && Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            lines.push(line);
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let _ = reader.join();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.contains(" US-CA ")), "{lines:?}");
    assert!(
        lines[2].contains("call.recorded US-CA platform ca-call-2"),
        "{lines:?}"
    );
}

/// The end-to-end part of issue 7 that exists today: ingest through the real ingest path, refuse a
/// call to a privileged number; the log holds exactly those entries in order, and their
/// inclusion proofs verify against the signed checkpoint. (Playback and expiry entries join this
/// when issue 6 lands.)
/// Plays back Texas call `id` through node 2 as `agency-tx`, with a case number; the audio.
async fn play_back(cluster: &DevCluster, id: &str) -> Vec<u8> {
    callvault_tests::play_back(
        cluster.content(2, cluster.token("agency-tx")),
        pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: id.into(),
            case_number: "2026-CR-0101".into(),
            reason: "audit end to end".into(),
        },
    )
    .await
    .expect("playback allowed")
}

/// The end-to-end case: a call ingested, a privileged call refused, a call played back
/// and a call expired leave exactly their entries, in the order they happened, and every one of
/// them is proven included in the signed checkpoint by `callvault audit verify`.
#[tokio::test(flavor = "multi_thread")]
async fn ingest_refusal_playback_and_expiry_are_logged_in_order_and_verify() {
    // The expiry's receipts are forced within a second instead of waiting for each node's
    // ordinary snapshot and log purge.
    let (cluster, _slot) =
        DevCluster::start_with("[lifecycle]\nexpiry_receipt_max_seconds = 1\n").await;
    let auditor = cluster.token("auditor").to_string();
    let mut audit = cluster.audit(1, &auditor);
    let before = audit
        .get_entries(pb::GetEntriesRequest { start: 0, end: 0 })
        .await
        .unwrap()
        .into_inner()
        .tree_size;

    // A day and ten minutes old (live ingest takes calls up to a day plus the longest call): kept under Texas's 90-day default,
    // due once the policy below keeps one day.
    let old =
        TestCall::new("tx-audit-old", "US-TX", "(512) 555-7701", 2, 3).started_ago(86_400 + 600);
    let recorded = TestCall::new("tx-audit-recorded", "US-TX", "(512) 555-7788", 2, 1);
    let mut ingest = cluster.ingest(2, cluster.token("platform"));
    for call in [&old, &recorded] {
        assert_eq!(
            call.send(&mut ingest).await.unwrap().decision,
            pb::Decision::Recorded as i32
        );
    }
    cluster.register_attorney("US-TX", "(512) 555-0142").await;
    let refused = TestCall::new("tx-audit-refused", "US-TX", "512.555.0142", 2, 2);
    assert_eq!(
        refused.send(&mut ingest).await.unwrap().decision,
        pb::Decision::NotRecordedPrivileged as i32
    );
    assert_eq!(
        play_back(&cluster, "tx-audit-recorded").await,
        recorded.audio()
    );
    cluster.put_tx_policy(1, 1).await;
    // Expired, and shredded on every replica with all receipts in.
    cluster
        .wait_purge_done(1, &["tx-audit-old".to_string()], Duration::from_secs(60))
        .await;

    let got = audit
        .get_entries(pb::GetEntriesRequest {
            start: before,
            end: before + 100,
        })
        .await
        .unwrap()
        .into_inner();
    let events: Vec<(u64, &str, &str, &str)> = got
        .entries
        .iter()
        .map(|e| {
            (
                e.sequence,
                e.event.as_str(),
                e.jurisdiction.as_str(),
                e.subject.as_str(),
            )
        })
        .collect();
    let subject = |i: usize| got.entries.get(i).map_or("", |e| e.subject.as_str());
    let fingerprint = subject(2);
    assert!(fingerprint.starts_with("number:"), "{events:?}");
    // The shorter policy waits as a change until a second principal approves it; a change's
    // subject is its id, shown here as `change`.
    let expected = [
        "call.recorded tx-audit-old",
        "call.recorded tx-audit-recorded",
        &format!("registry.number_registered {fingerprint}"),
        "call.refused_privileged tx-audit-refused",
        "content.access.allowed tx-audit-recorded",
        "change.proposed change",
        "change.approved change",
        "policy.changed retention-policy",
        "call.expired tx-audit-old",
    ];
    let seen: Vec<String> = events
        .iter()
        .map(|(_, event, _, subject)| {
            let subject = if subject.starts_with("change-") {
                "change"
            } else {
                subject
            };
            format!("{event} {subject}")
        })
        .collect();
    assert_eq!(
        &seen[..expected.len().min(seen.len())],
        expected,
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, (seq, _, jurisdiction, _))| *seq == before + i as u64
                && *jurisdiction == "US-TX"),
        "{events:?}"
    );
    // Then the shred's receipts and nothing else: one per meta voter and the blob collector's.
    let mut receipts: Vec<&str> = got.entries[expected.len()..]
        .iter()
        .map(|e| e.event.as_str())
        .collect();
    receipts.sort_unstable();
    assert_eq!(
        receipts,
        [
            "purge.receipt.blob",
            "purge.receipt.meta",
            "purge.receipt.meta",
            "purge.receipt.meta"
        ],
        "{events:?}"
    );
    // No dialed number in clear, in any spelling of its digits.
    for e in &got.entries {
        let leaf = String::from_utf8_lossy(&e.leaf);
        for digits in [
            "5125557701",
            "5125557788",
            "5125550142",
            "555-77",
            "555-01",
            "555.01",
        ] {
            assert!(!leaf.contains(digits), "number in clear: {leaf}");
        }
    }

    // Node 1 served those entries, so its checkpoint covers them (a lagging replica would sign a
    // shorter, equally valid prefix).
    let sequences: Vec<String> = events.iter().map(|(seq, ..)| seq.to_string()).collect();
    let mut args = Vec::new();
    for seq in &sequences {
        args.extend(["--entry", seq.as_str()]);
    }
    let (ok, text) = verify_as(
        &auditor,
        "callvault.dev/audit",
        &cluster.nodes[0].addr,
        cluster.audit_vkey(),
        &args,
    );
    assert!(ok, "{text}");
    for (seq, event, _, subject) in &events {
        assert!(
            text.contains(&format!("entry {seq} included: {event} {subject}")),
            "{text}"
        );
    }
}
