//! What a principal's request asks for, as a command: one function per request that acts for a
//! person, used by the api node that proposes the command and by the meta node that checks it.
//!
//! Because both sides build the command with the same code from the same signed request, the
//! metadata store can tell whether the command an api node proposes is the one the principal
//! signed (see [`crate::principal_proof`]): it builds it again and compares. Each function also
//! decides whether the principal may ask at all (role and jurisdictions), so the check is made
//! where the decision is, not only on the node the request came in through.
//!
//! A few inputs are the api node's alone and are taken from the proposed command: the keyed hash
//! of a registered number (the index key is not meta's), and the one-time public key a released
//! data key will be sealed to.

use callvault_core::call::MAX_HOLD_TEXT;
use callvault_core::policy::{PrivilegedRetention, RetentionPolicy};
use callvault_core::{
    CallId, E164, Jurisdiction, PrivilegeKind, RegistryEntry, UnixMillis, normalize,
};
use callvault_proto::v1 as pb;
use tonic::Status;

use callvault_core::approval::{Actor, PrincipalRole};

use crate::approvals::ChangeKind;
use crate::command::{AccessQuota, AccessRequest, Command, MAX_TEXT};
use crate::principal::{AccessRole, Principal, Scope};
use crate::retention_command::RetentionCommand;

/// The gRPC path of each request that acts for a person.
pub mod rpc {
    /// `Admin.PutPolicy`.
    pub const PUT_POLICY: &str = "/callvault.v1.Admin/PutPolicy";
    /// `Admin.RegisterPrivilegedNumber`.
    pub const REGISTER_PRIVILEGED: &str = "/callvault.v1.Admin/RegisterPrivilegedNumber";
    /// `Admin.RegisterSensitiveNumber`.
    pub const REGISTER_SENSITIVE: &str = "/callvault.v1.Admin/RegisterSensitiveNumber";
    /// `Admin.FlagPrivileged`.
    pub const FLAG_PRIVILEGED: &str = "/callvault.v1.Admin/FlagPrivileged";
    /// `Admin.PlaceHold`.
    pub const PLACE_HOLD: &str = "/callvault.v1.Admin/PlaceHold";
    /// `Admin.ReleaseHold`.
    pub const RELEASE_HOLD: &str = "/callvault.v1.Admin/ReleaseHold";
    /// `Content.Playback`.
    pub const PLAYBACK: &str = "/callvault.v1.Content/Playback";
    /// `Admin.RequestPrivilegeFlag`.
    pub const REQUEST_PRIVILEGE_FLAG: &str = "/callvault.v1.Admin/RequestPrivilegeFlag";
    /// `Admin.ApproveChange`.
    pub const APPROVE_CHANGE: &str = "/callvault.v1.Admin/ApproveChange";
    /// `Admin.CancelChange`.
    pub const CANCEL_CHANGE: &str = "/callvault.v1.Admin/CancelChange";
}

/// A jurisdiction code from a request.
pub fn jurisdiction(code: &str) -> Result<Jurisdiction, Status> {
    Jurisdiction::from_code(code).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A call id from a request.
pub fn call_id(id: &str) -> Result<CallId, Status> {
    CallId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// A free-text field, trimmed; required ones must not be empty; at most [`MAX_TEXT`] bytes.
pub fn text(field: &str, value: &str, required: bool) -> Result<String, Status> {
    let value = value.trim();
    if required && value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    if value.len() > MAX_TEXT {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {MAX_TEXT} bytes"
        )));
    }
    Ok(value.to_string())
}

/// A protobuf timestamp as Unix milliseconds.
pub fn millis(t: &prost_types::Timestamp) -> Result<UnixMillis, Status> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(Status::invalid_argument("timestamp nanos out of range"));
    }
    t.seconds
        .checked_mul(1000)
        .and_then(|s| s.checked_add(i64::from(t.nanos / 1_000_000)))
        .map(UnixMillis)
        .ok_or_else(|| Status::invalid_argument("timestamp out of range"))
}

/// The one answer for a call that does not exist or that the caller may not see.
pub fn no_call(j: Jurisdiction, call_id: &str) -> Status {
    Status::not_found(format!("no call {}/{call_id}", j.code()))
}

/// A retention policy from its protobuf form, checked.
pub fn policy_from_pb(p: &pb::RetentionPolicy) -> Result<RetentionPolicy, Status> {
    let privileged_retention = match pb::PrivilegedRetention::try_from(p.privileged_retention) {
        Ok(pb::PrivilegedRetention::Nothing) => PrivilegedRetention::Nothing,
        Ok(pb::PrivilegedRetention::CallDetail) => PrivilegedRetention::CallDetail,
        _ => {
            return Err(Status::invalid_argument(
                "policy.privileged_retention must be NOTHING or CALL_DETAIL",
            ));
        }
    };
    let policy = RetentionPolicy {
        recording_retention_days: p.recording_retention_days,
        call_detail_retention_days: p.call_detail_retention_days,
        privileged_retention,
        hold_requires_review_date: p.hold_requires_review_date,
        hold_max_review_days: p.hold_max_review_days,
        sweep_interval_seconds: p.sweep_interval_seconds,
        source: p.source.clone(),
        shortening_notice_seconds: p.shortening_notice_seconds,
    };
    policy
        .validate()
        .map_err(|v| Status::invalid_argument(format!("policy: {v}")))?;
    Ok(policy)
}

/// `Admin.PutPolicy`: operators set any jurisdiction's policy, an agency its own.
pub fn put_policy(
    who: &Principal,
    r: &pb::PutPolicyRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let j = jurisdiction(&r.jurisdiction)?;
    if who.role != AccessRole::Operator {
        who.require(AccessRole::Agency, j)?;
    }
    let policy = policy_from_pb(
        r.policy
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("policy is required"))?,
    )?;
    Ok(Command::PutPolicy {
        jurisdiction: j,
        policy,
        expected_version: r.expected_version,
        principal: who.name.clone(),
        at,
    })
}

fn privilege_kind(kind: i32) -> Result<PrivilegeKind, Status> {
    match pb::PrivilegeKind::try_from(kind) {
        Ok(pb::PrivilegeKind::Attorney) => Ok(PrivilegeKind::Attorney),
        Ok(pb::PrivilegeKind::Clergy) => Ok(PrivilegeKind::Clergy),
        Ok(pb::PrivilegeKind::Physician) => Ok(PrivilegeKind::Physician),
        Ok(pb::PrivilegeKind::Other) => Ok(PrivilegeKind::Other),
        _ => Err(Status::invalid_argument("kind is required")),
    }
}

/// A number a registry registers, canonical, with its jurisdiction; the registry role for it.
pub fn registered_number(
    who: &Principal,
    jurisdiction_code: &str,
    number: &str,
) -> Result<(Jurisdiction, E164), Status> {
    let j = jurisdiction(jurisdiction_code)?;
    who.require(AccessRole::Registry, j)?;
    let number = normalize(number).map_err(|e| Status::invalid_argument(format!("number: {e}")))?;
    Ok((j, number))
}

/// `Admin.RegisterPrivilegedNumber`; `fingerprint` is the keyed hash of the number.
pub fn register_privileged(
    who: &Principal,
    r: &pb::RegisterPrivilegedNumberRequest,
    at: UnixMillis,
    fingerprint: [u8; 32],
) -> Result<Command, Status> {
    let (j, number) = registered_number(who, &r.jurisdiction, &r.number)?;
    Ok(Command::RegisterPrivileged {
        fingerprint,
        entry: RegistryEntry {
            jurisdiction: j,
            number,
            kind: privilege_kind(r.kind)?,
            registrant: who.name.clone(),
            evidence: text("evidence", &r.evidence, true)?,
            registered_at: at,
        },
    })
}

/// `Admin.RegisterSensitiveNumber`; `fingerprint` is the keyed hash of the number.
pub fn register_sensitive(
    who: &Principal,
    r: &pb::RegisterSensitiveNumberRequest,
    at: UnixMillis,
    fingerprint: [u8; 32],
) -> Result<Command, Status> {
    let (j, number) = registered_number(who, &r.jurisdiction, &r.number)?;
    Ok(Command::RegisterSensitive {
        jurisdiction: j,
        fingerprint,
        number,
        reason: text("reason", &r.reason, true)?,
        principal: who.name.clone(),
        at,
    })
}

/// `Admin.FlagPrivileged`: a registry of the call's jurisdiction. A flag beats a hold and cannot
/// be undone, so an agency only asks for one ([`request_privilege_flag`]).
pub fn flag_privileged(
    who: &Principal,
    r: &pb::FlagPrivilegedRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let j = jurisdiction(&r.jurisdiction)?;
    let call_id = call_id(&r.call_id)?;
    if who.role == AccessRole::Agency {
        return Err(Status::permission_denied(
            "flagging a call privileged needs the registry role; an agency asks for a flag with \
             RequestPrivilegeFlag, which a registry principal approves",
        ));
    }
    who.require_role(&[AccessRole::Registry])?;
    if !who.may(AccessRole::Registry, j) {
        return Err(no_call(j, &r.call_id));
    }
    Ok(Command::FlagPrivileged {
        jurisdiction: j,
        call_id,
        reason: text("reason", &r.reason, true)?,
        evidence: text("evidence", &r.evidence, false)?,
        principal: who.name.clone(),
        at,
    })
}

/// Holds are an agency's: `PERMISSION_DENIED` for another role, and another jurisdiction's call
/// is indistinguishable from no call.
fn agency_of_call(
    who: &Principal,
    jurisdiction_code: &str,
    id: &str,
) -> Result<(Jurisdiction, CallId), Status> {
    let j = jurisdiction(jurisdiction_code)?;
    let call = call_id(id)?;
    who.require_role(&[AccessRole::Agency])?;
    if !who.may(AccessRole::Agency, j) {
        return Err(no_call(j, id));
    }
    Ok((j, call))
}

/// `Admin.PlaceHold`.
pub fn place_hold(
    who: &Principal,
    r: &pb::PlaceHoldRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let (j, call_id) = agency_of_call(who, &r.jurisdiction, &r.call_id)?;
    let case_number = text("case_number", &r.case_number, true)?;
    if case_number.chars().count() > MAX_HOLD_TEXT {
        return Err(Status::invalid_argument(format!(
            "case_number is longer than {MAX_HOLD_TEXT} characters"
        )));
    }
    Ok(Command::PlaceHold {
        jurisdiction: j,
        call_id,
        issuer: who.name.clone(),
        agency: who.agency.clone(),
        case_number,
        reason: text("reason", &r.reason, true)?,
        review_date: r.review_date.as_ref().map(millis).transpose()?,
        at,
    })
}

/// `Admin.ReleaseHold`.
pub fn release_hold(
    who: &Principal,
    r: &pb::ReleaseHoldRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let hold_id: u64 = r
        .hold_id
        .trim()
        .parse()
        .map_err(|_| Status::invalid_argument("hold_id is the number PlaceHold returned"))?;
    let (j, call_id) = agency_of_call(who, &r.jurisdiction, &r.call_id)?;
    Ok(Command::ReleaseHold {
        jurisdiction: j,
        call_id,
        hold_id,
        principal: who.name.clone(),
        agency: who.agency.clone(),
        at,
    })
}

/// A required free-text field of a playback, trimmed and bounded; empty is `None`.
fn access_text(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.chars().take(MAX_TEXT / 4).collect())
}

/// `Content.Playback`: the access record to propose, and, when the request is refused before
/// anything is decided (wrong role, another jurisdiction, no case number or reason), the status
/// to answer with. A refused attempt is recorded all the same.
pub fn record_access(
    who: &Principal,
    r: &pb::PlaybackRequest,
    at: UnixMillis,
    quota: AccessQuota,
) -> Result<(Command, Option<Status>), Status> {
    // Without a jurisdiction and call id there is nothing an access record could name.
    let j = jurisdiction(&r.jurisdiction)?;
    let call_id = call_id(&r.call_id)?;
    let case_number = access_text(&r.case_number);
    let reason = access_text(&r.reason);
    let refusal: Option<(String, Status)> = if who.role != AccessRole::Agency {
        Some((
            format!("role {} may not play back content", who.role),
            Status::permission_denied(format!(
                "{} has role {}; playback needs an agency principal",
                who.name, who.role
            )),
        ))
    } else if !who.may(AccessRole::Agency, j) {
        Some((
            "outside the principal's jurisdictions".into(),
            no_call(j, &r.call_id),
        ))
    } else if case_number.is_none() {
        Some((
            "no case number".into(),
            Status::invalid_argument("case_number is required for playback"),
        ))
    } else if reason.is_none() {
        Some((
            "no reason".into(),
            Status::invalid_argument("reason is required for playback"),
        ))
    } else {
        None
    };
    let command = Command::RecordAccess(AccessRequest {
        jurisdiction: j,
        call_id,
        principal: who.name.clone(),
        case_number: case_number.unwrap_or_default(),
        reason: reason.unwrap_or_default(),
        elevated: who.elevated,
        denial: refusal.as_ref().map(|(text, _)| text.clone()),
        quota,
        at,
    });
    Ok((command, refusal.map(|(_, status)| status)))
}

/// The principal as the two-person rule sees it.
pub fn actor(who: &Principal) -> Actor {
    let (jurisdictions, all_jurisdictions) = match &who.scope {
        Scope::All => (Vec::new(), true),
        Scope::Only(set) => (set.iter().copied().collect(), false),
    };
    Actor {
        name: who.name.clone(),
        role: match who.role {
            AccessRole::Platform => PrincipalRole::Platform,
            AccessRole::Agency => PrincipalRole::Agency,
            AccessRole::Registry => PrincipalRole::Registry,
            AccessRole::Auditor => PrincipalRole::Auditor,
            AccessRole::Operator => PrincipalRole::Operator,
        },
        jurisdictions,
        all_jurisdictions,
        agency: who.agency.clone(),
    }
}

/// `Admin.RequestPrivilegeFlag`: an agency of the call's jurisdiction asks; a registry principal
/// approves.
pub fn request_privilege_flag(
    who: &Principal,
    r: &pb::FlagPrivilegedRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let j = jurisdiction(&r.jurisdiction)?;
    let call_id = call_id(&r.call_id)?;
    who.require_role(&[AccessRole::Agency])?;
    if !who.may(AccessRole::Agency, j) {
        return Err(no_call(j, &r.call_id));
    }
    Ok(Command::Retention(RetentionCommand::ProposeChange {
        jurisdiction: j,
        change: ChangeKind::PrivilegeFlag {
            call_id,
            reason: text("reason", &r.reason, true)?,
            evidence: text("evidence", &r.evidence, false)?,
        },
        proposer: actor(who),
        at,
    }))
}

/// A change id from a request.
pub fn change_id(text: &str) -> Result<u64, Status> {
    text.trim()
        .parse()
        .map_err(|_| Status::invalid_argument("change_id is the number the change was filed as"))
}

/// `Admin.ApproveChange`: a principal scoped to the change's jurisdiction (the rule of the
/// change decides the role, in the metadata store).
pub fn approve_change(
    who: &Principal,
    r: &pb::ChangeRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let (change_id, approver) = change_actor(who, r)?;
    Ok(Command::Retention(RetentionCommand::ApproveChange {
        change_id,
        approver,
        at,
    }))
}

/// `Admin.CancelChange`: the proposer, or a principal who could approve it.
pub fn cancel_change(
    who: &Principal,
    r: &pb::ChangeRequest,
    at: UnixMillis,
) -> Result<Command, Status> {
    let (change_id, by) = change_actor(who, r)?;
    Ok(Command::Retention(RetentionCommand::CancelChange {
        change_id,
        by,
        at,
    }))
}

fn change_actor(who: &Principal, r: &pb::ChangeRequest) -> Result<(u64, Actor), Status> {
    let j = jurisdiction(&r.jurisdiction)?;
    let in_scope = match &who.scope {
        Scope::All => true,
        Scope::Only(set) => set.contains(&j),
    };
    if !in_scope && who.role != AccessRole::Operator {
        return Err(Status::permission_denied(format!(
            "{} may not act for {}",
            who.name,
            j.code()
        )));
    }
    Ok((change_id(&r.change_id)?, actor(who)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::Principals;

    fn principals() -> Principals {
        Principals::parse(&format!(
            "[[principal]]\nname = \"tx\"\nrole = \"agency\"\njurisdictions = [\"US-TX\"]\n\
             token_blake3 = \"{}\"\nagency = \"tx-da\"\n\
             [[principal]]\nname = \"reg\"\nrole = \"registry\"\njurisdictions = [\"US-TX\"]\n\
             token_blake3 = \"{}\"\n",
            "11".repeat(32),
            "22".repeat(32)
        ))
        .unwrap()
    }

    #[test]
    fn the_same_request_builds_the_same_command_and_scope_is_checked() {
        let p = principals();
        let tx = p.by_name("tx").unwrap();
        let hold = pb::PlaceHoldRequest {
            jurisdiction: "US-TX".into(),
            call_id: "c-1".into(),
            case_number: " 2026-CR-1 ".into(),
            reason: "trial".into(),
            review_date: None,
        };
        let a = place_hold(tx, &hold, UnixMillis(5)).unwrap();
        assert_eq!(a, place_hold(tx, &hold, UnixMillis(5)).unwrap());
        assert!(matches!(&a, Command::PlaceHold { agency, case_number, .. }
            if agency == "tx-da" && case_number == "2026-CR-1"));
        let elsewhere = pb::PlaceHoldRequest {
            jurisdiction: "US-CA".into(),
            ..hold.clone()
        };
        assert_eq!(
            place_hold(tx, &elsewhere, UnixMillis(5))
                .unwrap_err()
                .code(),
            tonic::Code::NotFound
        );
        let reg = p.by_name("reg").unwrap();
        assert_eq!(
            place_hold(reg, &hold, UnixMillis(5)).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn a_refused_playback_is_still_an_access_record() {
        let p = principals();
        let request = pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: "c-1".into(),
            case_number: String::new(),
            reason: "review".into(),
        };
        let quota = AccessQuota {
            calls_per_hour: 1,
            bytes_per_hour: 1,
        };
        let (command, refusal) =
            record_access(p.by_name("tx").unwrap(), &request, UnixMillis(1), quota).unwrap();
        assert_eq!(refusal.unwrap().code(), tonic::Code::InvalidArgument);
        assert!(
            matches!(command, Command::RecordAccess(a) if a.denial.as_deref() == Some("no case number"))
        );
        let (_, refusal) =
            record_access(p.by_name("reg").unwrap(), &request, UnixMillis(1), quota).unwrap();
        assert_eq!(refusal.unwrap().code(), tonic::Code::PermissionDenied);
    }
}
