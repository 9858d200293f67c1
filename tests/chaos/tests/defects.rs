//! The anomalies the fault suite found, one named test each, replaying the seed that showed it.
//! A fixed one is a plain test: it failed before its fix and guards it now. One not fixed yet is
//! `#[ignore]`d with the finding's name, and its fault is left out of the bounded mode
//! (`KNOWN_DEFECTS` in main.rs) until the fix lands; then the `#[ignore]` goes.
//!
//! They start real clusters in network namespaces, so they need root and the binaries
//! `scripts/chaos` builds, and are built only with the feature `cluster-tests`:
//! `scripts/chaos defects` runs the fixed ones (CI does), `scripts/chaos known` the ignored ones.

use std::path::PathBuf;

use callvault_chaos::nemesis::{Failpoint, Fault, Pace};
use callvault_chaos::run::{Binaries, Plan, run_plan};

fn binaries() -> Binaries {
    let env = |name: &str| std::env::var_os(name).map(PathBuf::from);
    Binaries {
        normal: env("CALLVAULT_BIN").expect("CALLVAULT_BIN: run through scripts/chaos defects"),
        failpoints: env("CALLVAULT_FAILPOINTS_BIN"),
    }
}

fn assert_passes(plan: Plan) {
    // The suite runs from the repository's root, as `scripts/chaos` runs it (the dev set-up
    // reads deploy/policies/ from there); cargo starts tests in the package's directory.
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    std::env::set_current_dir(root).expect("the repository's root");
    let out = std::env::temp_dir().join("callvault-chaos-defects");
    let replay = plan.replay_command();
    let report = run_plan(plan, binaries(), out);
    let anomalies = report.anomalies();
    assert!(
        anomalies.is_empty(),
        "{} anomalies (replay: {replay}; data in {}):\n{}",
        anomalies.len(),
        report.dir.display(),
        anomalies.join("\n")
    );
}

fn plan(seed: u64, faults: Vec<Fault>, steps: usize) -> Plan {
    Plan {
        seed,
        nodes: 3,
        faults,
        steps,
        clients: 8,
        pace: Pace::Steady,
    }
}

/// Issue 15, defect 3 (fixed by foundation's volume incarnations): a voter whose volume was
/// wiped rejoined under its old id with no memory of its vote, voted a stale node in, and
/// acknowledged writes (even the policies) were lost.
#[test]
fn a_wiped_voter_never_costs_an_acknowledged_write() {
    assert_passes(plan(7, vec![Fault::WipeThenSwap], 3));
}

/// Issue 15, defect 2 (fixed by foundation's client sessions): a proposal whose reply was lost
/// was retried by `MetaClient` and applied a second time (a hold nobody placed outlived the
/// release of the one that was).
#[test]
fn a_retried_proposal_applies_once() {
    assert_passes(plan(10, vec![Fault::Crash(Failpoint::ProposeReplyLost)], 2));
}

/// FINDINGS 2026-11-30 (fixed by foundation: an install cut short is finished at the next
/// open): a crash while a follower installed a snapshot, before or after the state machine
/// switched to it, left its log purged past the snapshot it could serve, and openraft panicked
/// on every start.
#[test]
fn a_crash_mid_snapshot_install_recovers() {
    assert_passes(plan(
        1502,
        vec![
            Fault::Crash(Failpoint::SnapshotInstallBeforeSwitch),
            Fault::Crash(Failpoint::SnapshotInstallAfterSwitch),
        ],
        2,
    ));
}

/// FINDINGS 2026-11-30 (fixed by foundation: fail-stop): a full disk made RocksDB refuse a
/// write, openraft stopped the node's Raft core and the process ran on without it, never
/// recovering once the disk had room again. Now the node exits non-zero; restarted (as its
/// supervisor would) once the disk has room, it is a ready voter again and no acknowledged
/// write is lost.
#[test]
fn a_node_recovers_once_its_disk_has_room_again() {
    assert_passes(plan(1501, vec![Fault::DiskFull], 3));
}

/// FINDINGS 2026-11-30 (fixed by retention: cluster time, the median of the voters'
/// attestations): invariant 10, one node's clock cannot make anything expire early or late.
/// The leader's sweeper used its own wall clock, so a leader skewed by hours kept due
/// recordings readable (or expired them early).
#[test]
fn a_skewed_clock_never_moves_a_deadline() {
    assert_passes(plan(1501, vec![Fault::ClockSkew], 4));
}

/// FINDINGS 2026-11-30 (long run, seeds 15101 and 15103; fixed by chaos: purges wait for the
/// snapshot): a follower catching up by snapshot had its log purged through the snapshot by
/// openraft's Raft core while the state-machine worker had not yet kept the snapshot on disk
/// (openraft 0.9's `PurgeLog` waits for nothing), and a crash in between left the log past
/// every snapshot it had; every later start panicked in openraft (`purge_upto <=
/// snapshot_last_log_id`). Now a purge is written only once the state machine would serve a
/// snapshot through it after a crash (`callvault_meta::purge_gate`). The crash is placed exactly
/// there: `log-purge-after-write` on a node brought back after the leader purged past its end.
#[test]
fn a_crash_while_catching_up_never_leaves_a_log_purged_past_the_snapshot() {
    assert_passes(plan(
        15101,
        vec![Fault::Crash(Failpoint::LogPurgeAfterWrite)],
        2,
    ));
}
