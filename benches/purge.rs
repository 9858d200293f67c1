//! Purge cost (issue 14): registration-to-done time for a number with 50 past recordings and for
//! one with 150,000, in a 3-node `callvault` cluster of real processes (every role, blob shards
//! included), one registration at a time.
//!
//! The calls are committed straight through the metadata store (a 72-byte wrapped key and one
//! chunk id each, as ingest would commit them; no audio is streamed). Then the number is
//! registered and two times are printed from the registration's answer:
//! - **purged**: the paged purge has no page left (every recording's key deleted, 1,000 per
//!   apply, continued by the sweep leader without anyone registering again);
//! - **done**: every receipt is in: each meta node confirmed the keys off its disks and the blob
//!   collector confirmed the chunks gone and tombstoned on every shard.
//!
//! ```sh
//! cargo build -p callvault-node && cargo bench -p callvault-benches --bench purge
//! ```
//! `CALLVAULT_PURGE_CALLS` (comma-separated sizes, default `50,150000`), `CALLVAULT_BIN`.

use std::time::{Duration, Instant};

use callvault_core::codec::VersionedRecord;
use callvault_core::{Jurisdiction, PrivilegeKind, RegistryEntry, normalize};
use callvault_meta::Command;
use callvault_proto::v1 as pb;
use callvault_tests::DevCluster;

/// Commits proposed at once; the next round starts when all are answered.
const ROUND: usize = 512;
/// How long one size may take before the bench gives up.
const LIMIT: Duration = Duration::from_secs(3 * 3600);

fn sizes() -> Vec<usize> {
    std::env::var("CALLVAULT_PURGE_CALLS")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![50, 150_000])
}

/// Commits `count` calls to the number of `fingerprint`, ids from `first` on.
async fn commit_calls(cluster: &DevCluster, first: usize, count: usize, fingerprint: [u8; 32]) {
    let meta = cluster.meta(1);
    let mut next = first;
    while next < first + count {
        let end = (next + ROUND).min(first + count);
        let mut proposals = tokio::task::JoinSet::new();
        for i in next..end {
            let mut command = callvault_tests::commit(i);
            if let Command::CommitCall { call, .. } = &mut command {
                call.number_fingerprint = fingerprint;
                call.started_at = callvault_tests::wall_clock();
                call.ended_at = call.started_at;
            }
            let mut meta = meta.clone();
            proposals.spawn(async move {
                meta.propose(pb::ProposeRequest {
                    command: command.encode(),
                })
                .await
            });
        }
        while let Some(result) = proposals.join_next().await {
            result.expect("task").expect("commit");
        }
        next = end;
    }
}

/// Texas's status, or `None` when the read did not answer in time (the cluster is busy
/// purging; the next poll asks again).
async fn tx_status(cluster: &DevCluster) -> Option<pb::JurisdictionStatusResponse> {
    cluster
        .query(1, cluster.token("auditor"))
        .jurisdiction_status(pb::JurisdictionStatusRequest {
            jurisdiction: "US-TX".into(),
        })
        .await
        .ok()
        .map(|response| response.into_inner())
}

/// Registers the number and returns (seconds until purged, seconds until done).
async fn register_and_wait(
    cluster: &DevCluster,
    number: &str,
    fingerprint: [u8; 32],
) -> (f64, f64) {
    let before = tx_status(cluster)
        .await
        .expect("status before the registration");
    let register = Command::RegisterPrivileged {
        entry: RegistryEntry {
            jurisdiction: Jurisdiction::Tx,
            number: normalize(number).expect("a number"),
            kind: PrivilegeKind::Attorney,
            registrant: "dev-registry".into(),
            evidence: "bench".into(),
            registered_at: callvault_tests::wall_clock(),
        },
        fingerprint,
    };
    let started = Instant::now();
    cluster
        .meta(1)
        .propose(pb::ProposeRequest {
            command: register.encode(),
        })
        .await
        .expect("register");
    let mut purged_at = None;
    loop {
        assert!(started.elapsed() < LIMIT, "not done after {LIMIT:?}");
        let Some(status) = tx_status(cluster).await else {
            continue;
        };
        if purged_at.is_none() && status.purges_in_progress == 0 {
            purged_at = Some(started.elapsed().as_secs_f64());
        }
        if purged_at.is_some() && status.purges_pending == 0 && status.purged > before.purged {
            return (
                purged_at.unwrap_or_default(),
                started.elapsed().as_secs_f64(),
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let (cluster, _slot) = DevCluster::start().await;
        let mut first = 0;
        for (n, count) in sizes().into_iter().enumerate() {
            let fingerprint = *blake3::hash(format!("purge-bench-{n}").as_bytes()).as_bytes();
            let number = format!("+1 512 555 {:04}", 100 + n);
            let committing = Instant::now();
            commit_calls(&cluster, first, count, fingerprint).await;
            let commit_seconds = committing.elapsed().as_secs_f64();
            first += count;
            let (purged, done) = register_and_wait(&cluster, &number, fingerprint).await;
            let purged_total = tx_status(&cluster).await.map_or(0, |s| s.purged);
            println!(
                "purge of {count} past recordings: purged {purged:.1} s, done (every receipt) \
                 {done:.1} s after the registration; {} recordings purged in all; committing them \
                 took {commit_seconds:.0} s",
                purged_total
            );
        }
    });
}
