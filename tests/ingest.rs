//! End to end through the public gRPC APIs, against real `callvault` processes laid out by
//! `callvault dev`: the privilege gate, commit-time purges, durability of acknowledged calls,
//! idempotent retries, jurisdiction scoping, roles, and retention-status counts.

use std::time::Duration;

use callvault_proto::v1 as pb;
use callvault_tests::{DevCluster, TestCall, eventually};
use tonic::Code;

const ATTORNEY: &str = "(512) 555-0142";
/// Formattings of the attorney's number, as in the core's normalization table.
const ATTORNEY_VARIANTS: &[&str] = &[
    "(512) 555-0142",
    "512-555-0142",
    "512.555.0142",
    "+1 512 555 0142",
    "+15125550142",
    "1 (512) 555-0142",
    "tel:+1-512-555-0142",
    "  512 555 0142 ",
];

async fn call_state(cluster: &DevCluster, node: u64, token: &str, id: &str) -> pb::CallState {
    let status = cluster
        .query(node, token)
        .call_status(pb::CallStatusRequest {
            call_id: id.into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("call status")
        .into_inner();
    pb::CallState::try_from(status.state).expect("known state")
}

fn total(counts: &[Option<u64>]) -> u64 {
    counts.iter().flatten().sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attorney_call_in_any_formatting_is_not_recorded_and_writes_no_chunk() {
    let (cluster, _slot) = DevCluster::start().await;
    cluster.register_attorney("US-TX", ATTORNEY).await;
    let mut ingest = cluster.ingest(2, cluster.token("platform"));

    // Counting works: an ordinary call adds chunks.
    let before = cluster.chunk_counts().await;
    let ordinary = TestCall::new("tx-ordinary-1", "US-TX", "(512) 555-7788", 3, 1);
    let answer = ordinary.send(&mut ingest).await.expect("ordinary call");
    assert_eq!(answer.decision, pb::Decision::Recorded as i32);
    // Its 48 kB are one block, on at least W = 2 shards.
    assert!(total(&cluster.chunk_counts().await) >= total(&before) + 2);

    let before = cluster.chunk_counts().await;
    for (i, number) in ATTORNEY_VARIANTS.iter().enumerate() {
        let call = TestCall::new(&format!("tx-attorney-{i}"), "US-TX", number, 5, i as u8);
        let answer = call
            .send(&mut ingest)
            .await
            .expect("attorney call answered");
        assert_eq!(
            answer.decision,
            pb::Decision::NotRecordedPrivileged as i32,
            "{number:?}: {}",
            answer.reason
        );
        assert_eq!(
            call_state(&cluster, 3, cluster.token("agency-tx"), &call.start.call_id).await,
            pb::CallState::Blocked
        );
    }
    // Let any background replica write finish, then count again on every shard.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        cluster.chunk_counts().await,
        before,
        "a privileged call wrote chunks"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_number_registered_mid_stream_turns_the_commit_into_a_purge() {
    // The smallest blocks, so the first half of the call fills one and it is written mid-stream.
    let (cluster, _slot) = DevCluster::start_with("[ingest]\nblock_bytes = 262144\n").await;
    let call = TestCall::new("tx-midstream-1", "US-TX", "+1 512 555 0177", 40, 3);
    let messages = call.messages();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut ingest = cluster.ingest(1, cluster.token("platform"));
    let answer = tokio::spawn(async move {
        ingest
            .record_call(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
    });
    // The start and half the audio (320 kB: one full block) go out while the number is still
    // ordinary...
    let (first, rest) = messages.split_at(21);
    for m in first {
        tx.send(m.clone()).await.expect("stream open");
    }
    let before = cluster.chunk_counts().await;
    eventually(
        "chunks of the streaming call",
        Duration::from_secs(10),
        || async { (total(&cluster.chunk_counts().await) > total(&before)).then_some(()) },
    )
    .await;
    // ...then the number is registered, and the rest of the call arrives.
    cluster.register_attorney("US-TX", "512-555-0177").await;
    for m in rest {
        tx.send(m.clone()).await.expect("stream open");
    }
    drop(tx);
    let answer = answer.await.expect("task").expect("answered").into_inner();
    assert_eq!(
        answer.decision,
        pb::Decision::NotRecordedPrivileged as i32,
        "{}",
        answer.reason
    );
    assert!(answer.receipt.is_none());
    assert_eq!(
        call_state(&cluster, 2, cluster.token("agency-tx"), "tx-midstream-1").await,
        pb::CallState::Purged
    );
    // The data key was never stored: the record has no chunks left to read.
    let read = cluster
        .meta(2)
        .read_call(pb::ReadCallRequest {
            jurisdiction: "US-TX".into(),
            call_id: "tx-midstream-1".into(),
            local: false,
        })
        .await
        .expect("read")
        .into_inner();
    assert!(!read.record.is_empty() && read.chunk_ids.is_empty());
    // And the purged id is refused forever.
    let retry = call
        .send(&mut cluster.ingest(1, cluster.token("platform")))
        .await
        .unwrap_err();
    assert_eq!(retry.code(), Code::FailedPrecondition, "{retry:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acknowledged_call_survives_killing_the_leader_right_after_the_ack() {
    let (mut cluster, _slot) = DevCluster::start().await;
    let leader = cluster.leader().await;
    let call = TestCall::new("tx-durable-1", "US-TX", "(512) 555-3030", 8, 4);
    let answer = call
        .send(&mut cluster.ingest(leader, cluster.token("platform")))
        .await
        .expect("recorded");
    assert_eq!(answer.decision, pb::Decision::Recorded as i32);
    cluster.nodes[leader as usize - 1].kill();

    let survivor = (1..=3).find(|id| *id != leader).expect("a survivor");
    let read = eventually(
        "the call on the surviving majority",
        Duration::from_secs(30),
        || {
            let mut meta = cluster.meta(survivor);
            async move {
                meta.read_call(pb::ReadCallRequest {
                    jurisdiction: "US-TX".into(),
                    call_id: "tx-durable-1".into(),
                    local: false,
                })
                .await
                .ok()
                .map(tonic::Response::into_inner)
            }
        },
    )
    .await;
    assert!(!read.record.is_empty(), "the acknowledged call is gone");
    // Eight platform chunks of 16 kB are one block.
    assert_eq!(read.chunk_ids.len(), 1);
    assert_eq!(
        call_state(
            &cluster,
            survivor,
            cluster.token("agency-tx"),
            "tx-durable-1"
        )
        .await,
        pb::CallState::Stored
    );

    // Bring the killed node back: every chunk is on at least W = 2 shards.
    cluster.nodes[leader as usize - 1].start();
    let mut holders = vec![0u32; read.chunk_ids.len()];
    for id in 1..=3 {
        let has = eventually("a shard to answer", Duration::from_secs(30), || {
            let mut shard = cluster.shard(id);
            let ids = read.chunk_ids.clone();
            async move {
                shard
                    .has_chunks(pb::HasChunksRequest { chunk_ids: ids })
                    .await
                    .ok()
                    .map(|r| r.into_inner().present)
            }
        })
        .await;
        for (count, present) in holders.iter_mut().zip(has) {
            *count += u32::from(present);
        }
    }
    assert!(
        holders.iter().all(|h| *h >= 2),
        "replicas per chunk: {holders:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_retried_upload_returns_the_same_receipt_and_a_conflicting_one_is_refused() {
    let (cluster, _slot) = DevCluster::start().await;
    let call = TestCall::new("tx-retry-1", "US-TX", "(512) 555-4040", 3, 5);
    let first = call
        .send(&mut cluster.ingest(1, cluster.token("platform")))
        .await
        .expect("recorded");
    let again = call
        .send(&mut cluster.ingest(2, cluster.token("platform")))
        .await
        .expect("retry answered");
    assert_eq!(first.decision, pb::Decision::Recorded as i32);
    assert_eq!(again.decision, pb::Decision::Recorded as i32);
    assert!(first.receipt.is_some());
    assert_eq!(first.receipt, again.receipt);

    let conflicting = TestCall::new("tx-retry-1", "US-TX", "(512) 555-4040", 3, 6);
    let refused = conflicting
        .send(&mut cluster.ingest(3, cluster.token("platform")))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::AlreadyExists, "{refused:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agency_learns_nothing_about_another_jurisdictions_calls() {
    let (cluster, _slot) = DevCluster::start().await;
    let call = TestCall::new("tx-private-1", "US-TX", "(512) 555-5050", 2, 7);
    call.send(&mut cluster.ingest(1, cluster.token("platform")))
        .await
        .expect("recorded");
    let mut california = cluster.query(2, cluster.token("agency-ca"));

    // The existing Texas call and a call that does not exist look exactly alike.
    let status = |id: &str, jurisdiction: &str| pb::CallStatusRequest {
        call_id: id.into(),
        jurisdiction: jurisdiction.into(),
    };
    let existing = california
        .call_status(status("tx-private-1", "US-TX"))
        .await
        .unwrap_err();
    let missing = california
        .call_status(status("tx-private-2", "US-TX"))
        .await
        .unwrap_err();
    assert_eq!(existing.code(), Code::NotFound);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(
        existing.message().replace("tx-private-1", "ID"),
        missing.message().replace("tx-private-2", "ID")
    );
    // Asking under its own jurisdiction finds nothing either.
    let own = california
        .call_status(status("tx-private-1", "US-CA"))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::NotFound);

    let listed = california
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-TX".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listed.code(), Code::PermissionDenied);
    let counts = california
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: "US-TX".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(counts.code(), Code::PermissionDenied);
    let own_list = california
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-CA".into(),
            ..Default::default()
        })
        .await
        .expect("own listing")
        .into_inner();
    assert!(own_list.calls.is_empty());

    // Texas sees its call.
    let texas = cluster
        .query(3, cluster.token("agency-tx"))
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-TX".into(),
            ..Default::default()
        })
        .await
        .expect("texas listing")
        .into_inner();
    assert_eq!(texas.calls.len(), 1);
    assert_eq!(texas.calls[0].call_id, "tx-private-1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_platform_ingests_only_where_allowed_and_an_operator_reads_no_calls() {
    let (cluster, _slot) = DevCluster::start().await;
    let texas_platform = cluster.token("platform-tx");
    let california = TestCall::new("ca-1", "US-CA", "(415) 555-6060", 2, 8);
    let refused = california
        .send(&mut cluster.ingest(1, texas_platform))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    let texas = TestCall::new("tx-allowed-1", "US-TX", "(512) 555-6060", 2, 8);
    texas
        .send(&mut cluster.ingest(1, texas_platform))
        .await
        .expect("its own jurisdiction");

    // An agency token cannot ingest; no token at all is unauthenticated.
    let agency = texas
        .send(&mut cluster.ingest(1, cluster.token("agency-tx")))
        .await
        .unwrap_err();
    assert_eq!(agency.code(), Code::PermissionDenied);
    let anonymous = pb::ingest_client::IngestClient::new(cluster.nodes[0].channel())
        .record_call(tokio_stream::iter(texas.messages()))
        .await
        .unwrap_err();
    assert_eq!(anonymous.code(), Code::Unauthenticated);

    let mut operator = cluster.query(2, cluster.token("operator"));
    let status = operator
        .call_status(pb::CallStatusRequest {
            call_id: "tx-allowed-1".into(),
            jurisdiction: "US-TX".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let listing = operator
        .list_calls(pb::ListCallsRequest {
            jurisdiction: "US-TX".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(listing.code(), Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread")]
async fn jurisdiction_status_counts_match_the_calls_ingested() {
    let (cluster, _slot) = DevCluster::start().await;
    cluster.register_attorney("US-TX", ATTORNEY).await;
    let mut ingest = cluster.ingest(3, cluster.token("platform"));
    for i in 0..5 {
        let call = TestCall::new(&format!("tx-count-{i}"), "US-TX", "(512) 555-8080", 2, i);
        call.send(&mut ingest).await.expect("recorded");
    }
    for (i, number) in ATTORNEY_VARIANTS[..2].iter().enumerate() {
        let call = TestCall::new(&format!("tx-blocked-{i}"), "US-TX", number, 2, 9);
        call.send(&mut ingest).await.expect("answered");
    }
    // A registration purges past recordings: flag one call privileged too.
    let flagged = cluster
        .admin(1, cluster.token("registry"))
        .flag_privileged(pb::FlagPrivilegedRequest {
            jurisdiction: "US-TX".into(),
            call_id: "tx-count-0".into(),
            reason: "attorney heard on review".into(),
            evidence: "review 1".into(),
        })
        .await
        .expect("flag")
        .into_inner();
    assert!(flagged.purged);

    let status = cluster
        .query(2, cluster.token("agency-tx"))
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: "US-TX".into(),
        })
        .await
        .expect("status")
        .into_inner();
    assert_eq!(status.calls_total, 7);
    assert_eq!(status.live_recordings, 4);
    assert_eq!(status.blocked_privileged, 2);
    assert_eq!(status.purged, 1);
    assert_eq!((status.held, status.expired, status.overdue), (0, 0, 0));
    assert_eq!(status.policy_version, 1);
    assert!(status.oldest_live_started_at.is_some());
}

/// Ingest stores fixed-size blocks, not the platform's chunks: the same audio sent in 16 kB
/// chunks and in one 704 kB chunk leaves the same number of chunk ids (three 256 KiB blocks,
/// the last partial), and both play back to the same audio.
#[tokio::test(flavor = "multi_thread")]
async fn how_a_platform_cuts_its_stream_does_not_change_what_is_stored() {
    let (cluster, _slot) = DevCluster::start_with("[ingest]\nblock_bytes = 262144\n").await;
    let small = TestCall::new("tx-cut-small", "US-TX", "(512) 555-9090", 44, 11);
    let whole = small.rechunked("tx-cut-whole", 1 << 20);
    assert_eq!(whole.chunks.len(), 1);
    let mut ingest = cluster.ingest(1, cluster.token("platform"));
    for call in [&small, &whole] {
        let answer = call.send(&mut ingest).await.expect("recorded");
        assert_eq!(
            answer.decision,
            pb::Decision::Recorded as i32,
            "{}",
            answer.reason
        );
        assert_eq!(answer.receipt.expect("a receipt").chunk_count, 3);
    }
    for id in ["tx-cut-small", "tx-cut-whole"] {
        let read = cluster
            .meta(2)
            .read_call(pb::ReadCallRequest {
                jurisdiction: "US-TX".into(),
                call_id: id.into(),
                local: false,
            })
            .await
            .expect("read call")
            .into_inner();
        assert_eq!(read.chunk_ids.len(), 3, "{id}");
        let audio = callvault_tests::play_back(
            cluster.content(3, cluster.token("agency-tx")),
            pb::PlaybackRequest {
                jurisdiction: "US-TX".into(),
                call_id: id.into(),
                case_number: "2026-CR-0101".into(),
                reason: "block layout check".into(),
            },
        )
        .await
        .expect("playback");
        assert!(
            audio == small.audio(),
            "{id}: the audio played back differs"
        );
    }
}
