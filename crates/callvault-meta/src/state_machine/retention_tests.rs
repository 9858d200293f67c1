//! Issue 14 in the state machine: cluster time bounds every deletion, call-detail records go at
//! their own deadline leaving only a tombstone, purges page without a cap, irreversible changes
//! wait for a second principal or their notice, and shred receipts are owed by every node that
//! holds metadata.

use std::collections::BTreeSet;

use callvault_core::approval::{Actor, PrincipalRole};
use callvault_core::call::Lifecycle;
use callvault_core::policy::PrivilegedRetention;
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{CallId, CallRecord, Jurisdiction, UnixMillis};
use openraft::{CommittedLeaderId, EntryPayload, Membership};
use rocksdb::IteratorMode;

use super::{StateMachineStore, apply_blocking};
use crate::approvals::{ChangeKind, ChangeState};
use crate::command::tests::{commit, policy, register};
use crate::command::{
    AccessDecision, AccessQuota, AccessRequest, Command, CommandResult, CommitOutcome, Refusal,
};
use crate::keys::{self, STATE_MACHINE_CFS};
use crate::retention_command::{RetentionCommand, RetentionResult};
use crate::txn::Txn;
use crate::types::{Entry, LogId};

const DAY: i64 = callvault_core::time::MILLIS_PER_DAY;
const KEY: [u8; 32] = [0x5c; 32];

struct Store {
    _dir: tempfile::TempDir,
    sm: StateMachineStore,
    index: u64,
}

impl Store {
    /// A store with three voters, a 30-day Texas policy (call details 60 days) and the cluster
    /// time at day 0.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sm = StateMachineStore::open_keyed(dir.path(), KEY).unwrap();
        let mut store = Store {
            _dir: dir,
            sm,
            index: 0,
        };
        store.members(&[1, 2, 3], &[]);
        store.time(0);
        let first = store.apply(vec![Command::PutPolicy {
            jurisdiction: Jurisdiction::Tx,
            policy: policy(30),
            expected_version: 0,
            principal: "op".into(),
            at: UnixMillis(0),
        }]);
        assert_eq!(first, [CommandResult::PolicyPut { version: 1 }]);
        store
    }

    fn entry(&mut self, payload: EntryPayload<crate::types::TypeConfig>) -> Entry {
        self.index += 1;
        Entry {
            log_id: LogId {
                leader_id: CommittedLeaderId::new(1, 1),
                index: self.index,
            },
            payload,
        }
    }

    fn members(&mut self, voters: &[u64], learners: &[u64]) {
        let voters: BTreeSet<u64> = voters.iter().copied().collect();
        let all: BTreeSet<u64> = voters.iter().chain(learners).copied().collect();
        let entry = self.entry(EntryPayload::Membership(Membership::new(vec![voters], all)));
        apply_blocking(&self.sm.db(), KEY, vec![entry]).unwrap();
    }

    fn apply(&mut self, commands: Vec<Command>) -> Vec<CommandResult> {
        let entries: Vec<Entry> = commands
            .into_iter()
            .map(|c| self.entry(EntryPayload::Normal(c)))
            .collect();
        apply_blocking(&self.sm.db(), KEY, entries).unwrap()
    }

    fn one(&mut self, command: Command) -> CommandResult {
        self.apply(vec![command]).remove(0)
    }

    fn attest(&mut self, node: u64, at: i64) -> Option<UnixMillis> {
        match self.one(retention(RetentionCommand::AttestTime {
            node_id: node,
            wall: UnixMillis(at),
        })) {
            CommandResult::Retention(RetentionResult::TimeAttested { cluster_time }) => {
                cluster_time
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every voter attests `at`: the cluster time becomes `at` (or stays, if later).
    fn time(&mut self, at: i64) {
        for node in 1..=3 {
            self.attest(node, at);
        }
    }

    fn call(&self, id: &str) -> Option<CallRecord> {
        let db = self.sm.db();
        crate::reads::call(&db, Jurisdiction::Tx, &call_id(id)).unwrap()
    }

    fn counters(&self) -> crate::apply::Counters {
        let db = self.sm.db();
        crate::apply::counters(&Txn::new(&db), Jurisdiction::Tx).unwrap()
    }

    fn tombstone(&self, id: &str) -> Option<TombstoneOutcome> {
        let db = self.sm.db();
        let txn = Txn::new(&db).with_id_key(KEY);
        crate::tombstones::find(&txn, Jurisdiction::Tx, &call_id(id))
            .unwrap()
            .map(|t| t.outcome)
    }

    /// Every key and value of every state-machine family, for scans.
    fn everything(&self) -> Vec<u8> {
        let db = self.sm.db();
        let mut out = Vec::new();
        for name in STATE_MACHINE_CFS {
            let cf = db.cf_handle(name).unwrap();
            for item in db.iterator_cf(cf, IteratorMode::Start) {
                let (k, v) = item.unwrap();
                out.extend_from_slice(&k);
                out.extend_from_slice(&v);
            }
        }
        out
    }
}

fn retention(command: RetentionCommand) -> Command {
    Command::Retention(command)
}

fn call_id(id: &str) -> CallId {
    CallId::new(id).unwrap()
}

fn expire(as_of: i64, ids: &[&str]) -> Command {
    Command::Expire {
        jurisdiction: Jurisdiction::Tx,
        as_of: UnixMillis(as_of),
        calls: ids.iter().map(|id| call_id(id)).collect(),
    }
}

fn expire_details(as_of: i64, ids: &[&str]) -> Command {
    retention(RetentionCommand::ExpireCallDetails {
        jurisdiction: Jurisdiction::Tx,
        as_of: UnixMillis(as_of),
        calls: ids.iter().map(|id| call_id(id)).collect(),
    })
}

fn agency(name: &str) -> Actor {
    Actor {
        name: name.into(),
        role: PrincipalRole::Agency,
        jurisdictions: vec![Jurisdiction::Tx],
        all_jurisdictions: false,
        agency: format!("{name}-agency"),
    }
}

fn registry(name: &str) -> Actor {
    Actor {
        role: PrincipalRole::Registry,
        ..agency(name)
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Invariant 10: `Expire` acts only up to the cluster time, which moves with the median of the
/// voters, never with one of them.
#[test]
fn expiry_waits_for_the_cluster_time_and_one_clock_ahead_moves_nothing() {
    let mut s = Store::new();
    s.apply(vec![commit("old", 1, 0)]);
    // Node 1 jumps a year ahead: the median stays at day 0.
    assert_eq!(s.attest(1, 400 * DAY), Some(UnixMillis(0)));
    assert_eq!(
        s.one(expire(31 * DAY, &["old"])),
        CommandResult::Refused(Refusal::AheadOfClusterTime {
            cluster_time: Some(UnixMillis(0))
        })
    );
    assert_eq!(s.call("old").unwrap().lifecycle, Lifecycle::Live);
    // A learner's attestation does not count, and neither does a stranger's.
    s.members(&[1, 2, 3], &[4]);
    s.attest(4, 400 * DAY);
    s.attest(9, 400 * DAY);
    assert_eq!(s.attest(2, 20 * DAY), Some(UnixMillis(20 * DAY)));
    assert_eq!(s.attest(3, 31 * DAY), Some(UnixMillis(31 * DAY)));
    assert_eq!(
        s.one(expire(31 * DAY, &["old"])),
        CommandResult::Expired {
            expired: 1,
            skipped: 0
        }
    );
    // Never back: one voter's clock stepping back does not undo the time.
    assert_eq!(s.attest(3, DAY), Some(UnixMillis(31 * DAY)));
}

/// Invariant 9: a call-detail record goes at its own deadline, from every listing, and what is
/// left is a tombstone under a keyed hash that names nothing of the call.
#[test]
fn call_details_expire_at_their_deadline_and_leave_only_a_tombstone() {
    let mut s = Store::new();
    let Command::CommitCall {
        mut call,
        wrapped_key,
        chunk_ids,
        principal,
        at,
    } = commit("cd-1", 1, 0)
    else {
        unreachable!()
    };
    call.facility_id = "fac-unique-77".into();
    call.inmate_id = "inm-unique-88".into();
    call.plaintext_digest = [0xd1; 32];
    let digest = call.plaintext_digest;
    s.one(Command::CommitCall {
        call,
        wrapped_key,
        chunk_ids,
        principal,
        at,
    });

    // Day 31: the recording expires; the call-detail record stays (60 days), without a digest.
    s.time(31 * DAY);
    s.one(expire(31 * DAY, &["cd-1"]));
    let kept = s.call("cd-1").unwrap();
    assert!(matches!(kept.lifecycle, Lifecycle::Expired { .. }));
    assert_eq!(kept.plaintext_digest, [0; 32]);
    let db = s.sm.db();
    let listed =
        crate::reads::list_calls(&db, Jurisdiction::Tx, &Default::default(), 0, &[]).unwrap();
    assert_eq!(listed.items.len(), 1);
    assert_eq!(s.counters().details_kept, 1);

    // Not before its own deadline, and not past the cluster time.
    s.time(59 * DAY);
    assert_eq!(
        s.one(expire_details(59 * DAY, &["cd-1"])),
        CommandResult::Expired {
            expired: 0,
            skipped: 1
        }
    );
    assert!(matches!(
        s.one(expire_details(60 * DAY, &["cd-1"])),
        CommandResult::Refused(Refusal::AheadOfClusterTime { .. })
    ));
    s.time(60 * DAY);
    assert_eq!(
        crate::details::due(&db, Jurisdiction::Tx, UnixMillis(60 * DAY), &policy(30), 10).unwrap(),
        [call_id("cd-1")]
    );
    assert_eq!(
        s.one(expire_details(60 * DAY, &["cd-1"])),
        CommandResult::Expired {
            expired: 1,
            skipped: 0
        }
    );
    assert!(s.call("cd-1").is_none());
    assert_eq!(s.tombstone("cd-1"), Some(TombstoneOutcome::Expired));
    let c = s.counters();
    assert_eq!((c.details_kept, c.details_expired), (0, 1));
    for (filter, what) in [
        (crate::reads::CallFilter::default(), "by time"),
        (
            crate::reads::CallFilter {
                facility_id: Some("fac-unique-77".into()),
                ..Default::default()
            },
            "by facility",
        ),
        (
            crate::reads::CallFilter {
                inmate_id: Some("inm-unique-88".into()),
                ..Default::default()
            },
            "by inmate",
        ),
    ] {
        let page = crate::reads::list_calls(&db, Jurisdiction::Tx, &filter, 0, &[]).unwrap();
        assert!(page.items.is_empty(), "still listed {what}");
    }
    let everything = s.everything();
    for needle in [&b"fac-unique-77"[..], b"inm-unique-88", &digest] {
        assert!(
            !contains(&everything, needle),
            "{needle:?} is still in the state machine"
        );
    }
    // The id is refused forever.
    assert_eq!(
        s.one(commit("cd-1", 1, 0)),
        CommandResult::Refused(Refusal::CallIdRetired)
    );
}

/// Under a policy that keeps nothing of privileged calls, a purged or refused call leaves every
/// listing at once; a retry of a refused call is refused the same way.
#[test]
fn under_a_nothing_policy_purged_and_refused_calls_leave_only_tombstones() {
    let mut s = Store::new();
    let mut nothing = policy(30);
    nothing.privileged_retention = PrivilegedRetention::Nothing;
    // Keeping nothing of privileged calls shortens what is kept: it waits for its (zero) notice.
    let (id, _) = change_of(&s.one(Command::PutPolicy {
        jurisdiction: Jurisdiction::Tx,
        policy: nothing,
        expected_version: 1,
        principal: "op".into(),
        at: UnixMillis(0),
    }));
    let effected = s.one(retention(RetentionCommand::EffectChange { change_id: id }));
    assert!(matches!(
        change_of(&effected).1,
        ChangeState::Effected { .. }
    ));
    s.apply(vec![
        commit("p-1", 1, 1000),
        register("(512) 555-0100", 1, 2000),
    ]);
    assert!(s.call("p-1").is_none());
    assert_eq!(s.tombstone("p-1"), Some(TombstoneOutcome::Purged));
    // Purged during ingest: the same.
    assert!(matches!(
        s.one(commit("p-2", 1, 3000)),
        CommandResult::CallCommitted {
            outcome: CommitOutcome::PurgedAtCommit,
            ..
        }
    ));
    assert!(s.call("p-2").is_none());
    // Refused at ingest: nothing kept, and the retry is answered the same way.
    let Command::CommitCall {
        mut call,
        principal,
        at,
        ..
    } = commit("b-1", 1, 4000)
    else {
        unreachable!()
    };
    call.lifecycle = Lifecycle::Blocked;
    call.byte_length = 0;
    call.chunk_count = 0;
    let blocked = Command::CommitCall {
        call,
        wrapped_key: Vec::new(),
        chunk_ids: Vec::new(),
        principal,
        at,
    };
    for _ in 0..2 {
        assert!(matches!(
            s.one(blocked.clone()),
            CommandResult::CallCommitted {
                outcome: CommitOutcome::Blocked,
                ..
            }
        ));
    }
    assert_eq!(s.tombstone("b-1"), Some(TombstoneOutcome::Refused));
    let db = s.sm.db();
    let listed =
        crate::reads::list_calls(&db, Jurisdiction::Tx, &Default::default(), 0, &[]).unwrap();
    assert!(listed.items.is_empty());
}

/// Issue 14: a number with more past calls than one apply purges is purged completely by the
/// leader's continuations, and none of its calls is readable meanwhile.
#[test]
fn a_registration_pages_through_every_past_call() {
    let mut s = Store::new();
    let total = crate::purges::PURGE_PAGE * 2 + 7;
    for start in (0..total).step_by(1000) {
        s.apply(
            (start..(start + 1000).min(total))
                .map(|i| commit(&format!("n-{i:05}"), 9, i as i64))
                .collect(),
        );
    }
    let registered = s.one(register("(512) 555-0109", 9, DAY));
    assert_eq!(
        registered,
        CommandResult::NumberRegistered {
            purged: crate::purges::PURGE_PAGE as u64
        }
    );
    let db = s.sm.db();
    let progress = crate::purges::in_progress(&db, None, 10).unwrap();
    assert_eq!(progress.len(), 1);
    // A call not yet in a page is already unreadable.
    let last = format!("n-{:05}", total - 1);
    assert_eq!(s.call(&last).unwrap().lifecycle, Lifecycle::Live);
    let access = s.one(Command::RecordAccess(AccessRequest {
        jurisdiction: Jurisdiction::Tx,
        call_id: call_id(&last),
        principal: "agency-tx".into(),
        case_number: "c".into(),
        reason: "r".into(),
        elevated: false,
        denial: None,
        quota: AccessQuota {
            calls_per_hour: 100,
            bytes_per_hour: u64::MAX,
        },
        at: UnixMillis(DAY),
    }));
    assert!(matches!(
        access,
        CommandResult::AccessDecided {
            decision: AccessDecision::NotFound,
            ..
        }
    ));
    let next = || {
        retention(RetentionCommand::ContinuePurge {
            jurisdiction: Jurisdiction::Tx,
            fingerprint: [9; 32],
        })
    };
    let mut pages = Vec::new();
    loop {
        match s.one(next()) {
            CommandResult::Retention(RetentionResult::PurgeContinued { purged, done }) => {
                pages.push(purged);
                if done {
                    break;
                }
            }
            other => panic!("{other:?}"),
        }
        assert!(pages.len() < 10);
    }
    assert_eq!(pages, [crate::purges::PURGE_PAGE as u64, 7]);
    assert!(
        crate::purges::in_progress(&db, None, 10)
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        s.call(&last).unwrap().lifecycle,
        Lifecycle::Purged { .. }
    ));
    assert_eq!(s.counters().purged, total as u64);
    // Continuing a finished purge is harmless.
    assert_eq!(
        s.one(next()),
        CommandResult::Retention(RetentionResult::PurgeContinued {
            purged: 0,
            done: true
        })
    );
}

/// Found by perf in the purge bench (150,000 calls): the sweeper's report each tick counted
/// overdue purges by walking every pending shred, 72% of the leader's CPU, on the runtime that
/// carries Raft and the clock attestations, until elections stalled the cluster time. The
/// status it reads must not step through the shreds; the full status still counts them.
#[test]
fn the_sweepers_status_does_not_walk_the_pending_shreds() {
    use rocksdb::perf::{PerfContext, PerfMetric, PerfStatsLevel, set_perf_stats};
    let mut s = Store::new();
    s.apply(
        (1..=1000)
            .map(|i| commit(&format!("n-{i:05}"), 9, i))
            .collect(),
    );
    s.one(register("(512) 555-0109", 9, DAY));
    let db = s.sm.db();
    let stepped = |read: &dyn Fn() -> crate::reads::JurisdictionStatus| {
        set_perf_stats(PerfStatsLevel::EnableCount);
        let mut perf = PerfContext::default();
        perf.reset();
        let status = read();
        let stepped = perf.metric(PerfMetric::NextOnMemtableCount);
        set_perf_stats(PerfStatsLevel::Disable);
        assert_eq!(status.counters.purges_pending, 1000);
        stepped
    };
    let full = stepped(&|| {
        crate::reads::jurisdiction_status(&db, Jurisdiction::Tx, UnixMillis(DAY)).unwrap()
    });
    let sweep =
        stepped(&|| crate::reads::sweep_status(&db, Jurisdiction::Tx, UnixMillis(DAY)).unwrap());
    // Both walk the heads of the indexes; only the full status walks the 1,000 pending shreds.
    assert!(
        full >= sweep + 1000,
        "the sweeper's status stepped over {sweep} keys, the full status {full}"
    );
}

fn change_of(result: &CommandResult) -> (u64, ChangeState) {
    match result {
        CommandResult::Retention(RetentionResult::Change {
            change_id, state, ..
        }) => (*change_id, state.clone()),
        other => panic!("{other:?}"),
    }
}

fn put_policy(days: u32, expected: u32, principal: &str) -> Command {
    let mut p = policy(days);
    p.shortening_notice_seconds = 7 * 86_400;
    Command::PutPolicy {
        jurisdiction: Jurisdiction::Tx,
        policy: p,
        expected_version: expected,
        principal: principal.into(),
        at: UnixMillis(0),
    }
}

/// A shorter policy waits for its notice in cluster time, or a second agency principal of the
/// jurisdiction; the proposer alone, or another jurisdiction's agency, cannot hurry it.
#[test]
fn a_shortening_waits_for_its_notice_or_a_second_principal() {
    let mut s = Store::new();
    // Lengthening (and adding a notice) is immediate.
    assert_eq!(
        s.one(put_policy(40, 1, "op")),
        CommandResult::PolicyPut { version: 2 }
    );
    s.time(DAY);
    let (id, state) = change_of(&s.one(put_policy(10, 2, "tx-1")));
    assert_eq!(state, ChangeState::Pending);
    let db = s.sm.db();
    let status = crate::reads::jurisdiction_status(&db, Jurisdiction::Tx, UnixMillis(0)).unwrap();
    let (pending_id, pending, effective) = status.pending_policy.unwrap();
    assert_eq!(
        (pending_id, pending.policy.recording_retention_days),
        (id, 10)
    );
    assert_eq!(effective, Some(UnixMillis(8 * DAY)));
    let approve = |who: Actor| {
        retention(RetentionCommand::ApproveChange {
            change_id: id,
            approver: who,
            at: UnixMillis(DAY),
        })
    };
    assert!(matches!(
        s.one(approve(agency("tx-1"))),
        CommandResult::Refused(Refusal::Approval(_))
    ));
    let mut california = agency("ca-1");
    california.jurisdictions = vec![Jurisdiction::Ca];
    assert!(matches!(
        s.one(approve(california)),
        CommandResult::Refused(Refusal::Approval(_))
    ));
    let effect = retention(RetentionCommand::EffectChange { change_id: id });
    assert!(matches!(
        s.one(effect.clone()),
        CommandResult::Refused(Refusal::AheadOfClusterTime { .. })
    ));
    let current = crate::reads::policy(&db, Jurisdiction::Tx, 0)
        .unwrap()
        .unwrap();
    assert_eq!(current.policy.recording_retention_days, 40);
    // The notice ends in cluster time.
    s.time(8 * DAY);
    assert!(matches!(
        change_of(&s.one(effect)).1,
        ChangeState::Effected { .. }
    ));
    let current = crate::reads::policy(&db, Jurisdiction::Tx, 0)
        .unwrap()
        .unwrap();
    assert_eq!(
        (current.version, current.policy.recording_retention_days),
        (3, 10)
    );

    // Or at once, with a second agency principal of Texas.
    let (id, _) = change_of(&s.one(put_policy(5, 3, "op")));
    let approved = s.one(retention(RetentionCommand::ApproveChange {
        change_id: id,
        approver: agency("tx-2"),
        at: UnixMillis(8 * DAY),
    }));
    assert!(matches!(
        change_of(&approved).1,
        ChangeState::Effected { .. }
    ));
    let current = crate::reads::policy(&db, Jurisdiction::Tx, 0)
        .unwrap()
        .unwrap();
    assert_eq!(current.policy.recording_retention_days, 5);
    assert_eq!(
        s.one(retention(RetentionCommand::ApproveChange {
            change_id: id,
            approver: agency("tx-3"),
            at: UnixMillis(8 * DAY),
        })),
        CommandResult::Refused(Refusal::ChangeClosed)
    );
}

/// An agency asks for a flag; only a registry principal of the jurisdiction makes it happen.
#[test]
fn an_agency_flag_request_takes_effect_only_with_a_registry_approval() {
    let mut s = Store::new();
    s.apply(vec![commit("f-1", 1, 1000)]);
    let request = |who: Actor| {
        retention(RetentionCommand::ProposeChange {
            jurisdiction: Jurisdiction::Tx,
            change: ChangeKind::PrivilegeFlag {
                call_id: call_id("f-1"),
                reason: "attorney heard".into(),
                evidence: "review".into(),
            },
            proposer: who,
            at: UnixMillis(5),
        })
    };
    assert!(matches!(
        s.one(request(registry("tx-registry"))),
        CommandResult::Refused(Refusal::NotAllowed(_))
    ));
    let (id, _) = change_of(&s.one(request(agency("tx-agency"))));
    assert_eq!(s.call("f-1").unwrap().lifecycle, Lifecycle::Live);
    let approve = |who: Actor| {
        retention(RetentionCommand::ApproveChange {
            change_id: id,
            approver: who,
            at: UnixMillis(6),
        })
    };
    assert!(matches!(
        s.one(approve(agency("tx-agency-2"))),
        CommandResult::Refused(Refusal::Approval(_))
    ));
    // No notice: it never takes effect by waiting.
    s.time(365 * DAY);
    assert!(matches!(
        s.one(retention(RetentionCommand::EffectChange { change_id: id })),
        CommandResult::Refused(_)
    ));
    assert!(matches!(
        change_of(&s.one(approve(registry("tx-registry")))).1,
        ChangeState::Effected { .. }
    ));
    assert!(matches!(
        s.call("f-1").unwrap().lifecycle,
        Lifecycle::Purged { .. }
    ));
}

/// Trust's bulk exports use the same mechanism: filed as an external change, approved only by
/// another principal of the proposer's own agency, then found by the owner's read.
#[test]
fn a_bulk_export_is_approved_by_the_proposers_agency_and_read_back_by_its_owner() {
    let mut s = Store::new();
    let mut proposer = agency("tx-analyst");
    proposer.agency = "tx-da".into();
    let export = ChangeKind::External {
        kind: callvault_core::approval::BULK_EXPORT.into(),
        payload: b"window 0..3600000, 5000 records".to_vec(),
    };
    let propose = |kind: ChangeKind| {
        retention(RetentionCommand::ProposeChange {
            jurisdiction: Jurisdiction::Tx,
            change: kind,
            proposer: proposer.clone(),
            at: UnixMillis(5),
        })
    };
    assert!(
        matches!(
            s.one(propose(ChangeKind::External {
                kind: "made_up".into(),
                payload: Vec::new()
            })),
            CommandResult::Refused(Refusal::NotAllowed(_))
        ),
        "a kind without a rule is refused: no proposer picks its own rule"
    );
    let (id, _) = change_of(&s.one(propose(export)));
    let approved = |s: &Store| {
        let db = s.sm.db();
        crate::approvals::approved_external(
            &Txn::new(&db),
            Jurisdiction::Tx,
            callvault_core::approval::BULK_EXPORT,
            "tx-analyst",
            10,
        )
        .unwrap()
    };
    assert!(approved(&s).is_empty());
    let approve = |who: Actor| {
        retention(RetentionCommand::ApproveChange {
            change_id: id,
            approver: who,
            at: UnixMillis(6),
        })
    };
    let stranger = agency("tx-public-defender");
    assert!(matches!(
        s.one(approve(stranger)),
        CommandResult::Refused(Refusal::Approval(_))
    ));
    let mut colleague = agency("tx-supervisor");
    colleague.agency = "tx-da".into();
    assert!(matches!(
        change_of(&s.one(approve(colleague))).1,
        ChangeState::Effected { .. }
    ));
    let found = approved(&s);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert!(
        matches!(&found[0].kind, ChangeKind::External { payload, .. } if payload.starts_with(b"window"))
    );
}

/// Deadline at read: past its deadline in cluster time, a recording is refused though no
/// sweeper expired it.
#[test]
fn access_past_the_deadline_is_refused_before_any_sweep() {
    let mut s = Store::new();
    s.apply(vec![commit("d-1", 1, 0)]);
    let access = |at: i64| {
        Command::RecordAccess(AccessRequest {
            jurisdiction: Jurisdiction::Tx,
            call_id: call_id("d-1"),
            principal: "agency-tx".into(),
            case_number: "c".into(),
            reason: "r".into(),
            elevated: false,
            denial: None,
            quota: AccessQuota {
                calls_per_hour: 100,
                bytes_per_hour: u64::MAX,
            },
            at: UnixMillis(at),
        })
    };
    s.time(29 * DAY);
    assert!(matches!(
        s.one(access(29 * DAY)),
        CommandResult::AccessDecided {
            decision: AccessDecision::Allowed { .. },
            ..
        }
    ));
    s.time(30 * DAY);
    assert!(matches!(
        s.one(access(30 * DAY)),
        CommandResult::AccessDecided {
            decision: AccessDecision::PastDeadline,
            ..
        }
    ));
    let db = s.sm.db();
    assert!(matches!(
        crate::reads::content(&db, Jurisdiction::Tx, &call_id("d-1")),
        Err(crate::reads::ReadError::PastDeadline)
    ));
    assert_eq!(
        s.call("d-1").unwrap().lifecycle,
        Lifecycle::Live,
        "not swept"
    );
}

/// Every node holding metadata owes a receipt: a learner too, and a node that left, unless its
/// receipts are waived because its volume will be destroyed.
#[test]
fn learners_and_departed_members_owe_receipts_unless_waived() {
    let mut s = Store::new();
    s.members(&[1, 2, 3], &[4]);
    s.apply(vec![
        commit("r-1", 1, 1000),
        register("(512) 555-0100", 1, 2000),
    ]);
    let calls = vec![(Jurisdiction::Tx, call_id("r-1"))];
    let keys = |node| Command::KeysShredded {
        node_id: node,
        calls: calls.clone(),
        at: UnixMillis(3),
    };
    s.apply(vec![
        keys(1),
        keys(2),
        keys(3),
        Command::ChunksCollected {
            shards: vec!["blob-1".into()],
            calls: calls.clone(),
            at: UnixMillis(3),
        },
    ]);
    assert_eq!(
        s.counters().purges_pending,
        1,
        "the learner's receipt is missing"
    );
    // Node 4 leaves before sending it: still owed.
    s.members(&[1, 2, 3], &[]);
    assert_eq!(
        s.one(keys(1)),
        CommandResult::ReceiptsRecorded { completed: 0 }
    );
    assert_eq!(s.counters().purges_pending, 1);
    let db = s.sm.db();
    assert_eq!(crate::reads::shreds_owing(&db, Some(4), false).unwrap(), 1);
    assert_eq!(
        s.one(retention(RetentionCommand::WaiveReceipts {
            node_id: 4,
            principal: "op".into(),
            reason: "disk destroyed".into(),
            at: UnixMillis(4),
        })),
        CommandResult::ReceiptsRecorded { completed: 1 }
    );
    assert_eq!(s.counters().purges_pending, 0);
    assert_eq!(crate::lifecycle::waived_nodes(&Txn::new(&db)).unwrap(), [4]);
}

/// Holds past their review date are counted for status; nothing releases them.
#[test]
fn holds_past_review_are_reported_not_released() {
    let mut s = Store::new();
    s.apply(vec![commit("h-1", 1, 0)]);
    s.one(Command::PlaceHold {
        jurisdiction: Jurisdiction::Tx,
        call_id: call_id("h-1"),
        issuer: "da".into(),
        agency: "da-office".into(),
        case_number: "2026-CR-1".into(),
        reason: "trial".into(),
        review_date: Some(UnixMillis(10 * DAY)),
        at: UnixMillis(0),
    });
    let db = s.sm.db();
    assert_eq!(
        crate::reviews::past_review(&db, Jurisdiction::Tx, UnixMillis(10 * DAY)).unwrap(),
        0
    );
    assert_eq!(
        crate::reviews::past_review(&db, Jurisdiction::Tx, UnixMillis(11 * DAY)).unwrap(),
        1
    );
    s.time(100 * DAY);
    let status = crate::reads::jurisdiction_status(&db, Jurisdiction::Tx, UnixMillis(0)).unwrap();
    assert_eq!(status.holds_past_review, 1);
    assert_eq!(s.call("h-1").unwrap().holds.len(), 1);
}

/// A commit that reaches apply long after it was proposed is refused: its chunks may be swept
/// as orphans by then.
#[test]
fn a_commit_proposed_long_before_it_applies_is_refused() {
    let mut s = Store::new();
    s.time(DAY);
    assert!(matches!(
        s.one(commit("late", 1, 0)),
        CommandResult::Refused(Refusal::NotAllowed(_))
    ));
    assert!(s.call("late").is_none());
    // Stamped within the window: accepted; its chunks are referenced for the orphan sweep.
    let Command::CommitCall {
        call,
        wrapped_key,
        chunk_ids,
        principal,
        ..
    } = commit("ok", 1, 0)
    else {
        unreachable!()
    };
    let ids = chunk_ids.clone();
    s.one(Command::CommitCall {
        call,
        wrapped_key,
        chunk_ids,
        principal,
        at: UnixMillis(DAY - 1000),
    });
    let db = s.sm.db();
    assert_eq!(
        crate::reads::chunks_referenced(&db, &[ids[0], [0xee; 32]]).unwrap(),
        [true, false]
    );
    let key = keys::call(Jurisdiction::Tx, &call_id("ok"));
    assert!(
        Txn::new(&db)
            .get(keys::CF_CHUNK_REFS, &keys::chunk_ref(&ids[0], &key))
            .unwrap()
            .is_some()
    );
}
