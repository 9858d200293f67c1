//! The `Query` and `Admin` services: retention status for agencies, and policies and the
//! privileged-number registry through the replicated metadata store.
//!
//! Every request is scoped to the caller's jurisdictions. A request about one call of another
//! jurisdiction is `NOT_FOUND` with the same message as a call that does not exist; a request
//! about another jurisdiction as a whole is `PERMISSION_DENIED` (which says nothing about calls).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callvault_core::call::CallStatus;
use callvault_core::policy::{PrivilegedRetention, VersionedPolicy};
use callvault_core::privilege::number_fingerprint;
use callvault_core::retention::{call_detail_deadline, recording_deadline};
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{
    CallRecord, Jurisdiction, Lifecycle, PrivilegeKind, PurgeReason, RetentionPolicy, UnixMillis,
};
use callvault_meta::approvals::{ChangeKind, ChangeState, PendingChange};
use callvault_meta::client::MetadataAnswer;
use callvault_meta::client::{CallLookup, MetaClient};
use callvault_meta::intents::{self, jurisdiction, no_call, rpc};
use callvault_meta::metadata::{MetadataDecision, MetadataQuota};
use callvault_meta::reads::JurisdictionStatus;
use callvault_meta::retention_command::RetentionResult;
use callvault_meta::{CommandResult, Refusal};
use callvault_proto::v1 as pb;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::auth::{AccessRole, Principal, caller, request_proof, signed};

/// Serves `Query` and `Admin` over the metadata store.
#[derive(Clone)]
pub struct ApiService {
    meta: MetaClient,
    index_key: std::sync::Arc<[u8; 32]>,
}

fn timestamp(t: UnixMillis) -> Timestamp {
    Timestamp {
        seconds: t.0.div_euclid(1000),
        nanos: (t.0.rem_euclid(1000) * 1_000_000) as i32,
    }
}

fn require_any(who: &Principal, roles: &[AccessRole], j: Jurisdiction) -> Result<(), Status> {
    who.require_role(roles)?;
    if roles.iter().any(|role| who.may(*role, j)) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{} may not act for {}",
            who.name,
            j.code()
        )))
    }
}

fn state(call: &CallRecord) -> pb::CallState {
    match call.status() {
        CallStatus::Stored => pb::CallState::Stored,
        CallStatus::Held => pb::CallState::Held,
        CallStatus::Expired => pb::CallState::Expired,
        CallStatus::Purged => pb::CallState::Purged,
        CallStatus::Blocked => pb::CallState::Blocked,
    }
}

fn reason(call: &CallRecord, policy: Option<&VersionedPolicy>) -> String {
    let purge_reason = |r: PurgeReason| match r {
        PurgeReason::NumberRegistered => "privileged: the number was registered after the call",
        PurgeReason::Flagged => "privileged: flagged by a reviewer",
        PurgeReason::RegisteredDuringIngest => {
            "privileged: the number was registered while the call streamed"
        }
    };
    match call.lifecycle {
        Lifecycle::Live if call.holds.is_empty() => match policy {
            Some(p) => format!(
                "stored under policy v{}: {} days",
                p.version, p.policy.recording_retention_days
            ),
            None => "stored".into(),
        },
        Lifecycle::Live => format!("held by {} hold(s)", call.holds.len()),
        Lifecycle::PrivilegedUnderSeal { reason, .. } => format!(
            "{}; kept sealed by a court-ordered hold, unreadable",
            purge_reason(reason)
        ),
        Lifecycle::Expired { .. } => "expired at its retention deadline".into(),
        Lifecycle::Purged { reason, .. } => purge_reason(reason).into(),
        Lifecycle::Blocked => "privileged number: refused at ingest, no audio stored".into(),
    }
}

fn policy_to_pb(v: &VersionedPolicy) -> pb::RetentionPolicy {
    let p = &v.policy;
    pb::RetentionPolicy {
        version: v.version,
        recording_retention_days: p.recording_retention_days,
        call_detail_retention_days: p.call_detail_retention_days,
        privileged_retention: match p.privileged_retention {
            PrivilegedRetention::Nothing => pb::PrivilegedRetention::Nothing,
            PrivilegedRetention::CallDetail => pb::PrivilegedRetention::CallDetail,
        } as i32,
        hold_requires_review_date: p.hold_requires_review_date,
        hold_max_review_days: p.hold_max_review_days,
        sweep_interval_seconds: p.sweep_interval_seconds,
        source: p.source.clone(),
        shortening_notice_seconds: p.shortening_notice_seconds,
    }
}

fn kind_to_pb(kind: PrivilegeKind) -> pb::PrivilegeKind {
    match kind {
        PrivilegeKind::Attorney => pb::PrivilegeKind::Attorney,
        PrivilegeKind::Clergy => pb::PrivilegeKind::Clergy,
        PrivilegeKind::Physician => pb::PrivilegeKind::Physician,
        PrivilegeKind::Other => pb::PrivilegeKind::Other,
    }
}

/// The status for a refused hold placement or release.
fn hold_refusal(refusal: Refusal, j: Jurisdiction, call_id: &str) -> Status {
    match refusal {
        Refusal::NoSuchCall => no_call(j, call_id),
        Refusal::HoldNotFound => Status::not_found(format!(
            "call {}/{call_id} has no hold with that id",
            j.code()
        )),
        Refusal::NotIssuer => Status::permission_denied(
            "only the principal that placed the hold, or its agency, may release it",
        ),
        Refusal::NotLive => Status::failed_precondition(
            "the call has no recording left to hold (expired, purged or never recorded)",
        ),
        Refusal::TooManyHolds => Status::failed_precondition(format!(
            "the call already carries {} holds",
            callvault_core::call::MAX_HOLDS_PER_CALL
        )),
        Refusal::ReviewDate(reason) => Status::invalid_argument(format!("review_date: {reason}")),
        Refusal::NoPolicy => {
            Status::failed_precondition(format!("{} has no retention policy", j.code()))
        }
        other => Status::internal(format!("hold refused: {other:?}")),
    }
}

/// The answer of an allowed metadata read, or the status of its refusal.
fn read_allowed(who: &Principal, answer: MetadataAnswer) -> Result<MetadataAnswer, Status> {
    match answer.decision {
        MetadataDecision::Allowed => Ok(answer),
        MetadataDecision::QuotaExceeded => Err(Status::resource_exhausted(format!(
            "{} is over its hourly quota of metadata reads",
            who.name
        ))),
        MetadataDecision::BulkExportNeedsApproval => Err(Status::failed_precondition(format!(
            "{} has read more records this hour than a read without approval may: a bulk \
             export needs a second principal of its agency to approve it",
            who.name
        ))),
    }
}

/// The status for a refused change command.
fn change_refusal(refusal: Refusal) -> Status {
    match refusal {
        Refusal::NoSuchChange => Status::not_found("no pending change with that id"),
        Refusal::ChangeClosed => {
            Status::failed_precondition("the change is no longer pending (effected or withdrawn)")
        }
        Refusal::Approval(reason) | Refusal::NotAllowed(reason) => {
            Status::permission_denied(reason)
        }
        Refusal::AheadOfClusterTime { .. } | Refusal::NoClusterTime => {
            Status::failed_precondition("its notice has not ended in cluster time")
        }
        other => Status::internal(format!("change refused: {other:?}")),
    }
}

/// A change as the Admin API shows it.
fn change_to_pb(change: &PendingChange) -> pb::PendingChange {
    let a = &change.approval;
    pb::PendingChange {
        change_id: change.id.to_string(),
        jurisdiction: a.jurisdiction.code().to_string(),
        kind: change.kind.name().to_string(),
        proposer: a.proposer.clone(),
        proposed_at: Some(timestamp(a.proposed_at)),
        effective_at: a.rule.notice_ends_at.map(timestamp),
        approver_roles: a
            .rule
            .approver_roles
            .iter()
            .map(|r| r.as_str().to_string())
            .collect(),
        state: match change.state {
            ChangeState::Pending => pb::ChangeState::Pending,
            ChangeState::Effected { .. } => pb::ChangeState::Effected,
            ChangeState::Cancelled { .. } => pb::ChangeState::Cancelled,
            ChangeState::Superseded { .. } => pb::ChangeState::Superseded,
        } as i32,
        summary: change_summary(&change.kind),
    }
}

fn change_summary(kind: &ChangeKind) -> String {
    match kind {
        ChangeKind::Policy {
            policy,
            base_version,
        } => format!(
            "replace policy v{base_version}: recordings {} days, call details {} days, \
             privileged calls keep {}",
            policy.recording_retention_days,
            policy.call_detail_retention_days,
            policy.privileged_retention.as_str()
        ),
        ChangeKind::PrivilegeFlag {
            call_id, reason, ..
        } => {
            format!("flag call {} privileged: {reason}", call_id.as_str())
        }
        ChangeKind::External { kind, .. } => format!("{kind} (see its owner)"),
    }
}

fn unexpected(result: CommandResult) -> Status {
    Status::internal(format!(
        "unexpected result from the metadata store: {result:?}"
    ))
}

impl ApiService {
    /// Proposes a change command and answers with the change as it stands after it.
    async fn change_answer(
        &self,
        j: Jurisdiction,
        command: callvault_meta::Command,
    ) -> Result<Response<pb::PendingChangeResponse>, Status> {
        let change_id = match self.meta.propose(&command).await?.1 {
            CommandResult::Retention(RetentionResult::Change { change_id, .. }) => change_id,
            CommandResult::Refused(refusal) => return Err(change_refusal(refusal)),
            other => return Err(unexpected(other)),
        };
        let change = self.meta.changes(j, change_id).await?;
        let change = change
            .first()
            .ok_or_else(|| Status::not_found(format!("no change {change_id} in {}", j.code())))?;
        Ok(Response::new(pb::PendingChangeResponse {
            change: Some(change_to_pb(change)),
        }))
    }

    /// The services over `meta`; `index_key` hashes numbers for the registry.
    pub fn new(meta: MetaClient, index_key: [u8; 32]) -> Self {
        ApiService {
            meta,
            index_key: std::sync::Arc::new(index_key),
        }
    }

    /// The Query server.
    pub fn query_server(&self) -> pb::query_server::QueryServer<Self> {
        pb::query_server::QueryServer::new(self.clone())
    }

    /// The Admin server.
    pub fn admin_server(&self) -> pb::admin_server::AdminServer<Self> {
        pb::admin_server::AdminServer::new(self.clone())
    }
}

/// A jurisdiction's status as `Query.JurisdictionStatus` answers it.
fn jurisdiction_status_to_pb(
    j: Jurisdiction,
    status: &JurisdictionStatus,
) -> pb::JurisdictionStatusResponse {
    let c = status.counters;
    let policy = status.policy.as_ref();
    let deadline = |started: Option<UnixMillis>,
                    of: fn(UnixMillis, &RetentionPolicy) -> UnixMillis| {
        started
            .zip(policy)
            .map(|(t, p)| timestamp(of(t, &p.policy)))
    };
    let pending = status.pending_policy.as_ref();
    pb::JurisdictionStatusResponse {
        jurisdiction: j.code().to_string(),
        policy_version: policy.map_or(0, |p| p.version),
        calls_total: c.calls_total,
        live_recordings: c.live,
        held: c.held,
        expired: c.expired,
        purged: c.purged,
        blocked_privileged: c.blocked_privileged,
        purges_pending: c.purges_pending,
        oldest_live_started_at: status.oldest_live_started_at.map(timestamp),
        oldest_live_deadline: deadline(status.oldest_live_started_at, recording_deadline),
        recording_retention_days: policy.map_or(0, |p| p.policy.recording_retention_days),
        overdue: status.overdue,
        purges_overdue: status.purges_overdue,
        call_detail_retention_days: policy.map_or(0, |p| p.policy.call_detail_retention_days),
        call_details_kept: c.details_kept,
        call_details_expired: c.details_expired,
        oldest_call_detail_started_at: status.oldest_detail_started_at.map(timestamp),
        oldest_call_detail_deadline: deadline(
            status.oldest_detail_started_at,
            call_detail_deadline,
        ),
        call_details_overdue: status.details_overdue,
        cluster_time: status.cluster_time.map(timestamp),
        pending_policy_change_id: pending.map(|(id, _, _)| id.to_string()).unwrap_or_default(),
        pending_policy_recording_retention_days: pending
            .map_or(0, |(_, p, _)| p.policy.recording_retention_days),
        pending_policy_call_detail_retention_days: pending
            .map_or(0, |(_, p, _)| p.policy.call_detail_retention_days),
        pending_policy_effective_at: pending.and_then(|(_, _, at)| at.map(timestamp)),
        pending_changes: status.pending_changes,
        holds_past_review: status.holds_past_review,
        purges_in_progress: status.purges_in_progress,
        purges_in_progress_purged: status.purges_in_progress_purged,
    }
}

/// A call's status as `Query.CallStatus` answers it: from its record, or from the tombstone
/// left once the record is gone.
fn call_status_to_pb(
    j: Jurisdiction,
    id: &str,
    found: &CallLookup,
    policy: Option<&VersionedPolicy>,
) -> pb::CallStatusResponse {
    let shred_progress = if found.shred_started.is_some() {
        pb::PurgeProgress::Pending
    } else {
        pb::PurgeProgress::Done
    };
    let Some(call) = &found.call else {
        let (state, reason) = match found.tombstone.map(|t| t.outcome) {
            Some(TombstoneOutcome::Expired) => (
                pb::CallState::Expired,
                "call-detail record deleted at its deadline; only a tombstone remains",
            ),
            Some(TombstoneOutcome::Refused) => (
                pb::CallState::Blocked,
                "privileged number: refused at ingest; nothing is kept",
            ),
            _ => (
                pb::CallState::Purged,
                "privileged: purged; nothing is kept beyond a tombstone",
            ),
        };
        return pb::CallStatusResponse {
            call_id: id.to_string(),
            jurisdiction: j.code().to_string(),
            state: state as i32,
            reason: reason.into(),
            purge_progress: match state {
                pb::CallState::Blocked => pb::PurgeProgress::Unspecified,
                _ => shred_progress,
            } as i32,
            policy_version: policy.map_or(0, |p| p.version),
            ..Default::default()
        };
    };
    let live = call.lifecycle == Lifecycle::Live;
    // A registration purging page by page: unreadable already, purged at its page.
    let awaiting_purge = live && found.number_privileged;
    pb::CallStatusResponse {
        call_id: id.to_string(),
        jurisdiction: j.code().to_string(),
        state: if awaiting_purge {
            pb::CallState::Purged
        } else {
            state(call)
        } as i32,
        started_at: Some(timestamp(call.started_at)),
        deadline: policy
            .filter(|_| live)
            .map(|p| timestamp(recording_deadline(call.started_at, &p.policy))),
        reason: if awaiting_purge {
            "privileged: the number was registered; unreadable, purge in progress".into()
        } else {
            reason(call, policy)
        },
        holds: call.holds.len() as u32,
        purge_progress: match call.lifecycle {
            // Kept sealed by a court order: the purge has not started.
            Lifecycle::PrivilegedUnderSeal { .. } => pb::PurgeProgress::Pending,
            Lifecycle::Live if awaiting_purge => pb::PurgeProgress::Pending,
            Lifecycle::Purged { .. } | Lifecycle::Expired { .. } => shred_progress,
            _ => pb::PurgeProgress::Unspecified,
        } as i32,
        policy_version: policy.map_or(call.committed_under_policy, |p| p.version),
        call_detail_deadline: policy
            .map(|p| timestamp(call_detail_deadline(call.started_at, &p.policy))),
    }
}

#[tonic::async_trait]
impl pb::query_server::Query for ApiService {
    async fn jurisdiction_status(
        &self,
        request: Request<pb::JurisdictionStatusRequest>,
    ) -> Result<Response<pb::JurisdictionStatusResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        let command = intents::jurisdiction_status(&who, &r, at, MetadataQuota::default())?;
        let command = signed(&who, proof, rpc::JURISDICTION_STATUS, &r, command)?;
        let status = read_allowed(&who, self.meta.read_metadata(&command).await?)?
            .status
            .ok_or_else(|| Status::internal("the metadata store sent no status"))?;
        Ok(Response::new(jurisdiction_status_to_pb(j, &status)))
    }

    async fn call_status(
        &self,
        request: Request<pb::CallStatusRequest>,
    ) -> Result<Response<pb::CallStatusResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        let command = intents::call_status(&who, &r, at, MetadataQuota::default())?;
        let command = signed(&who, proof, rpc::CALL_STATUS, &r, command)?;
        let answer = read_allowed(&who, self.meta.read_metadata(&command).await?)?;
        let Some(found) = answer.call else {
            return Err(no_call(j, &r.call_id));
        };
        let policy = self.meta.policy(j, 0).await?;
        Ok(Response::new(call_status_to_pb(
            j,
            &r.call_id,
            &found,
            policy.as_ref(),
        )))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::list_calls(&who, &r, at, MetadataQuota::default())?;
        let command = signed(&who, proof, rpc::LIST_CALLS, &r, command)?;
        let page = read_allowed(&who, self.meta.read_metadata(&command).await?)?
            .calls
            .ok_or_else(|| Status::internal("the metadata store sent no listing"))?;
        Ok(Response::new(pb::ListCallsResponse {
            calls: page
                .items
                .iter()
                .map(|c| pb::CallSummary {
                    call_id: c.call_id.as_str().to_string(),
                    facility_id: c.facility_id.clone(),
                    inmate_id: c.inmate_id.clone(),
                    started_at: Some(timestamp(c.started_at)),
                    ended_at: Some(timestamp(c.ended_at)),
                    state: state(c) as i32,
                    byte_length: c.byte_length,
                })
                .collect(),
            next_page_token: page
                .next_token
                .map(|t| URL_SAFE_NO_PAD.encode(t))
                .unwrap_or_default(),
        }))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for ApiService {
    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PutPolicyResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::put_policy(&who, &r, at)?;
        let command = signed(&who, proof, rpc::PUT_POLICY, &r, command)?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::PolicyPut { version } => Ok(Response::new(pb::PutPolicyResponse {
                version,
                ..Default::default()
            })),
            // It shortens retention: pending until its notice ends or a second principal approves.
            CommandResult::Retention(RetentionResult::Change {
                change_id,
                notice_ends_at,
                ..
            }) => Ok(Response::new(pb::PutPolicyResponse {
                version: 0,
                pending_change_id: change_id.to_string(),
                effective_at: notice_ends_at.map(timestamp),
            })),
            CommandResult::Refused(Refusal::NoClusterTime) => Err(Status::unavailable(
                "the cluster has no time yet (fewer than a majority of voters attested): retry",
            )),
            CommandResult::Refused(Refusal::PolicyVersionMismatch { current }) => {
                Err(Status::aborted(format!(
                    "{} is at policy version {current}, not {}: read it again and retry",
                    j.code(),
                    r.expected_version
                )))
            }
            CommandResult::Refused(Refusal::InvalidPolicy(reason)) => {
                Err(Status::invalid_argument(format!("policy: {reason}")))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        if !matches!(who.role, AccessRole::Operator | AccessRole::Auditor) {
            require_any(
                &who,
                &[
                    AccessRole::Agency,
                    AccessRole::Registry,
                    AccessRole::Platform,
                ],
                j,
            )?;
        }
        match self.meta.policy(j, r.version).await? {
            Some(policy) => Ok(Response::new(pb::GetPolicyResponse {
                jurisdiction: j.code().to_string(),
                policy: Some(policy_to_pb(&policy)),
            })),
            None if r.version == 0 => Err(Status::not_found(format!(
                "{} has no retention policy",
                j.code()
            ))),
            None => Err(Status::not_found(format!(
                "{} has no policy version {}",
                j.code(),
                r.version
            ))),
        }
    }

    async fn register_privileged_number(
        &self,
        request: Request<pb::RegisterPrivilegedNumberRequest>,
    ) -> Result<Response<pb::RegisterPrivilegedNumberResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let (j, number) = intents::registered_number(&who, &r.jurisdiction, &r.number)?;
        let fingerprint = number_fingerprint(&self.index_key, j, &number);
        let command = intents::register_privileged(&who, &r, at, fingerprint)?;
        let command = signed(&who, proof, rpc::REGISTER_PRIVILEGED, &r, command)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::NumberRegistered { purged } => {
                Ok(Response::new(pb::RegisterPrivilegedNumberResponse {
                    normalized_number: number.to_string(),
                    calls_purged: purged,
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn list_privileged_numbers(
        &self,
        request: Request<pb::ListPrivilegedNumbersRequest>,
    ) -> Result<Response<pb::ListPrivilegedNumbersResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        require_any(&who, &[AccessRole::Registry, AccessRole::Auditor], j)?;
        if r.page_size > callvault_meta::reads::MAX_PAGE as u32 {
            return Err(Status::invalid_argument("page_size is at most 1000"));
        }
        let page = self
            .meta
            .list_registry(j, r.page_size, intents::page_token(&r.page_token)?)
            .await?;
        Ok(Response::new(pb::ListPrivilegedNumbersResponse {
            numbers: page
                .items
                .iter()
                .map(|e| pb::PrivilegedNumber {
                    normalized_number: e.number.to_string(),
                    kind: kind_to_pb(e.kind) as i32,
                    evidence: e.evidence.clone(),
                    registrant: e.registrant.clone(),
                    registered_at: Some(timestamp(e.registered_at)),
                })
                .collect(),
            next_page_token: page
                .next_token
                .map(|t| URL_SAFE_NO_PAD.encode(t))
                .unwrap_or_default(),
        }))
    }

    async fn flag_privileged(
        &self,
        request: Request<pb::FlagPrivilegedRequest>,
    ) -> Result<Response<pb::FlagPrivilegedResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::flag_privileged(&who, &r, at)?;
        let command = signed(&who, proof, rpc::FLAG_PRIVILEGED, &r, command)?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::CallFlagged { purged } => {
                Ok(Response::new(pb::FlagPrivilegedResponse { purged }))
            }
            CommandResult::Refused(Refusal::NoSuchCall) => Err(no_call(j, &r.call_id)),
            other => Err(unexpected(other)),
        }
    }

    async fn request_privilege_flag(
        &self,
        request: Request<pb::FlagPrivilegedRequest>,
    ) -> Result<Response<pb::PendingChangeResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::request_privilege_flag(&who, &r, at)?;
        let command = signed(&who, proof, rpc::REQUEST_PRIVILEGE_FLAG, &r, command)?;
        let j = jurisdiction(&r.jurisdiction)?;
        self.change_answer(j, command).await
    }

    async fn approve_change(
        &self,
        request: Request<pb::ChangeRequest>,
    ) -> Result<Response<pb::PendingChangeResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::approve_change(&who, &r, at)?;
        let command = signed(&who, proof, rpc::APPROVE_CHANGE, &r, command)?;
        self.change_answer(jurisdiction(&r.jurisdiction)?, command)
            .await
    }

    async fn cancel_change(
        &self,
        request: Request<pb::ChangeRequest>,
    ) -> Result<Response<pb::PendingChangeResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::cancel_change(&who, &r, at)?;
        let command = signed(&who, proof, rpc::CANCEL_CHANGE, &r, command)?;
        self.change_answer(jurisdiction(&r.jurisdiction)?, command)
            .await
    }

    async fn list_pending_changes(
        &self,
        request: Request<pb::ListPendingChangesRequest>,
    ) -> Result<Response<pb::ListPendingChangesResponse>, Status> {
        let who = caller(&request)?;
        let j = jurisdiction(&request.get_ref().jurisdiction)?;
        if who.role != AccessRole::Operator {
            require_any(
                &who,
                &[
                    AccessRole::Agency,
                    AccessRole::Registry,
                    AccessRole::Auditor,
                ],
                j,
            )?;
        }
        let changes = self.meta.changes(j, 0).await?;
        Ok(Response::new(pb::ListPendingChangesResponse {
            changes: changes.iter().map(change_to_pb).collect(),
        }))
    }

    async fn register_sensitive_number(
        &self,
        request: Request<pb::RegisterSensitiveNumberRequest>,
    ) -> Result<Response<pb::RegisterSensitiveNumberResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let (j, number) = intents::registered_number(&who, &r.jurisdiction, &r.number)?;
        let fingerprint = number_fingerprint(&self.index_key, j, &number);
        let command = intents::register_sensitive(&who, &r, at, fingerprint)?;
        let command = signed(&who, proof, rpc::REGISTER_SENSITIVE, &r, command)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::SensitiveRegistered => {
                Ok(Response::new(pb::RegisterSensitiveNumberResponse {
                    normalized_number: number.to_string(),
                }))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn place_hold(
        &self,
        request: Request<pb::PlaceHoldRequest>,
    ) -> Result<Response<pb::PlaceHoldResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::place_hold(&who, &r, at)?;
        let command = signed(&who, proof, rpc::PLACE_HOLD, &r, command)?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::HoldPlaced { hold_id } => Ok(Response::new(pb::PlaceHoldResponse {
                hold_id: hold_id.to_string(),
            })),
            CommandResult::Refused(refusal) => Err(hold_refusal(refusal, j, &r.call_id)),
            other => Err(unexpected(other)),
        }
    }

    async fn release_hold(
        &self,
        request: Request<pb::ReleaseHoldRequest>,
    ) -> Result<Response<pb::ReleaseHoldResponse>, Status> {
        let who = caller(&request)?;
        let (proof, at) = request_proof(&request)?;
        let r = request.into_inner();
        let command = intents::release_hold(&who, &r, at)?;
        let command = signed(&who, proof, rpc::RELEASE_HOLD, &r, command)?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::HoldReleased { .. } => Ok(Response::new(pb::ReleaseHoldResponse {})),
            CommandResult::Refused(refusal) => Err(hold_refusal(refusal, j, &r.call_id)),
            other => Err(unexpected(other)),
        }
    }
}
