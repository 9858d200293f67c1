//! Purges without a cap. A registration purges the past recordings of calls to the number a page
//! per apply; while recordings remain, a progress record says so, and the leader proposes
//! `ContinuePurge` until none does — no one has to act again. Every step is a log entry that
//! `apply` re-checks, so the paging is as deterministic as the registration itself; and from the
//! registration's apply on, no recording of a call to the number is readable (the access
//! decision checks the registry), whichever page it is in.

use callvault_audit::AuditEvent;
use callvault_core::call::{CallEvent, CallRecord, PurgeReason};
use callvault_core::codec::VersionedRecord;
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{CallId, Jurisdiction, RegistryEntry, UnixMillis};
use rocksdb::{DB, Direction, IteratorMode};

use crate::apply::{
    self, ApplyError, Counters, LogPosition, counters, current_policy, put_counters,
};
use crate::audit_log::{self, Event};
use crate::command::{CommandResult, Refusal};
use crate::keys::{self, CF_BY_NUMBER, CF_CALLS, CF_PRIVILEGED, CF_REGISTRY};
use crate::lifecycle::{self, ShredKind};
pub use crate::records::PurgeProgress;
use crate::retention_command::RetentionResult;
use crate::txn::Txn;

/// Registrations still purging: `jur | fingerprint` → [`PurgeProgress`].
pub const CF_PURGES: &str = "purges";
/// Recordings one apply purges at most: bounds one apply's write set and how long it holds up
/// the commands behind it.
pub const PURGE_PAGE: usize = 1_000;

/// The progress of the registration of `fingerprint`, if its purge is still going.
pub fn progress(
    txn: &Txn<'_>,
    jurisdiction: Jurisdiction,
    fingerprint: &[u8; 32],
) -> Result<Option<PurgeProgress>, ApplyError> {
    match txn.get(CF_PURGES, &keys::number_prefix(jurisdiction, fingerprint))? {
        Some(bytes) => Ok(Some(PurgeProgress::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// Records `progress`, or clears it when the purge is `done`.
pub fn record(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    fingerprint: &[u8; 32],
    progress: &PurgeProgress,
    done: bool,
) {
    let key = keys::number_prefix(jurisdiction, fingerprint);
    if done {
        txn.delete(CF_PURGES, key);
    } else {
        txn.put(CF_PURGES, key, progress.encode());
    }
}

/// A registration still purging.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeInProgress {
    /// Whose registry.
    pub jurisdiction: Jurisdiction,
    /// The number's keyed hash.
    pub fingerprint: [u8; 32],
    /// How far it has gone.
    pub progress: PurgeProgress,
}

/// Up to `limit` registrations still purging, in `jurisdiction` or everywhere.
pub fn in_progress(
    db: &DB,
    jurisdiction: Option<Jurisdiction>,
    limit: usize,
) -> Result<Vec<PurgeInProgress>, ApplyError> {
    let cf = db.cf_handle(CF_PURGES).expect("created at open");
    let prefix = jurisdiction.map(keys::jurisdiction).unwrap_or_default();
    let mut out = Vec::new();
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) || out.len() >= limit {
            break;
        }
        let (Some(j), Some(fingerprint)) = (
            key.first().and_then(|i| Jurisdiction::from_index(*i)),
            key.get(1..33).and_then(|f| <[u8; 32]>::try_from(f).ok()),
        ) else {
            continue;
        };
        out.push(PurgeInProgress {
            jurisdiction: j,
            fingerprint,
            progress: PurgeProgress::decode(&value)?,
        });
    }
    Ok(out)
}

/// `RegisterPrivileged`: files the number and purges the first page of its past recordings; a
/// progress record carries the rest to the leader's `ContinuePurge`s.
pub(crate) fn register(
    txn: &mut Txn<'_>,
    entry: &RegistryEntry,
    fingerprint: &[u8; 32],
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let j = entry.jurisdiction;
    let registry_key = keys::registry(j, entry.number.as_str());
    if txn.get(CF_REGISTRY, &registry_key)?.is_none() {
        txn.put(CF_REGISTRY, registry_key, entry.encode());
    }
    txn.put(
        CF_PRIVILEGED,
        keys::number_prefix(j, fingerprint),
        Vec::new(),
    );
    let progress = match progress(txn, j, fingerprint)? {
        Some(progress) => progress,
        None => PurgeProgress {
            registered_at: entry.registered_at,
            registrant: entry.registrant.clone(),
            purged: 0,
            pages: 0,
        },
    };
    let (purged, _) = page(txn, j, fingerprint, progress, position)?;
    Ok(CommandResult::NumberRegistered { purged })
}

/// `ContinuePurge`: the next page of a registration's purge; nothing when it is complete.
pub(crate) fn continue_purge(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    fingerprint: &[u8; 32],
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let Some(progress) = progress(txn, jurisdiction, fingerprint)? else {
        return Ok(CommandResult::Retention(RetentionResult::PurgeContinued {
            purged: 0,
            done: true,
        }));
    };
    let (purged, done) = page(txn, jurisdiction, fingerprint, progress, position)?;
    Ok(CommandResult::Retention(RetentionResult::PurgeContinued {
        purged,
        done,
    }))
}

/// Purges up to [`PURGE_PAGE`] recordings of calls to the number and records the progress.
fn page(
    txn: &mut Txn<'_>,
    j: Jurisdiction,
    fingerprint: &[u8; 32],
    mut progress: PurgeProgress,
    position: LogPosition,
) -> Result<(u64, bool), ApplyError> {
    let prefix = keys::number_prefix(j, fingerprint);
    let call_keys = calls_to_number(txn, j, &prefix, PURGE_PAGE + 1)?;
    let done = call_keys.len() <= PURGE_PAGE;
    let purge = Purge {
        at: progress.registered_at,
        position,
        reason: PurgeReason::NumberRegistered,
        principal: &progress.registrant.clone(),
    };
    let mut counters = counters(txn, j)?;
    let mut purged = 0;
    for call_key in call_keys.into_iter().take(PURGE_PAGE) {
        let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
            continue;
        };
        let call = CallRecord::decode(&bytes)?;
        if purge_call(txn, &call, &purge, &mut counters)? {
            purged += 1;
        }
    }
    put_counters(txn, j, &counters);
    progress.purged += purged;
    progress.pages += 1;
    record(txn, j, fingerprint, &progress, done);
    Ok((purged, done))
}

/// The call keys (`jur | call id`) of up to `limit` live recordings of calls to one number.
pub(crate) fn calls_to_number(
    txn: &Txn<'_>,
    j: Jurisdiction,
    prefix: &[u8],
    limit: usize,
) -> Result<Vec<Vec<u8>>, ApplyError> {
    Ok(txn
        .keys_with_prefix(CF_BY_NUMBER, prefix, limit)?
        .into_iter()
        .map(|index_key| {
            let mut call_key = keys::jurisdiction(j);
            call_key.extend_from_slice(&index_key[prefix.len()..]);
            call_key
        })
        .collect())
}

/// Why and by whom a call is purged.
pub(crate) struct Purge<'a> {
    pub at: UnixMillis,
    pub position: LogPosition,
    pub reason: PurgeReason,
    pub principal: &'a str,
}

/// `FlagPrivileged`: purges one call.
pub(crate) fn flag(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
    purge: &Purge<'_>,
) -> Result<CommandResult, ApplyError> {
    let call_key = keys::call(jurisdiction, call_id);
    let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
        return Ok(CommandResult::Refused(Refusal::NoSuchCall));
    };
    let call = CallRecord::decode(&bytes)?;
    let mut counters = counters(txn, jurisdiction)?;
    let purged = purge_call(txn, &call, purge, &mut counters)?;
    put_counters(txn, jurisdiction, &counters);
    Ok(CommandResult::CallFlagged { purged })
}

/// Crypto-shreds one call: its wrapped key goes in this same atomic write and its chunks become
/// garbage for the collector (unless a court-sealed hold keeps it, unreadable); what the policy
/// keeps of a privileged call stays, the rest leaves a tombstone. Returns false when the call had
/// no content left.
pub(crate) fn purge_call(
    txn: &mut Txn<'_>,
    call: &CallRecord,
    purge: &Purge<'_>,
    counters: &mut Counters,
) -> Result<bool, ApplyError> {
    let event = CallEvent::Purge {
        at: purge.at,
        reason: purge.reason,
    };
    let Ok(next) = call.apply(&event) else {
        return Ok(false);
    };
    let call_key = keys::call(call.jurisdiction, &call.call_id);
    apply::unindex_call(txn, call);
    for gone in call.holds.iter().filter(|h| !next.holds.contains(h)) {
        crate::reviews::unindex(txn, call.jurisdiction, &call.call_id, gone);
    }
    if !call.holds.is_empty() {
        counters.held = counters.held.saturating_sub(1);
    }
    counters.live = counters.live.saturating_sub(1);
    counters.purged += 1;
    if next.lifecycle.has_content() {
        txn.put(CF_CALLS, call_key, next.encode());
    } else {
        lifecycle::shred(
            txn,
            &call_key,
            ShredKind::Purge,
            purge.at,
            purge.position,
            None,
        )?;
        counters.purges_pending += 1;
        keep_what_the_policy_keeps(txn, &next, purge.at, counters)?;
    }
    audit_log::append(
        txn,
        Event {
            event: AuditEvent::PurgeStarted,
            time: purge.at,
            principal: purge.principal.to_string(),
            jurisdiction: Some(call.jurisdiction),
            subject: call.call_id.as_str().to_string(),
            outcome: if next.lifecycle.has_content() {
                "kept sealed by a court-ordered hold".into()
            } else {
                "data key shredded".into()
            },
            details: Vec::new(),
        },
    )?;
    Ok(true)
}

/// After a purge: a call-detail record where the policy keeps call details of privileged calls,
/// otherwise the record leaves every index and only a tombstone remains.
pub(crate) fn keep_what_the_policy_keeps(
    txn: &mut Txn<'_>,
    purged: &CallRecord,
    at: UnixMillis,
    counters: &mut Counters,
) -> Result<(), ApplyError> {
    let Some(policy) = current_policy(txn, purged.jurisdiction)? else {
        return Ok(());
    };
    if crate::details::keep_or_tombstone(txn, purged, &policy.policy, TombstoneOutcome::Purged, at)?
    {
        counters.details_kept += 1;
    }
    Ok(())
}
