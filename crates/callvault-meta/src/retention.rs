//! What retention's commands do in `apply`: cluster time, pending changes under the two-person
//! rule (policy shortenings, agency flag requests, other components' changes), paged purges,
//! call-detail expiry and waived receipts. Every decision is a rule of `callvault-core` applied
//! to the state and the cluster time the state machine keeps.

use callvault_audit::AuditEvent;
use callvault_core::approval::{Actor, Effect, PendingApproval};
use callvault_core::retention::{FlagRule, PolicyChangeRule, flag_rule, policy_change_rule};
use callvault_core::{Jurisdiction, RetentionPolicy, UnixMillis};

use crate::apply::{ApplyError, LogPosition, current_policy, install_policy, unique_id};
use crate::approvals::{self, ChangeKind, ChangeState, PendingChange};
use crate::audit_log::{self, Event};
use crate::command::{CommandResult, Refusal};
use crate::retention_command::{RetentionCommand, RetentionResult};
use crate::txn::Txn;

/// The longest a commit may take from its proposal (stamped by ingest) to its apply, in cluster
/// time. Longer, and its chunks may already have been swept as orphans: it is refused, and the
/// platform retries the call.
pub const MAX_COMMIT_DELAY_MS: i64 = 30_000;

/// Applies a retention command.
pub(crate) fn decide(
    txn: &mut Txn<'_>,
    command: &RetentionCommand,
    position: LogPosition,
    slot: usize,
) -> Result<CommandResult, ApplyError> {
    match command {
        RetentionCommand::AttestTime { node_id, wall } => {
            let cluster_time = crate::clock::attest(txn, *node_id, *wall)?;
            Ok(CommandResult::Retention(RetentionResult::TimeAttested {
                cluster_time,
            }))
        }
        RetentionCommand::ProposeChange {
            jurisdiction,
            change,
            proposer,
            at,
        } => propose_change(
            txn,
            *jurisdiction,
            change,
            proposer,
            *at,
            unique_id(position, slot),
        ),
        RetentionCommand::ApproveChange {
            change_id,
            approver,
            at,
        } => approve_change(txn, *change_id, approver, *at, position),
        RetentionCommand::CancelChange { change_id, by, at } => {
            cancel_change(txn, *change_id, by, *at)
        }
        RetentionCommand::EffectChange { change_id } => effect_due(txn, *change_id, position),
        RetentionCommand::ContinuePurge {
            jurisdiction,
            fingerprint,
        } => crate::purges::continue_purge(txn, *jurisdiction, fingerprint, position),
        RetentionCommand::ExpireCallDetails {
            jurisdiction,
            as_of,
            calls,
        } => crate::details::expire(txn, *jurisdiction, *as_of, calls),
        RetentionCommand::WaiveReceipts {
            node_id,
            principal,
            reason,
            at,
        } => crate::lifecycle::waive_receipts(txn, *node_id, principal, reason, *at),
    }
}

/// Refuses a commit proposed longer than [`MAX_COMMIT_DELAY_MS`] ago in cluster time.
pub(crate) fn refuse_stale_commit(
    txn: &Txn<'_>,
    proposed_at: UnixMillis,
) -> Result<Option<Refusal>, ApplyError> {
    Ok(match crate::clock::cluster_time(txn)? {
        Some(now) if now.0.saturating_sub(proposed_at.0) > MAX_COMMIT_DELAY_MS => {
            Some(Refusal::NotAllowed(format!(
                "the commit was stamped {} ms before the cluster time when it applied (more than \
                 {MAX_COMMIT_DELAY_MS}): its stream or commit took too long, or the ingest node's \
                 clock is behind the cluster's; retry the call",
                now.0.saturating_sub(proposed_at.0)
            )))
        }
        _ => None,
    })
}

/// A `PutPolicy`'s fields.
pub(crate) struct PolicyProposal<'a> {
    pub jurisdiction: Jurisdiction,
    pub policy: &'a RetentionPolicy,
    pub expected_version: u32,
    pub principal: &'a str,
    pub at: UnixMillis,
}

/// `PutPolicy`: in force at once unless it shortens retention; then a pending change that takes
/// effect after the current policy's notice (counted in cluster time) or with a second
/// principal's approval.
pub(crate) fn put_policy(
    txn: &mut Txn<'_>,
    proposal: &PolicyProposal<'_>,
    change_id: u64,
) -> Result<CommandResult, ApplyError> {
    let j = proposal.jurisdiction;
    let current = current_policy(txn, j)?;
    let current_version = current.as_ref().map_or(0, |p| p.version);
    if current_version != proposal.expected_version {
        return Ok(CommandResult::Refused(Refusal::PolicyVersionMismatch {
            current: current_version,
        }));
    }
    if let Err(violation) = proposal.policy.validate() {
        return Ok(CommandResult::Refused(Refusal::InvalidPolicy(
            violation.to_string(),
        )));
    }
    let now = crate::clock::cluster_time(txn)?;
    let rule = policy_change_rule(
        current.as_ref().map(|p| &p.policy),
        proposal.policy,
        now.unwrap_or(proposal.at),
    );
    match rule {
        PolicyChangeRule::Immediate => {
            let version = install_policy(txn, j, proposal.policy)?;
            Ok(CommandResult::PolicyPut { version })
        }
        // The notice must be counted in cluster time, never in a proposer's clock.
        PolicyChangeRule::Pending { .. } if now.is_none() => {
            Ok(CommandResult::Refused(Refusal::NoClusterTime))
        }
        PolicyChangeRule::Pending { fields, rule } => {
            let change = PendingChange {
                id: change_id,
                approval: PendingApproval {
                    jurisdiction: j,
                    proposer: proposal.principal.to_string(),
                    // A policy's rule asks for the jurisdiction, not the agency.
                    proposer_agency: proposal.principal.to_string(),
                    proposed_at: proposal.at,
                    rule,
                    approvals: Vec::new(),
                },
                kind: ChangeKind::Policy {
                    policy: proposal.policy.clone(),
                    base_version: current_version,
                },
                state: ChangeState::Pending,
            };
            let detail = format!("shortens {}", fields.join(", "));
            open_change(txn, &change, &detail)
        }
    }
}

fn propose_change(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    change: &ChangeKind,
    proposer: &Actor,
    at: UnixMillis,
    change_id: u64,
) -> Result<CommandResult, ApplyError> {
    if !proposer.covers(jurisdiction) {
        return Ok(CommandResult::Refused(Refusal::NotAllowed(format!(
            "{} is not a principal of {}",
            proposer.name,
            jurisdiction.code()
        ))));
    }
    let rule = match change {
        ChangeKind::PrivilegeFlag { .. } => match flag_rule(proposer) {
            FlagRule::NeedsApproval(rule) => rule,
            FlagRule::Immediate => {
                return Ok(refused("a registry principal flags a call directly"));
            }
            FlagRule::Refused => {
                return Ok(refused("only an agency may ask for a privilege flag"));
            }
        },
        ChangeKind::External { kind, .. } => match callvault_core::approval::external_rule(kind) {
            Some(rule) => rule,
            None => {
                return Ok(refused(&format!(
                    "no approval rule for changes of kind {kind}"
                )));
            }
        },
        ChangeKind::Policy { .. } => {
            return Ok(refused("policy changes are proposed with PutPolicy"));
        }
    };
    let pending = PendingChange {
        id: change_id,
        approval: PendingApproval {
            jurisdiction,
            proposer: proposer.name.clone(),
            proposer_agency: proposer.agency.clone(),
            proposed_at: at,
            rule,
            approvals: Vec::new(),
        },
        kind: change.clone(),
        state: ChangeState::Pending,
    };
    open_change(txn, &pending, "waits for a second principal")
}

fn refused(reason: &str) -> CommandResult {
    CommandResult::Refused(Refusal::NotAllowed(reason.to_string()))
}

/// Files a new pending change and audits it.
fn open_change(
    txn: &mut Txn<'_>,
    change: &PendingChange,
    detail: &str,
) -> Result<CommandResult, ApplyError> {
    approvals::put(txn, change);
    audit_change(
        txn,
        change,
        AuditEvent::ChangeProposed,
        &change.approval.proposer,
        change.approval.proposed_at,
        detail,
    )?;
    Ok(change_result(change))
}

fn change_result(change: &PendingChange) -> CommandResult {
    CommandResult::Retention(RetentionResult::Change {
        change_id: change.id,
        state: change.state.clone(),
        notice_ends_at: change.approval.rule.notice_ends_at,
    })
}

fn audit_change(
    txn: &mut Txn<'_>,
    change: &PendingChange,
    event: AuditEvent,
    principal: &str,
    time: UnixMillis,
    outcome: &str,
) -> Result<(), ApplyError> {
    audit_log::append(
        txn,
        Event {
            event,
            time,
            principal: principal.to_string(),
            jurisdiction: Some(change.approval.jurisdiction),
            subject: format!("change-{}", change.id),
            outcome: outcome.chars().take(200).collect(),
            details: vec![("kind", change.kind.name().chars().take(64).collect())],
        },
    )?;
    Ok(())
}

/// The change with `id` while it is pending.
fn pending(txn: &Txn<'_>, id: u64) -> Result<Result<PendingChange, Refusal>, ApplyError> {
    Ok(match approvals::get(txn, id)? {
        None => Err(Refusal::NoSuchChange),
        Some(change) if change.state != ChangeState::Pending => Err(Refusal::ChangeClosed),
        Some(change) => Ok(change),
    })
}

fn approve_change(
    txn: &mut Txn<'_>,
    change_id: u64,
    approver: &Actor,
    at: UnixMillis,
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let change = match pending(txn, change_id)? {
        Ok(change) => change,
        Err(refusal) => return Ok(CommandResult::Refused(refusal)),
    };
    let approval = match change.approval.approve(approver, at) {
        Ok(approval) => approval,
        Err(e) => return Ok(CommandResult::Refused(Refusal::Approval(e.to_string()))),
    };
    let change = PendingChange { approval, ..change };
    audit_change(
        txn,
        &change,
        AuditEvent::ChangeApproved,
        &approver.name,
        at,
        "approved",
    )?;
    take_effect(txn, change, Effect::Approved, at, position)
}

/// `EffectChange`: a change whose notice has passed in cluster time takes effect.
fn effect_due(
    txn: &mut Txn<'_>,
    change_id: u64,
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let change = match pending(txn, change_id)? {
        Ok(change) => change,
        Err(refusal) => return Ok(CommandResult::Refused(refusal)),
    };
    let now = crate::clock::cluster_time(txn)?;
    match (change.approval.effect(now), now) {
        (Some(effect), Some(now)) => take_effect(txn, change, effect, now, position),
        _ => Ok(CommandResult::Refused(Refusal::AheadOfClusterTime {
            cluster_time: now,
        })),
    }
}

fn cancel_change(
    txn: &mut Txn<'_>,
    change_id: u64,
    by: &Actor,
    at: UnixMillis,
) -> Result<CommandResult, ApplyError> {
    let mut change = match pending(txn, change_id)? {
        Ok(change) => change,
        Err(refusal) => return Ok(CommandResult::Refused(refusal)),
    };
    let approval = &change.approval;
    let may = by.name == approval.proposer
        || (by.covers(approval.jurisdiction) && approval.rule.approver_roles.contains(&by.role));
    if !may {
        return Ok(refused(
            "only the proposer or a principal who could approve it may withdraw a change",
        ));
    }
    change.state = ChangeState::Cancelled {
        at,
        by: by.name.clone(),
    };
    approvals::put(txn, &change);
    audit_change(
        txn,
        &change,
        AuditEvent::ChangeCancelled,
        &by.name,
        at,
        "withdrawn",
    )?;
    Ok(change_result(&change))
}

/// Applies what a change does and closes it.
fn take_effect(
    txn: &mut Txn<'_>,
    mut change: PendingChange,
    effect: Effect,
    at: UnixMillis,
    position: LogPosition,
) -> Result<CommandResult, ApplyError> {
    let j = change.approval.jurisdiction;
    let outcome: String = match &change.kind {
        ChangeKind::Policy {
            policy,
            base_version,
        } => {
            let current = current_policy(txn, j)?.map_or(0, |p| p.version);
            if current != *base_version {
                change.state = ChangeState::Superseded { at };
                approvals::put(txn, &change);
                audit_change(
                    txn,
                    &change,
                    AuditEvent::ChangeCancelled,
                    "retention",
                    at,
                    &format!("superseded: policy v{current} was installed first"),
                )?;
                return Ok(change_result(&change));
            }
            let version = install_policy(txn, j, policy)?;
            audit_log::append(
                txn,
                Event {
                    event: AuditEvent::PolicyChanged,
                    time: at,
                    principal: change.approval.proposer.clone(),
                    jurisdiction: Some(j),
                    subject: "retention-policy".into(),
                    outcome: format!("version {version} (change-{})", change.id),
                    details: Vec::new(),
                },
            )?;
            return close_effected(
                txn,
                change,
                effect,
                at,
                &format!("policy v{version} in force"),
                false,
            );
        }
        ChangeKind::PrivilegeFlag { call_id, .. } => {
            let purge = crate::purges::Purge {
                at,
                position,
                reason: callvault_core::PurgeReason::Flagged,
                principal: &change.approval.proposer.clone(),
            };
            match crate::purges::flag(txn, j, call_id, &purge)? {
                CommandResult::CallFlagged { purged: true } => "flagged; purge started".into(),
                _ => "flagged; no content left to purge".into(),
            }
        }
        ChangeKind::External { .. } => "approved".into(),
    };
    close_effected(txn, change, effect, at, &outcome, true)
}

/// Marks a change effected, audits it unless its effect was audited already, and answers.
fn close_effected(
    txn: &mut Txn<'_>,
    mut change: PendingChange,
    effect: Effect,
    at: UnixMillis,
    outcome: &str,
    audit: bool,
) -> Result<CommandResult, ApplyError> {
    change.state = ChangeState::Effected { at, effect };
    approvals::put(txn, &change);
    if audit {
        let how = match effect {
            Effect::Approved => "approved by a second principal",
            Effect::NoticeElapsed => "notice elapsed",
        };
        audit_change(
            txn,
            &change,
            AuditEvent::ChangeEffected,
            "retention",
            at,
            &format!("{how}: {outcome}"),
        )?;
    }
    Ok(change_result(&change))
}
