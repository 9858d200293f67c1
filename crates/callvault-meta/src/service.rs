//! The metadata store's gRPC services: openraft's RPCs (`Raft`), proposals and linearizable reads
//! for the stateless tiers (`MetaStore`), and membership for operators (`Cluster`). A follower
//! forwards proposals, reads and membership changes to the leader it knows.

use std::collections::{BTreeMap, BTreeSet};

use callvault_core::call::check_party_id;
use callvault_core::clock::{sweep_leader, voter_clocks};
use callvault_core::codec::VersionedRecord;
use callvault_core::tombstone::TombstoneOutcome;
use callvault_core::{CallId, CallRecord, Jurisdiction, UnixMillis};
use callvault_proto::MAX_MESSAGE_BYTES;
use callvault_proto::v1 as pb;
use callvault_proto::v1::cluster_client::ClusterClient;
use callvault_proto::v1::meta_store_client::MetaStoreClient;
use openraft::error::{
    CheckIsLeaderError, ClientWriteError, ForwardToLeader, InstallSnapshotError, RaftError,
};
use openraft::{ChangeMembers, ServerState};
use tonic::{Request, Response, Status};

use crate::command::Command;
use crate::convert::{self, ConvertError};
use crate::gate::ProposalGate;
use crate::keys;
use crate::member::{INCARNATION_HEADER, MetaMember, incarnation_matches};
use crate::network::ChannelPool;
use crate::proposer::{ProposeError, Proposer};
use crate::reads;
use crate::state_machine::StateMachineStore;
use crate::txn::Txn;
use crate::types::{NodeId, Raft};

/// Serves the three services of a meta node.
#[derive(Clone)]
pub struct MetaService {
    raft: Raft,
    proposer: Proposer,
    state_machine: StateMachineStore,
    pool: ChannelPool,
    /// This member as peers reach it: its id, address and volume incarnation.
    node_id: NodeId,
    me: MetaMember,
    gate: ProposalGate,
    /// How far a voter's clock may be off the cluster time before status flags it.
    clock_bound_ms: i64,
}

/// The clock bound when a node names none: ten seconds.
pub const DEFAULT_CLOCK_BOUND_MS: i64 = 10_000;

impl MetaService {
    /// The services of node `node_id`, which peers reach as `me`, admitting proposals through
    /// `gate`.
    pub fn new(
        raft: Raft,
        state_machine: StateMachineStore,
        pool: ChannelPool,
        node_id: NodeId,
        me: MetaMember,
        gate: ProposalGate,
    ) -> Self {
        MetaService {
            proposer: Proposer::start(raft.clone(), state_machine.apply_times()),
            raft,
            state_machine,
            pool,
            node_id,
            me,
            gate,
            clock_bound_ms: DEFAULT_CLOCK_BOUND_MS,
        }
    }

    /// The gate proposals pass on this node.
    pub(crate) fn gate(&self) -> &ProposalGate {
        &self.gate
    }

    /// The same service, reporting voters whose clocks are off by more than `bound_ms`.
    pub fn with_clock_bound(mut self, bound_ms: i64) -> Self {
        self.clock_bound_ms = bound_ms;
        self
    }

    /// Refuses a Raft RPC meant for another incarnation of this node's volume: this node lost
    /// the volume the sender's membership knows, and must rejoin before it takes part.
    fn check_incarnation<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let expected = request
            .metadata()
            .get(INCARNATION_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if incarnation_matches(expected, self.me.incarnation) {
            return Ok(());
        }
        Err(Status::failed_precondition(format!(
            "node {} has volume incarnation {:016x}, the sender expects {:016x}: this node lost \
             its volume and takes no part until it rejoins (`callvault cluster add-voter`)",
            self.node_id,
            self.me.incarnation,
            expected.unwrap_or_default()
        )))
    }

    /// The Raft service, with message bounds.
    pub fn raft_server(&self) -> pb::raft_server::RaftServer<Self> {
        pb::raft_server::RaftServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The MetaStore service, with message bounds.
    pub fn meta_store_server(&self) -> pb::meta_store_server::MetaStoreServer<Self> {
        pb::meta_store_server::MetaStoreServer::new(self.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// The Cluster service.
    pub fn cluster_server(&self) -> pb::cluster_server::ClusterServer<Self> {
        pb::cluster_server::ClusterServer::new(self.clone())
    }

    fn leader_channel(
        &self,
        forward: &ForwardToLeader<NodeId, MetaMember>,
    ) -> Result<callvault_proto::auth::AuthChannel, Status> {
        match (&forward.leader_id, &forward.leader_node) {
            (Some(id), Some(node)) if *id != self.node_id => self
                .pool
                .channel(&node.addr)
                .map_err(|e| Status::unavailable(format!("leader {id} at {}: {e}", node.addr))),
            _ => Err(Status::unavailable(
                "no leader is known yet (election in progress or no quorum); retry",
            )),
        }
    }

    async fn status(&self) -> pb::ClusterStatus {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let matched: BTreeMap<NodeId, u64> = metrics
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log)| (*id, log.as_ref().map_or(0, |l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        pb::ClusterStatus {
            node_id: self.node_id,
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            last_log_index: metrics.last_log_index.unwrap_or(0),
            last_applied_index: metrics.last_applied.map_or(0, |l| l.index),
            members: membership
                .nodes()
                .map(|(id, node)| pb::MemberStatus {
                    node_id: *id,
                    addr: node.addr.clone(),
                    voter: voters.contains(id),
                    matched_index: matched.get(id).copied().unwrap_or(0),
                })
                .collect(),
            snapshot_index: metrics.snapshot.map_or(0, |l| l.index),
            purged_index: metrics.purged.map_or(0, |l| l.index),
            incarnation: self.me.incarnation,
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Follower => "follower",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            ..self.retention_status(metrics.current_leader)
        }
    }

    /// The clock, sweep leadership and shred receipts as this node's state machine has them.
    fn retention_status(&self, raft_leader: Option<NodeId>) -> pb::ClusterStatus {
        let db = self.state_machine.db();
        let Ok(view) = crate::clock::view(&db) else {
            return pb::ClusterStatus::default();
        };
        let clocks = voter_clocks(
            &view.attestations,
            &view.voters,
            view.cluster_time,
            self.clock_bound_ms,
        );
        let txn = Txn::new(&db);
        pb::ClusterStatus {
            cluster_time_ms: view.cluster_time.map(|t| t.0),
            sweep_leader: sweep_leader(raft_leader, &clocks).unwrap_or(0),
            clocks: clocks
                .iter()
                .map(|c| pb::VoterClockStatus {
                    node_id: c.node_id,
                    attested_ms: c.attested.map(|t| t.0),
                    offset_ms: c.offset_ms,
                    suspect: c.suspect,
                })
                .collect(),
            // A waived node added back holds metadata again: it owes receipts like any member.
            volumes_to_destroy: {
                let members = crate::membership::members(&txn).unwrap_or_default();
                crate::lifecycle::waived_nodes(&txn)
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|n| !members.contains(n))
                    .collect()
            },
            shreds_pending: reads::shreds_owing(&db, None, false).unwrap_or_default(),
            ..Default::default()
        }
    }
}

fn fatal(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft is not running: {e}"))
}

fn bad_request(e: ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
}

#[tonic::async_trait]
impl pb::raft_server::Raft for MetaService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        self.check_incarnation(&request)?;
        let rpc =
            convert::append_entries_request_from_pb(request.get_ref()).map_err(bad_request)?;
        let response = self.raft.append_entries(rpc).await.map_err(fatal)?;
        Ok(Response::new(convert::append_entries_response_to_pb(
            &response,
        )))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        self.check_incarnation(&request)?;
        let rpc = convert::vote_request_from_pb(request.get_ref()).map_err(bad_request)?;
        let response = self.raft.vote(rpc).await.map_err(fatal)?;
        Ok(Response::new(convert::vote_response_to_pb(&response)))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        self.check_incarnation(&request)?;
        let rpc =
            convert::install_snapshot_request_from_pb(request.into_inner()).map_err(bad_request)?;
        let answer = match self.raft.install_snapshot(rpc).await {
            Ok(response) => convert::install_snapshot_response_to_pb(Ok(&response)),
            Err(RaftError::APIError(InstallSnapshotError::SnapshotMismatch(m))) => {
                convert::install_snapshot_response_to_pb(Err(&m))
            }
            Err(RaftError::Fatal(e)) => return Err(fatal(e)),
        };
        Ok(Response::new(answer))
    }
}

#[tonic::async_trait]
impl pb::meta_store_server::MetaStore for MetaService {
    async fn propose(
        &self,
        request: Request<pb::ProposeRequest>,
    ) -> Result<Response<pb::ProposeResponse>, Status> {
        let caller = callvault_proto::identity::PeerIdentity::of(&request).cloned();
        let bytes = request.into_inner().command;
        let command = Command::decode(&bytes)
            .map_err(|e| Status::invalid_argument(format!("command: {e}")))?;
        if matches!(command, Command::Batch(_)) {
            return Err(Status::invalid_argument(
                "batches are formed by the leader; propose commands one by one",
            ));
        }
        // Without an identity the service runs ungated (library tests); a node always gates.
        let command = match &caller {
            Some(peer) => {
                crate::authz::check(peer.role, &command)?;
                self.admit(command, peer).await?
            }
            None => command,
        };
        self.propose_or_forward(command).await.map(Response::new)
    }

    async fn read_call(
        &self,
        request: Request<pb::ReadCallRequest>,
    ) -> Result<Response<pb::ReadCallResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        let call_id =
            CallId::new(&r.call_id).map_err(|e| Status::invalid_argument(e.to_string()))?;
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_call(r).await;
        }
        Ok(Response::new(
            self.read_call_here(jurisdiction, &call_id).await?,
        ))
    }

    async fn read_content(
        &self,
        request: Request<pb::ReadContentRequest>,
    ) -> Result<Response<pb::ReadContentResponse>, Status> {
        self.serve_read_content(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn read_access(
        &self,
        request: Request<pb::ReadAccessRequest>,
    ) -> Result<Response<pb::ReadAccessResponse>, Status> {
        self.serve_read_access(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn read_released_key(
        &self,
        request: Request<pb::ReadAccessRequest>,
    ) -> Result<Response<pb::ReadReleasedKeyResponse>, Status> {
        self.serve_read_released_key(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn read_metadata(
        &self,
        request: Request<pb::ReadMetadataRequest>,
    ) -> Result<Response<pb::ReadMetadataResponse>, Status> {
        self.serve_read_metadata(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn read_counters(
        &self,
        request: Request<pb::ReadCountersRequest>,
    ) -> Result<Response<pb::ReadCountersResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_counters(r).await;
        }
        let as_of = UnixMillis(r.as_of_ms);
        Ok(Response::new(
            self.read_counters_here(jurisdiction, as_of).await?,
        ))
    }

    async fn read_standing(
        &self,
        request: Request<pb::ReadStandingRequest>,
    ) -> Result<Response<pb::ReadStandingResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        let fingerprint: [u8; 32] = r
            .fingerprint
            .as_slice()
            .try_into()
            .map_err(|_| Status::invalid_argument("fingerprint must be 32 bytes"))?;
        let call_id = match r.call_id.as_str() {
            "" => None,
            id => Some(CallId::new(id).map_err(|e| Status::invalid_argument(e.to_string()))?),
        };
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_standing(r).await;
        }
        let id_key = self.state_machine.id_key();
        let standing = self
            .read(move |db| {
                reads::standing(db, id_key, jurisdiction, &fingerprint, call_id.as_ref())
            })
            .await?;
        let (existing_call, position) = match standing.existing {
            Some((call, position)) => (call.encode(), position),
            None => (Vec::new(), Default::default()),
        };
        Ok(Response::new(pb::ReadStandingResponse {
            privileged: standing.privileged,
            sensitive: standing.sensitive,
            policy: standing.policy.map(|p| p.encode()).unwrap_or_default(),
            existing_call,
            existing_commit_term: position.term,
            existing_commit_index: position.index,
            retired: standing.retired,
            cluster_time_ms: standing.cluster_time.map(|t| t.0),
        }))
    }

    async fn read_policy(
        &self,
        request: Request<pb::ReadPolicyRequest>,
    ) -> Result<Response<pb::ReadPolicyResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_policy(r).await;
        }
        let version = r.version;
        let policy = self
            .read(move |db| reads::policy(db, jurisdiction, version))
            .await?;
        Ok(Response::new(pb::ReadPolicyResponse {
            policy: policy.map(|p| p.encode()).unwrap_or_default(),
        }))
    }

    async fn list_call_records(
        &self,
        request: Request<pb::ListCallRecordsRequest>,
    ) -> Result<Response<pb::ListCallRecordsResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        let party = |what: &'static str, text: &str| -> Result<Option<String>, Status> {
            if text.is_empty() {
                return Ok(None);
            }
            check_party_id(what, text).map_err(|e| Status::invalid_argument(e.to_string()))?;
            Ok(Some(text.to_string()))
        };
        let filter = reads::CallFilter {
            facility_id: party("facility id", &r.facility_id)?,
            inmate_id: party("inmate id", &r.inmate_id)?,
            started_after: r.started_after_ms.map(UnixMillis),
            started_before: r.started_before_ms.map(UnixMillis),
        };
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .list_call_records(r)
                .await;
        }
        let (page_size, token) = (r.page_size, r.page_token);
        let page = self
            .read(move |db| reads::list_calls(db, jurisdiction, &filter, page_size, &token))
            .await?;
        Ok(Response::new(pb::ListCallRecordsResponse {
            records: page.items.iter().map(|c| c.encode()).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn list_registry(
        &self,
        request: Request<pb::ListRegistryRequest>,
    ) -> Result<Response<pb::ListRegistryResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .list_registry(r)
                .await;
        }
        let (page_size, token) = (r.page_size, r.page_token);
        let page = self
            .read(move |db| reads::list_registry(db, jurisdiction, page_size, &token))
            .await?;
        Ok(Response::new(pb::ListRegistryResponse {
            entries: page.items.iter().map(|e| e.encode()).collect(),
            next_page_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn read_changes(
        &self,
        request: Request<pb::ReadChangesRequest>,
    ) -> Result<Response<pb::ReadChangesResponse>, Status> {
        let r = request.into_inner();
        let jurisdiction = parse_jurisdiction(&r.jurisdiction)?;
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_changes(r).await;
        }
        let change_id = r.change_id;
        let changes = self
            .read(move |db| {
                Ok(if change_id == 0 {
                    crate::approvals::open_changes(db, Some(jurisdiction), reads::MAX_PAGE)?
                } else {
                    crate::approvals::get(&Txn::new(db), change_id)?
                        .into_iter()
                        .filter(|c| c.approval.jurisdiction == jurisdiction)
                        .collect()
                })
            })
            .await?;
        Ok(Response::new(pb::ReadChangesResponse {
            changes: changes.iter().map(|c| c.encode()).collect(),
        }))
    }

    async fn read_clock(
        &self,
        request: Request<pb::ReadClockRequest>,
    ) -> Result<Response<pb::ReadClockResponse>, Status> {
        let r = request.into_inner();
        if !r.local
            && let Some(channel) = self.linearizable_or_leader().await?
        {
            return MetaStoreClient::new(channel).read_clock(r).await;
        }
        let view = self.read(|db| Ok(crate::clock::view(db)?)).await?;
        Ok(Response::new(clock_response(&view)))
    }

    async fn state_digest(
        &self,
        _request: Request<pb::StateDigestRequest>,
    ) -> Result<Response<pb::StateDigestResponse>, Status> {
        let state_machine = self.state_machine.clone();
        // The position and the digest come from one snapshot of the store, so replicas can be
        // compared while applies go on.
        let (applied, digest) =
            tokio::task::spawn_blocking(move || state_machine.applied_and_digest())
                .await
                .map_err(internal)?
                .map_err(internal)?;
        Ok(Response::new(pb::StateDigestResponse {
            applied_index: applied.map_or(0, |l| l.index),
            digest: digest.to_vec(),
        }))
    }
}

/// A jurisdiction's status as the wire carries it.
fn counters_response(status: reads::JurisdictionStatus) -> pb::ReadCountersResponse {
    let c = status.counters;
    let (pending_id, pending_policy, pending_at) = match status.pending_policy {
        Some((id, policy, at)) => (id, policy.encode(), at.map(|t| t.0)),
        None => (0, Vec::new(), None),
    };
    pb::ReadCountersResponse {
        calls_total: c.calls_total,
        live: c.live,
        held: c.held,
        expired: c.expired,
        purged: c.purged,
        blocked_privileged: c.blocked_privileged,
        purges_pending: c.purges_pending,
        policy: status.policy.map(|p| p.encode()).unwrap_or_default(),
        oldest_live_started_at_ms: status.oldest_live_started_at.map(|t| t.0),
        overdue: status.overdue,
        purges_overdue: status.purges_overdue,
        details_kept: c.details_kept,
        details_expired: c.details_expired,
        oldest_detail_started_at_ms: status.oldest_detail_started_at.map(|t| t.0),
        details_overdue: status.details_overdue,
        cluster_time_ms: status.cluster_time.map(|t| t.0),
        holds_past_review: status.holds_past_review,
        pending_policy_change_id: pending_id,
        pending_policy,
        pending_policy_effective_at_ms: pending_at,
        pending_changes: status.pending_changes,
        purges_in_progress: status.purges_in_progress,
        purges_in_progress_purged: status.purges_in_progress_purged,
    }
}

/// The clock as the wire carries it.
fn clock_response(view: &crate::clock::ClockView) -> pb::ReadClockResponse {
    pb::ReadClockResponse {
        cluster_time_ms: view.cluster_time.map(|t| t.0),
        voters: view.voters.clone(),
        attestations: view
            .attestations
            .iter()
            .map(|(node_id, at)| pb::Attestation {
                node_id: *node_id,
                attested_ms: at.0,
            })
            .collect(),
    }
}

/// This node's wall clock, for the time stamped on commands it proposes itself (`apply` never
/// reads one).
fn wall_clock() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

fn parse_jurisdiction(code: &str) -> Result<Jurisdiction, Status> {
    Jurisdiction::from_code(code).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("state machine: {e}"))
}

impl MetaService {
    /// Admits a proposal from `peer` through the gate; a refusal worth logging is proposed too.
    async fn admit(
        &self,
        command: Command,
        peer: &callvault_proto::identity::PeerIdentity,
    ) -> Result<Command, Status> {
        match self.gate.admit(command, Some(peer), self.proof_clock()) {
            Ok(command) => Ok(command),
            Err((status, log)) => {
                if let Some(log) = log
                    && let Err(e) = self.propose_or_forward(log).await
                {
                    tracing::warn!(error = %e, "a refused proof was not logged");
                }
                Err(status)
            }
        }
    }

    /// "Now" for a person's proof and an access's release window: the cluster time (the
    /// voters' median clock, from this replica), so a member whose own clock is off neither
    /// refuses honest proofs nor accepts stale ones; this node's clock only until the cluster
    /// has a time.
    pub(crate) fn proof_clock(&self) -> UnixMillis {
        let db = self.state_machine.db();
        crate::clock::cluster_time(&Txn::new(&db))
            .ok()
            .flatten()
            .unwrap_or_else(wall_clock)
    }

    /// Proposes `command` here, or forwards it to the leader.
    async fn propose_or_forward(&self, command: Command) -> Result<pb::ProposeResponse, Status> {
        let bytes = command.encode();
        match self.proposer.propose(command, bytes.len()).await {
            // Committed and applied, but the caller never hears it: a reply lost on the way back.
            Ok(_) if crate::failpoint_fires!("propose-reply-lost") => Err(Status::unavailable(
                "the reply was lost (failpoint propose-reply-lost)",
            )),
            Ok((log_id, result)) => Ok(pb::ProposeResponse {
                term: log_id.leader_id.term,
                index: log_id.index,
                result: result.encode(),
            }),
            Err(ProposeError::Forward(forward)) => {
                let channel = self.leader_channel(&forward)?;
                Ok(MetaStoreClient::new(channel)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
                    .propose(pb::ProposeRequest { command: bytes })
                    .await?
                    .into_inner())
            }
            Err(ProposeError::Failed(e)) => Err(Status::unavailable(e)),
        }
    }

    /// Proposes `command` on this node, which must lead (it just made a linearizable read).
    pub(crate) async fn propose_here(
        &self,
        command: Command,
        encoded_len: usize,
    ) -> Result<crate::command::CommandResult, Status> {
        match self.proposer.propose(command, encoded_len).await {
            Ok((_, result)) => Ok(result),
            Err(ProposeError::Forward(_)) => Err(Status::unavailable(
                "leadership moved during the read; retry",
            )),
            Err(ProposeError::Failed(e)) => Err(Status::unavailable(e)),
        }
    }

    /// A call's record, chunk ids, pending shred and tombstone, from this node's state machine.
    pub(crate) async fn read_call_here(
        &self,
        jurisdiction: Jurisdiction,
        call_id: &CallId,
    ) -> Result<pb::ReadCallResponse, Status> {
        let db = self.state_machine.db();
        let txn = Txn::new(&db).with_id_key(self.state_machine.id_key());
        let key = keys::call(jurisdiction, call_id);
        let record = txn.get(keys::CF_CALLS, &key).map_err(internal)?;
        let chunk_ids = txn
            .get(keys::CF_CHUNKS, &key)
            .map_err(internal)?
            .unwrap_or_default()
            .chunks_exact(32)
            .map(<[u8]>::to_vec)
            .collect();
        let shred = crate::lifecycle::shred_record(&txn, &key).map_err(internal)?;
        let number_privileged = match &record {
            Some(bytes) => {
                let call = CallRecord::decode(bytes).map_err(internal)?;
                crate::lifecycle::number_privileged(&txn, &call).map_err(internal)?
            }
            None => false,
        };
        let tombstone = match record {
            Some(_) => None,
            None => crate::tombstones::find(&txn, jurisdiction, call_id).map_err(internal)?,
        };
        Ok(pb::ReadCallResponse {
            record: record.unwrap_or_default(),
            chunk_ids,
            shred_pending: shred.is_some(),
            shred_started_at_ms: shred.map_or(0, |s| s.started_at.0),
            tombstone_outcome: tombstone.map_or(0, |t| match t.outcome {
                TombstoneOutcome::Expired => 1,
                TombstoneOutcome::Purged => 2,
                TombstoneOutcome::Refused => 3,
            }),
            tombstone_at_ms: tombstone.map_or(0, |t| t.at.0),
            number_privileged,
        })
    }

    /// A jurisdiction's counters and status as of `as_of`, from this node's state machine.
    pub(crate) async fn read_counters_here(
        &self,
        jurisdiction: Jurisdiction,
        as_of: UnixMillis,
    ) -> Result<pb::ReadCountersResponse, Status> {
        let status = self
            .read(move |db| reads::jurisdiction_status(db, jurisdiction, as_of))
            .await?;
        Ok(counters_response(status))
    }

    /// Runs a read of the local state machine off the async threads.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        read: impl FnOnce(&rocksdb::DB) -> Result<T, reads::ReadError> + Send + 'static,
    ) -> Result<T, Status> {
        let db = self.state_machine.db();
        tokio::task::spawn_blocking(move || read(&db))
            .await
            .map_err(internal)?
            .map_err(|e| match e {
                reads::ReadError::Invalid(reason) => Status::invalid_argument(reason),
                reads::ReadError::PastDeadline => Status::failed_precondition(e.to_string()),
                reads::ReadError::Store(e) => internal(e),
            })
    }

    /// Waits for a read index confirmed by a quorum (this node is leader), or names the leader's
    /// channel to forward the read to.
    pub(crate) async fn linearizable_or_leader(
        &self,
    ) -> Result<Option<callvault_proto::auth::AuthChannel>, Status> {
        match self.raft.ensure_linearizable().await {
            Ok(_) => Ok(None),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                Ok(Some(self.leader_channel(&forward)?))
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }
}

fn membership_error(
    e: RaftError<NodeId, ClientWriteError<NodeId, MetaMember>>,
) -> Result<ForwardToLeader<NodeId, MetaMember>, Status> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => Ok(forward),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Err(Status::failed_precondition(e.to_string()))
        }
        RaftError::Fatal(e) => Err(fatal(e)),
    }
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for MetaService {
    async fn init(
        &self,
        _request: Request<pb::InitRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let members = BTreeMap::from([(self.node_id, self.me.clone())]);
        match self.raft.initialize(members).await {
            Ok(()) => {}
            Err(RaftError::APIError(e)) => {
                return Err(Status::failed_precondition(format!(
                    "cannot initialize: {e} (a node with state joins an existing cluster instead)"
                )));
            }
            Err(RaftError::Fatal(e)) => return Err(fatal(e)),
        }
        // Answer once this node leads, so a following `add-voter` finds a leader.
        let _ = self
            .raft
            .wait(Some(std::time::Duration::from_secs(10)))
            .current_leader(self.node_id, "initialized node becomes leader")
            .await;
        Ok(Response::new(self.status().await))
    }

    async fn add_member(
        &self,
        request: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let r = request.into_inner();
        if r.node_id == 0 || r.addr.is_empty() {
            return Err(Status::invalid_argument(
                "node_id must be > 0 and addr host:port",
            ));
        }
        if let Some(leader) = self.leader_unless_self()? {
            return ClusterClient::new(leader).add_member(r).await;
        }
        let member = self.identify(r.node_id, &r.addr).await?;
        if self.replace_lost_volume(r.node_id, &member).await? == Membership::Same
            && (self.is_voter(r.node_id) || r.learner_only)
        {
            return Ok(Response::new(self.status().await));
        }
        self.raft
            .add_learner(r.node_id, member, true)
            .await
            .map_err(|e| membership_status(membership_error(e)))?;
        if !r.learner_only {
            self.raft
                .change_membership(
                    ChangeMembers::AddVoterIds(BTreeSet::from([r.node_id])),
                    false,
                )
                .await
                .map_err(|e| membership_status(membership_error(e)))?;
        }
        Ok(Response::new(self.status().await))
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        let operator = request
            .extensions()
            .get::<crate::principal::Principal>()
            .map_or_else(|| "meta-member".to_string(), |p| p.name.clone());
        let r = request.into_inner();
        // The leader settles receipts and changes the membership: forward the whole request.
        if let Some(channel) = self.leader_unless_self()? {
            return ClusterClient::new(channel).remove_member(r).await;
        }
        self.settle_receipts(&r, &operator).await?;
        let metrics = self.raft.metrics().borrow().clone();
        let is_voter = metrics
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == r.node_id);
        let change = if is_voter {
            ChangeMembers::RemoveVoters(BTreeSet::from([r.node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([r.node_id]))
        };
        if let Err(e) = self.raft.change_membership(change, false).await {
            let forward = membership_error(e)?;
            let channel = self.leader_channel(&forward)?;
            return ClusterClient::new(channel).remove_member(r).await;
        }
        Ok(Response::new(self.status().await))
    }

    async fn status(
        &self,
        _request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::ClusterStatus>, Status> {
        Ok(Response::new(MetaService::status(self).await))
    }

    async fn read_index(
        &self,
        _request: Request<pb::ReadIndexRequest>,
    ) -> Result<Response<pb::ReadIndexResponse>, Status> {
        self.leader_read_index().await.map(Response::new)
    }
}

/// How the membership knows a node that asks to join.
#[derive(Debug, PartialEq, Eq)]
enum Membership {
    /// Not at all, or it was just removed because its volume was lost.
    Absent,
    /// As it is now: same address, same incarnation.
    Same,
}

fn membership_status(e: Result<ForwardToLeader<NodeId, MetaMember>, Status>) -> Status {
    match e {
        Ok(_) => Status::unavailable("leadership moved during the membership change; retry"),
        Err(status) => status,
    }
}

impl MetaService {
    /// A channel to the leader when another node leads; `None` when this one does.
    fn leader_unless_self(&self) -> Result<Option<callvault_proto::auth::AuthChannel>, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(id) if id == self.node_id => Ok(None),
            Some(id) => {
                let node = metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .cloned();
                self.leader_channel(&ForwardToLeader::new(id, node.unwrap_or_default()))
                    .map(Some)
            }
            None => Err(Status::unavailable(
                "no leader is known yet (election in progress or no quorum); retry",
            )),
        }
    }

    fn is_voter(&self, node_id: NodeId) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        membership.get_joint_config().len() == 1 && membership.voter_ids().any(|id| id == node_id)
    }

    /// The member at `addr` as it says it is: its id must be `node_id`; its incarnation names
    /// the volume it has now. Asked of the node itself, so no request can claim a volume.
    async fn identify(&self, node_id: NodeId, addr: &str) -> Result<MetaMember, Status> {
        let channel = self
            .pool
            .channel(addr)
            .map_err(|e| Status::invalid_argument(format!("addr {addr:?}: {e}")))?;
        let status = ClusterClient::new(channel)
            .status(pb::StatusRequest {})
            .await
            .map_err(|s| {
                Status::unavailable(format!(
                    "cannot ask node {node_id} at {addr} who it is: {}",
                    s.message()
                ))
            })?
            .into_inner();
        if status.node_id != node_id {
            return Err(Status::invalid_argument(format!(
                "{addr} is node {}, not node {node_id}",
                status.node_id
            )));
        }
        Ok(MetaMember::new(addr, status.incarnation))
    }

    /// When the membership knows `node_id` with another volume than `member`'s, the node lost
    /// its volume: its old incarnation leaves the membership (its votes and acknowledgements
    /// went with the volume), and the caller adds it back as a learner, which catches up before
    /// it is promoted. A member recorded before incarnations existed is updated in place.
    async fn replace_lost_volume(
        &self,
        node_id: NodeId,
        member: &MetaMember,
    ) -> Result<Membership, Status> {
        let metrics = self.raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let Some(known) = membership.get_node(&node_id) else {
            return Ok(Membership::Absent);
        };
        if known == member {
            return Ok(Membership::Same);
        }
        if known.addr == member.addr && known.incarnation == 0 {
            // Recorded before incarnations: the same node, upgraded; record its volume.
            self.raft
                .change_membership(
                    ChangeMembers::SetNodes(BTreeMap::from([(node_id, member.clone())])),
                    false,
                )
                .await
                .map_err(|e| membership_status(membership_error(e)))?;
            return Ok(Membership::Same);
        }
        tracing::warn!(
            node_id,
            known = %known,
            now = %member,
            "a member came back with another volume: replacing its old incarnation"
        );
        let change = if membership.voter_ids().any(|id| id == node_id) {
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| membership_status(membership_error(e)))?;
        Ok(Membership::Absent)
    }

    /// The leader's commit index, confirmed by a quorum now: from Raft on the leader, forwarded
    /// to the leader from any other member. A member whose applied index reaches it has caught
    /// up with every write acknowledged before the call, which is what readiness means.
    pub async fn leader_read_index(&self) -> Result<pb::ReadIndexResponse, Status> {
        match self.raft.get_read_log_id().await {
            Ok((read_log_id, _applied)) => Ok(pb::ReadIndexResponse {
                leader_id: self.node_id,
                read_index: read_log_id.map_or(0, |l| l.index),
            }),
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(forward))) => {
                let channel = self.leader_channel(&forward)?;
                ClusterClient::new(channel)
                    .read_index(pb::ReadIndexRequest {})
                    .await
                    .map(Response::into_inner)
            }
            Err(RaftError::APIError(e)) => Err(Status::unavailable(e.to_string())),
            Err(RaftError::Fatal(e)) => Err(fatal(e)),
        }
    }
}

impl MetaService {
    /// Before `r.node_id` leaves: it holds the keys of pending shreds in its log or snapshot.
    /// With `destroy_volume`, records that its volume must be destroyed and waives its receipts.
    /// Otherwise waits (up to `wait_seconds`) for its purge receipts, which a live node sends
    /// within seconds, and refuses the removal if they do not come; its expiry receipts (sent
    /// when its ordinary snapshot passes them) stay owed, shown in status, until it sends them
    /// or its volume is waived.
    async fn settle_receipts(
        &self,
        r: &pb::RemoveMemberRequest,
        operator: &str,
    ) -> Result<(), Status> {
        let node = r.node_id;
        let owed = |purges_only: bool| {
            let db = self.state_machine.db();
            reads::shreds_owing(&db, Some(node), purges_only).map_err(internal)
        };
        if r.destroy_volume {
            if owed(false)? > 0 {
                return self.waive_receipts(node, operator, &r.reason).await;
            }
            return Ok(());
        }
        if owed(true)? == 0 {
            return Ok(());
        }
        let wait = std::time::Duration::from_secs(match r.wait_seconds {
            0 => 60,
            n => u64::from(n.min(600)),
        });
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = owed(true)?;
            if left == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::failed_precondition(format!(
                    "node {node} still owes receipts for {left} pending purges (it holds their \
                     keys in its log or snapshot); retry once it has sent them, or remove it \
                     with destroy_volume and destroy its volume"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Records, through the log, that `node`'s volume must be destroyed: its receipts are waived.
    async fn waive_receipts(&self, node: u64, operator: &str, reason: &str) -> Result<(), Status> {
        let reason = match reason.trim() {
            "" => "removed with shreds pending; volume to be destroyed".to_string(),
            text => text.chars().take(crate::command::MAX_TEXT / 4).collect(),
        };
        let waive = Command::Retention(crate::retention_command::RetentionCommand::WaiveReceipts {
            node_id: node,
            principal: operator.to_string(),
            reason,
            at: wall_clock(),
        });
        let size = waive.encode().len();
        match self.proposer.propose(waive, size).await {
            Ok(_) => Ok(()),
            Err(ProposeError::Forward(_)) => Err(Status::unavailable(
                "leadership moved while removing the member; retry",
            )),
            Err(ProposeError::Failed(e)) => Err(Status::unavailable(e)),
        }
    }
}
