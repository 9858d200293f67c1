//! Column families of the state machine and the encoding of their keys.
//!
//! Every key starts with the jurisdiction's one-byte index, so a jurisdiction's data is one
//! contiguous range per family and no scan crosses into another jurisdiction's keys. Numbers are
//! big-endian so byte order is numeric order.

use callvault_core::call::CallId;
use callvault_core::{Jurisdiction, UnixMillis};

/// Call records: `jur | call id` → `CallRecord`.
pub const CF_CALLS: &str = "calls";
/// Live recordings by start time (the expiry index): `jur | started_at | call id` → ∅.
pub const CF_BY_START: &str = "by_start";
/// Calls by dialed-number fingerprint: `jur | fingerprint | call id` → ∅.
pub const CF_BY_NUMBER: &str = "by_number";
/// Every stored call record by start time, whatever its state (for listing):
/// `jur | started_at | call id` → ∅.
pub const CF_BY_TIME: &str = "by_time";
/// Calls by facility: `jur | len | facility | started_at | call id` → ∅.
pub const CF_BY_FACILITY: &str = "by_facility";
/// Calls by inmate: `jur | len | inmate | started_at | call id` → ∅.
pub const CF_BY_INMATE: &str = "by_inmate";
/// Policies: `jur` → current version (u32 BE); `jur | version` → `VersionedPolicy`.
pub const CF_POLICIES: &str = "policies";
/// Privileged-number registry: `jur | e164` → `RegistryEntry`.
pub const CF_REGISTRY: &str = "registry";
/// Privileged fingerprints for the commit-time check: `jur | fingerprint` → ∅.
pub const CF_PRIVILEGED: &str = "privileged";
/// Sensitive numbers: `jur | fingerprint` → `SensitiveEntry`.
pub const CF_SENSITIVE: &str = "sensitive";
/// Wrapped data keys: `jur | call id` → wrapped key. Deleting one is the crypto-shred.
pub const CF_KEYS: &str = "keys";
/// Where each call's commit sits in the Raft log: `jur | call id` → term, index.
pub const CF_COMMITS: &str = "commits";
/// Chunk ids of each call: `jur | call id` → 32-byte ids.
pub const CF_CHUNKS: &str = "chunks";
/// Which committed call references each stored chunk: `chunk id | jur | call id` → ∅. The
/// orphan sweep asks it about chunks no call may reference.
pub const CF_CHUNK_REFS: &str = "chunk_refs";
/// Unused since shred records carry their chunk ids; kept so existing stores open unchanged.
pub const CF_DEAD_CHUNKS: &str = "dead_chunks";
/// Crypto-shreds awaiting receipts: `jur | call id` → `ShredRecord`.
pub const CF_SHREDS: &str = "shreds";
/// Playback use per principal in the current hour: `principal` → `QuotaUse`.
pub const CF_QUOTAS: &str = "quotas";
/// Per-jurisdiction counters: `jur` → `Counters`.
pub const CF_COUNTERS: &str = "counters";
/// Client sessions and their kept results (see `crate::session`).
pub const CF_SESSIONS: &str = "sessions";
/// The applied log id and the membership.
pub const CF_SM_META: &str = "sm_meta";

/// Every state-machine column family; snapshots and digests cover exactly these.
pub const STATE_MACHINE_CFS: &[&str] = &[
    CF_CALLS,
    CF_BY_START,
    CF_BY_NUMBER,
    CF_BY_TIME,
    CF_BY_FACILITY,
    CF_BY_INMATE,
    CF_POLICIES,
    CF_REGISTRY,
    CF_PRIVILEGED,
    CF_SENSITIVE,
    CF_KEYS,
    CF_CHUNKS,
    CF_CHUNK_REFS,
    CF_COMMITS,
    CF_DEAD_CHUNKS,
    CF_SHREDS,
    CF_QUOTAS,
    CF_COUNTERS,
    CF_SESSIONS,
    crate::clock::CF_CLOCK,
    crate::approvals::CF_CHANGES,
    crate::tombstones::CF_TOMBSTONES,
    crate::details::CF_DETAILS,
    crate::purges::CF_PURGES,
    crate::reviews::CF_REVIEWS,
    crate::audit_log::CF_AUDIT_ENTRIES,
    crate::audit_log::CF_AUDIT_TREE,
    crate::audit_log::CF_AUDIT_SUBJECTS,
    CF_SM_META,
];

/// `sm_meta` key of the last applied log id.
pub const KEY_APPLIED: &[u8] = b"applied";
/// `sm_meta` key of the last applied membership.
pub const KEY_MEMBERSHIP: &[u8] = b"membership";

/// Sign-flipped big-endian so negative times sort before positive ones.
fn time_bytes(t: UnixMillis) -> [u8; 8] {
    ((t.0 as u64) ^ (1 << 63)).to_be_bytes()
}

/// `jur | call id`.
pub fn call(jurisdiction: Jurisdiction, call_id: &CallId) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + call_id.as_str().len());
    key.push(jurisdiction.index());
    key.extend_from_slice(call_id.as_str().as_bytes());
    key
}

/// `jur`: the prefix of all of a jurisdiction's keys.
pub fn jurisdiction(jurisdiction: Jurisdiction) -> Vec<u8> {
    vec![jurisdiction.index()]
}

/// `jur | started_at | call id`.
pub fn by_start(jurisdiction: Jurisdiction, started_at: UnixMillis, call_id: &CallId) -> Vec<u8> {
    let mut key = Vec::with_capacity(9 + call_id.as_str().len());
    key.push(jurisdiction.index());
    key.extend_from_slice(&time_bytes(started_at));
    key.extend_from_slice(call_id.as_str().as_bytes());
    key
}

/// The start time and call id of a `jur | started_at | call id` key.
pub fn parse_by_start(key: &[u8]) -> Option<(UnixMillis, CallId)> {
    let time = key.get(1..9)?;
    let started_at = UnixMillis((u64::from_be_bytes(time.try_into().ok()?) ^ (1 << 63)) as i64);
    let id = std::str::from_utf8(key.get(9..)?).ok()?;
    Some((started_at, CallId::new(id).ok()?))
}

/// `jur | len | party`: prefix of one facility's or inmate's calls.
pub fn party_prefix(jurisdiction: Jurisdiction, party: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(2 + party.len());
    key.push(jurisdiction.index());
    key.push(party.len() as u8);
    key.extend_from_slice(party.as_bytes());
    key
}

/// The 8 sortable bytes of a time, as they appear in time-ordered keys.
pub fn time_key(t: UnixMillis) -> [u8; 8] {
    time_bytes(t)
}

/// `jur | fingerprint`: prefix of every call to one number.
pub fn number_prefix(jurisdiction: Jurisdiction, fingerprint: &[u8; 32]) -> Vec<u8> {
    let mut key = Vec::with_capacity(33 + 16);
    key.push(jurisdiction.index());
    key.extend_from_slice(fingerprint);
    key
}

/// `jur | fingerprint | call id`.
pub fn by_number(jurisdiction: Jurisdiction, fingerprint: &[u8; 32], call_id: &CallId) -> Vec<u8> {
    let mut key = number_prefix(jurisdiction, fingerprint);
    key.extend_from_slice(call_id.as_str().as_bytes());
    key
}

/// `jur | len | party | started_at | call id`, for the facility and inmate indexes.
pub fn by_party(
    jurisdiction: Jurisdiction,
    party: &str,
    started_at: UnixMillis,
    call_id: &CallId,
) -> Vec<u8> {
    let mut key = party_prefix(jurisdiction, party);
    key.extend_from_slice(&time_bytes(started_at));
    key.extend_from_slice(call_id.as_str().as_bytes());
    key
}

/// `chunk id | jur | call id`: one call's reference to one chunk.
pub fn chunk_ref(chunk_id: &[u8; 32], call_key: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(32 + call_key.len());
    key.extend_from_slice(chunk_id);
    key.extend_from_slice(call_key);
    key
}

/// The chunk ids of a `chunks` value: 32 bytes each, in order.
pub fn chunk_ids(value: &[u8]) -> Vec<[u8; 32]> {
    value
        .chunks_exact(32)
        .map(|c| c.try_into().expect("chunks_exact yields 32 bytes"))
        .collect()
}

/// `jur | version`.
pub fn policy_version(jurisdiction: Jurisdiction, version: u32) -> Vec<u8> {
    let mut key = vec![jurisdiction.index()];
    key.extend_from_slice(&version.to_be_bytes());
    key
}

/// `jur | e164`.
pub fn registry(jurisdiction: Jurisdiction, e164: &str) -> Vec<u8> {
    let mut key = vec![jurisdiction.index()];
    key.extend_from_slice(e164.as_bytes());
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_keys_sort_by_time_across_the_epoch() {
        let id = CallId::new("a").unwrap();
        let early = by_start(Jurisdiction::Tx, UnixMillis(-5), &id);
        let late = by_start(Jurisdiction::Tx, UnixMillis(5), &id);
        let later = by_start(Jurisdiction::Tx, UnixMillis(1 << 40), &id);
        assert!(early < late && late < later);
        assert!(late < by_start(Jurisdiction::Ut, UnixMillis(-5), &id));
    }
}
