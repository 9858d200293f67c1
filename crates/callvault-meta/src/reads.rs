//! Reads of the state machine for the stateless tiers: a number's standing, policies, a
//! jurisdiction's status, call listings and the registry. Each answer's cost is bounded by what
//! it returns (a page, a capped count), never by how many calls a jurisdiction has.
//!
//! These are plain functions over the database; the `MetaStore` service decides whether they run
//! after a linearizable read-index round or on the local state as it is.

use callvault_core::codec::VersionedRecord;
use callvault_core::policy::VersionedPolicy;
use callvault_core::retention::is_overdue;
use callvault_core::{CallId, CallRecord, Jurisdiction, RegistryEntry, UnixMillis};
use rocksdb::{DB, Direction, IteratorMode};

use crate::apply::{self, ApplyError, Counters, LogPosition};
use crate::keys::{self, *};
use crate::lifecycle::{ShredKind, ShredRecord};
use crate::txn::Txn;

/// Largest page a listing returns.
pub const MAX_PAGE: usize = 1000;
/// Page size when a request names none.
pub const DEFAULT_PAGE: usize = 100;
/// Overdue recordings counted at most per status read; more is reported as this many.
pub const OVERDUE_COUNT_CAP: u64 = 10_000;

/// A request that cannot be answered as asked.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The request is malformed (e.g. a page token from another listing).
    #[error("{0}")]
    Invalid(String),
    /// The recording's deadline has passed in cluster time (whether or not it was swept yet).
    #[error("the recording is past its retention deadline")]
    PastDeadline,
    /// The store failed or holds a damaged record.
    #[error(transparent)]
    Store(#[from] ApplyError),
}

impl From<rocksdb::Error> for ReadError {
    fn from(e: rocksdb::Error) -> Self {
        ReadError::Store(ApplyError::Rocks(e))
    }
}

impl From<callvault_core::DecodeError> for ReadError {
    fn from(e: callvault_core::DecodeError) -> Self {
        ReadError::Store(ApplyError::Decode(e))
    }
}

fn cf<'a>(db: &'a DB, name: &str) -> &'a rocksdb::ColumnFamily {
    db.cf_handle(name)
        .unwrap_or_else(|| panic!("column family {name} is created at open"))
}

/// How a number stands in a jurisdiction's registry, with the policy in force: everything the
/// ingest privilege decision needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Standing {
    /// Registered privileged.
    pub privileged: bool,
    /// Registered sensitive.
    pub sensitive: bool,
    /// The policy in force, if any.
    pub policy: Option<VersionedPolicy>,
    /// The call's existing record and where it was committed, when the call id is not new.
    pub existing: Option<(CallRecord, LogPosition)>,
    /// The call id is tombstoned (its record was deleted or purged): refused forever.
    pub retired: bool,
    /// The cluster time, once a majority of voters has attested.
    pub cluster_time: Option<UnixMillis>,
}

/// The standing of the number with `fingerprint` in `jurisdiction`, and the existing record of
/// `call_id`, if given.
pub fn standing(
    db: &DB,
    id_key: [u8; 32],
    jurisdiction: Jurisdiction,
    fingerprint: &[u8; 32],
    call_id: Option<&CallId>,
) -> Result<Standing, ReadError> {
    let txn = Txn::new(db).with_id_key(id_key);
    let retired = match call_id {
        Some(id) => crate::tombstones::find(&txn, jurisdiction, id)?.is_some(),
        None => false,
    };
    let key = keys::number_prefix(jurisdiction, fingerprint);
    let existing = match call_id {
        Some(id) => {
            let call_key = keys::call(jurisdiction, id);
            match txn.get(CF_CALLS, &call_key)? {
                Some(bytes) => {
                    let position = match txn.get(CF_COMMITS, &call_key)? {
                        Some(p) => LogPosition::decode(&p)?,
                        None => LogPosition::default(),
                    };
                    Some((CallRecord::decode(&bytes)?, position))
                }
                None => None,
            }
        }
        None => None,
    };
    Ok(Standing {
        privileged: txn.get(CF_PRIVILEGED, &key)?.is_some(),
        sensitive: txn.get(CF_SENSITIVE, &key)?.is_some(),
        policy: apply::current_policy(&txn, jurisdiction)?,
        existing,
        retired,
        cluster_time: crate::clock::cluster_time(&txn)?,
    })
}

/// A policy version (`0`: the one in force).
pub fn policy(
    db: &DB,
    jurisdiction: Jurisdiction,
    version: u32,
) -> Result<Option<VersionedPolicy>, ReadError> {
    let txn = Txn::new(db);
    if version == 0 {
        return Ok(apply::current_policy(&txn, jurisdiction)?);
    }
    match txn.get(CF_POLICIES, &keys::policy_version(jurisdiction, version))? {
        Some(bytes) => Ok(Some(VersionedPolicy::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// One call record.
pub fn call(
    db: &DB,
    jurisdiction: Jurisdiction,
    call_id: &callvault_core::CallId,
) -> Result<Option<CallRecord>, ReadError> {
    match Txn::new(db).get(CF_CALLS, &keys::call(jurisdiction, call_id))? {
        Some(bytes) => Ok(Some(CallRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

/// A jurisdiction's retention status, from counters and the heads of the expiry indexes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct JurisdictionStatus {
    /// The counters `apply` keeps.
    pub counters: Counters,
    /// The policy in force.
    pub policy: Option<VersionedPolicy>,
    /// The oldest live recording's start time.
    pub oldest_live_started_at: Option<UnixMillis>,
    /// Live, unheld recordings past deadline plus one sweep interval at the status time (capped
    /// at [`OVERDUE_COUNT_CAP`]).
    pub overdue: u64,
    /// Purges still pending [`PURGE_DEADLINE_MS`] after they started (capped at
    /// [`OVERDUE_COUNT_CAP`]): an alarm.
    pub purges_overdue: u64,
    /// The time the status was evaluated at: the cluster time, or the reader's clock while the
    /// cluster has none.
    pub as_of: UnixMillis,
    /// Whether `as_of` is the cluster time.
    pub cluster_time: Option<UnixMillis>,
    /// The oldest kept call-detail record's start time.
    pub oldest_detail_started_at: Option<UnixMillis>,
    /// Call-detail records past their deadline plus one sweep interval (capped).
    pub details_overdue: u64,
    /// Holds past their review date (capped at [`crate::reviews::PAST_REVIEW_CAP`]).
    pub holds_past_review: u64,
    /// A shortening policy waiting: the change's id, the policy (its version is the one it was
    /// proposed on) and when its notice ends.
    pub pending_policy: Option<(u64, VersionedPolicy, Option<UnixMillis>)>,
    /// Open changes of any kind (capped at [`OVERDUE_COUNT_CAP`]).
    pub pending_changes: u64,
    /// Registrations whose purge is still paging, and the recordings they purged so far.
    pub purges_in_progress: u64,
    /// See `purges_in_progress`.
    pub purges_in_progress_purged: u64,
}

/// How long a purge may take, from the apply that shredded the key to the last replica's
/// receipt, before it is an alarm.
pub const PURGE_DEADLINE_MS: i64 = 15 * 60_000;

/// The status of `jurisdiction` at the cluster time (or at `reader_now`, the caller's clock,
/// while the cluster has no time yet).
pub fn jurisdiction_status(
    db: &DB,
    jurisdiction: Jurisdiction,
    reader_now: UnixMillis,
) -> Result<JurisdictionStatus, ReadError> {
    status(db, jurisdiction, reader_now, true)
}

/// [`jurisdiction_status`] for the sweeper's report every tick, without `purges_overdue` (left
/// 0): counting it walks every pending shred of the jurisdiction, and after a large purge that
/// walk (150,000 records each second) took most of the sweep leader's CPU (issue 14).
pub fn sweep_status(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
) -> Result<JurisdictionStatus, ReadError> {
    status(db, jurisdiction, as_of, false)
}

fn status(
    db: &DB,
    jurisdiction: Jurisdiction,
    reader_now: UnixMillis,
    count_overdue_purges: bool,
) -> Result<JurisdictionStatus, ReadError> {
    let txn = Txn::new(db);
    let cluster_time = crate::clock::cluster_time(&txn)?;
    let as_of = cluster_time.unwrap_or(reader_now);
    let policy = apply::current_policy(&txn, jurisdiction)?;
    let (oldest_live_started_at, overdue) =
        recording_head(db, &txn, jurisdiction, policy.as_ref(), as_of)?;
    let (oldest_detail_started_at, details_overdue) =
        detail_head(db, jurisdiction, policy.as_ref(), as_of)?;
    let changes =
        crate::approvals::open_changes(db, Some(jurisdiction), OVERDUE_COUNT_CAP as usize)?;
    let pending_policy = changes.iter().find_map(|c| match &c.kind {
        crate::approvals::ChangeKind::Policy {
            policy,
            base_version,
        } => Some((
            c.id,
            VersionedPolicy {
                version: *base_version,
                policy: policy.clone(),
            },
            c.approval.rule.notice_ends_at,
        )),
        _ => None,
    });
    let purging = crate::purges::in_progress(db, Some(jurisdiction), OVERDUE_COUNT_CAP as usize)?;
    Ok(JurisdictionStatus {
        counters: apply::counters(&txn, jurisdiction)?,
        policy,
        oldest_live_started_at,
        overdue,
        purges_overdue: if count_overdue_purges {
            purges_overdue(db, jurisdiction, as_of)?
        } else {
            0
        },
        as_of,
        cluster_time,
        oldest_detail_started_at,
        details_overdue,
        holds_past_review: crate::reviews::past_review(db, jurisdiction, as_of)?,
        pending_policy,
        pending_changes: changes.len() as u64,
        purges_in_progress: purging.len() as u64,
        purges_in_progress_purged: purging.iter().map(|p| p.progress.purged).sum(),
    })
}

/// The oldest live recording's start, and how many live unheld recordings are overdue. The
/// expiry index is in start order, so overdue recordings are all at its head: walking stops at
/// the first one that is not past due, and normally that is the first one.
fn recording_head(
    db: &DB,
    txn: &Txn<'_>,
    jurisdiction: Jurisdiction,
    policy: Option<&VersionedPolicy>,
    as_of: UnixMillis,
) -> Result<(Option<UnixMillis>, u64), ReadError> {
    let prefix = keys::jurisdiction(jurisdiction);
    let mut oldest = None;
    let mut overdue = 0;
    let iter = db.iterator_cf(
        cf(db, CF_BY_START),
        IteratorMode::From(&prefix, Direction::Forward),
    );
    for item in iter {
        let (key, _) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        let Some(call_key) = call_key_of_time_index(&key, prefix.len(), jurisdiction) else {
            continue;
        };
        let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
            continue;
        };
        let call = CallRecord::decode(&bytes)?;
        oldest.get_or_insert(call.started_at);
        let Some(policy) = policy else { break };
        let due = callvault_core::retention::recording_deadline(call.started_at, &policy.policy)
            .plus_seconds(policy.policy.sweep_interval_seconds);
        if as_of < due || overdue >= OVERDUE_COUNT_CAP {
            break;
        }
        if is_overdue(&call, &policy.policy, as_of) {
            overdue += 1;
        }
    }
    Ok((oldest, overdue))
}

/// The oldest kept call-detail record's start, and how many are past their deadline plus one
/// sweep interval (the call-detail index is in start order too).
fn detail_head(
    db: &DB,
    jurisdiction: Jurisdiction,
    policy: Option<&VersionedPolicy>,
    as_of: UnixMillis,
) -> Result<(Option<UnixMillis>, u64), ReadError> {
    let head = crate::details::head(db, jurisdiction, OVERDUE_COUNT_CAP as usize)?;
    let oldest = head.first().map(|(started, _)| *started);
    let Some(policy) = policy else {
        return Ok((oldest, 0));
    };
    let overdue = head
        .iter()
        .take_while(|(started, _)| {
            as_of
                >= callvault_core::retention::call_detail_deadline(*started, &policy.policy)
                    .plus_seconds(policy.policy.sweep_interval_seconds)
        })
        .count() as u64;
    Ok((oldest, overdue))
}

/// Purges of `jurisdiction` pending longer than [`PURGE_DEADLINE_MS`] at `as_of` (capped).
fn purges_overdue(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
) -> Result<u64, ReadError> {
    let prefix = keys::jurisdiction(jurisdiction);
    let mut overdue = 0;
    for item in db.iterator_cf(
        cf(db, CF_SHREDS),
        IteratorMode::From(&prefix, Direction::Forward),
    ) {
        let (key, value) = item?;
        if !key.starts_with(&prefix) || overdue >= OVERDUE_COUNT_CAP {
            break;
        }
        let record = ShredRecord::decode(&value)?;
        if record.kind == ShredKind::Purge && as_of.0 - record.started_at.0 > PURGE_DEADLINE_MS {
            overdue += 1;
        }
    }
    Ok(overdue)
}

/// Up to `limit` recordings of `jurisdiction` due for expiry at `as_of` under `policy`, oldest
/// first. Held recordings are not in the expiry index, so every one returned is due unless a
/// hold or a purge lands before the `Expire` applies (and `apply` re-checks).
pub fn due_for_expiry(
    db: &DB,
    jurisdiction: Jurisdiction,
    as_of: UnixMillis,
    policy: &callvault_core::RetentionPolicy,
    limit: usize,
) -> Result<Vec<CallId>, ReadError> {
    let prefix = keys::jurisdiction(jurisdiction);
    let mut due = Vec::new();
    for item in db.iterator_cf(
        cf(db, CF_BY_START),
        IteratorMode::From(&prefix, Direction::Forward),
    ) {
        let (key, _) = item?;
        if !key.starts_with(&prefix) || due.len() >= limit {
            break;
        }
        let Some((started_at, call_id)) = keys::parse_by_start(&key) else {
            continue;
        };
        if callvault_core::retention::recording_deadline(started_at, policy) > as_of {
            break;
        }
        due.push(call_id);
    }
    Ok(due)
}

/// For each of `ids`, in order, whether a committed call references it. The orphan sweep keeps
/// every chunk this says is referenced.
pub fn chunks_referenced(db: &DB, ids: &[[u8; 32]]) -> Result<Vec<bool>, ReadError> {
    let cf = cf(db, CF_CHUNK_REFS);
    ids.iter()
        .map(|id| {
            let mut iter = db.iterator_cf(cf, IteratorMode::From(id, Direction::Forward));
            match iter.next() {
                Some(item) => Ok(item?.0.starts_with(id)),
                None => Ok(false),
            }
        })
        .collect()
}

/// Shreds still waiting for a meta receipt: of `node` when given (those it has not sent), or of
/// anyone. Counted up to [`OVERDUE_COUNT_CAP`].
pub fn shreds_owing(db: &DB, node: Option<u64>, purges_only: bool) -> Result<u64, ReadError> {
    let mut owing = 0;
    let mut after: Option<Vec<u8>> = None;
    while owing < OVERDUE_COUNT_CAP {
        let (page, next) = pending_shreds(db, after.as_deref(), 1000)?;
        owing += page
            .iter()
            .filter(|s| !purges_only || s.record.kind == ShredKind::Purge)
            .filter(|s| node.is_none_or(|n| !s.record.meta_receipts.contains(&n)))
            .count() as u64;
        match next {
            Some(key) => after = Some(key),
            None => break,
        }
    }
    Ok(owing.min(OVERDUE_COUNT_CAP))
}

/// A shred in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingShred {
    /// Whose call.
    pub jurisdiction: Jurisdiction,
    /// Which call.
    pub call_id: CallId,
    /// Its progress.
    pub record: ShredRecord,
}

/// Up to `limit` shreds in progress, after the `after` key (`jur | call id`) if given, with the
/// key to continue from.
pub fn pending_shreds(
    db: &DB,
    after: Option<&[u8]>,
    limit: usize,
) -> Result<(Vec<PendingShred>, Option<Vec<u8>>), ReadError> {
    let mode = match after {
        Some(key) => IteratorMode::From(key, Direction::Forward),
        None => IteratorMode::Start,
    };
    let mut shreds = Vec::new();
    let mut last = None;
    for item in db.iterator_cf(cf(db, CF_SHREDS), mode) {
        let (key, value) = item?;
        if Some(&key[..]) == after {
            continue;
        }
        if shreds.len() >= limit {
            return Ok((shreds, last));
        }
        let (Some(&index), Some(id)) = (key.first(), key.get(1..)) else {
            continue;
        };
        let (Some(jurisdiction), Ok(call_id)) = (
            Jurisdiction::from_index(index),
            CallId::new(&String::from_utf8_lossy(id)),
        ) else {
            continue;
        };
        last = Some(key.to_vec());
        shreds.push(PendingShred {
            jurisdiction,
            call_id,
            record: ShredRecord::decode(&value)?,
        });
    }
    Ok((shreds, None))
}

/// What playback needs of a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveContent {
    /// The call.
    pub call: CallRecord,
    /// Its data key, wrapped by the jurisdiction's key.
    pub wrapped_key: Vec<u8>,
    /// Its chunks, in order.
    pub chunk_ids: Vec<[u8; 32]>,
}

/// What playback needs of a live call: the record, its wrapped data key and its chunks.
pub fn content(
    db: &DB,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
) -> Result<Option<LiveContent>, ReadError> {
    let txn = Txn::new(db);
    let call_key = keys::call(jurisdiction, call_id);
    let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
        return Ok(None);
    };
    let call = CallRecord::decode(&bytes)?;
    if !call.content_readable() || crate::lifecycle::number_privileged(&txn, &call)? {
        return Ok(None);
    }
    if crate::lifecycle::past_deadline(&txn, &call)? {
        return Err(ReadError::PastDeadline);
    }
    let (Some(key), Some(chunks)) = (txn.get(CF_KEYS, &call_key)?, txn.get(CF_CHUNKS, &call_key)?)
    else {
        return Ok(None);
    };
    Ok(Some(LiveContent {
        call,
        wrapped_key: key,
        chunk_ids: keys::chunk_ids(&chunks),
    }))
}

/// The shred in progress for a call, if any.
pub fn shred_of(
    db: &DB,
    jurisdiction: Jurisdiction,
    call_id: &CallId,
) -> Result<Option<ShredRecord>, ReadError> {
    Ok(crate::lifecycle::shred_record(
        &Txn::new(db),
        &keys::call(jurisdiction, call_id),
    )?)
}

/// `jur | call id` from a time-ordered index key `prefix | time | call id`.
fn call_key_of_time_index(key: &[u8], prefix_len: usize, j: Jurisdiction) -> Option<Vec<u8>> {
    let id = key.get(prefix_len + 8..).filter(|id| !id.is_empty())?;
    let mut call_key = keys::jurisdiction(j);
    call_key.extend_from_slice(id);
    Some(call_key)
}

/// Which calls to list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallFilter {
    /// Only this facility's calls.
    pub facility_id: Option<String>,
    /// Only this person's calls.
    pub inmate_id: Option<String>,
    /// Only calls that started after this (exclusive).
    pub started_after: Option<UnixMillis>,
    /// Only calls that started before this (exclusive).
    pub started_before: Option<UnixMillis>,
}

/// A page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in listing order.
    pub items: Vec<T>,
    /// Where the next page starts; `None` at the end.
    pub next_token: Option<Vec<u8>>,
}

fn page_size(requested: u32) -> usize {
    match requested as usize {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// A jurisdiction's calls, newest first. An inmate filter wins over a facility filter for the
/// index it walks; the other is applied to each record.
pub fn list_calls(
    db: &DB,
    jurisdiction: Jurisdiction,
    filter: &CallFilter,
    page_size_requested: u32,
    page_token: &[u8],
) -> Result<Page<CallRecord>, ReadError> {
    let (index, prefix) = match (&filter.inmate_id, &filter.facility_id) {
        (Some(inmate), _) => (CF_BY_INMATE, keys::party_prefix(jurisdiction, inmate)),
        (None, Some(facility)) => (CF_BY_FACILITY, keys::party_prefix(jurisdiction, facility)),
        (None, None) => (CF_BY_TIME, keys::jurisdiction(jurisdiction)),
    };
    let limit = page_size(page_size_requested);
    // Start just below the upper bound: the token (exclusive), or the `before` time, or the end
    // of the prefix (call ids are ASCII, so 0xff bytes sort after every key of the prefix).
    let mut start = prefix.clone();
    match filter.started_before {
        Some(before) => start.extend_from_slice(&keys::time_key(before)),
        None => start.extend_from_slice(&[0xff; 9]),
    }
    if !page_token.is_empty() {
        if !page_token.starts_with(&prefix) || page_token.len() <= prefix.len() + 8 {
            return Err(ReadError::Invalid(
                "page_token does not belong to this listing".into(),
            ));
        }
        start = start.min(page_token.to_vec());
    }
    let txn = Txn::new(db);
    let mut items = Vec::with_capacity(limit.min(64));
    let mut last_key = None;
    let iter = db.iterator_cf(
        cf(db, index),
        IteratorMode::From(&start, Direction::Reverse),
    );
    for item in iter {
        let (key, _) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        if key.as_ref() == page_token {
            continue;
        }
        if let Some(after) = filter.started_after {
            let time = &key[prefix.len()..prefix.len() + 8];
            if time <= keys::time_key(after).as_slice() {
                break;
            }
        }
        if items.len() == limit {
            // One more exists: the page is full and has a successor.
            return Ok(Page {
                items,
                next_token: last_key,
            });
        }
        last_key = Some(key.to_vec());
        let Some(call_key) = call_key_of_time_index(&key, prefix.len(), jurisdiction) else {
            continue;
        };
        let Some(bytes) = txn.get(CF_CALLS, &call_key)? else {
            continue;
        };
        let call = CallRecord::decode(&bytes)?;
        if filter
            .facility_id
            .as_ref()
            .is_some_and(|f| *f != call.facility_id)
        {
            continue;
        }
        items.push(call);
    }
    Ok(Page {
        items,
        next_token: None,
    })
}

/// A jurisdiction's privileged numbers, in number order.
pub fn list_registry(
    db: &DB,
    jurisdiction: Jurisdiction,
    page_size_requested: u32,
    page_token: &[u8],
) -> Result<Page<RegistryEntry>, ReadError> {
    let prefix = keys::jurisdiction(jurisdiction);
    if !page_token.is_empty() && !page_token.starts_with(&prefix) {
        return Err(ReadError::Invalid(
            "page_token does not belong to this listing".into(),
        ));
    }
    let limit = page_size(page_size_requested);
    let start = if page_token.is_empty() {
        prefix.clone()
    } else {
        page_token.to_vec()
    };
    let mut items = Vec::with_capacity(limit.min(64));
    let mut last_key = None;
    let iter = db.iterator_cf(
        cf(db, CF_REGISTRY),
        IteratorMode::From(&start, Direction::Forward),
    );
    for item in iter {
        let (key, value) = item?;
        if !key.starts_with(&prefix) {
            break;
        }
        if key.as_ref() == page_token {
            continue;
        }
        if items.len() == limit {
            return Ok(Page {
                items,
                next_token: last_key,
            });
        }
        last_key = Some(key.to_vec());
        items.push(RegistryEntry::decode(&value)?);
    }
    Ok(Page {
        items,
        next_token: None,
    })
}
