//! Client sessions: exactly-once proposals, as in the Raft dissertation (§6.3).
//!
//! A client retries a proposal whose answer it did not get (an election, a timeout, a forward
//! that broke), and the first attempt may have committed. Each client therefore opens a session
//! and numbers its proposals; apply stores each result under (session, sequence) and answers a
//! retry with the stored result instead of applying the command again. The client says with
//! every proposal below which sequence it has every answer, and those results are dropped.
//!
//! Everything here is decided from the log alone: a session's id is the position of the entry
//! that opened it, and the least recently used session is evicted when there are more than
//! [`MAX_SESSIONS`], so every replica keeps and forgets the same sessions.

use callvault_core::codec::VersionedRecord;

use crate::apply::ApplyError;
use crate::command::{CommandResult, Refusal};
use crate::keys::{CF_SESSIONS, CF_SM_META};
use crate::records::SessionRecord;
use crate::txn::Txn;

/// Most sessions kept; opening one more evicts the least recently used.
pub const MAX_SESSIONS: u64 = 4096;
/// Most results one session may keep unacknowledged; a client with more in flight is refused.
pub const MAX_PENDING_RESULTS: u32 = 65_536;
/// Most acknowledged results dropped by one command (the rest go with the next ones).
const PRUNE_PER_COMMAND: usize = 64;

const KEY_SESSION_COUNT: &[u8] = b"session_count";
const RECORD: u8 = b's';
const RESULT: u8 = b'r';
const RECENCY: u8 = b'u';

/// A key of one tag byte and big-endian integers (so keys sort by them).
fn tagged(tag: u8, parts: &[u64]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + 8 * parts.len());
    key.push(tag);
    for part in parts {
        key.extend_from_slice(&part.to_be_bytes());
    }
    key
}

fn record_key(session: u64) -> Vec<u8> {
    tagged(RECORD, &[session])
}

fn results_prefix(session: u64) -> Vec<u8> {
    tagged(RESULT, &[session])
}

fn result_key(session: u64, seq: u64) -> Vec<u8> {
    tagged(RESULT, &[session, seq])
}

fn recency_key(last_used: u64, session: u64) -> Vec<u8> {
    tagged(RECENCY, &[last_used, session])
}

fn read_record(txn: &Txn<'_>, session: u64) -> Result<Option<SessionRecord>, ApplyError> {
    match txn.get(CF_SESSIONS, &record_key(session))? {
        Some(bytes) => Ok(Some(SessionRecord::decode(&bytes)?)),
        None => Ok(None),
    }
}

fn session_count(txn: &Txn<'_>) -> Result<u64, ApplyError> {
    Ok(txn
        .get(CF_SM_META, KEY_SESSION_COUNT)?
        .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
        .map_or(0, u64::from_be_bytes))
}

/// Writes `record` and moves the session to the recent end of the eviction order.
fn touch(txn: &mut Txn<'_>, session: u64, before: Option<SessionRecord>, record: SessionRecord) {
    if let Some(before) = before {
        txn.delete(CF_SESSIONS, recency_key(before.last_used, session));
    }
    txn.put(
        CF_SESSIONS,
        recency_key(record.last_used, session),
        Vec::new(),
    );
    txn.put(CF_SESSIONS, record_key(session), record.encode());
}

/// `OpenSession` at the entry whose unique id is `id`: the new session's id.
pub(crate) fn open(txn: &mut Txn<'_>, id: u64) -> Result<CommandResult, ApplyError> {
    let record = SessionRecord {
        last_used: id,
        acked_below: 0,
        pending: 0,
    };
    touch(txn, id, None, record);
    let mut count = session_count(txn)? + 1;
    while count > MAX_SESSIONS {
        let Some(oldest) = txn.keys_with_prefix(CF_SESSIONS, &[RECENCY], 1)?.pop() else {
            break;
        };
        let session = u64::from_be_bytes(oldest[9..17].try_into().expect("recency key length"));
        evict(txn, session, oldest)?;
        count -= 1;
    }
    txn.put(
        CF_SM_META,
        KEY_SESSION_COUNT.to_vec(),
        count.to_be_bytes().to_vec(),
    );
    Ok(CommandResult::SessionOpened { session: id })
}

fn evict(txn: &mut Txn<'_>, session: u64, recency: Vec<u8>) -> Result<(), ApplyError> {
    txn.delete(CF_SESSIONS, recency);
    txn.delete(CF_SESSIONS, record_key(session));
    let prefix = results_prefix(session);
    for key in txn.keys_with_prefix(CF_SESSIONS, &prefix, MAX_PENDING_RESULTS as usize)? {
        txn.delete(CF_SESSIONS, key);
    }
    Ok(())
}

/// A numbered proposal of a session, as apply sees it.
pub(crate) struct Numbered {
    /// The session.
    pub session: u64,
    /// The proposal's number in it.
    pub seq: u64,
    /// Every result below this number reached the client.
    pub acked_below: u64,
    /// The unique id (log position) of the entry carrying it.
    pub at: u64,
}

/// Applies a numbered proposal: the stored result when this number already applied, else
/// `apply` once, with its result kept for retries.
pub(crate) fn apply_once(
    txn: &mut Txn<'_>,
    request: &Numbered,
    apply: impl FnOnce(&mut Txn<'_>) -> Result<CommandResult, ApplyError>,
) -> Result<CommandResult, ApplyError> {
    let Some(before) = read_record(txn, request.session)? else {
        return Ok(CommandResult::Refused(Refusal::SessionUnknown));
    };
    if request.seq < before.acked_below {
        // The client said it had this answer: a proposal this old is not a retry.
        return Ok(CommandResult::Refused(Refusal::SessionUnknown));
    }
    let mut record = before;
    record.last_used = request.at;
    let key = result_key(request.session, request.seq);
    let result = match txn.get(CF_SESSIONS, &key)? {
        Some(bytes) => CommandResult::decode(&bytes)?,
        None if record.pending >= MAX_PENDING_RESULTS => CommandResult::Refused(Refusal::Invalid(
            format!("more than {MAX_PENDING_RESULTS} proposals of this session are unacknowledged"),
        )),
        None => {
            let result = apply(txn)?;
            txn.put(CF_SESSIONS, key, result.encode());
            record.pending += 1;
            result
        }
    };
    prune(txn, request, &mut record)?;
    touch(txn, request.session, Some(before), record);
    Ok(result)
}

/// Drops results the client acknowledged, a few per command.
fn prune(
    txn: &mut Txn<'_>,
    request: &Numbered,
    record: &mut SessionRecord,
) -> Result<(), ApplyError> {
    if request.acked_below <= record.acked_below {
        return Ok(());
    }
    let prefix = results_prefix(request.session);
    // Everything below the record's `acked_below` is gone already: start there, not at the
    // prefix, or each proposal walks every result its session ever dropped (perf: 59% of apply
    // in a long-lived session before this).
    let from = result_key(request.session, record.acked_below);
    let stored = txn.keys_with_prefix_from(CF_SESSIONS, &prefix, &from, PRUNE_PER_COMMAND)?;
    let mut dropped = 0;
    let mut last_dropped = 0;
    for key in stored {
        let seq = u64::from_be_bytes(key[prefix.len()..].try_into().expect("result key length"));
        if seq >= request.acked_below {
            break;
        }
        txn.delete(CF_SESSIONS, key);
        record.pending = record.pending.saturating_sub(1);
        dropped += 1;
        last_dropped = seq;
    }
    record.acked_below = if dropped == PRUNE_PER_COMMAND {
        // More may be left below: the next commands go on from here.
        last_dropped + 1
    } else {
        request.acked_below
    };
    Ok(())
}
