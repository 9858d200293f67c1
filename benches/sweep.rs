//! Sweep throughput: expiries applied per second by the state machine, the way the retention
//! sweeper drives it — read a batch of due recordings from the expiry index, apply one `Expire`
//! for it (re-check, shred the data key, open the shred record, append the audit entry), write
//! the batch atomically — until nothing is due.
//!
//! ```sh
//! cargo bench -p callvault-benches --bench sweep
//! ```
//! Environment: `CALLVAULT_BENCH_CALLS` (recordings to expire, default 200000).

mod fixtures;

use std::time::Instant;

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
        shortening_notice_seconds: 0,
    }
}

fn commit(i: usize) -> Command {
    fixtures::realistic_commit(i, Jurisdiction::Tx, &format!("TX-{i:010}"))
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
