//! Issue 14 end to end against real `callvault` processes: call-detail records at their own
//! deadline, a clock no node can push, deadlines at read, the two-person rule, purges without a
//! cap, deletions that stay deleted, and orphan collection.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use callvault_core::codec::VersionedRecord;
use callvault_meta::StateMachineStore;
use callvault_meta::keys::STATE_MACHINE_CFS;
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use callvault_tests::{DevCluster, TestCall, eventually, files, holders};
use tonic::Code;

const DAY: i64 = 86_400;

/// Voters attest their clocks every second (the default is 5 s), so cluster time trails real
/// time by about a second and the tests' deadlines can be tight.
const FAST_CLOCK: &str = "[lifecycle]\nclock_attest_ms = 1000\nmax_clock_skew_ms = 10000\n";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

async fn ingest(cluster: &DevCluster, node: u64, call: &TestCall) -> pb::RecordCallResponse {
    let mut client = cluster.ingest(node, cluster.token("platform"));
    call.send(&mut client).await.expect("ingest")
}

async fn call_status(cluster: &DevCluster, id: &str) -> pb::CallStatusResponse {
    cluster
        .query(2, cluster.token("agency-tx"))
        .call_status(pb::CallStatusRequest {
            call_id: id.into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("call status")
        .into_inner()
}

async fn tx_status(cluster: &DevCluster) -> pb::JurisdictionStatusResponse {
    cluster
        .query(2, cluster.token("agency-tx"))
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("status")
        .into_inner()
}

async fn cluster_status(cluster: &DevCluster, node: u64) -> pb::ClusterStatus {
    ClusterClient::new(cluster.nodes[node as usize - 1].with_token(cluster.token("operator")))
        .status(pb::StatusRequest {})
        .await
        .expect("cluster status")
        .into_inner()
}

async fn list(cluster: &DevCluster, facility: &str, inmate: &str) -> Vec<pb::CallSummary> {
    cluster
        .query(3, cluster.token("agency-tx"))
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-TX".into(),
            facility_id: facility.into(),
            inmate_id: inmate.into(),
            ..Default::default()
        })
        .await
        .expect("list calls")
        .into_inner()
        .calls
}

/// Puts a Texas policy with the retentions and notice given, approved by a second principal
/// where it shortens anything.
async fn put_policy(cluster: &DevCluster, days: u32, detail_days: u32, notice: u32, sweep: u32) {
    let mut admin = cluster.admin(1, cluster.token("operator"));
    let current = admin
        .get_policy(pb::GetPolicyRequest {
            jurisdiction: "US-TX".into(),
            version: 0,
        })
        .await
        .expect("get policy")
        .into_inner()
        .policy
        .expect("a policy");
    let put = admin
        .put_policy(pb::PutPolicyRequest {
            jurisdiction: "US-TX".into(),
            policy: Some(pb::RetentionPolicy {
                recording_retention_days: days,
                call_detail_retention_days: detail_days,
                sweep_interval_seconds: sweep,
                shortening_notice_seconds: notice,
                ..current.clone()
            }),
            expected_version: current.version,
        })
        .await
        .expect("put policy")
        .into_inner();
    if !put.pending_change_id.is_empty() {
        cluster.approve_tx_change(&put.pending_change_id).await;
    }
}

/// Issue 14: "call-detail records expire at their deadline and disappear from `ListCalls` and
/// every index; a tombstone names nothing but the hashed id".
#[tokio::test(flavor = "multi_thread")]
async fn call_detail_records_expire_at_their_deadline_and_only_a_hashed_tombstone_remains() {
    let (mut cluster, _slot) =
        DevCluster::start_with(&format!("{FAST_CLOCK}expiry_receipt_max_seconds = 1\n")).await;
    // Recordings and call details both kept one day, swept every second.
    put_policy(&cluster, 1, 1, 0, 1).await;
    let mut call = TestCall::new("cdr-1", "US-TX", "(512) 555-0161", 2, 61).started_ago(DAY - 8);
    call.start.facility_id = "fac-cdr-unique".into();
    call.start.inmate_id = "inm-cdr-unique".into();
    let digest = call.end.plaintext_blake3.clone();
    ingest(&cluster, 2, &call).await;
    assert_eq!(list(&cluster, "fac-cdr-unique", "").await.len(), 1);
    let deadline = (call.start.started_at.as_ref().unwrap().seconds + DAY) as f64;

    let gone_at = eventually(
        "the call-detail record deleted",
        Duration::from_secs(60),
        || async {
            let status = call_status(&cluster, "cdr-1").await;
            (status.started_at.is_none() && status.state == pb::CallState::Expired as i32)
                .then(unix_now)
        },
    )
    .await;
    assert!(
        gone_at >= deadline,
        "deleted {:.1}s early",
        deadline - gone_at
    );
    for (facility, inmate) in [("", ""), ("fac-cdr-unique", ""), ("", "inm-cdr-unique")] {
        assert!(
            list(&cluster, facility, inmate).await.is_empty(),
            "still listed"
        );
    }
    let status = tx_status(&cluster).await;
    assert_eq!(
        (status.call_details_expired, status.call_details_kept),
        (1, 0)
    );
    assert_eq!((status.call_details_overdue, status.overdue), (0, 0));
    // The id is refused forever.
    let again = TestCall::new("cdr-1", "US-TX", "(512) 555-0161", 2, 61);
    let refused = cluster
        .ingest(2, cluster.token("platform"))
        .record_call(tokio_stream::iter(again.messages()))
        .await
        .expect_err("a retired id");
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
    cluster
        .wait_purge_done(1, &["cdr-1".to_string()], Duration::from_secs(60))
        .await;

    // No family of any replica's state machine holds the facility, the inmate or the digest.
    for node in &mut cluster.nodes {
        node.stop();
        let sm =
            StateMachineStore::open(&node.data_dir().join("meta")).expect("open stopped store");
        let db = sm.db();
        let mut everything = Vec::new();
        for name in STATE_MACHINE_CFS {
            for item in db.iterator_cf(db.cf_handle(name).unwrap(), rocksdb::IteratorMode::Start) {
                let (k, v) = item.unwrap();
                everything.extend_from_slice(&k);
                everything.extend_from_slice(&v);
            }
        }
        for needle in [&b"fac-cdr-unique"[..], b"inm-cdr-unique", &digest] {
            assert!(
                !everything.windows(needle.len()).any(|w| w == needle),
                "node {} still holds {needle:?}",
                node.id
            );
        }
    }
}

/// Issue 14: "a leader under `faketime` a year ahead expires nothing early, is reported, and
/// loses sweep leadership; cluster time moves with the median".
#[tokio::test(flavor = "multi_thread")]
async fn a_leader_a_year_ahead_expires_nothing_early_is_reported_and_loses_sweep_leadership() {
    let (cluster, _slot) = DevCluster::start_with_first_node_clock("+365d", FAST_CLOCK).await;
    // Node 1 initialized the cluster: it leads Raft with a clock a year ahead.
    assert_eq!(cluster.leader().await, 1);
    put_policy(&cluster, 1, 1, 0, 1).await;
    // Due in a day by any honest clock, due long ago by node 1's.
    let young = TestCall::new("young-1", "US-TX", "(512) 555-0171", 2, 71);
    ingest(&cluster, 2, &young).await;
    // Due in a few seconds by every clock: someone must still sweep.
    let due = TestCall::new("due-1", "US-TX", "(512) 555-0172", 2, 72).started_ago(DAY - 6);
    ingest(&cluster, 3, &due).await;

    let status = eventually("node 1 reported", Duration::from_secs(30), || async {
        let status = cluster_status(&cluster, 2).await;
        status
            .clocks
            .iter()
            .any(|c| c.node_id == 1 && c.suspect)
            .then_some(status)
    })
    .await;
    assert_eq!(status.leader_id, 1, "still the Raft leader");
    assert_eq!(status.sweep_leader, 2, "but not the sweep leader");
    let offset = status
        .clocks
        .iter()
        .find(|c| c.node_id == 1)
        .unwrap()
        .offset_ms
        .unwrap();
    assert!(offset > 360 * DAY * 1000, "offset {offset} ms");
    assert!(
        status
            .clocks
            .iter()
            .filter(|c| c.node_id != 1)
            .all(|c| !c.suspect)
    );
    // The cluster time is the honest nodes', and it moves with them.
    let first = status.cluster_time_ms.unwrap() as f64 / 1000.0;
    assert!(
        (first - unix_now()).abs() < 5.0,
        "cluster time {first} vs now {}",
        unix_now()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = cluster_status(&cluster, 3).await.cluster_time_ms.unwrap() as f64 / 1000.0;
    assert!(
        (2.0..6.0).contains(&(later - first)),
        "cluster time moved {:.1}s in 3s",
        later - first
    );
    assert!(
        cluster.nodes[0].log().contains("clock_skew"),
        "node 1 logs its own skew"
    );

    // The due call expires (swept by node 2), the young one does not, for several sweeps.
    let deadline = (due.start.started_at.as_ref().unwrap().seconds + DAY) as f64;
    let expired_at = eventually("the due call expired", Duration::from_secs(60), || async {
        (call_status(&cluster, "due-1").await.state == pb::CallState::Expired as i32).then(unix_now)
    })
    .await;
    assert!(expired_at >= deadline);
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(
        call_status(&cluster, "young-1").await.state,
        pb::CallState::Stored as i32,
        "a clock a year ahead expired nothing early"
    );
    assert!(
        !cluster.nodes[0].log().contains("sweep expired"),
        "the skewed leader swept"
    );
}

/// Issue 14: "playback of a recording past its deadline is refused with the sweeper stopped".
#[tokio::test(flavor = "multi_thread")]
async fn playback_of_a_recording_past_its_deadline_is_refused_with_the_sweeper_stopped() {
    let (cluster, _slot) = DevCluster::start_with(&format!("{FAST_CLOCK}sweep = false\n")).await;
    put_policy(&cluster, 1, 1, 0, 1).await;
    let call = TestCall::new("late-1", "US-TX", "(512) 555-0181", 2, 81).started_ago(DAY - 6);
    ingest(&cluster, 1, &call).await;
    let request = || pb::PlaybackRequest {
        jurisdiction: "US-TX".into(),
        call_id: "late-1".into(),
        case_number: "2026-CR-0099".into(),
        reason: "review".into(),
    };
    let content = || cluster.content(2, cluster.token("agency-tx"));
    assert_eq!(
        callvault_tests::play_back(content(), request())
            .await
            .expect("before the deadline"),
        call.audio()
    );
    let deadline = (call.start.started_at.as_ref().unwrap().seconds + DAY) as f64;
    tokio::time::sleep(Duration::from_secs_f64(
        (deadline - unix_now() + 2.0).max(0.0),
    ))
    .await;
    let refused = callvault_tests::play_back(content(), request())
        .await
        .expect_err("past the deadline");
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    // Not swept: the recording is still stored, and overdue.
    assert_eq!(
        call_status(&cluster, "late-1").await.state,
        pb::CallState::Stored as i32
    );
    // A direct read of its key material is refused too (what a key release re-checks).
    let read = cluster
        .meta(3)
        .read_content(pb::ReadContentRequest {
            jurisdiction: "US-TX".into(),
            call_id: "late-1".into(),
        })
        .await
        .expect_err("past its deadline");
    assert_eq!(read.code(), Code::FailedPrecondition);
}

/// Issue 14: "a shortened policy takes effect after its notice period, or at once with a second
/// approver; a flag by a plain agency principal is refused".
#[tokio::test(flavor = "multi_thread")]
async fn a_shortened_policy_waits_for_its_notice_or_a_second_approver_and_agency_flags_need_a_registry()
 {
    // The default notice is 30 days; lowering it to 5 s is itself a shortening: approved.
    let (cluster, _slot) = DevCluster::start_with(FAST_CLOCK).await;
    put_policy(&cluster, 365, 1095, 5, 1).await;
    let mut operator = cluster.admin(1, cluster.token("operator"));
    let current = || async {
        cluster
            .admin(2, cluster.token("agency-tx"))
            .get_policy(pb::GetPolicyRequest {
                jurisdiction: "US-TX".into(),
                version: 0,
            })
            .await
            .unwrap()
            .into_inner()
            .policy
            .unwrap()
    };
    let before = current().await;
    assert_eq!(before.shortening_notice_seconds, 5);
    let shorter = |days: u32, version: u32| pb::PutPolicyRequest {
        jurisdiction: "US-TX".into(),
        policy: Some(pb::RetentionPolicy {
            recording_retention_days: days,
            ..before.clone()
        }),
        expected_version: version,
    };
    let put = operator
        .put_policy(shorter(30, before.version))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(put.version, 0, "not in force yet");
    let effective = put.effective_at.expect("a notice").seconds as f64;
    assert!((effective - unix_now() - 5.0).abs() < 3.0);
    let status = tx_status(&cluster).await;
    assert_eq!(status.pending_policy_change_id, put.pending_change_id);
    assert_eq!(status.pending_policy_recording_retention_days, 30);
    assert_eq!(status.recording_retention_days, 365);
    // The proposer and another jurisdiction's agency cannot approve it.
    for (token, code) in [
        ("operator", Code::PermissionDenied),
        ("agency-ca", Code::PermissionDenied),
    ] {
        let err = cluster
            .admin(1, cluster.token(token))
            .approve_change(pb::ChangeRequest {
                jurisdiction: "US-TX".into(),
                change_id: put.pending_change_id.clone(),
            })
            .await
            .expect_err("not a second principal of Texas");
        assert_eq!(err.code(), code, "{token}: {err:?}");
    }
    // After its notice, the sweep leader puts it in force.
    let in_force = eventually("the notice elapsed", Duration::from_secs(30), || async {
        let policy = current().await;
        (policy.recording_retention_days == 30).then_some(policy)
    })
    .await;
    assert!(unix_now() >= effective, "in force before its notice ended");
    assert!(
        tx_status(&cluster)
            .await
            .pending_policy_change_id
            .is_empty()
    );

    // At once, with a second agency principal of Texas.
    let put = operator
        .put_policy(shorter(20, in_force.version))
        .await
        .unwrap()
        .into_inner();
    let approved = cluster
        .admin(3, cluster.token("agency-tx-2"))
        .approve_change(pb::ChangeRequest {
            jurisdiction: "US-TX".into(),
            change_id: put.pending_change_id,
        })
        .await
        .expect("a second principal")
        .into_inner()
        .change
        .unwrap();
    assert_eq!(approved.state, pb::ChangeState::Effected as i32);
    assert_eq!(current().await.recording_retention_days, 20);

    // A flag by a plain agency principal is refused; its request needs a registry principal.
    let call = TestCall::new("flag-1", "US-TX", "(512) 555-0191", 2, 91);
    ingest(&cluster, 1, &call).await;
    let flag = pb::FlagPrivilegedRequest {
        jurisdiction: "US-TX".into(),
        call_id: "flag-1".into(),
        reason: "attorney heard on review".into(),
        evidence: "review 3".into(),
    };
    let err = cluster
        .admin(1, cluster.token("agency-tx"))
        .flag_privileged(flag.clone())
        .await
        .expect_err("an agency flag");
    assert_eq!(err.code(), Code::PermissionDenied);
    let requested = cluster
        .admin(1, cluster.token("agency-tx"))
        .request_privilege_flag(flag)
        .await
        .expect("a request")
        .into_inner()
        .change
        .unwrap();
    let approve = |token: &'static str| {
        let mut admin = cluster.admin(2, cluster.token(token));
        let change_id = requested.change_id.clone();
        async move {
            admin
                .approve_change(pb::ChangeRequest {
                    jurisdiction: "US-TX".into(),
                    change_id,
                })
                .await
        }
    };
    assert_eq!(
        approve("agency-tx-2").await.expect_err("an agency").code(),
        Code::PermissionDenied
    );
    assert_eq!(
        call_status(&cluster, "flag-1").await.state,
        pb::CallState::Stored as i32
    );
    approve("registry").await.expect("a registry principal");
    assert_eq!(
        call_status(&cluster, "flag-1").await.state,
        pb::CallState::Purged as i32
    );
}

/// Issue 14: "a shredded chunk never comes back … a learner's and a removed node's data
/// directories hold no shredded key afterwards".
#[tokio::test(flavor = "multi_thread")]
async fn a_learners_and_a_removed_nodes_directories_hold_no_shredded_key() {
    let (mut cluster, _slot) = DevCluster::start().await;
    let mut learner = cluster.meta_only_node(4);
    learner.start();
    let operator = cluster.token("operator").to_string();
    eventually("node 4 answers", Duration::from_secs(60), || async {
        ClusterClient::new(learner.with_token(&operator))
            .status(pb::StatusRequest {})
            .await
            .ok()
    })
    .await;
    ClusterClient::new(cluster.nodes[0].with_token(cluster.token("operator")))
        .add_member(pb::AddMemberRequest {
            node_id: 4,
            addr: learner.addr.clone(),
            learner_only: true,
        })
        .await
        .expect("add the learner");
    let ids: Vec<String> = (0..6).map(|i| format!("lrn-{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        ingest(
            &cluster,
            1,
            &TestCall::new(id, "US-TX", "(512) 555-0149", 2, i as u8),
        )
        .await;
    }
    let mut keys = Vec::new();
    for id in &ids {
        let content = cluster
            .meta(1)
            .read_content(pb::ReadContentRequest {
                jurisdiction: "US-TX".into(),
                call_id: id.clone(),
            })
            .await
            .expect("content")
            .into_inner();
        keys.push(content.wrapped_key);
    }
    // Every node holds the keys before the purge (the learner too), or the scan proves nothing.
    let learner_dir = learner.data_dir();
    eventually("the learner caught up", Duration::from_secs(60), || async {
        let on_disk = files(std::slice::from_ref(&learner_dir));
        keys.iter()
            .all(|k| !holders(&on_disk, k).is_empty())
            .then_some(())
    })
    .await;

    assert_eq!(
        cluster.register_attorney("US-TX", "+1 512 555 0149").await,
        6
    );
    // Node 3 leaves while its receipts may still be owed: the removal waits for them.
    ClusterClient::new(cluster.nodes[0].with_token(cluster.token("operator")))
        .remove_member(pb::RemoveMemberRequest {
            node_id: 3,
            wait_seconds: 120,
            ..Default::default()
        })
        .await
        .expect("removed once its receipts are in");
    eventually(
        "every receipt, the learner's too",
        Duration::from_secs(180),
        || async { (tx_status(&cluster).await.purges_pending == 0).then_some(()) },
    )
    .await;
    let status = cluster_status(&cluster, 1).await;
    assert!(status.members.iter().all(|m| m.node_id != 3));
    assert!(status.volumes_to_destroy.is_empty());

    learner.stop();
    cluster.nodes[2].stop();
    for dir in [learner.data_dir(), cluster.nodes[2].data_dir()] {
        let on_disk = files(std::slice::from_ref(&dir));
        for key in &keys {
            let found = holders(&on_disk, key);
            assert!(found.is_empty(), "a shredded key is still in {found:?}");
        }
    }
}

/// Issue 14: "a number with more past calls than one apply purges is purged completely without a
/// second registration".
#[tokio::test(flavor = "multi_thread")]
async fn a_number_with_more_past_calls_than_one_apply_purges_is_purged_without_a_second_registration()
 {
    let (cluster, _slot) = DevCluster::start().await;
    let page = callvault_meta::purges::PURGE_PAGE;
    let total = page + 300;
    // Committed straight through the metadata store (as ingest would, chunks aside): thousands
    // of streamed calls would take this machine far longer.
    let fingerprint = *blake3::hash(b"many-calls").as_bytes();
    let mut meta = cluster.meta(1);
    for start in (0..total).step_by(500) {
        let mut proposals = Vec::new();
        for i in start..(start + 500).min(total) {
            let mut command = callvault_tests::commit(i);
            if let callvault_meta::Command::CommitCall { call, .. } = &mut command {
                call.number_fingerprint = fingerprint;
                call.started_at = callvault_tests::wall_clock();
                call.ended_at = call.started_at;
            }
            let mut meta = meta.clone();
            proposals.push(async move {
                meta.propose(pb::ProposeRequest {
                    command: command.encode(),
                })
                .await
            });
        }
        for result in futures::future::join_all(proposals).await {
            result.expect("commit");
        }
    }
    let register = callvault_meta::Command::RegisterPrivileged {
        entry: callvault_core::RegistryEntry {
            jurisdiction: callvault_core::Jurisdiction::Tx,
            number: callvault_core::normalize("+1 512 555 0155").unwrap(),
            kind: callvault_core::PrivilegeKind::Attorney,
            registrant: "dev-registry".into(),
            evidence: "TX bar 1".into(),
            registered_at: callvault_tests::wall_clock(),
        },
        fingerprint,
    };
    let answer = meta
        .propose(pb::ProposeRequest {
            command: register.encode(),
        })
        .await
        .expect("register")
        .into_inner();
    let result = callvault_meta::CommandResult::decode(&answer.result).unwrap();
    assert_eq!(
        result,
        callvault_meta::CommandResult::NumberRegistered {
            purged: page as u64
        }
    );
    // No second registration: the leader pages through the rest, and status shows progress.
    let last = format!("call-{}", total - 1);
    let final_status = eventually("every call purged", Duration::from_secs(120), || async {
        let status = tx_status(&cluster).await;
        (status.purged == total as u64 && status.purges_in_progress == 0).then_some(status)
    })
    .await;
    assert_eq!(final_status.live_recordings, 0);
    assert_eq!(
        call_status(&cluster, &last).await.state,
        pb::CallState::Purged as i32
    );
}

/// Issue 14: "orphan chunks from rejected and killed streams are collected after the grace
/// period, and a chunk of a call still streaming is not".
#[tokio::test(flavor = "multi_thread")]
async fn orphan_chunks_are_collected_after_the_grace_and_a_streaming_call_keeps_its_chunks() {
    // Calls of at most 10 s: a stream may take 40 s and its commit 30 s more, so 70 s of grace.
    // Ingest stores 256 KiB blocks: a stream of 16,000-byte chunks writes one block every 17.
    let grace = 70;
    let (cluster, _slot) = DevCluster::start_with(&format!(
        "[ingest]\nmax_call_seconds = 10\nblock_bytes = 262144\n\n{FAST_CLOCK}\
         orphan_grace_seconds = {grace}\norphan_sweep_seconds = 3\n"
    ))
    .await;
    // Each shard's orphan floor defaults to its node's grace.
    let baseline = cluster.chunk_counts().await;
    let grown_by = |n: u64| {
        let cluster = &cluster;
        let baseline = &baseline;
        async move {
            let counts = cluster.chunk_counts().await;
            counts
                .iter()
                .zip(baseline)
                .all(|(now, before)| now.unwrap() >= before.unwrap() + n)
                .then_some(())
        }
    };
    let written_at = unix_now();
    // Rejected: the digest at the end is wrong, after its first block was written.
    let mut rejected = TestCall::new("orph-rej", "US-TX", "(512) 555-0131", 20, 31);
    rejected.end.plaintext_blake3 = vec![0; 32];
    let err = rejected
        .send(&mut cluster.ingest(1, cluster.token("platform")))
        .await
        .expect_err("a wrong digest");
    assert_eq!(err.code(), Code::InvalidArgument);
    eventually(
        "the rejected stream's block",
        Duration::from_secs(30),
        || grown_by(1),
    )
    .await;
    // Killed: the platform goes away mid-stream, once its first block is written.
    let killed = TestCall::new("orph-kill", "US-TX", "(512) 555-0132", 20, 32);
    let (tx, rx) = tokio::sync::mpsc::channel(32);
    let mut client = cluster.ingest(2, cluster.token("platform"));
    let stream = tokio::spawn(async move {
        client
            .record_call(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    for message in killed.messages().into_iter().take(20) {
        tx.send(message).await.unwrap();
    }
    eventually("the killed stream's block", Duration::from_secs(30), || {
        grown_by(2)
    })
    .await;
    stream.abort();
    drop(tx);
    let with_orphans = cluster.chunk_counts().await;

    // A call that starts streaming shortly before the orphans are due and finishes after.
    let wait = written_at + f64::from(grace) - 15.0 - unix_now();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    // Its platform says it lasted 8 s (within the 10 s limit); its stream takes longer. 40
    // chunks: two full blocks written while it streams, the rest at its end.
    let mut streaming = TestCall::new("orph-live", "US-TX", "(512) 555-0133", 40, 33);
    let now = unix_now() as i64;
    streaming.start.started_at = Some(prost_types::Timestamp {
        seconds: now - 9,
        nanos: 0,
    });
    streaming.end.ended_at = Some(prost_types::Timestamp {
        seconds: now - 1,
        nanos: 0,
    });
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let mut client = cluster.slow_ingest(3, cluster.token("platform"));
    let answer = tokio::spawn(async move {
        client
            .record_call(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    let messages = streaming.messages();
    let (last, first) = messages.split_last().unwrap();
    for message in first {
        tx.send(message.clone()).await.unwrap();
    }
    let streamed_blocks = 2;
    eventually(
        "the streaming call's blocks",
        Duration::from_secs(30),
        || async {
            let counts = cluster.chunk_counts().await;
            counts
                .iter()
                .zip(&with_orphans)
                .all(|(now, before)| now.unwrap() >= before.unwrap() + streamed_blocks)
                .then_some(())
        },
    )
    .await;
    // The orphans go once they are older than the grace; left on every shard: the streaming
    // call's blocks, nothing else.
    eventually("the orphans collected", Duration::from_secs(60), || async {
        let counts = cluster.chunk_counts().await;
        counts
            .iter()
            .zip(&baseline)
            .all(|(now, before)| now.unwrap() == before.unwrap() + streamed_blocks)
            .then_some(())
    })
    .await;
    assert!(
        unix_now() >= written_at + f64::from(grace),
        "collected before the grace"
    );
    if tx.send(last.clone()).await.is_err() {
        panic!("the stream ended early: {:?}", answer.await);
    }
    drop(tx);
    let committed = answer
        .await
        .unwrap()
        .expect("the streaming call commits")
        .into_inner();
    assert_eq!(committed.decision, pb::Decision::Recorded as i32);
    let audio = callvault_tests::play_back(
        cluster.content(1, cluster.token("agency-tx")),
        pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: "orph-live".into(),
            case_number: "2026-CR-0131".into(),
            reason: "review".into(),
        },
    )
    .await
    .expect("its chunks survived the sweep");
    assert_eq!(audio, streaming.audio());
}

/// An ingest node whose clock is two minutes behind would stamp commits `apply` refuses (older
/// than the commit window in cluster time) after streaming every call, and the platform would be
/// told to retry, forever. It refuses before any audio instead, and says what to fix.
#[tokio::test(flavor = "multi_thread")]
async fn an_ingest_node_with_a_clock_behind_the_cluster_time_refuses_calls_and_says_why() {
    let (cluster, _slot) = DevCluster::start_with_first_node_clock("-120", FAST_CLOCK).await;
    put_policy(&cluster, 1, 1, 0, 1).await;
    eventually("cluster time", Duration::from_secs(30), || async {
        cluster_status(&cluster, 2)
            .await
            .cluster_time_ms
            .map(|_| ())
    })
    .await;
    let call = TestCall::new("behind-1", "US-TX", "(512) 555-0191", 2, 91);
    let mut behind = cluster.ingest(1, cluster.token("platform"));
    let refused = call
        .send(&mut behind)
        .await
        .expect_err("an ingest node two minutes behind records nothing");
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(
        refused.message().contains("behind the cluster time"),
        "{refused:?}"
    );
    assert!(cluster.nodes[0].log().contains("ingest_clock_behind"));
    // The same call through an honest node is recorded: the refusal left nothing behind.
    let recorded = ingest(&cluster, 2, &call).await;
    assert_eq!(recorded.decision, pb::Decision::Recorded as i32);
}
