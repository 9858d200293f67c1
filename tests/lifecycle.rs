//! Retention, holds, privilege purges and audited playback, end to end against real `callvault`
//! processes laid out by `callvault dev`.
//!
//! Deadlines are real: with a one-day retention, a call that started one day minus `d` seconds
//! ago is due in `d` seconds. No clock is injected anywhere.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use callvault_proto::v1 as pb;
use callvault_tests::{DevCluster, TestCall, eventually, files, holders};
use tonic::Code;

const DAY: i64 = 86_400;
/// How late past deadline + one sweep interval an expiry may be observed on this 2-core machine
/// (the sweep's commit, the poll's interval and a debug build).
const SLACK: Duration = Duration::from_secs(6);
const ATTORNEY: &str = "(512) 555-0199";
/// Config that makes meta nodes confirm expired keys gone within a second instead of waiting
/// for their ordinary snapshot and log purge.
const FORCE_EXPIRY_RECEIPTS: &str = "[lifecycle]\nexpiry_receipt_max_seconds = 1\n";

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

async fn ingest(cluster: &DevCluster, call: &TestCall) -> pb::RecordCallResponse {
    let mut client = cluster.ingest(1, cluster.token("platform"));
    call.send(&mut client).await.expect("ingest")
}

async fn status(cluster: &DevCluster, node: u64, id: &str) -> pb::CallStatusResponse {
    cluster
        .query(node, cluster.token("agency-tx"))
        .call_status(pb::CallStatusRequest {
            call_id: id.into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("call status")
        .into_inner()
}

async fn state(cluster: &DevCluster, node: u64, id: &str) -> pb::CallState {
    pb::CallState::try_from(status(cluster, node, id).await.state).expect("known state")
}

/// Polls until `id` is expired; returns when that was first seen (Unix seconds). Fails if it
/// was seen expired before `deadline` or not by `latest`.
async fn expires_between(cluster: &DevCluster, id: &str, deadline: f64, latest: f64) -> f64 {
    loop {
        let now = unix_now();
        match state(cluster, 2, id).await {
            pb::CallState::Expired => {
                assert!(now >= deadline, "{id} expired {:.1}s early", deadline - now);
                return now;
            }
            pb::CallState::Stored => {
                assert!(
                    now <= latest,
                    "{id} not expired {:.1}s after its deadline",
                    now - deadline
                );
            }
            other => panic!("{id} is {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_retention_expires_calls_within_one_interval_of_the_deadline_and_none_before() {
    // Expired keys normally wait for each node's ordinary snapshot and log purge; here receipts
    // are forced after a second so the test sees every replica's.
    let (cluster, _slot) = DevCluster::start_with(FORCE_EXPIRY_RECEIPTS).await;
    let interval = 2;
    cluster.put_tx_policy(1, interval).await;
    // Due in about 8 and 14 seconds.
    let first = TestCall::new("exp-1", "US-TX", "(512) 555-0101", 2, 1).started_ago(DAY - 8);
    let second = TestCall::new("exp-2", "US-TX", "(512) 555-0102", 2, 2).started_ago(DAY - 14);
    ingest(&cluster, &first).await;
    ingest(&cluster, &second).await;
    let deadline = |c: &TestCall| (c.start.started_at.as_ref().unwrap().seconds + DAY) as f64;
    let limit = |c: &TestCall| deadline(c) + interval as f64 + SLACK.as_secs_f64();

    let seen = expires_between(&cluster, "exp-1", deadline(&first), limit(&first)).await;
    assert!(
        seen < deadline(&second),
        "the test's second call must not be due yet"
    );
    assert_eq!(
        state(&cluster, 3, "exp-2").await,
        pb::CallState::Stored,
        "a call is never expired before its deadline"
    );
    expires_between(&cluster, "exp-2", deadline(&second), limit(&second)).await;

    // The content is gone from every replica: the shred's receipts all come in.
    cluster
        .wait_purge_done(
            1,
            &["exp-1".into(), "exp-2".into()],
            Duration::from_secs(60),
        )
        .await;
    let status = cluster
        .query(1, cluster.token("agency-tx"))
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!((status.expired, status.live_recordings), (2, 0));
    assert_eq!(status.overdue, 0);
    for node in 1..=3 {
        let read = cluster
            .meta(node)
            .read_content(pb::ReadContentRequest {
                jurisdiction: "US-TX".into(),
                call_id: "exp-1".into(),
                access_record: 0,
            })
            .await;
        // Without an allowed access nothing is served; with none possible either way.
        let code = read.expect_err("expired").code();
        assert!(
            matches!(code, Code::NotFound | Code::PermissionDenied),
            "{code:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_held_call_survives_its_deadline_and_expires_after_its_issuer_releases_it() {
    let (cluster, _slot) = DevCluster::start().await;
    let interval = 1;
    cluster.put_tx_policy(1, interval).await;
    let call = TestCall::new("held-1", "US-TX", "(512) 555-0103", 2, 3).started_ago(DAY - 6);
    ingest(&cluster, &call).await;
    let deadline = (call.start.started_at.as_ref().unwrap().seconds + DAY) as f64;

    let hold = pb::PlaceHoldRequest {
        jurisdiction: "US-TX".into(),
        call_id: "held-1".into(),
        case_number: "2026-CR-0042".into(),
        reason: "pending trial".into(),
        // Texas's default policy requires a review date.
        review_date: Some(prost_types::Timestamp {
            seconds: unix_now() as i64 + 30 * DAY,
            nanos: 0,
        }),
    };
    // Another jurisdiction's agency cannot even tell the call exists.
    let err = cluster
        .admin(1, cluster.token("agency-ca"))
        .place_hold(pb::PlaceHoldRequest {
            jurisdiction: "US-TX".into(),
            ..hold.clone()
        })
        .await
        .expect_err("cross-jurisdiction hold");
    assert_eq!(err.code(), Code::NotFound);
    let hold_id = cluster
        .admin(1, cluster.token("agency-tx"))
        .place_hold(hold.clone())
        .await
        .expect("hold")
        .into_inner()
        .hold_id;
    assert_eq!(state(&cluster, 2, "held-1").await, pb::CallState::Held);

    // Past its deadline and several sweeps: still held.
    let wait = deadline + f64::from(interval) * 3.0 + 2.0 - unix_now();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    assert_eq!(state(&cluster, 3, "held-1").await, pb::CallState::Held);

    let release = pb::ReleaseHoldRequest {
        jurisdiction: "US-TX".into(),
        call_id: "held-1".into(),
        hold_id: hold_id.clone(),
    };
    let err = cluster
        .admin(2, cluster.token("agency-tx-2"))
        .release_hold(release.clone())
        .await
        .expect_err("another agency's release");
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(state(&cluster, 2, "held-1").await, pb::CallState::Held);

    let released_at = unix_now();
    cluster
        .admin(2, cluster.token("agency-tx"))
        .release_hold(release)
        .await
        .expect("the issuer releases");
    let latest = released_at + f64::from(interval) + SLACK.as_secs_f64();
    expires_between(&cluster, "held-1", deadline, latest).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shortening_a_policy_makes_calls_due_and_lengthening_protects_them() {
    let (cluster, _slot) = DevCluster::start().await;
    let interval = 1;
    cluster.put_tx_policy(2, interval).await;
    // Past one day, not two: due only once the policy shortens.
    let old = TestCall::new("short-1", "US-TX", "(512) 555-0104", 2, 4).started_ago(DAY + 120);
    // Due in 30 s under a one-day policy: time for the shortening, its sweep and the
    // lengthening (each a policy change through the two-person rule) on a loaded machine.
    let young = TestCall::new("long-1", "US-TX", "(512) 555-0105", 2, 5).started_ago(DAY - 30);
    ingest(&cluster, &old).await;
    ingest(&cluster, &young).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(state(&cluster, 1, "short-1").await, pb::CallState::Stored);

    let shortened = unix_now();
    cluster.put_tx_policy(1, interval).await;
    expires_between(
        &cluster,
        "short-1",
        shortened,
        shortened + f64::from(interval) + SLACK.as_secs_f64(),
    )
    .await;

    // Lengthened before the young call's one-day deadline: it survives it.
    cluster.put_tx_policy(3, interval).await;
    let one_day_deadline = (young.start.started_at.as_ref().unwrap().seconds + DAY) as f64;
    assert!(
        unix_now() < one_day_deadline,
        "the lengthening must land first"
    );
    let wait = one_day_deadline + f64::from(interval) * 3.0 + 2.0 - unix_now();
    tokio::time::sleep(Duration::from_secs_f64(wait.max(0.0))).await;
    assert_eq!(state(&cluster, 2, "long-1").await, pb::CallState::Stored);
}

#[tokio::test(flavor = "multi_thread")]
async fn registering_an_attorney_number_after_fifty_calls_purges_them_on_every_replica() {
    let (mut cluster, _slot) = DevCluster::start().await;
    let before = cluster.chunk_counts().await;
    let ids: Vec<String> = (0..50).map(|i| format!("atty-{i:02}")).collect();
    for (i, id) in ids.iter().enumerate() {
        ingest(&cluster, &TestCall::new(id, "US-TX", ATTORNEY, 2, i as u8)).await;
    }
    // What must disappear: every call's wrapped key and chunk ids, as the store holds them. No
    // RPC hands wrapped keys out (only the keys role reads one, per released access): read them
    // from node 3's volume while it is stopped, as an operator could.
    let mut needles: Vec<(String, Vec<u8>)> = Vec::new();
    assert!(cluster.nodes[2].stop());
    let wrapped = callvault_tests::wrapped_keys_on_volume(&cluster.nodes[2].data_dir(), &ids);
    cluster.nodes[2].start();
    for (id, key) in ids.iter().zip(wrapped) {
        needles.push((format!("{id} wrapped key"), key));
        let read = cluster
            .meta(1)
            .read_call(pb::ReadCallRequest {
                jurisdiction: "US-TX".into(),
                call_id: id.clone(),
                local: false,
            })
            .await
            .expect("the call")
            .into_inner();
        for chunk in read.chunk_ids {
            needles.push((format!("{id} chunk id"), chunk));
        }
    }
    // Wrapped keys live only in the metadata store; chunks only on the blob shards. After the
    // purge no file of any node may hold a key, and no shard file a chunk id (the metadata
    // store's own records of deleted chunk ids name nothing readable and are not scanned).
    let dirs: Vec<PathBuf> = cluster.nodes.iter().map(|n| n.data_dir()).collect();
    let blob_dirs: Vec<PathBuf> = dirs.iter().map(|d| d.join("blob")).collect();
    assert!(
        blob_dirs.iter().all(|d| d.is_dir()),
        "shard data in <data_dir>/blob"
    );
    // The scan can see them: every wrapped key is on disk somewhere before the purge.
    let on_disk = files(&dirs);
    assert!(
        needles
            .iter()
            .filter(|(what, _)| what.ends_with("wrapped key"))
            .all(|(_, n)| !holders(&on_disk, n).is_empty()),
        "the raw scan must find the keys before the purge, or it proves nothing"
    );
    let on_shards = files(&blob_dirs);
    assert!(
        needles
            .iter()
            .filter(|(what, _)| what.ends_with("chunk id"))
            .all(|(_, n)| !holders(&on_shards, n).is_empty()),
        "the raw scan must find the chunk ids on the shards before the purge"
    );
    drop((on_disk, on_shards));

    let registered = Instant::now();
    let purged = cluster.register_attorney("US-TX", "+1 512 555 0199").await;
    assert_eq!(purged, 50);
    assert_eq!(state(&cluster, 3, "atty-07").await, pb::CallState::Purged);
    eventually("every purge receipt", Duration::from_secs(120), || async {
        let s = cluster
            .query(2, cluster.token("agency-tx"))
            .jurisdiction_status(pb::JurisdictionStatusRequest {
                jurisdiction: "US-TX".into(),
            })
            .await
            .expect("status")
            .into_inner();
        (s.purges_pending == 0).then_some(())
    })
    .await;
    println!(
        "registration to purge complete (50 calls, 3 replicas): {:.2}s",
        registered.elapsed().as_secs_f64()
    );
    cluster
        .wait_purge_done(1, &ids, Duration::from_secs(5))
        .await;
    assert_eq!(cluster.chunk_counts().await, before);

    // Nothing of the keys is left in any file of any node, nor of the chunks in any data file
    // (tables, blob files, write-ahead logs) of any shard. A shard's MANIFEST still records the
    // key range of files it once had, so it may name a deleted chunk's id until it rolls over;
    // an id is the hash of ciphertext that no longer exists and reads back nothing.
    let on_disk = files(&dirs);
    let mut on_shards = files(&blob_dirs);
    on_shards.retain(|(path, _)| {
        !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("MANIFEST-"))
    });
    for (what, needle) in &needles {
        let scanned = if what.ends_with("wrapped key") {
            &on_disk
        } else {
            &on_shards
        };
        let found = holders(scanned, needle);
        assert!(found.is_empty(), "{what} is still on disk in {found:?}");
    }
    for node in 1..=3 {
        let read = cluster
            .meta(node)
            .read_content(pb::ReadContentRequest {
                jurisdiction: "US-TX".into(),
                call_id: "atty-00".into(),
                access_record: 0,
            })
            .await;
        // Without an allowed access nothing is served; with none possible either way.
        let code = read.expect_err("purged").code();
        assert!(
            matches!(code, Code::NotFound | Code::PermissionDenied),
            "{code:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_leader_killed_during_a_sweep_and_during_a_purge_both_complete_after_failover() {
    let (mut cluster, _slot) = DevCluster::start_with(FORCE_EXPIRY_RECEIPTS).await;
    cluster.put_tx_policy(1, 1).await;
    let due: Vec<String> = (0..10).map(|i| format!("due-{i}")).collect();
    let privileged: Vec<String> = (0..10).map(|i| format!("priv-{i}")).collect();
    for (i, id) in due.iter().enumerate() {
        let number = format!("(512) 555-02{i:02}");
        ingest(
            &cluster,
            &TestCall::new(id, "US-TX", &number, 2, i as u8).started_ago(DAY - 8),
        )
        .await;
    }
    for (i, id) in privileged.iter().enumerate() {
        ingest(
            &cluster,
            &TestCall::new(id, "US-TX", ATTORNEY, 2, 100 + i as u8),
        )
        .await;
    }
    // Sweeps start within seconds; the registration's purge starts now.
    let first_due = due.first().unwrap();
    eventually("the first expiry", Duration::from_secs(30), || async {
        (state(&cluster, 1, first_due).await == pb::CallState::Expired).then_some(())
    })
    .await;
    cluster.register_attorney("US-TX", ATTORNEY).await;
    let leader = cluster.leader().await;
    cluster.nodes[leader as usize - 1].kill();
    let survivor = (1..=3).find(|id| *id != leader).unwrap();

    for id in &due {
        eventually(
            "an expiry after failover",
            Duration::from_secs(60),
            || async {
                (state(&cluster, survivor, id).await == pb::CallState::Expired).then_some(())
            },
        )
        .await;
    }
    // Every voter's receipt is needed: the killed node confirms once it is back.
    cluster.nodes[leader as usize - 1].start();
    let mut all = due.clone();
    all.extend(privileged.iter().cloned());
    cluster
        .wait_purge_done(survivor, &all, Duration::from_secs(240))
        .await;
}

fn playback_request(id: &str, case: &str) -> pb::PlaybackRequest {
    pb::PlaybackRequest {
        jurisdiction: "US-TX".into(),
        call_id: id.into(),
        case_number: case.into(),
        reason: "investigation of contraband".into(),
    }
}

/// Plays back `id` as `principal`; the audio on success.
async fn play(
    cluster: &DevCluster,
    principal: &str,
    request: pb::PlaybackRequest,
) -> Result<Vec<u8>, tonic::Status> {
    callvault_tests::play_back(cluster.content(2, cluster.token(principal)), request).await
}

#[tokio::test(flavor = "multi_thread")]
async fn playback_is_audited_and_refused_without_a_case_across_jurisdictions_when_purged_or_over_quota()
 {
    let (cluster, _slot) = DevCluster::start_with("[playback]\ncalls_per_hour = 3\n").await;
    let call = TestCall::new("play-1", "US-TX", "(512) 555-0301", 3, 9);
    ingest(&cluster, &call).await;
    let hour = || (unix_now() / 3600.0) as u64;
    let started_hour = hour();

    let case = "2026-CR-0077";
    assert_eq!(
        play(&cluster, "agency-tx", playback_request("play-1", case))
            .await
            .expect("allowed"),
        call.audio()
    );
    let refused = |r: Result<Vec<u8>, tonic::Status>| r.expect_err("refused").code();
    assert_eq!(
        refused(play(&cluster, "agency-tx", playback_request("play-1", "")).await),
        Code::InvalidArgument
    );
    assert_eq!(
        refused(play(&cluster, "agency-ca", playback_request("play-1", case)).await),
        Code::NotFound
    );
    assert_eq!(
        refused(play(&cluster, "auditor", playback_request("play-1", case)).await),
        Code::PermissionDenied
    );
    for _ in 0..2 {
        play(&cluster, "agency-tx", playback_request("play-1", case))
            .await
            .expect("within quota");
    }
    let over = play(&cluster, "agency-tx", playback_request("play-1", case)).await;
    if hour() != started_hour {
        eprintln!("the quota's clock hour turned during the test; its count restarted");
        return;
    }
    assert_eq!(refused(over), Code::ResourceExhausted);

    // A purged call is gone for everyone (another principal, within its quota).
    cluster
        .admin(1, cluster.token("registry"))
        .flag_privileged(pb::FlagPrivilegedRequest {
            jurisdiction: "US-TX".into(),
            call_id: "play-1".into(),
            reason: "attorney heard on review".into(),
            evidence: "review 7".into(),
        })
        .await
        .expect("flag");
    assert_eq!(
        refused(play(&cluster, "agency-tx-2", playback_request("play-1", case)).await),
        Code::NotFound
    );

    // Every attempt, allowed or not, left an access record, in order. Node 1 serves the history
    // from its own replica, which may not have applied the last refusal yet: read until it has.
    let mut events = Vec::new();
    for _ in 0..50 {
        let history = cluster
            .audit(1, cluster.token("auditor"))
            .call_access_history(pb::CallAccessHistoryRequest {
                jurisdiction: "US-TX".into(),
                call_id: "play-1".into(),
            })
            .await
            .expect("access history")
            .into_inner()
            .entries;
        events = history
            .into_iter()
            .map(|e| e.event)
            .filter(|e| e.starts_with("content.") || e.starts_with("quota."))
            .collect();
        if events.len() >= 8 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        events,
        [
            "content.access.allowed",
            "content.access.denied",
            "content.access.denied",
            "content.access.denied",
            "content.access.allowed",
            "content.access.allowed",
            "quota.denied",
            "content.access.denied",
        ]
    );

    // A sealed call (to a sensitive number) needs the elevated role.
    cluster
        .admin(1, cluster.token("registry"))
        .register_sensitive_number(pb::RegisterSensitiveNumberRequest {
            jurisdiction: "US-TX".into(),
            number: "(512) 555-0399".into(),
            reason: "victim advocate hotline".into(),
        })
        .await
        .expect("sensitive");
    let sealed = TestCall::new("sealed-1", "US-TX", "(512) 555-0399", 2, 10);
    ingest(&cluster, &sealed).await;
    assert_eq!(
        refused(play(&cluster, "agency-tx-2", playback_request("sealed-1", case)).await),
        Code::PermissionDenied
    );
    assert_eq!(
        play(
            &cluster,
            "investigator-tx",
            playback_request("sealed-1", case)
        )
        .await
        .expect("elevated"),
        sealed.audio()
    );
}
