//! Pending changes: the state-machine side of the two-person rule (`callvault_core::approval`).
//!
//! A change that deletes what cannot be restored — a policy version that shortens retention, a
//! privilege flag an agency asks for — waits here until a second principal approves it or its
//! notice passes in cluster time. Other branches file their own kinds ([`ChangeKind::External`],
//! e.g. a bulk export) and read back whether they were approved; taking effect then only marks
//! them so.
//!
//! Records are kept after they close (effected, cancelled, superseded) so their state can be
//! read back; the open ones are indexed by jurisdiction.

use callvault_core::approval::{
    Actor, Approval, ApprovalRule, Effect, PendingApproval, PrincipalRole,
};
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::policy::{RetentionPolicy, VersionedPolicy};
use callvault_core::{CallId, Jurisdiction, UnixMillis};

use crate::command::{MAX_PRINCIPAL, MAX_TEXT};
#[cfg(feature = "store")]
pub use store::{approved_external, get, open_changes, put};

/// Changes: `c | id (u64 BE)` → [`PendingChange`]; open ones also `o | jur | id` → ∅.
pub const CF_CHANGES: &str = "changes";
/// Longest kind name of an external change.
pub const MAX_KIND: usize = 64;
/// Longest payload of an external change.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Most approver roles a rule names, and most approvals a change keeps.
const MAX_LIST: usize = 16;

/// What a change does when it takes effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// Install `policy` as the next version, if the version in force is still `base_version`.
    Policy {
        /// The new rules.
        policy: RetentionPolicy,
        /// The version they were proposed on top of.
        base_version: u32,
    },
    /// Flag a call privileged (an agency's request, for a registry principal to approve).
    PrivilegeFlag {
        /// The call.
        call_id: CallId,
        /// Why.
        reason: String,
        /// Evidence.
        evidence: String,
    },
    /// Another component's change: taking effect marks it approved, nothing more.
    External {
        /// What it is, e.g. `bulk_export`.
        kind: String,
        /// Its owner's encoding of it.
        payload: Vec<u8>,
    },
}

impl ChangeKind {
    /// A short name for status and the audit log.
    pub fn name(&self) -> &str {
        match self {
            ChangeKind::Policy { .. } => "retention_policy",
            ChangeKind::PrivilegeFlag { .. } => "privilege_flag",
            ChangeKind::External { kind, .. } => kind,
        }
    }
}

/// Where a change is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeState {
    /// Waiting for a second principal or the end of its notice.
    Pending,
    /// Took effect.
    Effected {
        /// When (the approval's time, or the cluster time its notice passed at).
        at: UnixMillis,
        /// Why.
        effect: Effect,
    },
    /// Withdrawn.
    Cancelled {
        /// When.
        at: UnixMillis,
        /// By whom.
        by: String,
    },
    /// Overtaken before it took effect (another policy version was installed first).
    Superseded {
        /// When it was found overtaken.
        at: UnixMillis,
    },
}

/// A change and its approvals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingChange {
    /// Its id: unique, assigned from the log position of its proposal.
    pub id: u64,
    /// The rules it waits under.
    pub approval: PendingApproval,
    /// What it does.
    pub kind: ChangeKind,
    /// Where it is.
    pub state: ChangeState,
}

fn write_rule(w: &mut Writer, rule: &ApprovalRule) {
    w.u8(rule.approver_roles.len() as u8);
    for role in &rule.approver_roles {
        w.u8(role.tag());
    }
    w.bool(rule.notice_ends_at.is_some())
        .i64(rule.notice_ends_at.map_or(0, |t| t.0))
        .bool(rule.same_agency);
}

fn read_role(r: &mut Reader<'_>) -> Result<PrincipalRole, DecodeError> {
    let tag = r.u8()?;
    PrincipalRole::from_tag(tag).ok_or_else(|| r.invalid("role", format!("unknown tag {tag}")))
}

fn read_rule(r: &mut Reader<'_>) -> Result<ApprovalRule, DecodeError> {
    let count = usize::from(r.u8()?);
    if count > MAX_LIST {
        return Err(r.invalid("approver_roles", format!("{count} roles")));
    }
    let approver_roles = (0..count).map(|_| read_role(r)).collect::<Result<_, _>>()?;
    let has_notice = r.bool("notice")?;
    let notice = UnixMillis(r.i64()?);
    Ok(ApprovalRule {
        approver_roles,
        notice_ends_at: has_notice.then_some(notice),
        same_agency: r.bool("same_agency")?,
    })
}

fn read_jurisdiction(r: &mut Reader<'_>) -> Result<Jurisdiction, DecodeError> {
    let index = r.u8()?;
    Jurisdiction::from_index(index)
        .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))
}

/// Writes an actor (for commands that carry one).
pub fn write_actor(w: &mut Writer, actor: &Actor) {
    w.str(&actor.name)
        .str(&actor.agency)
        .u8(actor.role.tag())
        .bool(actor.all_jurisdictions)
        .u8(actor.jurisdictions.len() as u8);
    for j in &actor.jurisdictions {
        w.u8(j.index());
    }
}

/// Reads an actor.
pub fn read_actor(r: &mut Reader<'_>) -> Result<Actor, DecodeError> {
    let name = r.str("actor.name", MAX_PRINCIPAL)?;
    let agency = r.str("actor.agency", MAX_PRINCIPAL)?;
    let role = read_role(r)?;
    let all_jurisdictions = r.bool("actor.all")?;
    let count = usize::from(r.u8()?);
    if count > Jurisdiction::ALL.len() {
        return Err(r.invalid("actor.jurisdictions", format!("{count} jurisdictions")));
    }
    let jurisdictions = (0..count)
        .map(|_| read_jurisdiction(r))
        .collect::<Result<_, _>>()?;
    Ok(Actor {
        name,
        role,
        jurisdictions,
        all_jurisdictions,
        agency,
    })
}

impl VersionedRecord for PendingChange {
    const NAME: &'static str = "pending change";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        let a = &self.approval;
        w.u64(self.id).u8(a.jurisdiction.index());
        w.str(&a.proposer)
            .str(&a.proposer_agency)
            .i64(a.proposed_at.0);
        write_rule(&mut w, &a.rule);
        w.u8(a.approvals.len() as u8);
        for approval in &a.approvals {
            w.str(&approval.name)
                .u8(approval.role.tag())
                .i64(approval.at.0);
        }
        write_kind(&mut w, &self.kind);
        write_state(&mut w, &self.state);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let id = r.u64()?;
        let jurisdiction = read_jurisdiction(&mut r)?;
        let proposer = r.str("proposer", MAX_PRINCIPAL)?;
        let proposer_agency = r.str("proposer_agency", MAX_PRINCIPAL)?;
        let proposed_at = UnixMillis(r.i64()?);
        let rule = read_rule(&mut r)?;
        let count = usize::from(r.u8()?);
        if count > MAX_LIST {
            return Err(r.invalid("approvals", format!("{count} approvals")));
        }
        let mut approvals = Vec::with_capacity(count);
        for _ in 0..count {
            approvals.push(Approval {
                name: r.str("approval.name", MAX_PRINCIPAL)?,
                role: read_role(&mut r)?,
                at: UnixMillis(r.i64()?),
            });
        }
        let kind = read_kind(&mut r)?;
        let state = read_state(&mut r)?;
        r.finish()?;
        Ok(PendingChange {
            id,
            approval: PendingApproval {
                jurisdiction,
                proposer,
                proposer_agency,
                proposed_at,
                rule,
                approvals,
            },
            kind,
            state,
        })
    }
}

/// Writes what a change does.
pub fn write_kind(w: &mut Writer, kind: &ChangeKind) {
    match kind {
        ChangeKind::Policy {
            policy,
            base_version,
        } => {
            let versioned = VersionedPolicy {
                version: *base_version,
                policy: policy.clone(),
            };
            w.u8(0).blob(&versioned.encode());
        }
        ChangeKind::PrivilegeFlag {
            call_id,
            reason,
            evidence,
        } => {
            w.u8(1).str(call_id.as_str()).str(reason).str(evidence);
        }
        ChangeKind::External { kind, payload } => {
            w.u8(2).str(kind).blob(payload);
        }
    }
}

/// Reads what a change does.
pub fn read_kind(r: &mut Reader<'_>) -> Result<ChangeKind, DecodeError> {
    Ok(match r.u8()? {
        0 => {
            let v = VersionedPolicy::decode(&r.blob("policy", 64 * 1024)?)?;
            ChangeKind::Policy {
                policy: v.policy,
                base_version: v.version,
            }
        }
        1 => {
            let text = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
            ChangeKind::PrivilegeFlag {
                call_id: CallId::new(&text).map_err(|e| r.invalid("call_id", e.to_string()))?,
                reason: r.str("reason", MAX_TEXT)?,
                evidence: r.str("evidence", MAX_TEXT)?,
            }
        }
        2 => ChangeKind::External {
            kind: r.str("kind", MAX_KIND)?,
            payload: r.blob("payload", MAX_PAYLOAD)?,
        },
        t => return Err(r.invalid("kind", format!("unknown tag {t}"))),
    })
}

/// Writes where a change is.
pub fn write_state(w: &mut Writer, state: &ChangeState) {
    match state {
        ChangeState::Pending => w.u8(0),
        ChangeState::Effected { at, effect } => w.u8(1).i64(at.0).u8(match effect {
            Effect::Approved => 0,
            Effect::NoticeElapsed => 1,
        }),
        ChangeState::Cancelled { at, by } => w.u8(2).i64(at.0).str(by),
        ChangeState::Superseded { at } => w.u8(3).i64(at.0),
    };
}

/// Reads where a change is.
pub fn read_state(r: &mut Reader<'_>) -> Result<ChangeState, DecodeError> {
    Ok(match r.u8()? {
        0 => ChangeState::Pending,
        1 => ChangeState::Effected {
            at: UnixMillis(r.i64()?),
            effect: match r.u8()? {
                0 => Effect::Approved,
                1 => Effect::NoticeElapsed,
                t => return Err(r.invalid("effect", format!("unknown tag {t}"))),
            },
        },
        2 => ChangeState::Cancelled {
            at: UnixMillis(r.i64()?),
            by: r.str("by", MAX_PRINCIPAL)?,
        },
        3 => ChangeState::Superseded {
            at: UnixMillis(r.i64()?),
        },
        t => return Err(r.invalid("state", format!("unknown tag {t}"))),
    })
}

/// The changes family in the store (the records above are the pure half).
#[cfg(feature = "store")]
mod store {
    use callvault_core::Jurisdiction;
    use callvault_core::codec::VersionedRecord;
    use rocksdb::{DB, Direction, IteratorMode};

    use super::{CF_CHANGES, ChangeKind, ChangeState, PendingChange};
    use crate::apply::ApplyError;
    use crate::txn::Txn;

    const RECORD: u8 = b'c';
    const OPEN: u8 = b'o';
    /// Approved changes of other components, newest first:
    /// `a | jur | len | kind | len | proposer | !id (u64 BE)` → ∅.
    const APPROVED: u8 = b'a';

    fn approved_prefix(jurisdiction: Jurisdiction, kind: &str, proposer: &str) -> Vec<u8> {
        let mut key = vec![APPROVED, jurisdiction.index()];
        for part in [kind, proposer] {
            // Both are bounded far below 256 bytes by the decoder (MAX_KIND, MAX_PRINCIPAL).
            key.push(part.len().min(255) as u8);
            key.extend_from_slice(part.as_bytes());
        }
        key
    }

    fn record_key(id: u64) -> Vec<u8> {
        let mut key = vec![RECORD];
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    fn open_key(jurisdiction: Jurisdiction, id: u64) -> Vec<u8> {
        let mut key = vec![OPEN, jurisdiction.index()];
        key.extend_from_slice(&id.to_be_bytes());
        key
    }

    /// A change by id.
    pub fn get(txn: &Txn<'_>, id: u64) -> Result<Option<PendingChange>, ApplyError> {
        match txn.get(CF_CHANGES, &record_key(id))? {
            Some(bytes) => Ok(Some(PendingChange::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Stores `change`, keeping the open index in step with its state.
    pub fn put(txn: &mut Txn<'_>, change: &PendingChange) {
        let open = open_key(change.approval.jurisdiction, change.id);
        if change.state == ChangeState::Pending {
            txn.put(CF_CHANGES, open, Vec::new());
        } else {
            txn.delete(CF_CHANGES, open);
        }
        if let (ChangeKind::External { kind, .. }, ChangeState::Effected { .. }) =
            (&change.kind, &change.state)
        {
            let approval = &change.approval;
            let mut key = approved_prefix(approval.jurisdiction, kind, &approval.proposer);
            key.extend_from_slice(&(!change.id).to_be_bytes());
            txn.put(CF_CHANGES, key, Vec::new());
        }
        txn.put(CF_CHANGES, record_key(change.id), change.encode());
    }

    /// The newest `limit` approved changes of another component's `kind` that `proposer` filed
    /// for `jurisdiction` (e.g. trust's bulk exports: is one approved whose window holds now?),
    /// as `apply` sees them. Their payloads are the owner's to read.
    pub fn approved_external(
        txn: &Txn<'_>,
        jurisdiction: Jurisdiction,
        kind: &str,
        proposer: &str,
        limit: usize,
    ) -> Result<Vec<PendingChange>, ApplyError> {
        let prefix = approved_prefix(jurisdiction, kind, proposer);
        let mut out = Vec::new();
        for key in txn.keys_with_prefix(CF_CHANGES, &prefix, limit)? {
            let Some(id) = key
                .get(prefix.len()..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
            else {
                continue;
            };
            if let Some(change) = get(txn, !u64::from_be_bytes(id))? {
                out.push(change);
            }
        }
        Ok(out)
    }

    /// Up to `limit` open changes of `jurisdiction` (every jurisdiction when `None`), oldest first.
    pub fn open_changes(
        db: &DB,
        jurisdiction: Option<Jurisdiction>,
        limit: usize,
    ) -> Result<Vec<PendingChange>, ApplyError> {
        let cf = db.cf_handle(CF_CHANGES).expect("created at open");
        let mut prefix = vec![OPEN];
        if let Some(j) = jurisdiction {
            prefix.push(j.index());
        }
        let txn = Txn::new(db);
        let mut out = Vec::new();
        for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, _) = item?;
            if !key.starts_with(&prefix) || out.len() >= limit {
                break;
            }
            let Some(id) = key.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
                continue;
            };
            if let Some(change) = get(&txn, u64::from_be_bytes(id))? {
                out.push(change);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: ChangeKind, state: ChangeState) -> PendingChange {
        PendingChange {
            id: 42,
            approval: PendingApproval {
                jurisdiction: Jurisdiction::Tx,
                proposer: "op".into(),
                proposer_agency: "tx-da".into(),
                proposed_at: UnixMillis(5),
                rule: ApprovalRule {
                    approver_roles: vec![PrincipalRole::Agency, PrincipalRole::Registry],
                    notice_ends_at: Some(UnixMillis(99)),
                    same_agency: true,
                },
                approvals: vec![Approval {
                    name: "tx-2".into(),
                    role: PrincipalRole::Agency,
                    at: UnixMillis(7),
                }],
            },
            kind,
            state,
        }
    }

    #[test]
    fn every_kind_and_state_round_trips() {
        let kinds = [
            ChangeKind::Policy {
                policy: crate::command::tests::policy(10),
                base_version: 3,
            },
            ChangeKind::PrivilegeFlag {
                call_id: CallId::new("c-1").unwrap(),
                reason: "attorney".into(),
                evidence: "review".into(),
            },
            ChangeKind::External {
                kind: "bulk_export".into(),
                payload: vec![1, 2, 3],
            },
        ];
        let states = [
            ChangeState::Pending,
            ChangeState::Effected {
                at: UnixMillis(8),
                effect: Effect::NoticeElapsed,
            },
            ChangeState::Cancelled {
                at: UnixMillis(9),
                by: "op".into(),
            },
            ChangeState::Superseded { at: UnixMillis(10) },
        ];
        for kind in &kinds {
            for state in &states {
                let change = sample(kind.clone(), state.clone());
                assert_eq!(PendingChange::decode(&change.encode()), Ok(change));
            }
        }
        let bytes = sample(kinds[2].clone(), ChangeState::Pending).encode();
        for cut in 0..bytes.len() {
            assert!(PendingChange::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn actors_round_trip() {
        let actor = Actor {
            name: "tx-agency".into(),
            role: PrincipalRole::Agency,
            jurisdictions: vec![Jurisdiction::Tx, Jurisdiction::Ca],
            all_jurisdictions: false,
            agency: "tx-da".into(),
        };
        let mut w = Writer::with_version(1);
        write_actor(&mut w, &actor);
        let bytes = w.finish();
        let (_, mut r) = Reader::open("actor", &bytes).unwrap();
        assert_eq!(read_actor(&mut r).unwrap(), actor);
        r.finish().unwrap();
    }
}
