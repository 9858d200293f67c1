//! What happens to a call after its commit: expiry at the deadline, legal holds, recorded
//! content access with per-principal quotas, and the shred records that follow a crypto-shred
//! until every replica has sent its receipt.
//!
//! Like the rest of `apply`, every decision here is a call into `callvault-core` or a pure
//! function of the state and the command: no clock, no randomness.

use callvault_audit::{AccessDecision as AuditAccess, AuditEvent, PurgeReplica};
use callvault_core::call::{CallEvent, CallRecord, Hold, Lifecycle, TransitionError};
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::retention::{check_review_date, recording_deadline};
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use callvault_proto::v1 as pb;

use crate::apply::{
    self, ApplyError, Counters, LogPosition, counters, current_policy, put_counters,
};
use crate::audit_log::{self, Event};
use crate::command::{
    AccessDecision, AccessRequest, CommandResult, MAX_CHUNKS_PER_CALL, MAX_PRINCIPAL, Refusal,
};
use crate::keys::{self, *};
use crate::txn::Txn;

/// Why a recording's content is being destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShredKind {
    /// Found privileged: a purge.
    Purge,
    /// Its retention deadline passed.
    Expiry,
}

/// A crypto-shred in progress: the data key is already gone from the state; this waits for every
/// meta replica to compact it away and purge its log past `key_entry`, and for the blob shards to
/// drop `chunk_ids`. Deleted when complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShredRecord {
    /// Purge or expiry.
    pub kind: ShredKind,
    /// When the shred applied (the command's time).
    pub started_at: UnixMillis,
    /// Index of the Raft log entry that carried the wrapped key (the call's commit).
    pub key_entry: u64,
    /// The chunks to remove from every shard.
    pub chunk_ids: Vec<[u8; 32]>,
    /// Meta replicas that sent their receipt.
    pub meta_receipts: Vec<u64>,
    /// Whether the blob collector confirmed the chunks gone from every shard.
    pub blob_done: bool,
}

impl VersionedRecord for ShredRecord {
    const NAME: &'static str = "shred record";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u8(match self.kind {
            ShredKind::Purge => 0,
            ShredKind::Expiry => 1,
        })
        .i64(self.started_at.0)
        .u64(self.key_entry)
        .u32(self.chunk_ids.len() as u32);
        for id in &self.chunk_ids {
            w.bytes32(id);
        }
        w.u32(self.meta_receipts.len() as u32);
        for node in &self.meta_receipts {
            w.u64(*node);
        }
        w.bool(self.blob_done);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let kind = match r.u8()? {
            0 => ShredKind::Purge,
            1 => ShredKind::Expiry,
            t => return Err(r.invalid("kind", format!("unknown tag {t}"))),
        };
        let started_at = UnixMillis(r.i64()?);
        let key_entry = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_CHUNKS_PER_CALL {
            return Err(r.invalid("chunk_ids", format!("{count} chunks")));
        }
        let mut chunk_ids = Vec::with_capacity(count.min(4096));
        for _ in 0..count {
            chunk_ids.push(r.bytes32()?);
        }
        let count = r.u32()? as usize;
        if count > 64 {
            return Err(r.invalid("meta_receipts", format!("{count} receipts")));
        }
        let mut meta_receipts = Vec::with_capacity(count);
        for _ in 0..count {
            meta_receipts.push(r.u64()?);
        }
        let record = ShredRecord {
            kind,
            started_at,
            key_entry,
            chunk_ids,
            meta_receipts,
            blob_done: r.bool("blob_done")?,
        };
        r.finish()?;
        Ok(record)
    }
}

/// One principal's playback use in the current clock hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct QuotaUse {
    /// Hours since the epoch.
    hour: i64,
    calls: u64,
    bytes: u64,
}

impl VersionedRecord for QuotaUse {
    const NAME: &'static str = "quota use";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.i64(self.hour).u64(self.calls).u64(self.bytes);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let usage = QuotaUse {
            hour: r.i64()?,
            calls: r.u64()?,
            bytes: r.u64()?,
        };
        r.finish()?;
        Ok(usage)
    }
}

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
        txn.put(CF_CALLS, call_key, next.encode());
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
    let next = match call.apply(&CallEvent::PlaceHold(hold)) {
        Ok(next) => next,
        Err(e) => return Ok(CommandResult::Refused(transition_refusal(e))),
    };
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
    }
    put_counters(txn, jurisdiction, &counters);
    txn.put(CF_CALLS, call_key, next.encode());
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
    let voters = voters(txn)?;
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
        let metas_done = if voters.is_empty() {
            !record.meta_receipts.is_empty()
        } else {
            voters.iter().all(|v| record.meta_receipts.contains(v))
        };
        if metas_done && record.blob_done {
            txn.delete(CF_SHREDS, call_key);
            if record.kind == ShredKind::Purge {
                let mut c: Counters = counters(txn, *jurisdiction)?;
                c.purges_pending = c.purges_pending.saturating_sub(1);
                put_counters(txn, *jurisdiction, &c);
            }
            completed += 1;
        } else {
            txn.put(CF_SHREDS, call_key, record.encode());
        }
    }
    Ok(CommandResult::ReceiptsRecorded { completed })
}

/// The voters of the applied membership.
fn voters(txn: &Txn<'_>) -> Result<Vec<u64>, ApplyError> {
    let Some(bytes) = txn.get(CF_SM_META, KEY_MEMBERSHIP)? else {
        return Ok(Vec::new());
    };
    let invalid = |reason: String| {
        ApplyError::Decode(DecodeError::Invalid {
            record: "membership",
            field: "membership",
            reason,
        })
    };
    let stored: pb::StoredMembership =
        crate::convert::from_disk("membership", &bytes).map_err(|e| invalid(e.to_string()))?;
    let membership =
        crate::convert::stored_membership_from_pb(&stored).map_err(|e| invalid(e.to_string()))?;
    Ok(membership.membership().voter_ids().collect())
}
