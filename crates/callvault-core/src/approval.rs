//! Irreversible changes need a second principal or a notice period.
//!
//! One generic mechanism serves every change that deletes what cannot be restored (a policy that
//! shortens retention, a privilege flag asked for by an agency) and every change another branch
//! wants a second pair of eyes on (a bulk export): the change waits as a [`PendingApproval`]
//! until a second principal allowed by its [`ApprovalRule`] approves it, or, where the rule has
//! one, until its notice period has passed in cluster time.
//!
//! These are the rules only; the state machine stores pending changes and applies them.

use crate::jurisdiction::Jurisdiction;
use crate::time::UnixMillis;

/// The role of a principal, as the commands that act for one carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PrincipalRole {
    /// A call platform.
    Platform,
    /// A jurisdiction's agency.
    Agency,
    /// A privileged-number registry.
    Registry,
    /// An auditor.
    Auditor,
    /// A cluster operator.
    Operator,
}

impl PrincipalRole {
    /// Every role, in tag order.
    pub const ALL: [PrincipalRole; 5] = [
        PrincipalRole::Platform,
        PrincipalRole::Agency,
        PrincipalRole::Registry,
        PrincipalRole::Auditor,
        PrincipalRole::Operator,
    ];

    /// The one-byte tag of the role in stored records.
    pub fn tag(self) -> u8 {
        match self {
            PrincipalRole::Platform => 0,
            PrincipalRole::Agency => 1,
            PrincipalRole::Registry => 2,
            PrincipalRole::Auditor => 3,
            PrincipalRole::Operator => 4,
        }
    }

    /// The role of a tag.
    pub fn from_tag(tag: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.tag() == tag)
    }

    /// The role's name as principals files spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PrincipalRole::Platform => "platform",
            PrincipalRole::Agency => "agency",
            PrincipalRole::Registry => "registry",
            PrincipalRole::Auditor => "auditor",
            PrincipalRole::Operator => "operator",
        }
    }
}

/// Who acts: a principal's name, role and the jurisdictions it is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Actor {
    /// The principal's name (unique in the principals file).
    pub name: String,
    /// Its role.
    pub role: PrincipalRole,
    /// The jurisdictions it may act for; empty with `all_jurisdictions` for `*`.
    pub jurisdictions: Vec<Jurisdiction>,
    /// Scoped to every jurisdiction (`*`).
    pub all_jurisdictions: bool,
    /// The agency it belongs to (the principals file's `agency`, defaulting to its name).
    pub agency: String,
}

impl Actor {
    /// Whether the actor may act for `jurisdiction`.
    pub fn covers(&self, jurisdiction: Jurisdiction) -> bool {
        self.all_jurisdictions || self.jurisdictions.contains(&jurisdiction)
    }
}

/// What a pending change needs before it takes effect.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ApprovalRule {
    /// Roles a second approver may have; the approver must also be scoped to the change's
    /// jurisdiction and be another principal than the proposer.
    pub approver_roles: Vec<PrincipalRole>,
    /// When the change takes effect without approval (its notice period ends), if ever.
    pub notice_ends_at: Option<UnixMillis>,
    /// The approver must belong to the proposer's agency (a bulk export), not only to its
    /// jurisdiction.
    pub same_agency: bool,
}

/// An approval given.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Approval {
    /// The approver's name.
    pub name: String,
    /// The approver's role.
    pub role: PrincipalRole,
    /// When.
    pub at: UnixMillis,
}

/// A change waiting for a second principal or the end of its notice.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PendingApproval {
    /// The jurisdiction the change is for.
    pub jurisdiction: Jurisdiction,
    /// The name of the principal that proposed it.
    pub proposer: String,
    /// The proposer's agency.
    pub proposer_agency: String,
    /// When.
    pub proposed_at: UnixMillis,
    /// What it needs.
    pub rule: ApprovalRule,
    /// Approvals given so far.
    pub approvals: Vec<Approval>,
}

/// Why an approval is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    /// The proposer cannot be its own second principal.
    #[error("the proposer cannot approve its own change")]
    SamePrincipal,
    /// The approver's role may not approve this change.
    #[error("role {0} may not approve this change")]
    WrongRole(&'static str),
    /// The approver is not scoped to the change's jurisdiction.
    #[error("the approver is not a principal of {0}")]
    OtherJurisdiction(&'static str),
    /// The approver already approved.
    #[error("already approved by this principal")]
    AlreadyApproved,
    /// The rule wants an approver of the proposer's agency.
    #[error("the approver is not of the proposer's agency")]
    OtherAgency,
}

/// Why a pending change takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// A second principal approved it.
    Approved,
    /// Its notice period passed in cluster time.
    NoticeElapsed,
}

impl PendingApproval {
    /// The change with `approver`'s approval at `at`, or why it is refused.
    pub fn approve(&self, approver: &Actor, at: UnixMillis) -> Result<Self, ApprovalError> {
        if approver.name == self.proposer {
            return Err(ApprovalError::SamePrincipal);
        }
        if !self.rule.approver_roles.contains(&approver.role) {
            return Err(ApprovalError::WrongRole(approver.role.as_str()));
        }
        if !approver.covers(self.jurisdiction) {
            return Err(ApprovalError::OtherJurisdiction(self.jurisdiction.code()));
        }
        if self.rule.same_agency && approver.agency != self.proposer_agency {
            return Err(ApprovalError::OtherAgency);
        }
        if self.approvals.iter().any(|a| a.name == approver.name) {
            return Err(ApprovalError::AlreadyApproved);
        }
        let mut next = self.clone();
        next.approvals.push(Approval {
            name: approver.name.clone(),
            role: approver.role,
            at,
        });
        Ok(next)
    }

    /// Whether the change takes effect at `cluster_time` (`None`: the cluster has no time yet,
    /// so no notice can have passed), and why.
    pub fn effect(&self, cluster_time: Option<UnixMillis>) -> Option<Effect> {
        if !self.approvals.is_empty() {
            return Some(Effect::Approved);
        }
        match (self.rule.notice_ends_at, cluster_time) {
            (Some(ends), Some(now)) if now >= ends => Some(Effect::NoticeElapsed),
            _ => None,
        }
    }
}

/// The kind of change another component files for a bulk export (trust: a metadata read above a
/// principal's threshold).
pub const BULK_EXPORT: &str = "bulk_export";

/// The rule of a change another component files, by its kind: who may approve it. A kind no row
/// names has no rule (and is refused), so a proposer never chooses its own rule.
pub fn external_rule(kind: &str) -> Option<ApprovalRule> {
    match kind {
        // A second agency principal of the jurisdiction and of the proposer's own agency; never
        // automatic.
        BULK_EXPORT => Some(ApprovalRule {
            approver_roles: vec![PrincipalRole::Agency],
            notice_ends_at: None,
            same_agency: true,
        }),
        _ => None,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn actor(name: &str, role: PrincipalRole, jurisdictions: &[Jurisdiction]) -> Actor {
        Actor {
            name: name.into(),
            role,
            jurisdictions: jurisdictions.to_vec(),
            all_jurisdictions: false,
            agency: format!("{name}-agency"),
        }
    }

    fn pending(notice: Option<i64>) -> PendingApproval {
        PendingApproval {
            jurisdiction: Jurisdiction::Tx,
            proposer: "op".into(),
            proposer_agency: "op-agency".into(),
            proposed_at: UnixMillis(0),
            rule: ApprovalRule {
                approver_roles: vec![PrincipalRole::Agency],
                notice_ends_at: notice.map(UnixMillis),
                same_agency: false,
            },
            approvals: Vec::new(),
        }
    }

    #[test]
    fn a_second_principal_of_the_jurisdiction_approves() {
        let p = pending(None);
        let tx = actor("tx-1", PrincipalRole::Agency, &[Jurisdiction::Tx]);
        let approved = p.approve(&tx, UnixMillis(5)).unwrap();
        assert_eq!(approved.effect(None), Some(Effect::Approved));
        assert_eq!(
            approved.approve(&tx, UnixMillis(6)),
            Err(ApprovalError::AlreadyApproved)
        );
        let ca = actor("ca-1", PrincipalRole::Agency, &[Jurisdiction::Ca]);
        assert_eq!(
            p.approve(&ca, UnixMillis(5)),
            Err(ApprovalError::OtherJurisdiction("US-TX"))
        );
        let registry = actor("reg", PrincipalRole::Registry, &[Jurisdiction::Tx]);
        assert_eq!(
            p.approve(&registry, UnixMillis(5)),
            Err(ApprovalError::WrongRole("registry"))
        );
        let mut same = tx.clone();
        same.name = "op".into();
        assert_eq!(
            p.approve(&same, UnixMillis(5)),
            Err(ApprovalError::SamePrincipal)
        );
        assert_eq!(
            p.effect(Some(UnixMillis(i64::MAX))),
            None,
            "no notice: approval only"
        );
    }

    #[test]
    fn a_bulk_export_needs_a_second_principal_of_the_proposers_own_agency() {
        let mut p = pending(None);
        p.rule = external_rule(BULK_EXPORT).unwrap();
        p.proposer_agency = "tx-da".into();
        let mut colleague = actor("tx-2", PrincipalRole::Agency, &[Jurisdiction::Tx]);
        colleague.agency = "tx-da".into();
        let stranger = actor("tx-3", PrincipalRole::Agency, &[Jurisdiction::Tx]);
        assert_eq!(
            p.approve(&stranger, UnixMillis(1)),
            Err(ApprovalError::OtherAgency),
            "same jurisdiction, another agency"
        );
        let approved = p.approve(&colleague, UnixMillis(1)).unwrap();
        assert_eq!(
            approved.effect(Some(UnixMillis(i64::MAX))),
            Some(Effect::Approved)
        );
        assert_eq!(
            p.effect(Some(UnixMillis(i64::MAX))),
            None,
            "never automatic"
        );
        assert_eq!(external_rule("anything else"), None);
    }

    proptest! {
        /// Without an approval a change takes effect exactly when cluster time reaches the end of
        /// its notice, never before, and never without a cluster time.
        #[test]
        fn notice_is_counted_in_cluster_time(ends in any::<i64>(), now in any::<i64>()) {
            let p = pending(Some(ends));
            let effect = p.effect(Some(UnixMillis(now)));
            prop_assert_eq!(effect.is_some(), now >= ends);
            prop_assert_eq!(p.effect(None), None);
        }

        /// Nobody approves a change alone: the proposer, another jurisdiction's principal and a
        /// role the rule does not name are all refused, whatever their names.
        #[test]
        fn only_another_principal_of_an_allowed_role_and_jurisdiction_approves(
            name in "[a-z]{1,4}", role_tag in 0u8..5, in_tx: bool, all: bool,
        ) {
            let p = pending(None);
            let mut approver = actor(&name, PrincipalRole::from_tag(role_tag).unwrap(),
                if in_tx { &[Jurisdiction::Tx] } else { &[Jurisdiction::Ok] });
            approver.all_jurisdictions = all;
            let ok = p.approve(&approver, UnixMillis(1)).is_ok();
            let expected = name != "op"
                && approver.role == PrincipalRole::Agency
                && (in_tx || all);
            prop_assert_eq!(ok, expected);
        }
    }
}
