//! Holds by review date, so holds past their review are reported (status, metric, log) at the
//! cost of what is overdue. A hold past its review is never released by the system: only its
//! issuer releases it.

use callvault_core::call::Hold;
use callvault_core::{CallId, Jurisdiction, UnixMillis};
use rocksdb::{DB, Direction, IteratorMode};

use crate::apply::ApplyError;
use crate::keys;
use crate::txn::Txn;

/// Holds with a review date: `jur | review_date | hold id (u64 BE) | call id` → ∅.
pub const CF_REVIEWS: &str = "hold_reviews";
/// Holds past review counted at most per read.
pub const PAST_REVIEW_CAP: u64 = 10_000;

fn key(jurisdiction: Jurisdiction, call_id: &CallId, hold: &Hold, date: UnixMillis) -> Vec<u8> {
    let mut key = keys::jurisdiction(jurisdiction);
    key.extend_from_slice(&keys::time_key(date));
    key.extend_from_slice(&hold.id.to_be_bytes());
    key.extend_from_slice(call_id.as_str().as_bytes());
    key
}

/// Indexes a placed hold that names a review date.
pub fn index(txn: &mut Txn<'_>, jurisdiction: Jurisdiction, call_id: &CallId, hold: &Hold) {
    if let Some(date) = hold.review_date {
        txn.put(
            CF_REVIEWS,
            key(jurisdiction, call_id, hold, date),
            Vec::new(),
        );
    }
}

/// Removes a released (or purged-away) hold from the index.
pub fn unindex(txn: &mut Txn<'_>, jurisdiction: Jurisdiction, call_id: &CallId, hold: &Hold) {
    if let Some(date) = hold.review_date {
        txn.delete(CF_REVIEWS, key(jurisdiction, call_id, hold, date));
    }
}

/// Holds of `jurisdiction` whose review date is before `as_of`, counted up to
/// [`PAST_REVIEW_CAP`].
pub fn past_review(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
) -> Result<u64, ApplyError> {
    let cf = db.cf_handle(CF_REVIEWS).expect("created at open");
    let prefix = keys::jurisdiction(jurisdiction);
    let bound = keys::time_key(as_of);
    let mut count = 0;
    for item in db.iterator_cf(cf, IteratorMode::From(&prefix, Direction::Forward)) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) || count >= PAST_REVIEW_CAP {
            break;
        }
        if key
            .get(prefix.len()..prefix.len() + 8)
            .is_none_or(|date| date >= bound.as_slice())
        {
            break;
        }
        count += 1;
    }
    Ok(count)
}
