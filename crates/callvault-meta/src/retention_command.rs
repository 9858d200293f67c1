//! Retention's commands (tags 30–39) and their results: cluster time, pending changes (the
//! two-person rule), purges paged through as many applies as they need, call-detail expiry, and
//! receipts waived for a volume that will be destroyed. They travel inside [`Command::Retention`]
//! and [`CommandResult::Retention`], in the same versioned command encoding: the tag byte is the
//! command's own.
//!
//! [`Command::Retention`]: crate::command::Command::Retention
//! [`CommandResult::Retention`]: crate::command::CommandResult::Retention

use callvault_core::approval::Actor;
use callvault_core::codec::{DecodeError, Reader, Writer};
use callvault_core::{CallId, Jurisdiction, UnixMillis};

use crate::approvals::{self, ChangeKind, ChangeState};
use crate::command::{MAX_EXPIRE_BATCH, MAX_PRINCIPAL, MAX_TEXT};

/// A retention command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionCommand {
    /// Tag 30: a voter's wall clock, for the cluster time. Not audited (one a second per voter).
    AttestTime {
        /// The voter.
        node_id: u64,
        /// Its wall clock when it proposed.
        wall: UnixMillis,
    },
    /// Tag 31: a change that waits for a second principal (an agency's privilege-flag request,
    /// another component's change such as a bulk export). Policy changes come as `PutPolicy`.
    ProposeChange {
        /// The jurisdiction it is for.
        jurisdiction: Jurisdiction,
        /// What it does.
        change: ChangeKind,
        /// Who proposes it.
        proposer: Actor,
        /// When.
        at: UnixMillis,
    },
    /// Tag 32: a second principal approves a pending change.
    ApproveChange {
        /// The change.
        change_id: u64,
        /// The approver.
        approver: Actor,
        /// When.
        at: UnixMillis,
    },
    /// Tag 33: a pending change is withdrawn, by its proposer or a principal who could approve it.
    CancelChange {
        /// The change.
        change_id: u64,
        /// Who withdraws it.
        by: Actor,
        /// When.
        at: UnixMillis,
    },
    /// Tag 34: the sweep leader asks that a change whose notice has passed take effect; `apply`
    /// re-checks the notice against the cluster time.
    EffectChange {
        /// The change.
        change_id: u64,
    },
    /// Tag 35: the leader continues a registration's purge with its next page.
    ContinuePurge {
        /// Whose registry.
        jurisdiction: Jurisdiction,
        /// The registered number's keyed hash.
        fingerprint: [u8; 32],
    },
    /// Tag 36: the sweeper's expiry of call-detail records it read as due at `as_of`.
    ExpireCallDetails {
        /// Whose calls.
        jurisdiction: Jurisdiction,
        /// The sweep's time: at most the cluster time.
        as_of: UnixMillis,
        /// At most [`MAX_EXPIRE_BATCH`] calls.
        calls: Vec<CallId>,
    },
    /// Tag 37: a member leaves with shreds pending and its volume will be destroyed: its receipts
    /// are no longer awaited, and the record says whose volume must go.
    WaiveReceipts {
        /// The departing member.
        node_id: u64,
        /// Who decided.
        principal: String,
        /// Why, for people.
        reason: String,
        /// When.
        at: UnixMillis,
    },
}

/// A retention command's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetentionResult {
    /// An attestation was recorded (or ignored: not a voter); the cluster time after it.
    TimeAttested {
        /// The cluster time, once a majority of voters attested.
        cluster_time: Option<UnixMillis>,
    },
    /// Where a change stands after the command.
    Change {
        /// The change.
        change_id: u64,
        /// Its state.
        state: ChangeState,
        /// When its notice ends, if it has one.
        notice_ends_at: Option<UnixMillis>,
    },
    /// One more page of a registration's purge.
    PurgeContinued {
        /// Recordings purged by this page.
        purged: u64,
        /// Whether the purge is complete.
        done: bool,
    },
}

fn read_jurisdiction(r: &mut Reader<'_>) -> Result<Jurisdiction, DecodeError> {
    let index = r.u8()?;
    Jurisdiction::from_index(index)
        .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))
}

fn read_call_id(r: &mut Reader<'_>) -> Result<CallId, DecodeError> {
    let text = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
    CallId::new(&text).map_err(|e| r.invalid("call_id", e.to_string()))
}

fn write_time(w: &mut Writer, time: Option<UnixMillis>) {
    w.bool(time.is_some()).i64(time.map_or(0, |t| t.0));
}

fn read_time(r: &mut Reader<'_>, field: &'static str) -> Result<Option<UnixMillis>, DecodeError> {
    let present = r.bool(field)?;
    let time = UnixMillis(r.i64()?);
    Ok(present.then_some(time))
}

impl RetentionCommand {
    /// The tags this module owns.
    pub const TAGS: std::ops::RangeInclusive<u8> = 30..=39;

    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RetentionCommand::AttestTime { .. } => "attest_time",
            RetentionCommand::ProposeChange { .. } => "propose_change",
            RetentionCommand::ApproveChange { .. } => "approve_change",
            RetentionCommand::CancelChange { .. } => "cancel_change",
            RetentionCommand::EffectChange { .. } => "effect_change",
            RetentionCommand::ContinuePurge { .. } => "continue_purge",
            RetentionCommand::ExpireCallDetails { .. } => "expire_call_details",
            RetentionCommand::WaiveReceipts { .. } => "waive_receipts",
        }
    }

    /// The person the command acts for, when it acts for one: its proof must be checked.
    pub fn acting_principal(&self) -> Option<&str> {
        match self {
            RetentionCommand::ProposeChange { proposer: a, .. }
            | RetentionCommand::ApproveChange { approver: a, .. }
            | RetentionCommand::CancelChange { by: a, .. } => Some(&a.name),
            RetentionCommand::WaiveReceipts { principal, .. } => Some(principal),
            _ => None,
        }
    }

    /// Writes the tag and the fields.
    pub fn encode_into(&self, w: &mut Writer) {
        match self {
            RetentionCommand::AttestTime { node_id, wall } => {
                w.u8(30).u64(*node_id).i64(wall.0);
            }
            RetentionCommand::ProposeChange {
                jurisdiction,
                change,
                proposer,
                at,
            } => {
                w.u8(31).u8(jurisdiction.index());
                approvals::write_kind(w, change);
                approvals::write_actor(w, proposer);
                w.i64(at.0);
            }
            RetentionCommand::ApproveChange {
                change_id,
                approver,
                at,
            } => {
                w.u8(32).u64(*change_id);
                approvals::write_actor(w, approver);
                w.i64(at.0);
            }
            RetentionCommand::CancelChange { change_id, by, at } => {
                w.u8(33).u64(*change_id);
                approvals::write_actor(w, by);
                w.i64(at.0);
            }
            RetentionCommand::EffectChange { change_id } => {
                w.u8(34).u64(*change_id);
            }
            RetentionCommand::ContinuePurge {
                jurisdiction,
                fingerprint,
            } => {
                w.u8(35).u8(jurisdiction.index()).bytes32(fingerprint);
            }
            RetentionCommand::ExpireCallDetails {
                jurisdiction,
                as_of,
                calls,
            } => {
                w.u8(36)
                    .u8(jurisdiction.index())
                    .i64(as_of.0)
                    .u32(calls.len() as u32);
                for call in calls {
                    w.str(call.as_str());
                }
            }
            RetentionCommand::WaiveReceipts {
                node_id,
                principal,
                reason,
                at,
            } => {
                w.u8(37).u64(*node_id).str(principal).str(reason).i64(at.0);
            }
        }
    }

    /// Reads the fields of the command with `tag` (one of [`Self::TAGS`]).
    pub fn decode_fields(tag: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match tag {
            30 => RetentionCommand::AttestTime {
                node_id: r.u64()?,
                wall: UnixMillis(r.i64()?),
            },
            31 => RetentionCommand::ProposeChange {
                jurisdiction: read_jurisdiction(r)?,
                change: approvals::read_kind(r)?,
                proposer: approvals::read_actor(r)?,
                at: UnixMillis(r.i64()?),
            },
            32 => RetentionCommand::ApproveChange {
                change_id: r.u64()?,
                approver: approvals::read_actor(r)?,
                at: UnixMillis(r.i64()?),
            },
            33 => RetentionCommand::CancelChange {
                change_id: r.u64()?,
                by: approvals::read_actor(r)?,
                at: UnixMillis(r.i64()?),
            },
            34 => RetentionCommand::EffectChange {
                change_id: r.u64()?,
            },
            35 => RetentionCommand::ContinuePurge {
                jurisdiction: read_jurisdiction(r)?,
                fingerprint: r.bytes32()?,
            },
            36 => {
                let jurisdiction = read_jurisdiction(r)?;
                let as_of = UnixMillis(r.i64()?);
                let count = r.u32()? as usize;
                if count > MAX_EXPIRE_BATCH {
                    return Err(r.invalid("calls", format!("{count} calls")));
                }
                let calls = (0..count)
                    .map(|_| read_call_id(r))
                    .collect::<Result<_, _>>()?;
                RetentionCommand::ExpireCallDetails {
                    jurisdiction,
                    as_of,
                    calls,
                }
            }
            37 => RetentionCommand::WaiveReceipts {
                node_id: r.u64()?,
                principal: r.str("principal", MAX_PRINCIPAL)?,
                reason: r.str("reason", MAX_TEXT)?,
                at: UnixMillis(r.i64()?),
            },
            t => return Err(r.invalid("command", format!("unknown tag {t}"))),
        })
    }
}

impl RetentionResult {
    /// Writes the tag and the fields.
    pub fn encode_into(&self, w: &mut Writer) {
        match self {
            RetentionResult::TimeAttested { cluster_time } => {
                w.u8(30);
                write_time(w, *cluster_time);
            }
            RetentionResult::Change {
                change_id,
                state,
                notice_ends_at,
            } => {
                w.u8(31).u64(*change_id);
                approvals::write_state(w, state);
                write_time(w, *notice_ends_at);
            }
            RetentionResult::PurgeContinued { purged, done } => {
                w.u8(32).u64(*purged).bool(*done);
            }
        }
    }

    /// Reads the fields of the result with `tag`.
    pub fn decode_fields(tag: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        Ok(match tag {
            30 => RetentionResult::TimeAttested {
                cluster_time: read_time(r, "cluster_time")?,
            },
            31 => RetentionResult::Change {
                change_id: r.u64()?,
                state: approvals::read_state(r)?,
                notice_ends_at: read_time(r, "notice_ends_at")?,
            },
            32 => RetentionResult::PurgeContinued {
                purged: r.u64()?,
                done: r.bool("done")?,
            },
            t => return Err(r.invalid("result", format!("unknown tag {t}"))),
        })
    }
}
