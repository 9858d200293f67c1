//! What each command does to the state machine. Every decision is a call into
//! `callvault-core`; this module only reads and writes the column families. No clock, no
//! randomness: the same command on the same state gives the same writes on every replica.

use callvault_core::call::{CallRecord, Lifecycle, PurgeReason};
use callvault_core::codec::{DecodeError, VersionedRecord};
use callvault_core::policy::VersionedPolicy;
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{Jurisdiction, UnixMillis};

use callvault_audit::AuditEvent;

use crate::audit_log::{self, AuditError, Event};
use crate::command::{Command, CommandResult, CommitOutcome, Refusal};
use crate::keys::{self, *};
use crate::lifecycle::{self, ShredKind};
use crate::txn::Txn;

/// Most past recordings one sensitive-number registration seals in a single apply: the bound
/// keeps one apply's write set in memory; registering again seals the next ones. (Purges have
/// no cap: they page, see [`crate::purges`].)
pub const MAX_SEAL_PER_APPLY: usize = 100_000;

/// An error reading or decoding the state machine's own data: the store is damaged.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// RocksDB failed.
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// A stored record does not decode.
    #[error("stored record: {0}")]
    Decode(#[from] DecodeError),
    /// The audit log could not be extended.
    #[error(transparent)]
    Audit(#[from] AuditError),
}

pub use crate::records::{Counters, LogPosition, SensitiveEntry};

/// Reads the counters of a jurisdiction.
pub fn counters(txn: &Txn<'_>, jurisdiction: Jurisdiction) -> Result<Counters, ApplyError> {
    match txn.get(CF_COUNTERS, &keys::jurisdiction(jurisdiction))? {
        Some(bytes) => Ok(Counters::decode(&bytes)?),
        None => Ok(Counters::default()),
    }
}

pub(crate) fn put_counters(txn: &mut Txn<'_>, jurisdiction: Jurisdiction, counters: &Counters) {
    txn.put(
        CF_COUNTERS,
        keys::jurisdiction(jurisdiction),
        counters.encode(),
    );
}

/// The policy in force for a jurisdiction.
pub fn current_policy(
    txn: &Txn<'_>,
    jurisdiction: Jurisdiction,
) -> Result<Option<VersionedPolicy>, ApplyError> {
    let Some(version) = txn.get(CF_POLICIES, &keys::jurisdiction(jurisdiction))? else {
        return Ok(None);
    };
    let version =
        u32::from_be_bytes(
            version
                .as_slice()
                .try_into()
                .map_err(|_| DecodeError::Invalid {
                    record: "policy pointer",
                    field: "version",
                    reason: format!("{} bytes", version.len()),
                })?,
        );
    let bytes = txn
        .get(CF_POLICIES, &keys::policy_version(jurisdiction, version))?
        .ok_or(DecodeError::Truncated {
            record: "policy record",
        })?;
    Ok(Some(VersionedPolicy::decode(&bytes)?))
}

/// Applies one command, carried by the entry at `at`, and records it in the audit log in the
/// same write set.
pub fn apply_command(
    txn: &mut Txn<'_>,
    command: &Command,
    at: LogPosition,
) -> Result<CommandResult, ApplyError> {
    if let Command::Batch(commands) = command {
        let results = commands
            .iter()
            .enumerate()
            .map(|(slot, c)| apply_in_slot(txn, c, at, slot))
            .collect::<Result<_, _>>()?;
        return Ok(CommandResult::Batch(results));
    }
    apply_in_slot(txn, command, at, 0)
}

/// Bits of a unique id that number the commands of one batch entry.
const SLOT_BITS: u32 = 10;
const _: () = assert!(crate::command::MAX_BATCH <= 1 << SLOT_BITS);

/// An id no other command of the log gets: the entry's index and the command's slot in it.
pub fn unique_id(at: LogPosition, slot: usize) -> u64 {
    at.index << SLOT_BITS | slot as u64
}

/// Applies the command in `slot` of the entry at `at` (a session's proposal once only).
fn apply_in_slot(
    txn: &mut Txn<'_>,
    command: &Command,
    at: LogPosition,
    slot: usize,
) -> Result<CommandResult, ApplyError> {
    match command {
        Command::OpenSession => crate::session::open(txn, unique_id(at, slot)),
        Command::Session(request) => {
            let numbered = crate::session::Numbered {
                session: request.session,
                seq: request.seq,
                acked_below: request.acked_below,
                at: unique_id(at, slot),
            };
            crate::session::apply_once(txn, &numbered, |txn| {
                apply_plain(txn, &request.command, at, slot)
            })
        }
        plain => apply_plain(txn, plain, at, slot),
    }
}

/// Decides a command that is neither a batch nor a session's and audits its result.
fn apply_plain(
    txn: &mut Txn<'_>,
    command: &Command,
    at: LogPosition,
    slot: usize,
) -> Result<CommandResult, ApplyError> {
    let result = match command.check_shape() {
        Err(refusal) => CommandResult::Refused(refusal),
        Ok(()) => decide(txn, command, at, slot)?,
    };
    if let Some(event) = audit_event(command, &result) {
        audit_log::append(txn, event)?;
    }
    Ok(result)
}

/// The audit entry for a command's result; retries that changed nothing record nothing new.
fn audit_event(command: &Command, result: &CommandResult) -> Option<Event> {
    let outcome = |r: &CommandResult| match r {
        CommandResult::Refused(refusal) => format!("refused: {refusal:?}"),
        _ => "ok".to_string(),
    };
    Some(match command {
        // A shortening waits as a change: its own entries say so (proposed, approved, and the
        // policy change when it takes effect).
        Command::PutPolicy { .. } if matches!(result, CommandResult::Retention(_)) => return None,
        Command::PutPolicy {
            jurisdiction,
            principal,
            at,
            ..
        } => Event {
            event: AuditEvent::PolicyChanged,
            time: *at,
            principal: principal.clone(),
            jurisdiction: Some(*jurisdiction),
            subject: "retention-policy".into(),
            outcome: match result {
                CommandResult::PolicyPut { version } => format!("version {version}"),
                other => outcome(other),
            },
            details: Vec::new(),
        },
        Command::CommitCall {
            call,
            principal,
            at,
            ..
        } => {
            let (event, text) = match result {
                CommandResult::CallCommitted {
                    duplicate: true, ..
                } => return None,
                CommandResult::CallCommitted {
                    outcome: CommitOutcome::Recorded,
                    ..
                } => (AuditEvent::CallRecorded, "recorded".to_string()),
                CommandResult::CallCommitted {
                    outcome: CommitOutcome::PurgedAtCommit,
                    ..
                } => (
                    AuditEvent::CallRefusedPrivileged,
                    "not recorded: number registered during ingest".to_string(),
                ),
                CommandResult::CallCommitted {
                    outcome: CommitOutcome::Blocked,
                    ..
                } => (
                    AuditEvent::CallRefusedPrivileged,
                    "not recorded: privileged".to_string(),
                ),
                other => (AuditEvent::CallRejected, outcome(other)),
            };
            Event {
                event,
                time: *at,
                principal: principal.clone(),
                jurisdiction: Some(call.jurisdiction),
                subject: call.call_id.as_str().to_string(),
                outcome: text,
                details: Vec::new(),
            }
        }
        Command::RegisterPrivileged { entry, fingerprint } => Event {
            event: AuditEvent::NumberRegistered,
            time: entry.registered_at,
            principal: entry.registrant.clone(),
            jurisdiction: Some(entry.jurisdiction),
            subject: audit_log::fingerprint_subject(fingerprint),
            outcome: match result {
                CommandResult::NumberRegistered { purged } => format!("{purged} calls purged"),
                other => outcome(other),
            },
            details: vec![("evidence", entry.evidence.chars().take(200).collect())],
        },
        Command::RegisterSensitive {
            jurisdiction,
            fingerprint,
            reason,
            principal,
            at,
            ..
        } => Event {
            event: AuditEvent::NumberRegistered,
            time: *at,
            principal: principal.clone(),
            jurisdiction: Some(*jurisdiction),
            subject: audit_log::fingerprint_subject(fingerprint),
            outcome: match result {
                CommandResult::SensitiveRegistered => "registered sensitive".to_string(),
                other => outcome(other),
            },
            details: vec![("reason", reason.chars().take(200).collect())],
        },
        Command::FlagPrivileged {
            jurisdiction,
            call_id,
            reason,
            evidence,
            principal,
            at,
        } => Event {
            event: AuditEvent::CallFlagged,
            time: *at,
            principal: principal.clone(),
            jurisdiction: Some(*jurisdiction),
            subject: call_id.as_str().to_string(),
            outcome: match result {
                CommandResult::CallFlagged { purged: true } => "flagged; purge started".into(),
                CommandResult::CallFlagged { purged: false } => {
                    "flagged; no content left to purge".into()
                }
                other => outcome(other),
            },
            details: vec![
                ("reason", reason.chars().take(200).collect()),
                ("evidence", evidence.chars().take(200).collect()),
            ],
        },
        Command::PlaceHold {
            jurisdiction,
            call_id,
            issuer,
            case_number,
            reason,
            at,
            ..
        } => Event {
            event: AuditEvent::HoldPlaced,
            time: *at,
            principal: issuer.clone(),
            jurisdiction: Some(*jurisdiction),
            subject: call_id.as_str().to_string(),
            outcome: match result {
                CommandResult::HoldPlaced { hold_id } => format!("hold {hold_id} placed"),
                other => outcome(other),
            },
            details: vec![
                ("case_number", case_number.chars().take(256).collect()),
                ("reason", reason.chars().take(200).collect()),
            ],
        },
        Command::ReleaseHold {
            jurisdiction,
            call_id,
            hold_id,
            principal,
            at,
            ..
        } => Event {
            event: AuditEvent::HoldReleased,
            time: *at,
            principal: principal.clone(),
            jurisdiction: Some(*jurisdiction),
            subject: call_id.as_str().to_string(),
            outcome: match result {
                CommandResult::HoldReleased { purged: true } => {
                    format!("hold {hold_id} released; sealed privileged recording purged")
                }
                CommandResult::HoldReleased { purged: false } => {
                    format!("hold {hold_id} released")
                }
                other => outcome(other),
            },
            details: Vec::new(),
        },
        // These append their own entries, one per call or per attempt.
        Command::Expire { .. }
        | Command::RecordAccess(_)
        | Command::KeysShredded { .. }
        | Command::ChunksCollected { .. }
        | Command::RecordAuthFailures(_)
        | Command::Batch(_)
        | Command::Session(_)
        | Command::OpenSession
        | Command::Retention(_) => return None,
    })
}

fn decide(
    txn: &mut Txn<'_>,
    command: &Command,
    position: LogPosition,
    slot: usize,
) -> Result<CommandResult, ApplyError> {
    match command {
        Command::PutPolicy {
            jurisdiction,
            policy,
            expected_version,
            principal,
            at,
        } => crate::retention::put_policy(
            txn,
            &crate::retention::PolicyProposal {
                jurisdiction: *jurisdiction,
                policy,
                expected_version: *expected_version,
                principal,
                at: *at,
            },
            unique_id(position, slot),
        ),
        Command::CommitCall {
            call,
            wrapped_key,
            chunk_ids,
            at,
            ..
        } => commit_call(txn, call, wrapped_key, chunk_ids, *at, position),
        Command::RegisterPrivileged { entry, fingerprint } => {
            crate::purges::register(txn, entry, fingerprint, position)
        }
        Command::RegisterSensitive {
            jurisdiction,
            number,
            fingerprint,
            reason,
            principal,
            at,
        } => {
            let record = SensitiveEntry {
                number: number.clone(),
                reason: reason.clone(),
                registrant: principal.clone(),
                registered_at: *at,
            };
            register_sensitive(txn, *jurisdiction, fingerprint, record.encode())
        }
        Command::FlagPrivileged {
            jurisdiction,
            call_id,
            principal,
            at,
            ..
        } => crate::purges::flag(
            txn,
            *jurisdiction,
            call_id,
            &crate::purges::Purge {
                at: *at,
                position,
                reason: PurgeReason::Flagged,
                principal,
            },
        ),
        Command::Expire {
            jurisdiction,
            as_of,
            calls,
        } => lifecycle::expire(txn, *jurisdiction, *as_of, calls, position),
        Command::PlaceHold {
            jurisdiction,
            call_id,
            issuer,
            agency,
            case_number,
            reason,
            review_date,
            at,
        } => lifecycle::place_hold(
            txn,
            &lifecycle::HoldRequest {
                jurisdiction: *jurisdiction,
                call_id,
                issuer,
                agency,
                case_number,
                reason,
                review_date: *review_date,
                at: *at,
            },
            unique_id(position, slot),
        ),
        Command::ReleaseHold {
            jurisdiction,
            call_id,
            hold_id,
            principal,
            agency,
            at,
        } => lifecycle::release_hold(
            txn,
            *jurisdiction,
            call_id,
            *hold_id,
            principal,
            agency,
            *at,
            position,
        ),
        Command::RecordAccess(request) => lifecycle::record_access(txn, request),
        Command::KeysShredded { node_id, calls, at } => {
            lifecycle::record_receipts(txn, lifecycle::Receipt::Meta(*node_id), calls, *at)
        }
        Command::ChunksCollected { shards, calls, at } => {
            lifecycle::record_receipts(txn, lifecycle::Receipt::Blob(shards), calls, *at)
        }
        Command::RecordAuthFailures(report) => {
            crate::auth_failures::apply(txn, report)?;
            Ok(CommandResult::Empty)
        }
        Command::Retention(command) => crate::retention::decide(txn, command, position, slot),
        Command::Batch(_) | Command::Session(_) | Command::OpenSession => {
            unreachable!("unrolled by apply_command")
        }
    }
}

/// Installs `policy` as the next version of `jurisdiction`'s policy, in force at once.
pub(crate) fn install_policy(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    policy: &callvault_core::RetentionPolicy,
) -> Result<u32, ApplyError> {
    let version = current_policy(txn, jurisdiction)?.map_or(0, |p| p.version) + 1;
    let record = VersionedPolicy {
        version,
        policy: policy.clone(),
    };
    txn.put(
        CF_POLICIES,
        keys::policy_version(jurisdiction, version),
        record.encode(),
    );
    txn.put(
        CF_POLICIES,
        keys::jurisdiction(jurisdiction),
        version.to_be_bytes().to_vec(),
    );
    Ok(version)
}

fn commit_call(
    txn: &mut Txn<'_>,
    proposed: &CallRecord,
    wrapped_key: &[u8],
    chunk_ids: &[[u8; 32]],
    at: UnixMillis,
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let jurisdiction = proposed.jurisdiction;
    let Some(policy) = current_policy(txn, jurisdiction)? else {
        return Ok(CommandResult::Refused(Refusal::NoPolicy));
    };
    if let Some(answer) = answer_known_id(txn, proposed)? {
        return Ok(answer);
    }
    if let Some(refusal) = crate::retention::refuse_stale_commit(txn, at)? {
        return Ok(CommandResult::Refused(refusal));
    }
    let privileged_now = txn
        .get(
            CF_PRIVILEGED,
            &keys::number_prefix(jurisdiction, &proposed.number_fingerprint),
        )?
        .is_some();
    let mut record = proposed.clone();
    record.committed_under_policy = policy.version;
    let mut counters = counters(txn, jurisdiction)?;
    counters.calls_total += 1;
    let commit = Commit {
        policy: &policy.policy,
        at,
        position,
    };
    let (outcome, kept) = match proposed.lifecycle {
        Lifecycle::Live if privileged_now => {
            record.lifecycle = Lifecycle::Purged {
                at,
                reason: PurgeReason::RegisteredDuringIngest,
            };
            let kept = commit_purged(txn, &record, chunk_ids, &commit, &mut counters)?;
            (CommitOutcome::PurgedAtCommit, kept)
        }
        Lifecycle::Live => {
            commit_recorded(txn, &mut record, wrapped_key, chunk_ids)?;
            counters.live += 1;
            (CommitOutcome::Recorded, true)
        }
        _ => {
            counters.blocked_privileged += 1;
            let kept = commit_kept_detail(
                txn,
                &record,
                &commit,
                TombstoneOutcome::Refused,
                &mut counters,
            )?;
            (CommitOutcome::Blocked, kept)
        }
    };
    put_counters(txn, jurisdiction, &counters);
    if kept {
        // Retries of this call answer with this position, so the platform sees one receipt.
        txn.put(
            CF_COMMITS,
            keys::call(jurisdiction, &proposed.call_id),
            position.encode(),
        );
    }
    Ok(CommandResult::CallCommitted {
        outcome,
        policy_version: policy.version,
        duplicate: false,
        committed_at: position,
    })
}

/// What a commit is decided under.
struct Commit<'a> {
    policy: &'a callvault_core::RetentionPolicy,
    at: UnixMillis,
    position: LogPosition,
}

/// The answer for a call id already used: a retry of the same call gets its first receipt, a
/// purged or retired id is refused, other content under the id is a conflict. `None` for a new
/// id.
fn answer_known_id(
    txn: &Txn<'_>,
    proposed: &CallRecord,
) -> Result<Option<CommandResult>, ApplyError> {
    let jurisdiction = proposed.jurisdiction;
    if let Some(tombstone) = crate::tombstones::find(txn, jurisdiction, &proposed.call_id)? {
        return Ok(Some(match (tombstone.outcome, proposed.lifecycle) {
            // A privileged call's retry: refused again, as the first time.
            (TombstoneOutcome::Purged | TombstoneOutcome::Refused, Lifecycle::Blocked) => {
                CommandResult::CallCommitted {
                    outcome: CommitOutcome::Blocked,
                    policy_version: 0,
                    duplicate: true,
                    committed_at: LogPosition::default(),
                }
            }
            (TombstoneOutcome::Expired, _) => CommandResult::Refused(Refusal::CallIdRetired),
            _ => CommandResult::Refused(Refusal::CallIdPurged),
        }));
    }
    let call_key = keys::call(jurisdiction, &proposed.call_id);
    let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
        return Ok(None);
    };
    let existing = CallRecord::decode(&bytes)?;
    Ok(Some(match existing.lifecycle {
        Lifecycle::Purged { .. } | Lifecycle::PrivilegedUnderSeal { .. } => {
            CommandResult::Refused(Refusal::CallIdPurged)
        }
        _ if existing.same_content(proposed) => CommandResult::CallCommitted {
            outcome: match existing.lifecycle {
                Lifecycle::Blocked => CommitOutcome::Blocked,
                _ => CommitOutcome::Recorded,
            },
            policy_version: existing.committed_under_policy,
            duplicate: true,
            committed_at: match txn.get(CF_COMMITS, &call_key)? {
                Some(bytes) => LogPosition::decode(&bytes)?,
                None => LogPosition::default(),
            },
        },
        _ => CommandResult::Refused(Refusal::CallIdConflict),
    }))
}

/// A recorded call: its key, chunks, chunk references and every index of a live recording.
fn commit_recorded(
    txn: &mut Txn<'_>,
    record: &mut CallRecord,
    wrapped_key: &[u8],
    chunk_ids: &[[u8; 32]],
) -> Result<(), ApplyError> {
    let jurisdiction = record.jurisdiction;
    let call_key = keys::call(jurisdiction, &record.call_id);
    if txn
        .get(
            CF_SENSITIVE,
            &keys::number_prefix(jurisdiction, &record.number_fingerprint),
        )?
        .is_some()
    {
        // Registered sensitive while the call streamed: sealed like the others.
        record.sealed = true;
    }
    txn.put(CF_KEYS, call_key.clone(), wrapped_key.to_vec());
    let mut ids = Vec::with_capacity(chunk_ids.len() * 32);
    for id in chunk_ids {
        ids.extend_from_slice(id);
        txn.put(CF_CHUNK_REFS, keys::chunk_ref(id, &call_key), Vec::new());
    }
    txn.put(CF_CHUNKS, call_key.clone(), ids);
    index_live(txn, record);
    index_history(txn, record);
    txn.put(CF_CALLS, call_key, record.encode());
    Ok(())
}

/// A call registered privileged while it streamed: the key is never stored, the chunks are
/// shredded like a purge's (the key was in this entry, so the shred waits for every replica to
/// purge it), and what the policy keeps of privileged calls is kept.
fn commit_purged(
    txn: &mut Txn<'_>,
    record: &CallRecord,
    chunk_ids: &[[u8; 32]],
    commit: &Commit<'_>,
    counters: &mut Counters,
) -> Result<bool, ApplyError> {
    let call_key = keys::call(record.jurisdiction, &record.call_id);
    lifecycle::shred(
        txn,
        &call_key,
        ShredKind::Purge,
        commit.at,
        commit.position,
        Some(chunk_ids.to_vec()),
    )?;
    counters.purged += 1;
    counters.purges_pending += 1;
    commit_kept_detail(txn, record, commit, TombstoneOutcome::Purged, counters)
}

/// A call without content at its commit: a listed call-detail record, or only a tombstone.
fn commit_kept_detail(
    txn: &mut Txn<'_>,
    record: &CallRecord,
    commit: &Commit<'_>,
    outcome: TombstoneOutcome,
    counters: &mut Counters,
) -> Result<bool, ApplyError> {
    let kept = crate::details::keep_or_tombstone(txn, record, commit.policy, outcome, commit.at)?;
    if kept {
        index_history(txn, record);
        counters.details_kept += 1;
    }
    Ok(kept)
}

/// The indexes of live recordings: by start time (the expiry index) and by number (for purges).
fn index_live(txn: &mut Txn<'_>, call: &CallRecord) {
    let j = call.jurisdiction;
    txn.put(
        CF_BY_START,
        keys::by_start(j, call.started_at, &call.call_id),
        Vec::new(),
    );
    txn.put(
        CF_BY_NUMBER,
        keys::by_number(j, &call.number_fingerprint, &call.call_id),
        Vec::new(),
    );
}

/// The listing indexes of every stored call record, whatever its state.
pub(crate) fn index_history(txn: &mut Txn<'_>, call: &CallRecord) {
    let j = call.jurisdiction;
    txn.put(
        CF_BY_TIME,
        keys::by_start(j, call.started_at, &call.call_id),
        Vec::new(),
    );
    txn.put(
        CF_BY_FACILITY,
        keys::by_party(j, &call.facility_id, call.started_at, &call.call_id),
        Vec::new(),
    );
    txn.put(
        CF_BY_INMATE,
        keys::by_party(j, &call.inmate_id, call.started_at, &call.call_id),
        Vec::new(),
    );
}

/// A sensitive number's registry entry.
fn register_sensitive(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    fingerprint: &[u8; 32],
    record: Vec<u8>,
) -> Result<CommandResult, ApplyError> {
    let key = keys::number_prefix(jurisdiction, fingerprint);
    if txn.get(CF_SENSITIVE, &key)?.is_none() {
        txn.put(CF_SENSITIVE, key.clone(), record);
    }
    // Past recordings of calls to the number are sealed too.
    for call_key in crate::purges::calls_to_number(txn, jurisdiction, &key, MAX_SEAL_PER_APPLY)? {
        let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
            continue;
        };
        let mut call = CallRecord::decode(&bytes)?;
        if !call.sealed {
            call.sealed = true;
            txn.put(CF_CALLS, call_key, call.encode());
        }
    }
    Ok(CommandResult::SensitiveRegistered)
}

/// Removes a call from the listing indexes (its record is going).
pub(crate) fn unindex_history(txn: &mut Txn<'_>, call: &CallRecord) {
    let j = call.jurisdiction;
    txn.delete(
        CF_BY_TIME,
        keys::by_start(j, call.started_at, &call.call_id),
    );
    txn.delete(
        CF_BY_FACILITY,
        keys::by_party(j, &call.facility_id, call.started_at, &call.call_id),
    );
    txn.delete(
        CF_BY_INMATE,
        keys::by_party(j, &call.inmate_id, call.started_at, &call.call_id),
    );
}

/// Removes a recording from the indexes of live recordings (its content is going).
pub(crate) fn unindex_call(txn: &mut Txn<'_>, call: &CallRecord) {
    let j = call.jurisdiction;
    txn.delete(
        CF_BY_START,
        keys::by_start(j, call.started_at, &call.call_id),
    );
    txn.delete(
        CF_BY_NUMBER,
        keys::by_number(j, &call.number_fingerprint, &call.call_id),
    );
}
