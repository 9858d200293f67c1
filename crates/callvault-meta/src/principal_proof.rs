//! Principals are checked where the decision is made: a command that acts for a person carries
//! that person's signed request, and the metadata store checks it itself before the command
//! enters the log.
//!
//! The api node that turned the request into a command cannot make such a proof: it never holds
//! the principal's private key. So it cannot invent a principal (no signature), borrow one (the
//! signature is checked against the key of the principal the command names), alter what was asked
//! (the command is built again here from the signed request and must be the same), or replay one
//! (each proof's nonce is accepted once, which `apply` enforces for every replica alike, and a
//! proof older than [`PROOF_WINDOW`] is refused).
//!
//! [`acting_principal`] names, for every command, the person it acts for: one arm per command, so
//! a new command of any branch is covered (or exempted, in plain sight) by adding one.

use std::time::Duration;

use callvault_core::UnixMillis;
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_proto::proof::{NONCE_LEN, RequestProof};
use callvault_proto::v1 as pb;
use prost::Message;
use tonic::Status;

use crate::command::{AccessQuota, Command, MAX_PRINCIPAL, MAX_TEXT};
use crate::intents::{self, rpc};
use crate::metadata::MetadataQuota;
use crate::principal::{Principal, Principals};

/// How far a proof's time may be from the checking node's clock, either way.
pub const PROOF_WINDOW: Duration = Duration::from_secs(300);
/// Longest signed request a proof may carry.
pub const MAX_SIGNED_REQUEST: usize = 16 * 1024;
/// Longest encoded proof.
pub const MAX_PROOF_BYTES: usize = MAX_SIGNED_REQUEST + 1024;
/// Longest RPC path.
const MAX_RPC: usize = 128;

/// A principal's signed request, as a command carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalProof {
    /// The principal that signed.
    pub principal: String,
    /// The RPC it called (`/callvault.v1.Content/Playback`).
    pub rpc: String,
    /// The request message, in its protobuf encoding.
    pub request: Vec<u8>,
    /// The time the principal signed.
    pub time: UnixMillis,
    /// Its nonce: accepted once.
    pub nonce: [u8; NONCE_LEN],
    /// Ed25519 over `callvault_proto::proof::statement`.
    pub signature: [u8; 64],
}

impl PrincipalProof {
    /// The proof of `principal` for a request `message` to `rpc`, from the header it sent.
    pub fn new(principal: &str, rpc: &str, message: &impl Message, proof: &RequestProof) -> Self {
        PrincipalProof {
            principal: principal.to_string(),
            rpc: rpc.to_string(),
            request: message.encode_to_vec(),
            time: UnixMillis(proof.time_ms),
            nonce: proof.nonce,
            signature: proof.signature,
        }
    }

    /// Whether the key of the principal it names signed it; that principal.
    pub fn verify<'a>(&self, principals: &'a Principals) -> Result<&'a Principal, Status> {
        let who = principals
            .by_name(&self.principal)
            .ok_or_else(|| Status::unauthenticated(format!("no principal {}", self.principal)))?;
        let key = who.public_key.as_ref().ok_or_else(|| {
            Status::unauthenticated(format!(
                "principal {} has no public key: it cannot act for a person",
                who.name
            ))
        })?;
        let header = RequestProof {
            time_ms: self.time.0,
            nonce: self.nonce,
            signature: self.signature,
        };
        if !header.verify(key, &self.rpc, &self.request) {
            return Err(Status::unauthenticated(format!(
                "the proof is not {}'s signature of this request",
                who.name
            )));
        }
        Ok(who)
    }

    /// Whether its time is within [`PROOF_WINDOW`] of `now`.
    pub fn check_fresh(&self, now: UnixMillis) -> Result<(), Status> {
        let window = PROOF_WINDOW.as_millis() as i64;
        if (self.time.0 - now.0).abs() > window {
            return Err(Status::unauthenticated(format!(
                "the proof was signed {} s from this node's clock; at most {} s are accepted",
                (self.time.0 - now.0) / 1000,
                PROOF_WINDOW.as_secs()
            )));
        }
        Ok(())
    }

    /// The key `apply` remembers a used proof under: its nonce and who signed.
    pub fn replay_key(&self) -> Vec<u8> {
        let mut key = self.nonce.to_vec();
        key.extend_from_slice(self.principal.as_bytes());
        key
    }
}

impl VersionedRecord for PrincipalProof {
    const NAME: &'static str = "principal proof";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.str(&self.principal)
            .str(&self.rpc)
            .blob(&self.request)
            .i64(self.time.0)
            .blob(&self.nonce)
            .blob(&self.signature);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let proof = PrincipalProof {
            principal: r.str("principal", MAX_PRINCIPAL)?,
            rpc: r.str("rpc", MAX_RPC)?,
            request: r.blob("request", MAX_SIGNED_REQUEST)?,
            time: UnixMillis(r.i64()?),
            nonce: r
                .blob("nonce", NONCE_LEN)?
                .try_into()
                .map_err(|_| r.invalid("nonce", "not 16 bytes"))?,
            signature: r
                .blob("signature", 64)?
                .try_into()
                .map_err(|_| r.invalid("signature", "not 64 bytes"))?,
        };
        r.finish()?;
        Ok(proof)
    }
}

/// Proofs already used: `time (sortable) | nonce | principal` → ∅. A proof is accepted once;
/// entries older than twice the proof window are pruned (no gate accepts such a proof).
pub const CF_PROOFS: &str = "proofs";
#[cfg_attr(not(feature = "store"), allow(dead_code))]
/// Old proofs pruned per proof applied, so the family stays small.
const PRUNE_PER_APPLY: usize = 16;

#[cfg(feature = "store")]
fn spent_key(proof: &PrincipalProof) -> Vec<u8> {
    let mut key = crate::keys::time_key(proof.time).to_vec();
    key.extend_from_slice(&proof.replay_key());
    key
}

#[cfg(feature = "store")]
/// Marks `proof` used; `false` if it already was (a replay). Deterministic: the same log gives
/// the same answer on every replica.
pub(crate) fn spend(
    txn: &mut crate::txn::Txn<'_>,
    proof: &PrincipalProof,
) -> Result<bool, crate::apply::ApplyError> {
    let key = spent_key(proof);
    if txn.get(CF_PROOFS, &key)?.is_some() {
        return Ok(false);
    }
    txn.put(CF_PROOFS, key, Vec::new());
    let horizon = crate::keys::time_key(UnixMillis(
        proof.time.0 - 2 * PROOF_WINDOW.as_millis() as i64,
    ));
    for old in txn.keys_with_prefix(CF_PROOFS, &[], PRUNE_PER_APPLY)? {
        if old.as_slice() >= horizon.as_slice() {
            break;
        }
        txn.delete(CF_PROOFS, old);
    }
    Ok(true)
}

fn decode<M: Message + Default>(proof: &PrincipalProof) -> Result<M, Status> {
    M::decode(proof.request.as_slice())
        .map_err(|e| Status::invalid_argument(format!("the signed request does not decode: {e}")))
}

/// The limits the checking meta node charges principals against (its own configuration, never an
/// api node's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Playback.
    pub access: AccessQuota,
    /// Metadata reads.
    pub metadata: MetadataQuota,
}

impl Default for Limits {
    /// The configuration's defaults: 60 playbacks and 1 GiB an hour, [`MetadataQuota`]'s.
    fn default() -> Self {
        Limits {
            access: AccessQuota {
                calls_per_hour: 60,
                bytes_per_hour: 1 << 30,
            },
            metadata: MetadataQuota::default(),
        }
    }
}

/// The command `proof`'s request asks for, built as the api node builds it. The inputs only the
/// api node has (a number's keyed hash, a playback's one-time key) come from `proposed`; the
/// limits are this node's.
pub fn expected_command(
    who: &Principal,
    proof: &PrincipalProof,
    proposed: &Command,
    limits: Limits,
) -> Result<Command, Status> {
    let (at, quota, metadata) = (proof.time, limits.access, limits.metadata);
    match (proof.rpc.as_str(), proposed) {
        (rpc::PUT_POLICY, _) => intents::put_policy(who, &decode(proof)?, at),
        (rpc::REGISTER_PRIVILEGED, Command::RegisterPrivileged { fingerprint, .. }) => {
            intents::register_privileged(who, &decode(proof)?, at, *fingerprint)
        }
        (rpc::REGISTER_SENSITIVE, Command::RegisterSensitive { fingerprint, .. }) => {
            intents::register_sensitive(who, &decode(proof)?, at, *fingerprint)
        }
        (rpc::FLAG_PRIVILEGED, _) => intents::flag_privileged(who, &decode(proof)?, at),
        (rpc::PLACE_HOLD, _) => intents::place_hold(who, &decode(proof)?, at),
        (rpc::RELEASE_HOLD, _) => intents::release_hold(who, &decode(proof)?, at),
        (rpc::REQUEST_PRIVILEGE_FLAG, _) => {
            intents::request_privilege_flag(who, &decode(proof)?, at)
        }
        (rpc::APPROVE_CHANGE, _) => intents::approve_change(who, &decode(proof)?, at),
        (rpc::CANCEL_CHANGE, _) => intents::cancel_change(who, &decode(proof)?, at),
        (rpc::PLAYBACK, Command::RecordAccess(access)) => {
            let request: pb::PlaybackRequest = decode(proof)?;
            let (command, _) = intents::record_access(who, &request, at, quota)?;
            Ok(match command {
                Command::RecordAccess(mut expected) => {
                    expected.recipient = access.recipient.clone();
                    Command::RecordAccess(expected)
                }
                other => other,
            })
        }
        (rpc::LIST_CALLS, _) => intents::list_calls(who, &decode(proof)?, at, metadata),
        (rpc::CALL_STATUS, _) => intents::call_status(who, &decode(proof)?, at, metadata),
        (rpc::JURISDICTION_STATUS, _) => {
            intents::jurisdiction_status(who, &decode(proof)?, at, metadata)
        }
        (other, _) => Err(Status::permission_denied(format!(
            "a {other} request does not make a {} command",
            proposed.kind()
        ))),
    }
}

/// Checks a command that acts for a person before it is proposed: the proof is the named
/// principal's, fresh, and asks for exactly this command. Returns the command to propose, with
/// this node's limits (and, for a metadata read, the record count of the proposal: the store
/// that makes the read fills it).
pub fn check(
    principals: &Principals,
    proof: &PrincipalProof,
    proposed: &Command,
    limits: Limits,
    now: UnixMillis,
) -> Result<Command, Status> {
    let named = acting_principal(proposed).ok_or_else(|| {
        Status::invalid_argument(format!("{} does not act for a person", proposed.kind()))
    })?;
    if named != proof.principal {
        return Err(Status::permission_denied(format!(
            "the command acts for {named} but carries {}'s proof",
            proof.principal
        )));
    }
    let who = proof.verify(principals)?;
    proof.check_fresh(now)?;
    let mut proposed = proposed.clone();
    match &mut proposed {
        Command::RecordAccess(access) => access.quota = limits.access,
        Command::RecordMetadataRead(read) => read.quota = limits.metadata,
        _ => {}
    }
    let mut expected = expected_command(who, proof, &proposed, limits)?;
    if let (Command::RecordMetadataRead(expected), Command::RecordMetadataRead(proposed)) =
        (&mut expected, &proposed)
    {
        expected.records = proposed.records;
    }
    if expected != proposed {
        return Err(Status::permission_denied(format!(
            "the {} command is not what {} signed",
            proposed.kind(),
            who.name
        )));
    }
    Ok(expected)
}

/// A proposal that acted for a person without that person's valid proof, refused by the meta node
/// that received it (tag 23): one audit entry, cluster-wide (it names no jurisdiction, so a
/// caller cannot flood one), at most one a second per caller; the others it suppressed are
/// counted in the next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProofRefusal {
    /// The workload that proposed it (`api:node-2`).
    pub caller: String,
    /// The principal the proposal named.
    pub principal: String,
    /// The command's kind.
    pub kind: String,
    /// Why it was refused.
    pub reason: String,
    /// Refusals of the same caller not logged since the last entry.
    pub suppressed: u64,
    /// When (the refusing node's clock).
    pub at: UnixMillis,
}

impl VersionedRecord for ProofRefusal {
    const NAME: &'static str = "proof refusal";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.str(&self.caller)
            .str(&self.principal)
            .str(&self.kind)
            .str(&self.reason)
            .u64(self.suppressed)
            .i64(self.at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        let refusal = ProofRefusal {
            caller: r.str("caller", MAX_PRINCIPAL)?,
            principal: r.str("principal", MAX_PRINCIPAL)?,
            kind: r.str("kind", 64)?,
            reason: r.str("reason", MAX_TEXT)?,
            suppressed: r.u64()?,
            at: UnixMillis(r.i64()?),
        };
        r.finish()?;
        Ok(refusal)
    }
}

#[cfg(feature = "store")]
/// `ProofRefused`: one audit entry.
pub(crate) fn record_refusal(
    txn: &mut crate::txn::Txn<'_>,
    refusal: &ProofRefusal,
) -> Result<crate::command::CommandResult, crate::apply::ApplyError> {
    crate::audit_log::append(
        txn,
        crate::audit_log::Event {
            event: callvault_audit::AuditEvent::ProofRefused,
            time: refusal.at,
            principal: refusal.caller.clone(),
            jurisdiction: None,
            subject: refusal.kind.clone(),
            outcome: format!("refused: {}", refusal.reason),
            details: vec![
                ("claimed_principal", refusal.principal.clone()),
                ("suppressed_since_last", refusal.suppressed.to_string()),
            ],
        },
    )?;
    Ok(crate::command::CommandResult::Empty)
}

#[cfg(feature = "store")]
/// A replayed proof: refused, and one audit entry naming the principal it claimed.
pub(crate) fn record_replay(
    txn: &mut crate::txn::Txn<'_>,
    proof: &PrincipalProof,
    kind: &str,
) -> Result<crate::command::CommandResult, crate::apply::ApplyError> {
    record_refusal(
        txn,
        &ProofRefusal {
            caller: "replay".into(),
            principal: proof.principal.clone(),
            kind: kind.to_string(),
            reason: "the proof was already used".into(),
            suppressed: 0,
            at: proof.time,
        },
    )?;
    Ok(crate::command::CommandResult::Refused(
        crate::command::Refusal::ProofReplayed,
    ))
}

/// The person a command acts for, if it acts for one. One arm per command.
pub fn acting_principal(command: &Command) -> Option<&str> {
    match command {
        Command::PutPolicy { principal, .. }
        | Command::RegisterSensitive { principal, .. }
        | Command::FlagPrivileged { principal, .. }
        | Command::ReleaseHold { principal, .. } => Some(principal),
        Command::RegisterPrivileged { entry, .. } => Some(&entry.registrant),
        Command::PlaceHold { issuer, .. } => Some(issuer),
        Command::RecordAccess(access) => Some(&access.principal),
        Command::RecordMetadataRead(read) => Some(&read.principal),
        // A platform's commit acts for the platform, which the ingest role vouches for.
        Command::CommitCall { .. } => None,
        // The keys role acts for itself, against a grant a person's proof opened.
        Command::ReleaseKey(_) | Command::ProofRefused(_) => None,
        // The cluster's own work and reports.
        Command::RecordAuthFailures(_)
        | Command::Expire { .. }
        | Command::KeysShredded { .. }
        | Command::ChunksCollected { .. } => None,
        // Changes, approvals and cancellations act for their proposer, approver or canceller;
        // the cluster's clock attestations and sweeps for nobody. A waiver names the operator
        // who removed the member: only meta proposes it, from the operator's RemoveMember.
        Command::Retention(command) => command.acting_principal(),
        // Envelopes: their command is checked.
        Command::Batch(_) | Command::Session(_) | Command::OpenSession | Command::Signed { .. } => {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_proto::proof::SigningKey;

    const AGENCY_SEED: [u8; 32] = [1; 32];
    const OTHER_SEED: [u8; 32] = [2; 32];

    fn principals() -> Principals {
        let entry = |name: &str, role: &str, seed: &[u8; 32], hash: &str| {
            format!(
                "[[principal]]\nname = \"{name}\"\nrole = \"{role}\"\njurisdictions = [\"US-TX\"]\n\
                 token_blake3 = \"{}\"\npublic_key = \"{}\"\n",
                hash.repeat(32),
                SigningKey::from_seed(seed).public_key()
            )
        };
        Principals::parse(&format!(
            "{}{}",
            entry("tx", "agency", &AGENCY_SEED, "11"),
            entry("tx-2", "agency", &OTHER_SEED, "22")
        ))
        .unwrap()
    }

    fn quota() -> AccessQuota {
        AccessQuota {
            calls_per_hour: 10,
            bytes_per_hour: 1 << 30,
        }
    }

    fn limits() -> Limits {
        Limits {
            access: quota(),
            metadata: MetadataQuota::default(),
        }
    }

    fn signed(seed: &[u8; 32], principal: &str, request: &pb::PlaybackRequest) -> PrincipalProof {
        let key = SigningKey::from_seed(seed);
        let header = key.prove(rpc::PLAYBACK, &request.encode_to_vec());
        PrincipalProof::new(principal, rpc::PLAYBACK, request, &header)
    }

    fn playback(call: &str) -> pb::PlaybackRequest {
        pb::PlaybackRequest {
            jurisdiction: "US-TX".into(),
            call_id: call.into(),
            case_number: "2026-CR-1".into(),
            reason: "trial".into(),
        }
    }

    fn command_for(who: &str, request: &pb::PlaybackRequest, proof: &PrincipalProof) -> Command {
        let p = principals();
        let (command, _) =
            intents::record_access(p.by_name(who).unwrap(), request, proof.time, quota()).unwrap();
        command
    }

    #[test]
    fn the_named_principals_signature_of_this_very_command_passes() {
        let p = principals();
        let request = playback("c-1");
        let proof = signed(&AGENCY_SEED, "tx", &request);
        let command = command_for("tx", &request, &proof);
        assert!(check(&p, &proof, &command, limits(), proof.time).is_ok());
        assert_eq!(PrincipalProof::decode(&proof.encode()), Ok(proof));
    }

    #[test]
    fn an_api_node_cannot_invent_borrow_or_alter_a_principal() {
        let p = principals();
        let request = playback("c-1");
        // Borrowed: tx-2's proof on a command acting for tx.
        let borrowed = signed(&OTHER_SEED, "tx-2", &request);
        let command = command_for("tx", &request, &borrowed);
        let err = check(&p, &borrowed, &command, limits(), borrowed.time).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        // Invented: a proof that names tx but is signed with another key.
        let mut invented = signed(&OTHER_SEED, "tx", &request);
        invented.principal = "tx".into();
        let err = check(&p, &invented, &command, limits(), invented.time).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        // Altered: tx's proof for c-1 on a command for c-2.
        let proof = signed(&AGENCY_SEED, "tx", &request);
        let other = command_for("tx", &playback("c-2"), &proof);
        let err = check(&p, &proof, &other, limits(), proof.time).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
        // Stale.
        let command = command_for("tx", &request, &proof);
        let later = UnixMillis(proof.time.0 + PROOF_WINDOW.as_millis() as i64 + 1);
        assert!(check(&p, &proof, &command, limits(), later).is_err());
    }

    #[test]
    fn the_quota_is_the_checking_nodes() {
        let p = principals();
        let request = playback("c-1");
        let proof = signed(&AGENCY_SEED, "tx", &request);
        let mut command = command_for("tx", &request, &proof);
        if let Command::RecordAccess(a) = &mut command {
            a.quota.calls_per_hour = u64::MAX;
        }
        let checked = check(&p, &proof, &command, limits(), proof.time).unwrap();
        assert!(matches!(checked, Command::RecordAccess(a) if a.quota == quota()));
    }
}
