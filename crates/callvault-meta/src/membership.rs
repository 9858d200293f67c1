//! The applied membership as `apply` sees it: who votes, and who holds a copy of the metadata
//! (voters and learners), read from the write set so an entry sees the membership of its own
//! position.

use callvault_core::codec::DecodeError;
use callvault_proto::v1 as pb;

use crate::apply::ApplyError;
use crate::keys::{CF_SM_META, KEY_MEMBERSHIP};
use crate::txn::Txn;
use crate::types::StoredMembership;

fn applied(txn: &Txn<'_>) -> Result<Option<StoredMembership>, ApplyError> {
    let Some(bytes) = txn.get(CF_SM_META, KEY_MEMBERSHIP)? else {
        return Ok(None);
    };
    let invalid = |reason: String| {
        ApplyError::Decode(DecodeError::Invalid {
            record: "membership",
            field: "membership",
            reason,
        })
    };
    let stored: pb::StoredMembership =
        crate::convert::from_disk("membership", &bytes).map_err(|e| invalid(e.to_string()))?;
    crate::convert::stored_membership_from_pb(&stored)
        .map(Some)
        .map_err(|e| invalid(e.to_string()))
}

/// The voters of the applied membership (empty before the first membership entry).
pub fn voters(txn: &Txn<'_>) -> Result<Vec<u64>, ApplyError> {
    Ok(applied(txn)?
        .map(|m| m.membership().voter_ids().collect())
        .unwrap_or_default())
}

/// Every node of the applied membership, voters and learners: each holds the metadata, wrapped
/// data keys included, so each owes a receipt for every shred.
pub fn members(txn: &Txn<'_>) -> Result<Vec<u64>, ApplyError> {
    Ok(applied(txn)?
        .map(|m| m.membership().nodes().map(|(id, _)| *id).collect())
        .unwrap_or_default())
}
