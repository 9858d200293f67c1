//! The `Query` and `Admin` services: retention status for agencies, and policies and the
//! privileged-number registry through the replicated metadata store.
//!
//! Every request is scoped to the caller's jurisdictions. A request about one call of another
//! jurisdiction is `NOT_FOUND` with the same message as a call that does not exist; a request
//! about another jurisdiction as a whole is `PERMISSION_DENIED` (which says nothing about calls).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use callvault_core::call::{CallStatus, check_party_id};
use callvault_core::policy::{PrivilegedRetention, VersionedPolicy};
use callvault_core::privilege::number_fingerprint;
use callvault_core::retention::recording_deadline;
use callvault_core::{CallRecord, Jurisdiction, Lifecycle, PrivilegeKind, PurgeReason, UnixMillis};
use callvault_meta::client::MetaClient;
use callvault_meta::intents::{self, call_id, jurisdiction, millis, no_call};
use callvault_meta::reads::CallFilter;
use callvault_meta::{CommandResult, Refusal};
use callvault_proto::v1 as pb;
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::auth::{AccessRole, Principal, caller};
use crate::ingest::now;

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

/// Whether `who` may see `j`'s calls: its agency, or an auditor scoped to it.
fn may_read_calls(who: &Principal, j: Jurisdiction) -> bool {
    who.may(AccessRole::Agency, j) || who.may(AccessRole::Auditor, j)
}

fn require_read_calls(who: &Principal, j: Jurisdiction) -> Result<(), Status> {
    who.require_role(&[AccessRole::Agency, AccessRole::Auditor])?;
    if may_read_calls(who, j) {
        Ok(())
    } else {
        Err(Status::permission_denied(format!(
            "{} may not see {}'s calls",
            who.name,
            j.code()
        )))
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

fn page_token(token: &str) -> Result<Vec<u8>, Status> {
    URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| Status::invalid_argument("page_token is not one this service issued"))
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

fn unexpected(result: CommandResult) -> Status {
    Status::internal(format!(
        "unexpected result from the metadata store: {result:?}"
    ))
}

impl ApiService {
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

#[tonic::async_trait]
impl pb::query_server::Query for ApiService {
    async fn jurisdiction_status(
        &self,
        request: Request<pb::JurisdictionStatusRequest>,
    ) -> Result<Response<pb::JurisdictionStatusResponse>, Status> {
        let who = caller(&request)?;
        let j = jurisdiction(&request.get_ref().jurisdiction)?;
        require_read_calls(&who, j)?;
        let status = self.meta.status(j, now()).await?;
        let c = status.counters;
        let policy = status.policy.as_ref();
        Ok(Response::new(pb::JurisdictionStatusResponse {
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
            oldest_live_deadline: status
                .oldest_live_started_at
                .zip(policy)
                .map(|(t, p)| timestamp(recording_deadline(t, &p.policy))),
            recording_retention_days: policy.map_or(0, |p| p.policy.recording_retention_days),
            overdue: status.overdue,
            purges_overdue: status.purges_overdue,
        }))
    }

    async fn call_status(
        &self,
        request: Request<pb::CallStatusRequest>,
    ) -> Result<Response<pb::CallStatusResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        let call_id = call_id(&r.call_id)?;
        who.require_role(&[AccessRole::Agency, AccessRole::Auditor])?;
        if !may_read_calls(&who, j) {
            return Err(no_call(j, &r.call_id));
        }
        let Some((call, shred_started)) = self.meta.call_with_shred(j, &call_id).await? else {
            return Err(no_call(j, &r.call_id));
        };
        let policy = self.meta.policy(j, 0).await?;
        let live = call.lifecycle == Lifecycle::Live;
        Ok(Response::new(pb::CallStatusResponse {
            call_id: r.call_id,
            jurisdiction: j.code().to_string(),
            state: state(&call) as i32,
            started_at: Some(timestamp(call.started_at)),
            deadline: policy
                .as_ref()
                .filter(|_| live)
                .map(|p| timestamp(recording_deadline(call.started_at, &p.policy))),
            reason: reason(&call, policy.as_ref()),
            holds: call.holds.len() as u32,
            purge_progress: match call.lifecycle {
                // Kept sealed by a court order: the purge has not started.
                Lifecycle::PrivilegedUnderSeal { .. } => pb::PurgeProgress::Pending,
                Lifecycle::Purged { .. } | Lifecycle::Expired { .. } if shred_started.is_some() => {
                    pb::PurgeProgress::Pending
                }
                Lifecycle::Purged { .. } | Lifecycle::Expired { .. } => pb::PurgeProgress::Done,
                _ => pb::PurgeProgress::Unspecified,
            } as i32,
            policy_version: policy.map_or(call.committed_under_policy, |p| p.version),
        }))
    }

    async fn list_calls(
        &self,
        request: Request<pb::ListCallsRequest>,
    ) -> Result<Response<pb::ListCallsResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let j = jurisdiction(&r.jurisdiction)?;
        require_read_calls(&who, j)?;
        let party = |what: &'static str, value: &str| -> Result<Option<String>, Status> {
            if value.is_empty() {
                return Ok(None);
            }
            check_party_id(what, value).map_err(|e| Status::invalid_argument(e.to_string()))?;
            Ok(Some(value.to_string()))
        };
        if r.page_size > callvault_meta::reads::MAX_PAGE as u32 {
            return Err(Status::invalid_argument("page_size is at most 1000"));
        }
        let filter = CallFilter {
            facility_id: party("facility id", &r.facility_id)?,
            inmate_id: party("inmate id", &r.inmate_id)?,
            started_after: r.started_after.as_ref().map(millis).transpose()?,
            started_before: r.started_before.as_ref().map(millis).transpose()?,
        };
        let page = self
            .meta
            .list_calls(j, &filter, r.page_size, page_token(&r.page_token)?)
            .await?;
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
        let r = request.into_inner();
        let command = intents::put_policy(&who, &r, now())?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::PolicyPut { version } => {
                Ok(Response::new(pb::PutPolicyResponse { version }))
            }
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
        let r = request.into_inner();
        let (j, number) = intents::registered_number(&who, &r.jurisdiction, &r.number)?;
        let fingerprint = number_fingerprint(&self.index_key, j, &number);
        let command = intents::register_privileged(&who, &r, now(), fingerprint)?;
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
            .list_registry(j, r.page_size, page_token(&r.page_token)?)
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
        let r = request.into_inner();
        let command = intents::flag_privileged(&who, &r, now())?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::CallFlagged { purged } => {
                Ok(Response::new(pb::FlagPrivilegedResponse { purged }))
            }
            CommandResult::Refused(Refusal::NoSuchCall) => Err(no_call(j, &r.call_id)),
            other => Err(unexpected(other)),
        }
    }

    async fn register_sensitive_number(
        &self,
        request: Request<pb::RegisterSensitiveNumberRequest>,
    ) -> Result<Response<pb::RegisterSensitiveNumberResponse>, Status> {
        let who = caller(&request)?;
        let r = request.into_inner();
        let (j, number) = intents::registered_number(&who, &r.jurisdiction, &r.number)?;
        let fingerprint = number_fingerprint(&self.index_key, j, &number);
        let command = intents::register_sensitive(&who, &r, now(), fingerprint)?;
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
        let r = request.into_inner();
        let command = intents::place_hold(&who, &r, now())?;
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
        let r = request.into_inner();
        let command = intents::release_hold(&who, &r, now())?;
        let j = jurisdiction(&r.jurisdiction)?;
        match self.meta.propose(&command).await?.1 {
            CommandResult::HoldReleased { .. } => Ok(Response::new(pb::ReleaseHoldResponse {})),
            CommandResult::Refused(refusal) => Err(hold_refusal(refusal, j, &r.call_id)),
            other => Err(unexpected(other)),
        }
    }
}
