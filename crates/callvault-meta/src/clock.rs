//! Cluster time in the state machine: each voter's latest attestation of its wall clock and the
//! cluster time they make (see `callvault_core::clock`). Written only by `apply`, from
//! `AttestTime` entries; read by `apply` to bound `Expire` and to decide deadlines at read, and
//! by the sweeper and status.

use callvault_core::UnixMillis;
use callvault_core::clock::{self, Attestations};
use callvault_core::codec::VersionedRecord;
use rocksdb::DB;

use crate::apply::ApplyError;
use crate::command::Refusal;
use crate::records::ClockTime;
use crate::txn::Txn;

/// Attestations and the cluster time: `a | node id (u64 BE)` → attested time; `t` → the cluster
/// time.
pub const CF_CLOCK: &str = "clock";
const ATTESTATION: u8 = b'a';
const KEY_TIME: &[u8] = b"t";

fn attestation_key(node_id: u64) -> Vec<u8> {
    let mut key = vec![ATTESTATION];
    key.extend_from_slice(&node_id.to_be_bytes());
    key
}

/// The cluster time, if a majority of voters has attested yet.
pub fn cluster_time(txn: &Txn<'_>) -> Result<Option<UnixMillis>, ApplyError> {
    match txn.get(CF_CLOCK, KEY_TIME)? {
        Some(bytes) => Ok(Some(ClockTime::decode(&bytes)?.0)),
        None => Ok(None),
    }
}

/// Why a command stamped `as_of` may not act (a deletion at a time the cluster has not reached):
/// `None` when `as_of` is at or before the cluster time.
pub fn refuse_ahead(txn: &Txn<'_>, as_of: UnixMillis) -> Result<Option<Refusal>, ApplyError> {
    Ok(match cluster_time(txn)? {
        Some(now) if as_of <= now => None,
        cluster_time => Some(Refusal::AheadOfClusterTime { cluster_time }),
    })
}

/// The latest attestation of each of `nodes`.
pub fn attestations(txn: &Txn<'_>, nodes: &[u64]) -> Result<Attestations, ApplyError> {
    let mut out = Attestations::new();
    for &node in nodes {
        if let Some(bytes) = txn.get(CF_CLOCK, &attestation_key(node))? {
            out.insert(node, ClockTime::decode(&bytes)?.0);
        }
    }
    Ok(out)
}

/// Records `node_id`'s attestation of `wall` and moves the cluster time. Only voters attest: a
/// learner's or a stranger's attestation is refused (`Ok(None)`), so no node outside the quorum
/// can take part in the median.
pub fn attest(
    txn: &mut Txn<'_>,
    node_id: u64,
    wall: UnixMillis,
) -> Result<Option<UnixMillis>, ApplyError> {
    let voters = crate::membership::voters(txn)?;
    if !voters.contains(&node_id) {
        return Ok(None);
    }
    txn.put(CF_CLOCK, attestation_key(node_id), ClockTime(wall).encode());
    let previous = cluster_time(txn)?;
    let next = clock::advance(previous, &attestations(txn, &voters)?, &voters);
    if let Some(time) = next
        && Some(time) != previous
    {
        txn.put(CF_CLOCK, KEY_TIME.to_vec(), ClockTime(time).encode());
    }
    Ok(next.or(previous))
}

/// The clock as a reader sees it: the cluster time and every voter's attestation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClockView {
    /// The cluster time.
    pub cluster_time: Option<UnixMillis>,
    /// The voters of the applied membership.
    pub voters: Vec<u64>,
    /// Their latest attestations.
    pub attestations: Attestations,
}

/// Reads the clock from the database as it is.
pub fn view(db: &DB) -> Result<ClockView, ApplyError> {
    let txn = Txn::new(db);
    let voters = crate::membership::voters(&txn)?;
    Ok(ClockView {
        cluster_time: cluster_time(&txn)?,
        attestations: attestations(&txn, &voters)?,
        voters,
    })
}
