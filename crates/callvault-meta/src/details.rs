//! Call-detail records after their content is gone (expired, purged under a policy that keeps
//! call details of privileged calls, or refused at ingest): kept until their own deadline, then
//! deleted from every index, leaving only a tombstone (invariant 9).
//!
//! Records in this state are indexed by start time in their own family, so the sweeper finds the
//! due ones at the head of the index and a sweep costs what it deletes.

use callvault_audit::AuditEvent;
use callvault_core::call::CallRecord;
use callvault_core::codec::VersionedRecord;
use callvault_core::policy::RetentionPolicy;
use callvault_core::retention::{
    DetailVerdict, call_detail_deadline, detail_verdict, keeps_call_detail,
};
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use rocksdb::{DB, Direction, IteratorMode};

use crate::apply::{self, ApplyError, Counters, counters, current_policy, put_counters};
use crate::audit_log::{self, Event};
use crate::command::{CommandResult, Refusal};
use crate::keys::{self, CF_CALLS, CF_COMMITS};
use crate::txn::Txn;

/// Call-detail records without content, by start time: `jur | started_at | call id` → ∅.
pub const CF_DETAILS: &str = "details_by_start";

/// The record that stays once a call's content is gone: everything but what identifies the
/// content (its plaintext digest).
pub fn without_content(call: &CallRecord) -> CallRecord {
    let mut kept = call.clone();
    kept.plaintext_digest = [0; 32];
    kept
}

/// Stores `next`, a call whose content is gone, as what the policy keeps of it: a call-detail
/// record (listed, indexed for its deadline) or, when the policy keeps nothing of privileged
/// calls, only a tombstone. Returns whether a record was kept.
pub fn keep_or_tombstone(
    txn: &mut Txn<'_>,
    next: &CallRecord,
    policy: &RetentionPolicy,
    outcome: TombstoneOutcome,
    at: UnixMillis,
) -> Result<bool, ApplyError> {
    let call_key = keys::call(next.jurisdiction, &next.call_id);
    if keeps_call_detail(next.lifecycle, policy) {
        let kept = without_content(next);
        txn.put(
            CF_DETAILS,
            keys::by_start(kept.jurisdiction, kept.started_at, &kept.call_id),
            Vec::new(),
        );
        txn.put(CF_CALLS, call_key, kept.encode());
        return Ok(true);
    }
    remove_record(txn, next);
    crate::tombstones::file(txn, next.jurisdiction, &next.call_id, outcome, at)?;
    Ok(false)
}

/// Deletes a call's record from the store and from every listing index.
fn remove_record(txn: &mut Txn<'_>, call: &CallRecord) {
    let call_key = keys::call(call.jurisdiction, &call.call_id);
    apply::unindex_history(txn, call);
    txn.delete(
        CF_DETAILS,
        keys::by_start(call.jurisdiction, call.started_at, &call.call_id),
    );
    txn.delete(CF_COMMITS, call_key.clone());
    txn.delete(CF_CALLS, call_key);
}

/// `ExpireCallDetails`: deletes the records of `calls` that are past their call-detail deadline
/// at `as_of` (at most the cluster time) under the policy in force, leaving tombstones.
pub(crate) fn expire(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
    calls: &[CallId],
) -> Result<CommandResult, ApplyError> {
    if let Some(refusal) = crate::clock::refuse_ahead(txn, as_of)? {
        return Ok(CommandResult::Refused(refusal));
    }
    let Some(policy) = current_policy(txn, jurisdiction)? else {
        return Ok(CommandResult::Refused(Refusal::NoPolicy));
    };
    let mut counters: Counters = counters(txn, jurisdiction)?;
    let (mut expired, mut skipped) = (0u32, 0u32);
    for call_id in calls {
        let call_key = keys::call(jurisdiction, call_id);
        let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
            skipped += 1;
            continue;
        };
        let call = CallRecord::decode(&bytes)?;
        if detail_verdict(&call, &policy.policy, as_of) != DetailVerdict::Delete {
            skipped += 1;
            continue;
        }
        remove_record(txn, &call);
        crate::tombstones::file(txn, jurisdiction, call_id, TombstoneOutcome::Expired, as_of)?;
        counters.details_kept = counters.details_kept.saturating_sub(1);
        counters.details_expired += 1;
        expired += 1;
        audit_log::append(
            txn,
            Event {
                event: AuditEvent::CallDetailDeleted,
                time: as_of,
                principal: "retention-sweeper".into(),
                jurisdiction: Some(jurisdiction),
                subject: call_id.as_str().to_string(),
                outcome: format!(
                    "call-detail record deleted under policy v{} (deadline {} ms); a tombstone \
                     remains",
                    policy.version,
                    call_detail_deadline(call.started_at, &policy.policy).0
                ),
                details: Vec::new(),
            },
        )?;
    }
    put_counters(txn, jurisdiction, &counters);
    Ok(CommandResult::Expired { expired, skipped })
}

/// Up to `limit` call-detail records of `jurisdiction` due at `as_of` under `policy`, oldest
/// first.
pub fn due(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
    policy: &RetentionPolicy,
    limit: usize,
) -> Result<Vec<CallId>, ApplyError> {
    let mut out = Vec::new();
    for (started_at, call_id) in head(db, jurisdiction, limit)? {
        if call_detail_deadline(started_at, policy) > as_of {
            break;
        }
        out.push(call_id);
    }
    Ok(out)
}

/// The oldest `limit` entries of a jurisdiction's call-detail index: start time and call id.
pub fn head(
    db: &DB,
    jurisdiction: Jurisdiction,
    limit: usize,
) -> Result<Vec<(UnixMillis, CallId)>, ApplyError> {
    let cf = db.cf_handle(CF_DETAILS).expect("created at open");
    let prefix = keys::jurisdiction(jurisdiction);
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        if let Some(entry) = keys::parse_by_start(&key) {
            out.push(entry);
        }
    }
    Ok(out)
}
