//! What happens to a call after its commit: expiry at the deadline, legal holds, recorded
//! content access with per-principal quotas, and the shred records that follow a crypto-shred
//! until every replica has sent its receipt.
//!
//! Like the rest of `apply`, every decision here is a call into `callvault-core` or a pure
//! function of the state and the command: no clock, no randomness.

use callvault_audit::{AccessDecision as AuditAccess, AuditEvent, PurgeReplica};
use callvault_core::call::{CallEvent, CallRecord, Hold, Lifecycle, TransitionError};
use callvault_core::codec::VersionedRecord;
use callvault_core::retention::{check_review_date, recording_deadline};
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{CallId, Jurisdiction, UnixMillis};

use crate::apply::{
    self, ApplyError, Counters, LogPosition, counters, current_policy, put_counters,
};
use crate::audit_log::{self, Event};
use crate::command::{AccessDecision, AccessRequest, CommandResult, MAX_PRINCIPAL, Refusal};
use crate::keys::{self, *};
use crate::txn::Txn;

use crate::records::QuotaUse;
pub use crate::records::{ShredKind, ShredRecord};

const MILLIS_PER_HOUR: i64 = 3_600_000;

/// Deletes a call's data key and chunk list in this write set and opens its shred record. The
/// key entry is the log entry that carried the wrapped key: the call's commit, or `position`
/// when the key never reached the state (a commit that became a purge).
pub(crate) fn shred(
    txn: &mut Txn<'_>,
    call_key: &[u8],
    kind: ShredKind,
    at: UnixMillis,
    position: LogPosition,
    chunk_ids: Option<Vec<[u8; 32]>>,
) -> Result<(), ApplyError> {
    txn.delete(CF_KEYS, call_key.to_vec());
    let chunk_ids = match chunk_ids {
        Some(ids) => ids,
        None => txn
            .get(CF_CHUNKS, call_key)?
            .map_or_else(Vec::new, |bytes| keys::chunk_ids(&bytes)),
    };
    txn.delete(CF_CHUNKS, call_key.to_vec());
    for id in &chunk_ids {
        txn.delete(CF_CHUNK_REFS, keys::chunk_ref(id, call_key));
    }
    let key_entry = match txn.get(CF_COMMITS, call_key)? {
        Some(bytes) => LogPosition::decode(&bytes)?.index,
        None => position.index,
    };
    let record = ShredRecord {
        kind,
        started_at: at,
        key_entry,
        chunk_ids,
        meta_receipts: Vec::new(),
        blob_done: false,
        shred_entry: position.index,
        required: crate::membership::members(txn)?,
    };
    txn.put(CF_SHREDS, call_key.to_vec(), record.encode());
    Ok(())
}

/// The shred record of a call, if its shred is still in progress.
pub fn shred_record(txn: &Txn<'_>, call_key: &[u8]) -> Result<Option<ShredRecord>, ApplyError> {
    match txn.get(CF_SHREDS, call_key)? {
        Some(bytes) => Ok(Some(ShredRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn read_call(txn: &Txn<'_>, call_key: &[u8]) -> Result<Option<CallRecord>, ApplyError> {
    match txn.get(CF_CALLS, call_key)? {
        Some(bytes) => Ok(Some(CallRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// `Expire`: re-checks each call under the policy in force and shreds the due, unheld ones.
pub(crate) fn expire(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
    calls: &[CallId],
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    // One node's clock cannot make anything expire early: only the cluster's time counts.
    if let Some(refusal) = crate::clock::refuse_ahead(txn, as_of)? {
        return Ok(CommandResult::Refused(refusal));
    }
    let Some(policy) = current_policy(txn, jurisdiction)? else {
        return Ok(CommandResult::Refused(Refusal::NoPolicy));
    };
    let mut counters = counters(txn, jurisdiction)?;
    let (mut expired, mut skipped) = (0u32, 0u32);
    for call_id in calls {
        let call_key = keys::call(jurisdiction, call_id);
        let Some(call) = read_call(txn, &call_key)? else {
            skipped += 1;
            continue;
        };
        // A number registered privileged purges its calls page by page: they go as purges.
        if number_privileged(txn, &call)? {
            skipped += 1;
            continue;
        }
        let event = CallEvent::Expire {
            as_of,
            policy: policy.policy.clone(),
        };
        let Ok(next) = call.apply(&event) else {
            skipped += 1;
            continue;
        };
        shred(txn, &call_key, ShredKind::Expiry, as_of, position, None)?;
        apply::unindex_call(txn, &call);
        // The call-detail record stays until its own deadline.
        crate::details::keep_or_tombstone(
            txn,
            &next,
            &policy.policy,
            TombstoneOutcome::Expired,
            as_of,
        )?;
        counters.details_kept += 1;
        counters.live = counters.live.saturating_sub(1);
        counters.expired += 1;
        expired += 1;
        audit_log::append(
            txn,
            Event {
                event: AuditEvent::Expiry,
                time: as_of,
                principal: "retention-sweeper".into(),
                jurisdiction: Some(jurisdiction),
                subject: call_id.as_str().to_string(),
                outcome: format!(
                    "expired under policy v{} (deadline {} ms); data key shredded",
                    policy.version,
                    recording_deadline(call.started_at, &policy.policy).0
                ),
                details: Vec::new(),
            },
        )?;
    }
    put_counters(txn, jurisdiction, &counters);
    Ok(CommandResult::Expired { expired, skipped })
}

/// Whether the number `call` dialed is registered privileged in its jurisdiction.
pub(crate) fn number_privileged(txn: &Txn<'_>, call: &CallRecord) -> Result<bool, ApplyError> {
    Ok(txn
        .get(
            CF_PRIVILEGED,
            &keys::number_prefix(call.jurisdiction, &call.number_fingerprint),
        )?
        .is_some())
}

fn transition_refusal(e: TransitionError) -> Refusal {
    match e {
        TransitionError::NotLive => Refusal::NotLive,
        TransitionError::HoldNotFound => Refusal::HoldNotFound,
        TransitionError::NotIssuer => Refusal::NotIssuer,
        TransitionError::TooManyHolds => Refusal::TooManyHolds,
        other => Refusal::Invalid(other.to_string()),
    }
}

/// The fields of a `PlaceHold`.
pub(crate) struct HoldRequest<'a> {
    pub jurisdiction: Jurisdiction,
    pub call_id: &'a CallId,
    pub issuer: &'a str,
    pub agency: &'a str,
    pub case_number: &'a str,
    pub reason: &'a str,
    pub review_date: Option<UnixMillis>,
    pub at: UnixMillis,
}

/// `PlaceHold`: the hold's id is the command's unique id in the log (its entry's index and its
/// slot in the entry), the same on every replica.
pub(crate) fn place_hold(
    txn: &mut Txn<'_>,
    request: &HoldRequest<'_>,
    hold_id: u64,
) -> Result<CommandResult, ApplyError> {
    let jurisdiction = request.jurisdiction;
    let call_key = keys::call(jurisdiction, request.call_id);
    let Some(call) = read_call(txn, &call_key)? else {
        return Ok(CommandResult::Refused(Refusal::NoSuchCall));
    };
    let Some(policy) = current_policy(txn, jurisdiction)? else {
        return Ok(CommandResult::Refused(Refusal::NoPolicy));
    };
    if let Err(reason) = check_review_date(&policy.policy, request.at, request.review_date) {
        return Ok(CommandResult::Refused(Refusal::ReviewDate(reason)));
    }
    let hold = Hold {
        id: hold_id,
        issuer: request.issuer.to_string(),
        agency: request.agency.to_string(),
        case_number: request.case_number.to_string(),
        reason: request.reason.to_string(),
        placed_at: request.at,
        review_date: request.review_date,
        court_sealed: false,
    };
    let next = match call.apply(&CallEvent::PlaceHold(hold.clone())) {
        Ok(next) => next,
        Err(e) => return Ok(CommandResult::Refused(transition_refusal(e))),
    };
    crate::reviews::index(txn, jurisdiction, &call.call_id, &hold);
    if call.holds.is_empty() && call.lifecycle == Lifecycle::Live {
        // A held call is never due: it leaves the expiry index until its last hold goes.
        txn.delete(
            CF_BY_START,
            keys::by_start(jurisdiction, call.started_at, &call.call_id),
        );
        let mut counters = counters(txn, jurisdiction)?;
        counters.held += 1;
        put_counters(txn, jurisdiction, &counters);
    }
    txn.put(CF_CALLS, call_key, next.encode());
    Ok(CommandResult::HoldPlaced { hold_id })
}

/// `ReleaseHold`: only the issuer or its agency; the last release puts the call back in the
/// expiry index (a call past its deadline expires at the next sweep), and a privileged recording
/// kept only by a sealed hold is purged.
#[allow(clippy::too_many_arguments)]
pub(crate) fn release_hold(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
    hold_id: u64,
    principal: &str,
    agency: &str,
    at: UnixMillis,
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let call_key = keys::call(jurisdiction, call_id);
    let Some(call) = read_call(txn, &call_key)? else {
        return Ok(CommandResult::Refused(Refusal::NoSuchCall));
    };
    let event = CallEvent::ReleaseHold {
        hold_id,
        by: principal.to_string(),
        agency: agency.to_string(),
        at,
    };
    let next = match call.apply(&event) {
        Ok(next) => next,
        Err(e) => return Ok(CommandResult::Refused(transition_refusal(e))),
    };
    for gone in call.holds.iter().filter(|h| !next.holds.contains(h)) {
        crate::reviews::unindex(txn, jurisdiction, call_id, gone);
    }
    let mut counters = counters(txn, jurisdiction)?;
    let mut purged = false;
    if next.holds.is_empty() && next.lifecycle == Lifecycle::Live {
        txn.put(
            CF_BY_START,
            keys::by_start(jurisdiction, call.started_at, &call.call_id),
            Vec::new(),
        );
        counters.held = counters.held.saturating_sub(1);
    }
    if matches!(call.lifecycle, Lifecycle::PrivilegedUnderSeal { .. })
        && matches!(next.lifecycle, Lifecycle::Purged { .. })
    {
        shred(txn, &call_key, ShredKind::Purge, at, position, None)?;
        counters.purges_pending += 1;
        purged = true;
        crate::purges::keep_what_the_policy_keeps(txn, &next, at, &mut counters)?;
    } else {
        txn.put(CF_CALLS, call_key, next.encode());
    }
    put_counters(txn, jurisdiction, &counters);
    Ok(CommandResult::HoldReleased { purged })
}

/// `RecordAccess`: decides the attempt (refused by the node, not found, sealed, over quota, or
/// allowed), charges the quota when allowed, and records it in the audit log either way.
pub(crate) fn record_access(
    txn: &mut Txn<'_>,
    request: &AccessRequest,
) -> Result<CommandResult, ApplyError> {
    let call_key = keys::call(request.jurisdiction, &request.call_id);
    let call = read_call(txn, &call_key)?;
    let decision = if let Some(reason) = &request.denial {
        AccessDecision::Refused(reason.clone())
    } else {
        match &call {
            // A registration purging page by page: already unreadable.
            Some(call) if number_privileged(txn, call)? => AccessDecision::NotFound,
            Some(call) if call.content_readable() && past_deadline(txn, call)? => {
                AccessDecision::PastDeadline
            }
            Some(call) if call.content_readable() => {
                if call.sealed && !request.elevated {
                    AccessDecision::SealedNeedsElevation
                } else if charge_quota(txn, request, call.byte_length)? {
                    AccessDecision::Allowed {
                        sealed: call.sealed,
                    }
                } else {
                    AccessDecision::QuotaExceeded
                }
            }
            _ => AccessDecision::NotFound,
        }
    };
    let (event, outcome) = match &decision {
        AccessDecision::Allowed { sealed: false } => (
            AuditEvent::ContentAccess(AuditAccess::Allowed),
            "allowed".to_string(),
        ),
        AccessDecision::Allowed { sealed: true } => (
            AuditEvent::ContentAccess(AuditAccess::Allowed),
            "allowed: sealed call read with the elevated role (alert)".to_string(),
        ),
        AccessDecision::Refused(reason) => (
            AuditEvent::ContentAccess(AuditAccess::Denied),
            format!("denied: {reason}"),
        ),
        AccessDecision::NotFound => (
            AuditEvent::ContentAccess(AuditAccess::Denied),
            "denied: no readable call".to_string(),
        ),
        AccessDecision::SealedNeedsElevation => (
            AuditEvent::ContentAccess(AuditAccess::Denied),
            "denied: sealed call needs the elevated role".to_string(),
        ),
        AccessDecision::PastDeadline => (
            AuditEvent::ContentAccess(AuditAccess::Denied),
            "denied: past its retention deadline in cluster time".to_string(),
        ),
        AccessDecision::QuotaExceeded => (
            AuditEvent::QuotaDenied,
            format!(
                "denied: over the hourly quota ({} calls, {} bytes)",
                request.quota.calls_per_hour, request.quota.bytes_per_hour
            ),
        ),
    };
    let entry = audit_log::append(
        txn,
        Event {
            event,
            time: request.at,
            principal: request.principal.clone(),
            jurisdiction: Some(request.jurisdiction),
            subject: request.call_id.as_str().to_string(),
            outcome,
            details: vec![
                (
                    "case_number",
                    request.case_number.chars().take(256).collect(),
                ),
                ("reason", request.reason.chars().take(256).collect()),
            ],
        },
    )?;
    Ok(CommandResult::AccessDecided {
        decision,
        record: entry.sequence(),
    })
}

/// Whether `call`'s recording deadline under the policy in force has passed in cluster time,
/// whether or not the sweeper has expired it yet. A held recording never is.
pub(crate) fn past_deadline(txn: &Txn<'_>, call: &CallRecord) -> Result<bool, ApplyError> {
    if !call.holds.is_empty() {
        return Ok(false);
    }
    let (Some(now), Some(policy)) = (
        crate::clock::cluster_time(txn)?,
        current_policy(txn, call.jurisdiction)?,
    ) else {
        return Ok(false);
    };
    Ok(now >= recording_deadline(call.started_at, &policy.policy))
}

/// Charges one call of `bytes` to the principal's use this clock hour, if it fits.
fn charge_quota(
    txn: &mut Txn<'_>,
    request: &AccessRequest,
    bytes: u64,
) -> Result<bool, ApplyError> {
    let key = quota_key(&request.principal);
    let hour = request.at.0.div_euclid(MILLIS_PER_HOUR);
    let mut usage = match txn.get(CF_QUOTAS, &key)? {
        Some(b) => QuotaUse::decode(&b)?,
        None => QuotaUse::default(),
    };
    if usage.hour != hour {
        usage = QuotaUse {
            hour,
            calls: 0,
            bytes: 0,
        };
    }
    if usage.calls + 1 > request.quota.calls_per_hour
        || usage.bytes.saturating_add(bytes) > request.quota.bytes_per_hour
    {
        return Ok(false);
    }
    usage.calls += 1;
    usage.bytes = usage.bytes.saturating_add(bytes);
    txn.put(CF_QUOTAS, key, usage.encode());
    Ok(true)
}

fn quota_key(principal: &str) -> Vec<u8> {
    principal.as_bytes()[..principal.len().min(MAX_PRINCIPAL)].to_vec()
}

/// Which replica sent a receipt.
pub(crate) enum Receipt<'a> {
    /// A meta node compacted the keys away and purged its log.
    Meta(u64),
    /// The blob collector removed the chunks from these shards.
    Blob(&'a [String]),
}

/// Records receipts for `calls` and completes the shreds that have every receipt: one from each
/// voter of the current membership and the blob collector's.
pub(crate) fn record_receipts(
    txn: &mut Txn<'_>,
    receipt: Receipt<'_>,
    calls: &[(Jurisdiction, CallId)],
    at: UnixMillis,
) -> Result<CommandResult, ApplyError> {
    let owing = Owing::read(txn)?;
    let mut completed = 0;
    for (jurisdiction, call_id) in calls {
        let call_key = keys::call(*jurisdiction, call_id);
        let Some(mut record) = shred_record(txn, &call_key)? else {
            continue;
        };
        let (event, principal, outcome) = match &receipt {
            Receipt::Meta(node) => {
                if record.meta_receipts.contains(node) {
                    continue;
                }
                record.meta_receipts.push(*node);
                (
                    AuditEvent::PurgeReceipt(PurgeReplica::Meta),
                    format!("meta-node-{node}"),
                    format!(
                        "data key compacted away; raft log purged through index {}",
                        record.key_entry
                    ),
                )
            }
            Receipt::Blob(shards) => {
                if record.blob_done {
                    continue;
                }
                record.blob_done = true;
                (
                    AuditEvent::PurgeReceipt(PurgeReplica::Blob),
                    "blob-collector".to_string(),
                    format!(
                        "{} chunks gone from shards {}",
                        record.chunk_ids.len(),
                        shards.join(",")
                    ),
                )
            }
        };
        audit_log::append(
            txn,
            Event {
                event,
                time: at,
                principal,
                jurisdiction: Some(*jurisdiction),
                subject: call_id.as_str().to_string(),
                outcome,
                details: vec![(
                    "shred",
                    match record.kind {
                        ShredKind::Purge => "purge".into(),
                        ShredKind::Expiry => "expiry".into(),
                    },
                )],
            },
        )?;
        if complete_if_done(txn, *jurisdiction, call_key, &record, &owing)? {
            completed += 1;
        }
    }
    Ok(CommandResult::ReceiptsRecorded { completed })
}

/// Who owes meta receipts: every node holding metadata now (voters and learners) and every node
/// that held it when the shred applied, except those whose volumes will be destroyed.
struct Owing {
    members: Vec<u64>,
    waived: Vec<u64>,
}

impl Owing {
    fn read(txn: &Txn<'_>) -> Result<Self, ApplyError> {
        Ok(Owing {
            members: crate::membership::members(txn)?,
            waived: waived_nodes(txn)?,
        })
    }

    fn all_in(&self, record: &ShredRecord) -> bool {
        // A current member always owes (a waived node added back holds the metadata again); a
        // departed one owes unless its volume is to be destroyed.
        let departed = record
            .required
            .iter()
            .filter(|n| !self.members.contains(n) && !self.waived.contains(n));
        let owed: Vec<u64> = self.members.iter().chain(departed).copied().collect();
        if owed.is_empty() && self.members.is_empty() {
            // No membership yet (a store written before its first membership entry).
            return !record.meta_receipts.is_empty();
        }
        owed.iter().all(|n| record.meta_receipts.contains(n))
    }
}

/// Deletes the shred record when every receipt is in (and counts the purge done); otherwise
/// stores it. Returns whether it completed.
fn complete_if_done(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    call_key: Vec<u8>,
    record: &ShredRecord,
    owing: &Owing,
) -> Result<bool, ApplyError> {
    if !(record.blob_done && owing.all_in(record)) {
        txn.put(CF_SHREDS, call_key, record.encode());
        return Ok(false);
    }
    txn.delete(CF_SHREDS, call_key);
    if record.kind == ShredKind::Purge {
        let mut c: Counters = counters(txn, jurisdiction)?;
        c.purges_pending = c.purges_pending.saturating_sub(1);
        put_counters(txn, jurisdiction, &c);
    }
    Ok(true)
}

/// Waivers live in the shreds family after every jurisdiction's keys: `0xff waived | node`.
const WAIVED: &[u8] = b"\xffwaived";
/// Most pending shreds one waiver re-checks for completion.
const MAX_WAIVER_SCAN: usize = 500_000;

/// The nodes whose receipts are waived (their volumes must be destroyed).
pub fn waived_nodes(txn: &Txn<'_>) -> Result<Vec<u64>, ApplyError> {
    Ok(txn
        .keys_with_prefix(CF_SHREDS, WAIVED, 256)?
        .iter()
        .filter_map(|k| {
            k.get(WAIVED.len()..)
                .and_then(|id| <[u8; 8]>::try_from(id).ok())
        })
        .map(u64::from_be_bytes)
        .collect())
}

/// `WaiveReceipts`: `node_id` leaves with shreds pending and its volume will be destroyed. The
/// waiver is recorded (status names the volume), audited, and the shreds that waited only for
/// this node complete.
pub(crate) fn waive_receipts(
    txn: &mut Txn<'_>,
    node_id: u64,
    principal: &str,
    reason: &str,
    at: UnixMillis,
) -> Result<CommandResult, ApplyError> {
    let mut key = WAIVED.to_vec();
    key.extend_from_slice(&node_id.to_be_bytes());
    let waiver = crate::records::ReceiptWaiver {
        at,
        principal: principal.to_string(),
        reason: reason.to_string(),
    };
    txn.put(CF_SHREDS, key, waiver.encode());
    audit_log::append(
        txn,
        Event {
            event: AuditEvent::ReceiptsWaived,
            time: at,
            principal: principal.to_string(),
            jurisdiction: None,
            subject: format!("meta-node-{node_id}"),
            outcome: "receipts waived: the node's volume must be destroyed".into(),
            details: vec![("reason", reason.chars().take(200).collect())],
        },
    )?;
    let owing = Owing::read(txn)?;
    let mut completed = 0;
    for call_key in txn.keys_with_prefix(CF_SHREDS, &[], MAX_WAIVER_SCAN)? {
        if call_key.starts_with(WAIVED) {
            break;
        }
        let Some(record) = shred_record(txn, &call_key)? else {
            continue;
        };
        let Some(jurisdiction) = call_key.first().and_then(|i| Jurisdiction::from_index(*i)) else {
            continue;
        };
        if complete_if_done(txn, jurisdiction, call_key, &record, &owing)? {
            completed += 1;
        }
    }
    Ok(CommandResult::ReceiptsRecorded { completed })
}
