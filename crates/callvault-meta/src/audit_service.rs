//! The `Audit` gRPC service: signed checkpoints, entries, and inclusion and consistency proofs,
//! read from this node's state machine. Any replica serves a valid prefix of the one log; a
//! checkpoint is signed by the node that serves it with the cluster's log key.
//!
//! Who sees what: the node's gate authenticates the caller and attaches an [`AuditScope`] to the
//! request. Checkpoints and proofs are hashes only and are served to any authenticated caller;
//! entries are filtered here, on the server, to the caller's scope.

use std::collections::BTreeSet;
use std::sync::Arc;

use callvault_core::Jurisdiction;

use callvault_audit::{AuditEntry, Checkpoint, MerkleTree, NoteSigner};
use callvault_core::codec::VersionedRecord;
use callvault_proto::v1 as pb;
use rocksdb::{Direction, IteratorMode};
use tonic::{Request, Response, Status};

use crate::audit_log::{CF_AUDIT_ENTRIES, CF_AUDIT_SUBJECTS, TreeNodes, subject_prefix};
use crate::state_machine::StateMachineStore;
use crate::txn::Txn;

/// Most entries one `GetEntries` call returns.
pub const MAX_ENTRIES_PER_CALL: u64 = 1000;

/// Which entries a caller may read. The node's gate derives it from the caller's principal and
/// puts it in the request's extensions; a request without one is refused, so a service mounted
/// without the gate serves no entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditScope {
    /// Auditors: every entry, including cluster-wide ones (membership, failed authentications).
    Everything,
    /// Agencies: the entries of these jurisdictions only; cluster-wide entries are not theirs.
    Jurisdictions(BTreeSet<Jurisdiction>),
    /// Any other principal: checkpoints and proofs only.
    ProofsOnly,
}

impl AuditScope {
    /// Whether an entry of `jurisdiction` (`None`: cluster-wide) is visible.
    pub fn sees(&self, jurisdiction: Option<Jurisdiction>) -> bool {
        match (self, jurisdiction) {
            (AuditScope::Everything, _) => true,
            (AuditScope::Jurisdictions(set), Some(j)) => set.contains(&j),
            _ => false,
        }
    }

    /// The scope the gate attached to `request`, or `PERMISSION_DENIED`.
    pub fn of<T>(request: &Request<T>) -> Result<AuditScope, Status> {
        request
            .extensions()
            .get::<AuditScope>()
            .cloned()
            .ok_or_else(|| {
                Status::permission_denied("no audit scope: the caller was not authenticated")
            })
    }

    fn require_entries(&self) -> Result<(), Status> {
        if *self == AuditScope::ProofsOnly {
            return Err(Status::permission_denied(
                "audit entries are for auditors and agencies; checkpoints and proofs are open to any principal",
            ));
        }
        Ok(())
    }
}

/// The log's signing identity: its origin line and key.
pub struct LogIdentity {
    /// The checkpoint origin, e.g. `callvault.example.gov/audit`.
    pub origin: String,
    /// The Ed25519 note signer (the cluster's log key).
    pub signer: NoteSigner,
}

/// Serves the audit log of one node.
#[derive(Clone)]
pub struct AuditService {
    state_machine: StateMachineStore,
    identity: Option<Arc<LogIdentity>>,
}

impl AuditService {
    /// Serves `state_machine`'s log; without an identity, checkpoints are refused.
    pub fn new(state_machine: StateMachineStore, identity: Option<LogIdentity>) -> Self {
        AuditService {
            state_machine,
            identity: identity.map(Arc::new),
        }
    }

    /// The tonic server.
    pub fn server(&self) -> pb::audit_server::AuditServer<Self> {
        pb::audit_server::AuditServer::new(self.clone())
    }
}

fn internal(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("audit log: {e}"))
}

/// An entry as the API shows it, with the exact leaf bytes.
pub fn entry_to_pb(entry: &AuditEntry, leaf: Vec<u8>) -> pb::AuditEntry {
    let millis = entry.time().0;
    pb::AuditEntry {
        sequence: entry.sequence(),
        time: Some(prost_types::Timestamp {
            seconds: millis.div_euclid(1000),
            nanos: (millis.rem_euclid(1000) * 1_000_000) as i32,
        }),
        principal: entry.principal().to_string(),
        jurisdiction: entry
            .jurisdiction()
            .map(|j| j.code().to_string())
            .unwrap_or_default(),
        event: entry.event().name().to_string(),
        subject: entry.subject().to_string(),
        outcome: entry.outcome().to_string(),
        details: entry
            .details()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        leaf,
    }
}

#[tonic::async_trait]
impl pb::audit_server::Audit for AuditService {
    async fn get_checkpoint(
        &self,
        _request: Request<pb::GetCheckpointRequest>,
    ) -> Result<Response<pb::Checkpoint>, Status> {
        let identity = self.identity.as_ref().ok_or_else(|| {
            Status::failed_precondition("this node has no audit signing key configured ([audit])")
        })?;
        let db = self.state_machine.db();
        let mut txn = Txn::new(&db);
        let tree = MerkleTree::new(TreeNodes(&mut txn));
        // Applies go on while this reads: the root must be the one at the size it signs.
        let (size, root) = tree.size_and_root().map_err(internal)?;
        let signed_note = Checkpoint::new(&identity.origin, size, root)
            .and_then(|c| c.sign(&identity.signer))
            .map_err(internal)?;
        Ok(Response::new(pb::Checkpoint {
            signed_note,
            tree_size: size,
            root_hash: root.0.to_vec(),
        }))
    }

    async fn get_entries(
        &self,
        request: Request<pb::GetEntriesRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let scope = AuditScope::of(&request)?;
        scope.require_entries()?;
        let r = request.into_inner();
        if r.end < r.start {
            return Err(Status::invalid_argument("end is before start"));
        }
        let end = r.end.min(r.start.saturating_add(MAX_ENTRIES_PER_CALL));
        let db = self.state_machine.db();
        // Read the size first: entries below it are all stored, so a caller that goes on from
        // min(end, tree_size) skips nothing it may see.
        let tree_size = {
            let mut txn = Txn::new(&db);
            MerkleTree::new(TreeNodes(&mut txn))
                .size()
                .map_err(internal)?
        };
        let cf = db.cf_handle(CF_AUDIT_ENTRIES).expect("created at open");
        let mut entries = Vec::new();
        for item in db.iterator_cf(
            cf,
            IteratorMode::From(&r.start.to_be_bytes(), Direction::Forward),
        ) {
            let (key, value) = item.map_err(internal)?;
            let sequence = u64::from_be_bytes(key.as_ref().try_into().map_err(internal)?);
            if sequence >= end {
                break;
            }
            let entry = AuditEntry::decode(&value).map_err(internal)?;
            if scope.sees(entry.jurisdiction()) {
                entries.push(entry_to_pb(&entry, value.to_vec()));
            }
        }
        Ok(Response::new(pb::GetEntriesResponse { entries, tree_size }))
    }

    async fn get_inclusion_proof(
        &self,
        request: Request<pb::GetInclusionProofRequest>,
    ) -> Result<Response<pb::Proof>, Status> {
        let r = request.into_inner();
        let db = self.state_machine.db();
        let mut txn = Txn::new(&db);
        let proof = MerkleTree::new(TreeNodes(&mut txn))
            .inclusion_proof(r.index, r.tree_size)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb::Proof {
            hashes: proof.hashes.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn get_consistency_proof(
        &self,
        request: Request<pb::GetConsistencyProofRequest>,
    ) -> Result<Response<pb::Proof>, Status> {
        let r = request.into_inner();
        let db = self.state_machine.db();
        let mut txn = Txn::new(&db);
        let proof = MerkleTree::new(TreeNodes(&mut txn))
            .consistency_proof(r.first, r.second)
            .map_err(|e| Status::out_of_range(e.to_string()))?;
        Ok(Response::new(pb::Proof {
            hashes: proof.hashes.iter().map(|h| h.0.to_vec()).collect(),
        }))
    }

    async fn call_access_history(
        &self,
        request: Request<pb::CallAccessHistoryRequest>,
    ) -> Result<Response<pb::GetEntriesResponse>, Status> {
        let scope = AuditScope::of(&request)?;
        scope.require_entries()?;
        let r = request.into_inner();
        let jurisdiction = callvault_core::Jurisdiction::from_code(&r.jurisdiction)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        // About the jurisdiction as a whole, so it reveals nothing about whether the call exists.
        if !scope.sees(Some(jurisdiction)) {
            return Err(Status::permission_denied(format!(
                "the caller may not read the audit history of {} calls",
                jurisdiction.code()
            )));
        }
        let call_id = callvault_core::CallId::new(&r.call_id)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let db = self.state_machine.db();
        let subjects = db.cf_handle(CF_AUDIT_SUBJECTS).expect("created at open");
        let entries_cf = db.cf_handle(CF_AUDIT_ENTRIES).expect("created at open");
        let prefix = subject_prefix(call_id.as_str());
        let mut entries = Vec::new();
        for item in db.iterator_cf(subjects, IteratorMode::From(&prefix, Direction::Forward)) {
            let (key, _) = item.map_err(internal)?;
            if !key.starts_with(&prefix) || entries.len() as u64 >= MAX_ENTRIES_PER_CALL {
                break;
            }
            let sequence = &key[prefix.len()..];
            let Some(value) = db.get_cf(entries_cf, sequence).map_err(internal)? else {
                continue;
            };
            let entry = AuditEntry::decode(&value).map_err(internal)?;
            // Another jurisdiction's call with the same id is not this caller's business.
            if entry.jurisdiction() == Some(jurisdiction) {
                entries.push(entry_to_pb(&entry, value));
            }
        }
        let mut txn = Txn::new(&db);
        let tree_size = MerkleTree::new(TreeNodes(&mut txn))
            .size()
            .map_err(internal)?;
        Ok(Response::new(pb::GetEntriesResponse { entries, tree_size }))
    }
}
