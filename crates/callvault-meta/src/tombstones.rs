//! Call tombstones: what is left of a call whose record is gone (expired at its call-detail
//! deadline, purged under a policy that keeps nothing, refused with nothing kept). Filed under a
//! keyed hash of the call id, holding the outcome and the time and nothing more; a commit of a
//! tombstoned id is refused forever.

use callvault_core::codec::VersionedRecord;
use callvault_core::tombstone::{CallTombstone, TombstoneOutcome, call_id_hash, key_check};
use callvault_core::{CallId, DecodeError, Jurisdiction, UnixMillis};

use crate::apply::ApplyError;
use crate::txn::Txn;

/// Tombstones: `jur | keyed hash of the call id` → `CallTombstone`; and [`KEY_CHECK`] → the
/// check value of the key the hashes are keyed with.
pub const CF_TOMBSTONES: &str = "tombstones";
/// Sorts after every jurisdiction's keys.
const KEY_CHECK: &[u8] = b"\xffkey-check";

fn key(txn: &Txn<'_>, jurisdiction: Jurisdiction, call_id: &CallId) -> Vec<u8> {
    let mut key = vec![jurisdiction.index()];
    key.extend_from_slice(&call_id_hash(txn.id_key(), jurisdiction, call_id));
    key
}

/// Fails when this replica's key is not the one the cluster's tombstones were filed under: a
/// replica with another key would file and look up different hashes, silently.
fn check_key(txn: &mut Txn<'_>) -> Result<(), ApplyError> {
    let expected = key_check(txn.id_key());
    match txn.get(CF_TOMBSTONES, KEY_CHECK)? {
        Some(stored) if stored == expected => Ok(()),
        Some(_) => Err(ApplyError::Decode(DecodeError::Invalid {
            record: "call tombstone",
            field: "key",
            reason: "this node's cluster.index_key_file differs from the key the cluster's \
                     tombstones are filed under; fix the node's configuration"
                .into(),
        })),
        None => {
            txn.put(CF_TOMBSTONES, KEY_CHECK.to_vec(), expected.to_vec());
            Ok(())
        }
    }
}

/// Files the tombstone of `call_id`.
pub fn file(
    txn: &mut Txn<'_>,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
    outcome: TombstoneOutcome,
    at: UnixMillis,
) -> Result<(), ApplyError> {
    check_key(txn)?;
    let key = key(txn, jurisdiction, call_id);
    txn.put(CF_TOMBSTONES, key, CallTombstone { outcome, at }.encode());
    Ok(())
}

/// The tombstone of `call_id`, if its record is gone.
pub fn find(
    txn: &Txn<'_>,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
) -> Result<Option<CallTombstone>, ApplyError> {
    match txn.get(CF_TOMBSTONES, &key(txn, jurisdiction, call_id))? {
        Some(bytes) => Ok(Some(CallTombstone::decode(&bytes)?)),
        None => Ok(None),
    }
}
