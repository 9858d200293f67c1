//! Importing synthetic calls into a running metadata cluster the way ingest nodes commit them,
//! and measuring what that leaves on disk. Shared by the `meta_import` and `scale` benches.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use callvault_core::codec::VersionedRecord;
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::command::SessionRequest;
use callvault_meta::{Command as MetaCommand, CommandResult};
use callvault_proto::auth::AuthChannel;
use callvault_proto::v1 as pb;
use callvault_proto::v1::meta_store_client::MetaStoreClient;

use crate::fixtures;

/// Jurisdictions the synthetic calls spread over: call `i` belongs to `JURISDICTIONS[i % 8]`.
pub const JURISDICTIONS: usize = 8;

/// The jurisdiction of call `i`.
pub fn jurisdiction_of(i: usize) -> Jurisdiction {
    Jurisdiction::ALL[i % JURISDICTIONS]
}

/// The id of call `i`.
pub fn call_id(i: usize) -> String {
    format!("{}-fac{:03}-{i:010}", jurisdiction_of(i).code(), i % 300)
}

/// Call `i`'s commit, as an ingest node proposes it: stamped with the time it is proposed, as
/// ingest stamps it (apply refuses a commit proposed long before it applies, whose chunks the
/// orphan sweep may have taken).
pub fn commit(i: usize) -> MetaCommand {
    let mut command = fixtures::realistic_commit(i, jurisdiction_of(i), &call_id(i));
    if let MetaCommand::CommitCall { at, .. } = &mut command {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        *at = UnixMillis(now.as_millis() as i64);
    }
    command
}

/// A year's retention, swept every 30 s: the policy the imported jurisdictions get.
pub fn policy(jurisdiction: Jurisdiction) -> MetaCommand {
    MetaCommand::PutPolicy {
        jurisdiction,
        policy: RetentionPolicy {
            recording_retention_days: 365,
            call_detail_retention_days: 1095,
            privileged_retention: PrivilegedRetention::CallDetail,
            hold_requires_review_date: true,
            hold_max_review_days: 365,
            sweep_interval_seconds: 30,
            source: "bench".into(),
            shortening_notice_seconds: 0,
        },
        expected_version: 0,
        principal: "operator".into(),
        at: UnixMillis(1_700_000_000_000),
    }
}

/// Opens a client session, as `MetaClient` does before its first proposal.
async fn open_session(meta: &mut MetaStoreClient<AuthChannel>) -> u64 {
    let command = MetaCommand::OpenSession.encode();
    let response = meta
        .propose(pb::ProposeRequest { command })
        .await
        .expect("session opens");
    match CommandResult::decode(&response.into_inner().result).unwrap() {
        CommandResult::SessionOpened { session } => session,
        other => panic!("OpenSession answered {other:?}"),
    }
}

/// Commits calls `range` with `clients` concurrent proposers (each a clone of `leader`, a peer's
/// client of the Raft leader, as ingest nodes use once a follower named it). Each proposer numbers
/// its commits in a session of its own, as `MetaClient::propose` wraps every proposal (a proposer
/// waits for each answer, so everything below its current number is acknowledged). Returns
/// `(calls committed, when)` every `step` calls, for rates over any part of the range.
pub async fn import(
    leader: &MetaStoreClient<AuthChannel>,
    range: std::ops::Range<usize>,
    clients: usize,
    step: usize,
) -> Vec<(usize, Instant)> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let done = Arc::new(AtomicUsize::new(0));
    let marks = Arc::new(std::sync::Mutex::new(vec![(0, Instant::now())]));
    let step = step.max(1);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let mut meta = leader.clone();
        let (next, done, marks, end) = (next.clone(), done.clone(), marks.clone(), range.end);
        tasks.push(tokio::spawn(async move {
            let session = open_session(&mut meta).await;
            for seq in 1.. {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    return;
                }
                let command = MetaCommand::Session(SessionRequest {
                    session,
                    seq,
                    acked_below: seq,
                    command: Box::new(commit(i)),
                })
                .encode();
                let response = meta
                    .propose(pb::ProposeRequest { command })
                    .await
                    .expect("proposal commits");
                let result = CommandResult::decode(&response.into_inner().result).unwrap();
                assert!(
                    matches!(result, CommandResult::CallCommitted { .. }),
                    "{result:?}"
                );
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % step == 0 {
                    marks.lock().unwrap().push((n, Instant::now()));
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let mut marks = marks.lock().unwrap().clone();
    marks.sort();
    marks
}

/// Calls per second between marks `from` and `to`.
#[allow(dead_code)] // not every bench reports rates between marks
pub fn rate(marks: &[(usize, Instant)], from: usize, to: usize) -> f64 {
    let (n0, t0) = marks[from];
    let (n1, t1) = marks[to];
    (n1 - n0) as f64 / (t1 - t0).as_secs_f64()
}

/// Bytes of every file under `path`.
#[allow(dead_code)] // not every bench measures directories
pub fn dir_size(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Opens the (closed) RocksDB database in `dir` with the options it was last opened with (its
/// OPTIONS file: compression and all), compacts every column family to the bottom level and
/// returns each family's live SST bytes afterwards.
pub fn compact_fully(dir: &Path) -> Vec<(String, u64)> {
    let (options, families) = rocksdb::Options::load_latest(
        dir,
        rocksdb::Env::new().expect("env"),
        false,
        rocksdb::Cache::new_lru_cache(8 << 20),
    )
    .expect("the database's OPTIONS file");
    let names: Vec<String> = families.iter().map(|f| f.name().to_string()).collect();
    let db = rocksdb::DB::open_cf_descriptors(&options, dir, families).expect("the database opens");
    let mut compact = rocksdb::CompactOptions::default();
    compact.set_bottommost_level_compaction(rocksdb::BottommostLevelCompaction::Force);
    let mut sizes = Vec::new();
    for name in names {
        let cf = db.cf_handle(&name).expect("listed family");
        db.flush_cf(cf).expect("flush");
        db.compact_range_cf_opt(cf, None::<&[u8]>, None::<&[u8]>, &compact);
        let bytes = db
            .property_int_value_cf(cf, "rocksdb.live-sst-files-size")
            .ok()
            .flatten()
            .unwrap_or(0);
        sizes.push((name, bytes));
    }
    sizes
}

/// A stopped meta node's state machine (`<meta>/sm/gen-N`), fully compacted: each column
/// family's bytes.
pub fn state_machine_footprint(meta: &Path) -> Vec<(String, u64)> {
    let generation = std::fs::read_to_string(meta.join("sm/CURRENT")).expect("sm/CURRENT");
    compact_fully(&meta.join(format!("sm/gen-{}", generation.trim())))
}
