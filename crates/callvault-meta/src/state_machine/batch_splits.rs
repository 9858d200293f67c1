//! Invariant 7 of ARCHITECTURE.md: "The same command on the same state gives the same result on
//! every replica, however the log is cut into apply batches."
//!
//! openraft hands `apply` whatever run of committed entries it has, so two replicas of one log
//! apply it in different batches. This property test generates random logs (commits, purges,
//! holds, expiries, receipts, accesses, policy and membership changes, multi-command entries),
//! applies each one to fresh stores under many cuts, and compares results, state digests and
//! audit roots.

use std::collections::BTreeSet;

use callvault_audit::MerkleTree;
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use proptest::prelude::*;

use super::{StateMachineStore, apply_blocking};
use crate::command::tests::{commit, policy, register};
use crate::command::{AccessQuota, AccessRequest, Command, CommandResult};
use crate::retention_command::RetentionCommand;
use crate::txn::Txn;
use crate::types::{Entry, LogId};
use callvault_core::approval::{Actor, PrincipalRole};

fn retention(command: RetentionCommand) -> Command {
    Command::Retention(command)
}

const DAY: i64 = callvault_core::time::MILLIS_PER_DAY;
/// The ids calls of a generated log use: few, so commands meet the same calls often.
const CALLS: u8 = 4;

fn call_id(n: u8) -> CallId {
    CallId::new(&format!("c-{n}")).unwrap()
}

/// One generated log entry.
#[derive(Debug, Clone)]
enum Op {
    Commit {
        call: u8,
        number: u8,
        day: i64,
    },
    Register {
        number: u8,
    },
    Flag {
        call: u8,
    },
    Expire {
        day: i64,
        calls: Vec<u8>,
    },
    Hold {
        call: u8,
    },
    /// Releases the hold that the entry `entry` back placed, if it placed one.
    Release {
        call: u8,
        entry: usize,
    },
    Access {
        call: u8,
        minute: i64,
    },
    KeysShredded {
        node: u64,
        calls: Vec<u8>,
    },
    ChunksCollected {
        calls: Vec<u8>,
    },
    Policy {
        days: u32,
        expected: u32,
    },
    Voters(BTreeSet<u64>),
    /// Retention's commands: a voter's clock, call-detail expiry, a purge's next page, the
    /// approval of the change the entry `entry` back proposed, and its notice's end.
    Attest {
        node: u64,
        day: i64,
    },
    ExpireDetails {
        day: i64,
        calls: Vec<u8>,
    },
    ContinuePurge {
        number: u8,
    },
    Approve {
        entry: usize,
        approver: u8,
    },
    EffectChange {
        entry: usize,
    },
    Batch(Vec<Op>),
    Blank,
}

fn simple_op() -> impl Strategy<Value = Op> {
    let call = 0..CALLS;
    let calls = proptest::collection::vec(0..CALLS, 1..4);
    prop_oneof![
        4 => (call.clone(), 0u8..3, 0i64..60).prop_map(|(call, number, day)| Op::Commit { call, number, day }),
        1 => (0u8..3).prop_map(|number| Op::Register { number }),
        1 => call.clone().prop_map(|call| Op::Flag { call }),
        2 => (0i64..120, calls.clone()).prop_map(|(day, calls)| Op::Expire { day, calls }),
        2 => call.clone().prop_map(|call| Op::Hold { call }),
        2 => (call.clone(), 1usize..6).prop_map(|(call, entry)| Op::Release { call, entry }),
        2 => (call.clone(), 0i64..180).prop_map(|(call, minute)| Op::Access { call, minute }),
        3 => (1u64..5, calls.clone()).prop_map(|(node, calls)| Op::KeysShredded { node, calls }),
        2 => calls.clone().prop_map(|calls| Op::ChunksCollected { calls }),
        1 => (1u32..90, 0u32..4).prop_map(|(days, expected)| Op::Policy { days, expected }),
        3 => (1u64..5, 0i64..200).prop_map(|(node, day)| Op::Attest { node, day }),
        1 => (0i64..200, calls).prop_map(|(day, calls)| Op::ExpireDetails { day, calls }),
        1 => (0u8..3).prop_map(|number| Op::ContinuePurge { number }),
        1 => (1usize..6, 0u8..3).prop_map(|(entry, approver)| Op::Approve { entry, approver }),
        1 => (1usize..6).prop_map(|entry| Op::EffectChange { entry }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        12 => simple_op(),
        3 => proptest::collection::btree_set(1u64..5, 1..4).prop_map(Op::Voters),
        2 => proptest::collection::vec(simple_op(), 2..4).prop_map(Op::Batch),
        1 => Just(Op::Blank),
    ]
}

/// The hold id a `PlaceHold` at `index` (first command of its entry) gets.
fn hold_id_at(index: u64) -> u64 {
    crate::apply::unique_id(crate::apply::LogPosition { term: 1, index }, 0)
}

/// The command an op stands for, as the entry at `index` carries it.
fn command(op: &Op, index: u64) -> Command {
    let at = UnixMillis(200 * DAY + index as i64);
    match op {
        Op::Commit { call, number, day } => commit(call_id(*call).as_str(), *number, day * DAY),
        Op::Register { number } => register(&format!("(512) 555-010{number}"), *number, at.0),
        Op::Flag { call } => Command::FlagPrivileged {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(*call),
            reason: "attorney heard".into(),
            evidence: "review".into(),
            principal: "tx-registry".into(),
            at,
        },
        Op::Expire { day, calls } => Command::Expire {
            jurisdiction: Jurisdiction::Tx,
            as_of: UnixMillis(day * DAY),
            calls: calls.iter().map(|c| call_id(*c)).collect(),
        },
        Op::Hold { call } => Command::PlaceHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(*call),
            issuer: "da".into(),
            agency: "da-office".into(),
            case_number: "2026-CR-1".into(),
            reason: "trial".into(),
            review_date: None,
            at,
        },
        Op::Release { call, entry } => Command::ReleaseHold {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(*call),
            hold_id: hold_id_at(index.saturating_sub(*entry as u64)),
            principal: "da".into(),
            agency: "da-office".into(),
            at,
        },
        Op::Access { call, minute } => Command::RecordAccess(AccessRequest {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id(*call),
            principal: "agency-tx".into(),
            case_number: "2026-CR-9".into(),
            reason: "review".into(),
            elevated: false,
            denial: None,
            quota: AccessQuota {
                calls_per_hour: 3,
                bytes_per_hour: u64::MAX,
            },
            at: UnixMillis(minute * 60_000),
        }),
        Op::KeysShredded { node, calls } => Command::KeysShredded {
            node_id: *node,
            calls: calls
                .iter()
                .map(|c| (Jurisdiction::Tx, call_id(*c)))
                .collect(),
            at,
        },
        Op::ChunksCollected { calls } => Command::ChunksCollected {
            shards: vec!["blob-1".into()],
            calls: calls
                .iter()
                .map(|c| (Jurisdiction::Tx, call_id(*c)))
                .collect(),
            at,
        },
        Op::Policy { days, expected } => Command::PutPolicy {
            jurisdiction: Jurisdiction::Tx,
            policy: policy(*days),
            expected_version: *expected,
            principal: "op".into(),
            at,
        },
        Op::Attest { node, day } => retention(RetentionCommand::AttestTime {
            node_id: *node,
            wall: UnixMillis(day * DAY),
        }),
        Op::ExpireDetails { day, calls } => retention(RetentionCommand::ExpireCallDetails {
            jurisdiction: Jurisdiction::Tx,
            as_of: UnixMillis(day * DAY),
            calls: calls.iter().map(|c| call_id(*c)).collect(),
        }),
        Op::ContinuePurge { number } => retention(RetentionCommand::ContinuePurge {
            jurisdiction: Jurisdiction::Tx,
            fingerprint: [*number; 32],
        }),
        Op::Approve { entry, approver } => retention(RetentionCommand::ApproveChange {
            change_id: hold_id_at(index.saturating_sub(*entry as u64)),
            approver: Actor {
                name: format!("tx-{approver}"),
                role: PrincipalRole::Agency,
                jurisdictions: vec![Jurisdiction::Tx],
                all_jurisdictions: false,
                agency: "tx-da".into(),
            },
            at,
        }),
        Op::EffectChange { entry } => retention(RetentionCommand::EffectChange {
            change_id: hold_id_at(index.saturating_sub(*entry as u64)),
        }),
        Op::Batch(ops) => Command::Batch(ops.iter().map(|o| command(o, index)).collect()),
        Op::Voters(_) | Op::Blank => unreachable!("not a command"),
    }
}

/// The log: a policy first (so commits have one), then the generated entries.
fn entries(ops: &[Op]) -> Vec<Entry> {
    let first = Op::Policy {
        days: 30,
        expected: 0,
    };
    std::iter::once(&first)
        .chain(ops)
        .enumerate()
        .map(|(i, op)| {
            let index = i as u64 + 1;
            let payload = match op {
                Op::Voters(voters) => {
                    EntryPayload::Membership(Membership::new(vec![voters.clone()], ()))
                }
                Op::Blank => EntryPayload::Blank,
                other => EntryPayload::Normal(command(other, index)),
            };
            Entry {
                log_id: LogId {
                    leader_id: CommittedLeaderId::new(1, 1),
                    index,
                },
                payload,
            }
        })
        .collect()
}

/// What a replica ends with: every result, the state digest, the applied position and the audit
/// root and size.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    results: Vec<CommandResult>,
    digest: [u8; 32],
    applied: Option<LogId>,
    audit: (u64, callvault_audit::Hash),
}

/// A scratch directory, in memory where the machine has one: a store per cut is opened and
/// synced many times over.
fn scratch() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    }
}

/// Applies `log` to a fresh store in batches that end where `cuts` is true.
fn apply_cut(log: &[Entry], cuts: &[bool]) -> Outcome {
    let dir = scratch();
    let sm = StateMachineStore::open(dir.path()).unwrap();
    let db = sm.db();
    let mut results = Vec::new();
    let mut batch = Vec::new();
    for (i, entry) in log.iter().enumerate() {
        batch.push(entry.clone());
        if cuts.get(i).copied().unwrap_or(true) {
            results.extend(apply_blocking(&db, [0; 32], std::mem::take(&mut batch)).unwrap());
        }
    }
    if !batch.is_empty() {
        results.extend(apply_blocking(&db, [0; 32], batch).unwrap());
    }
    let mut txn = Txn::new(&db);
    let tree = MerkleTree::new(crate::audit_log::TreeNodes(&mut txn));
    let audit = (tree.size().unwrap(), tree.root().unwrap());
    Outcome {
        results,
        digest: sm.digest().unwrap(),
        applied: sm.applied().unwrap(),
        audit,
    }
}

/// The cuts to try: every one for short logs (the policy entry and up to three more), else one
/// entry per batch, one batch for the whole log, and the generated ones.
fn cuttings(len: usize, generated: Vec<Vec<bool>>) -> Vec<Vec<bool>> {
    if len <= 4 {
        return (0..1u32 << len)
            .map(|mask| (0..len).map(|i| mask & (1 << i) != 0).collect())
            .collect();
    }
    let mut all = vec![vec![true; len], vec![false; len]];
    all.extend(generated);
    all
}

/// Cases per run: each opens a fresh RocksDB per cut, so the default is small; set
/// `PROPTEST_CASES` for a longer search.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn any_cut_of_a_log_into_apply_batches_gives_the_same_state(
        ops in proptest::collection::vec(op(), 1..16),
        generated in proptest::collection::vec(proptest::collection::vec(any::<bool>(), 15), 3),
    ) {
        let log = entries(&ops);
        let mut cuts = cuttings(log.len(), generated).into_iter();
        let reference = apply_cut(&log, &cuts.next().unwrap());
        for cut in cuts {
            let outcome = apply_cut(&log, &cut);
            prop_assert_eq!(&outcome, &reference, "cut {:?} of {:?}", cut, ops);
        }
    }
}

/// The defect the property found first: a receipt in the same apply batch as a membership
/// change counted the voters of before the change.
#[test]
fn a_receipt_after_a_membership_change_counts_the_new_voters_in_any_batch() {
    let ops = vec![
        Op::Voters(BTreeSet::from([1, 2])),
        Op::Commit {
            call: 1,
            number: 1,
            day: 1,
        },
        Op::Register { number: 1 },
        Op::ChunksCollected { calls: vec![1] },
        Op::KeysShredded {
            node: 1,
            calls: vec![1],
        },
        // Node 2 leaves; node 3's receipt (a learner's, say) then completes the shred under the
        // new membership, whichever batch the two entries share.
        Op::Voters(BTreeSet::from([1])),
        Op::KeysShredded {
            node: 3,
            calls: vec![1],
        },
    ];
    let log = entries(&ops);
    let one_by_one = apply_cut(&log, &vec![true; log.len()]);
    let together = apply_cut(&log, &vec![false; log.len()]);
    assert_eq!(one_by_one, together);
}
