//! Sweep throughput: expiries applied per second by the state machine, the way the retention
//! sweeper drives it — read a batch of due recordings from the expiry index, apply one `Expire`
//! for it (re-check, shred the data key, open the shred record, append the audit entry), write
//! the batch atomically — until nothing is due.
//!
//! ```sh
//! cargo bench -p callvault-benches --bench sweep
//! ```
//! Environment: `CALLVAULT_BENCH_CALLS` (recordings to expire, default 200000).

use std::time::Instant;

use callvault_core::call::{CallId, CallRecord, Direction, Lifecycle};
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{Jurisdiction, UnixMillis};
use callvault_meta::apply::{LogPosition, apply_command};
use callvault_meta::command::MAX_EXPIRE_BATCH;
use callvault_meta::reads::due_for_expiry;
use callvault_meta::txn::Txn;
use callvault_meta::{Command, CommandResult, StateMachineStore};

const DAY_MS: i64 = 86_400_000;

fn policy() -> RetentionPolicy {
    RetentionPolicy {
        recording_retention_days: 30,
        call_detail_retention_days: 90,
        privileged_retention: PrivilegedRetention::CallDetail,
        hold_requires_review_date: false,
        hold_max_review_days: 365,
        sweep_interval_seconds: 30,
        source: "bench".into(),
    }
}

fn commit(i: usize) -> Command {
    let started = 1_700_000_000_000 + i as i64 * 997;
    Command::CommitCall {
        call: CallRecord {
            call_id: CallId::new(&format!("TX-{i:010}")).unwrap(),
            jurisdiction: Jurisdiction::Tx,
            facility_id: format!("facility-{:03}", i % 300),
            inmate_id: format!("inmate-{:07}", i % 200_000),
            number_fingerprint: *blake3::hash(&(i % 50_000).to_le_bytes()).as_bytes(),
            direction: Direction::Outbound,
            started_at: UnixMillis(started),
            ended_at: UnixMillis(started + 900_000),
            byte_length: 7_200_000,
            chunk_count: 28,
            plaintext_digest: *blake3::hash(&i.to_le_bytes()).as_bytes(),
            committed_under_policy: 0,
            sealed: false,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        },
        wrapped_key: vec![0xAB; 72],
        chunk_ids: (0..28u32)
            .map(|c| {
                *blake3::hash(&[i as u64, u64::from(c)].map(u64::to_le_bytes).concat()).as_bytes()
            })
            .collect(),
        principal: "platform-bench".into(),
        at: UnixMillis(started + 901_000),
    }
}

fn main() {
    let calls: usize = std::env::var("CALLVAULT_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().unwrap();
    let sm = StateMachineStore::open(dir.path()).unwrap();
    let db = sm.db();
    let mut index = 0u64;
    let mut apply = |commands: Vec<Command>| -> Vec<CommandResult> {
        let mut txn = Txn::new(&db);
        let results = commands
            .iter()
            .map(|c| {
                index += 1;
                apply_command(&mut txn, c, LogPosition { term: 1, index }).unwrap()
            })
            .collect();
        db.write(txn.into_batch()).unwrap();
        results
    };
    apply(vec![Command::PutPolicy {
        jurisdiction: Jurisdiction::Tx,
        policy: policy(),
        expected_version: 0,
        principal: "bench".into(),
        at: UnixMillis(0),
    }]);
    for start in (0..calls).step_by(1000) {
        apply((start..(start + 1000).min(calls)).map(commit).collect());
    }
    let as_of = UnixMillis(1_700_000_000_000 + calls as i64 * 997 + 31 * DAY_MS);
    let started = Instant::now();
    let mut expired = 0u64;
    loop {
        let due =
            due_for_expiry(&db, Jurisdiction::Tx, as_of, &policy(), MAX_EXPIRE_BATCH).unwrap();
        if due.is_empty() {
            break;
        }
        for result in apply(vec![Command::Expire {
            jurisdiction: Jurisdiction::Tx,
            as_of,
            calls: due,
        }]) {
            if let CommandResult::Expired { expired: n, .. } = result {
                expired += u64::from(n);
            }
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    assert_eq!(expired, calls as u64, "every recording expires");
    println!(
        "sweep: {expired} recordings expired in {seconds:.2}s = {:.0} expiries/s \
         (batches of {MAX_EXPIRE_BATCH}, index read + apply + atomic write, one core)",
        expired as f64 / seconds
    );
}
