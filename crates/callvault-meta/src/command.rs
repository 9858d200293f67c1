//! State-machine commands and their results, with their versioned encodings.
//!
//! Commands carry everything `apply` needs, including the time: `apply` reads no clock. They are
//! stored in the Raft log and sent between nodes, so they are encoded with a version byte like
//! every stored record.

use callvault_core::call::{CallRecord, Lifecycle};
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::policy::{RetentionPolicy, VersionedPolicy};
use callvault_core::{CallId, E164, Jurisdiction, RegistryEntry, UnixMillis, normalize};

/// Most chunks one call may have: 100,000 chunks of up to 1 MiB.
pub const MAX_CHUNKS_PER_CALL: usize = 100_000;
/// Longest wrapped data key.
pub const MAX_WRAPPED_KEY: usize = 512;
/// Longest principal name.
pub const MAX_PRINCIPAL: usize = 256;
/// Longest encoded embedded record (a batched command can carry a call's 100,000 chunk ids).
const MAX_EMBEDDED_RECORD: usize = 4 * 1024 * 1024;
/// Longest free-text field (reason, evidence) of a command, in bytes.
pub const MAX_TEXT: usize = 1024;
/// Most commands in one batch entry.
pub const MAX_BATCH: usize = 1024;

/// A change to the metadata store, decided deterministically in `apply`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Installs a new version of a jurisdiction's retention policy.
    PutPolicy {
        /// Whose policy.
        jurisdiction: Jurisdiction,
        /// The new rules.
        policy: RetentionPolicy,
        /// The version the proposer read (0: none); a mismatch is refused.
        expected_version: u32,
        /// Who asked.
        principal: String,
        /// When.
        at: UnixMillis,
    },
    /// Commits a call that ingest recorded (lifecycle `Live`) or refused as privileged
    /// (lifecycle `Blocked`). `apply` re-checks privilege at the commit index.
    CommitCall {
        /// The call as ingest saw it.
        call: CallRecord,
        /// The call's data key wrapped by the jurisdiction's key (empty when no audio).
        wrapped_key: Vec<u8>,
        /// The stored chunks, in order (empty when no audio).
        chunk_ids: Vec<[u8; 32]>,
        /// The platform principal.
        principal: String,
        /// When the commit was proposed.
        at: UnixMillis,
    },
    /// Registers a privileged number; every past call to it in the jurisdiction is purged.
    RegisterPrivileged {
        /// The registry entry (normalized number, registrant, evidence, time).
        entry: RegistryEntry,
        /// The keyed hash of the number that indexes calls.
        fingerprint: [u8; 32],
    },
    /// Registers a sensitive number: calls to it are recorded but sealed.
    RegisterSensitive {
        /// Whose registry.
        jurisdiction: Jurisdiction,
        /// The number, canonical.
        number: E164,
        /// The keyed hash of the number that indexes calls.
        fingerprint: [u8; 32],
        /// Why calls to it are sealed.
        reason: String,
        /// Who registered it.
        principal: String,
        /// When.
        at: UnixMillis,
    },
    /// A reviewer found one recorded call privileged: it is crypto-shredded.
    FlagPrivileged {
        /// Whose call.
        jurisdiction: Jurisdiction,
        /// Which call.
        call_id: CallId,
        /// Why.
        reason: String,
        /// Evidence for the finding.
        evidence: String,
        /// Who flagged it.
        principal: String,
        /// When.
        at: UnixMillis,
    },
    /// One node's failed authentications over a window, coalesced per source address (tag 16):
    /// `apply` appends one audit entry per source. See [`crate::auth_failures`].
    RecordAuthFailures(crate::auth_failures::AuthFailureReport),
    /// Concurrent proposals the leader gathered into one log entry, so one append, one fsync and
    /// one apply serve them all. Applied in order; each has its own result. Never nested.
    Batch(Vec<Command>),
    /// The retention sweeper's expiry of recordings it read as due at `as_of`. `apply` re-checks
    /// each call's deadline under the policy in force and its holds.
    Expire {
        /// Whose calls.
        jurisdiction: Jurisdiction,
        /// The sweep's time: the only clock `apply` sees.
        as_of: UnixMillis,
        /// At most [`MAX_EXPIRE_BATCH`] calls.
        calls: Vec<CallId>,
    },
    /// Places a named legal hold on a call. The hold's id is the command's unique id in the log.
    PlaceHold {
        /// Whose call.
        jurisdiction: Jurisdiction,
        /// Which call.
        call_id: CallId,
        /// The principal placing it: it alone, or its agency, may release it.
        issuer: String,
        /// The issuer's agency.
        agency: String,
        /// The court or agency case.
        case_number: String,
        /// Why.
        reason: String,
        /// When it must be reviewed.
        review_date: Option<UnixMillis>,
        /// When.
        at: UnixMillis,
    },
    /// Releases a hold.
    ReleaseHold {
        /// Whose call.
        jurisdiction: Jurisdiction,
        /// Which call.
        call_id: CallId,
        /// Which hold.
        hold_id: u64,
        /// The principal asking.
        principal: String,
        /// The principal's agency.
        agency: String,
        /// When.
        at: UnixMillis,
    },
    /// A content access attempt, recorded (and decided) before any byte is served.
    RecordAccess(AccessRequest),
    /// A meta replica compacted these calls' data keys away and purged its Raft log past the
    /// entries that carried them.
    KeysShredded {
        /// The replica.
        node_id: u64,
        /// The calls, at most [`MAX_RECEIPT_BATCH`].
        calls: Vec<(Jurisdiction, CallId)>,
        /// When.
        at: UnixMillis,
    },
    /// A client session's numbered proposal (tag 17): applied once, however often it is
    /// retried (see [`crate::session`]).
    Session(SessionRequest),
    /// Opens a client session (tag 18); its id is the entry's unique position.
    OpenSession,
    /// Retention's commands (tags 30–39): cluster time, pending changes, paged purges,
    /// call-detail expiry, waived receipts. See [`crate::retention_command`].
    Retention(crate::retention_command::RetentionCommand),
    /// The blob collector removed these calls' chunks from every shard of the set.
    ChunksCollected {
        /// The shards that confirmed the chunks are gone.
        shards: Vec<String>,
        /// The calls, at most [`MAX_RECEIPT_BATCH`].
        calls: Vec<(Jurisdiction, CallId)>,
        /// When.
        at: UnixMillis,
    },
}

/// A numbered proposal of a client session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRequest {
    /// The session, as `OpenSession` answered.
    pub session: u64,
    /// This proposal's number in the session, from 1 up; a retry carries the same number.
    pub seq: u64,
    /// The client has the answer of every proposal numbered below this.
    pub acked_below: u64,
    /// The proposal: neither a batch nor a session command.
    pub command: Box<Command>,
}

/// Most calls one `Expire` names.
pub const MAX_EXPIRE_BATCH: usize = 1000;
/// Most calls one purge receipt names.
pub const MAX_RECEIPT_BATCH: usize = 1000;
/// Most shards a blob receipt names.
pub const MAX_SHARDS: usize = 256;
/// Longest shard id.
pub const MAX_SHARD_ID: usize = 64;

/// Per-principal playback limits, from the serving node's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessQuota {
    /// Calls one principal may play back per clock hour.
    pub calls_per_hour: u64,
    /// Audio bytes one principal may play back per clock hour.
    pub bytes_per_hour: u64,
}

/// One content access attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessRequest {
    /// The jurisdiction asked for.
    pub jurisdiction: Jurisdiction,
    /// The call asked for.
    pub call_id: CallId,
    /// Who asked.
    pub principal: String,
    /// The case the access is for.
    pub case_number: String,
    /// Why.
    pub reason: String,
    /// Whether the principal holds the elevated role sealed calls need.
    pub elevated: bool,
    /// Set when the serving node already refused the request (missing case number, out of
    /// scope, wrong role): recorded as a denial, nothing else is decided.
    pub denial: Option<String>,
    /// The limits to charge against.
    pub quota: AccessQuota,
    /// When.
    pub at: UnixMillis,
}

/// What `apply` decided about a content access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessDecision {
    /// Serve it.
    Allowed {
        /// A sealed call, read with the elevated role: an alert.
        sealed: bool,
    },
    /// Refused by the serving node (the reason it gave).
    Refused(String),
    /// No readable call by that id in the jurisdiction (unknown, purged or expired).
    NotFound,
    /// A sealed call and the principal lacks the elevated role.
    SealedNeedsElevation,
    /// Over the per-principal hourly quota.
    QuotaExceeded,
    /// The recording's deadline has passed in cluster time: refused whether or not the sweeper
    /// has expired it yet.
    PastDeadline,
}

/// What happened to a committed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Stored and readable.
    Recorded,
    /// The number became privileged while the call streamed: nothing readable was kept.
    PurgedAtCommit,
    /// Refused as privileged at ingest; only what the policy keeps was committed.
    Blocked,
}

/// Why `apply` refused a command. Refusals are results, not errors: every replica refuses the
/// same command the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `PutPolicy` raced another change.
    PolicyVersionMismatch {
        /// The version in force.
        current: u32,
    },
    /// The policy breaks a rule.
    InvalidPolicy(String),
    /// The jurisdiction has no policy, so no call can be committed for it.
    NoPolicy,
    /// The call id exists with different content.
    CallIdConflict,
    /// The call id belongs to a purged call and is refused forever.
    CallIdPurged,
    /// The command itself is malformed.
    Invalid(String),
    /// The command names a call that does not exist.
    NoSuchCall,
    /// No hold with that id on the call.
    HoldNotFound,
    /// Only a hold's issuer or its agency may release it.
    NotIssuer,
    /// The call has no content any more (expired, purged, blocked).
    NotLive,
    /// The call carries the most holds it may.
    TooManyHolds,
    /// The hold's review date breaks the policy.
    ReviewDate(String),
    /// The client session is unknown (evicted, or never opened) or the proposal is older than
    /// the client said it had answers for: the client must open a new session.
    SessionUnknown,
    /// A time later than the cluster time (a clock ahead of the voters' median).
    AheadOfClusterTime {
        /// The cluster time, if the voters have made one yet.
        cluster_time: Option<UnixMillis>,
    },
    /// The cluster has no time yet (fewer than a majority of voters attested).
    NoClusterTime,
    /// The call id belongs to a call whose record was deleted at its call-detail deadline.
    CallIdRetired,
    /// The two-person rule refuses it (why, for people).
    Approval(String),
    /// No pending change with that id.
    NoSuchChange,
    /// The change is no longer pending.
    ChangeClosed,
    /// Not allowed for this principal or in this state (why, for people).
    NotAllowed(String),
}

/// The result of applying one command (or a blank or membership entry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResult {
    /// A blank or membership entry.
    Empty,
    /// A policy version was installed.
    PolicyPut {
        /// Its number.
        version: u32,
    },
    /// A call was committed (or was already, for a retry).
    CallCommitted {
        /// What was kept.
        outcome: CommitOutcome,
        /// The policy version in force at the commit.
        policy_version: u32,
        /// True when an identical commit had already applied.
        duplicate: bool,
        /// Where the call's (first) commit sits in the log.
        committed_at: crate::records::LogPosition,
    },
    /// A privileged number was registered.
    NumberRegistered {
        /// Recordings purged by it.
        purged: u64,
    },
    /// A sensitive number was registered (or already was).
    SensitiveRegistered,
    /// A call was flagged privileged.
    CallFlagged {
        /// False when the call had no content left to shred (already purged or expired).
        purged: bool,
    },
    /// Refused.
    Refused(Refusal),
    /// The results of a [`Command::Batch`], in order.
    Batch(Vec<CommandResult>),
    /// An expiry batch applied.
    Expired {
        /// Recordings shredded.
        expired: u32,
        /// Calls left alone: not due under the policy in force, held, or already gone.
        skipped: u32,
    },
    /// A hold was placed.
    HoldPlaced {
        /// Its id (the entry's log index).
        hold_id: u64,
    },
    /// A hold was released.
    HoldReleased {
        /// True when the release let a privileged recording kept under seal be purged.
        purged: bool,
    },
    /// A content access was decided and recorded.
    AccessDecided {
        /// The decision.
        decision: AccessDecision,
        /// The access record's sequence number in the audit log.
        record: u64,
    },
    /// Purge receipts were recorded.
    ReceiptsRecorded {
        /// Shreds that became complete with them.
        completed: u32,
    },
    /// A client session was opened.
    SessionOpened {
        /// Its id.
        session: u64,
    },
    /// A retention command's result (tags 30–39).
    Retention(crate::retention_command::RetentionResult),
}

const COMMAND_VERSION: u8 = 1;

impl VersionedRecord for Command {
    const NAME: &'static str = "command";
    const CURRENT_VERSION: u8 = COMMAND_VERSION;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(COMMAND_VERSION);
        match self {
            Command::PutPolicy {
                jurisdiction,
                policy,
                expected_version,
                principal,
                at,
            } => {
                let versioned = VersionedPolicy {
                    version: *expected_version,
                    policy: policy.clone(),
                };
                w.u8(1)
                    .u8(jurisdiction.index())
                    .blob(&versioned.encode())
                    .str(principal)
                    .i64(at.0);
            }
            Command::CommitCall {
                call,
                wrapped_key,
                chunk_ids,
                principal,
                at,
            } => {
                w.u8(2)
                    .blob(&call.encode())
                    .blob(wrapped_key)
                    .u32(chunk_ids.len() as u32);
                for id in chunk_ids {
                    w.bytes32(id);
                }
                w.str(principal).i64(at.0);
            }
            Command::RegisterPrivileged { entry, fingerprint } => {
                w.u8(3).blob(&entry.encode()).bytes32(fingerprint);
            }
            Command::RegisterSensitive {
                jurisdiction,
                number,
                fingerprint,
                reason,
                principal,
                at,
            } => {
                w.u8(5)
                    .u8(jurisdiction.index())
                    .str(number.as_str())
                    .bytes32(fingerprint)
                    .str(reason)
                    .str(principal)
                    .i64(at.0);
            }
            Command::FlagPrivileged {
                jurisdiction,
                call_id,
                reason,
                evidence,
                principal,
                at,
            } => {
                w.u8(6)
                    .u8(jurisdiction.index())
                    .str(call_id.as_str())
                    .str(reason)
                    .str(evidence)
                    .str(principal)
                    .i64(at.0);
            }
            Command::RecordAuthFailures(report) => {
                w.u8(16).blob(&report.encode());
            }
            Command::Batch(commands) => {
                w.u8(4).u32(commands.len() as u32);
                for command in commands {
                    w.blob(&command.encode());
                }
            }
            Command::Expire {
                jurisdiction,
                as_of,
                calls,
            } => {
                w.u8(7)
                    .u8(jurisdiction.index())
                    .i64(as_of.0)
                    .u32(calls.len() as u32);
                for call in calls {
                    w.str(call.as_str());
                }
            }
            Command::PlaceHold {
                jurisdiction,
                call_id,
                issuer,
                agency,
                case_number,
                reason,
                review_date,
                at,
            } => {
                w.u8(8)
                    .u8(jurisdiction.index())
                    .str(call_id.as_str())
                    .str(issuer)
                    .str(agency)
                    .str(case_number)
                    .str(reason)
                    .bool(review_date.is_some())
                    .i64(review_date.map_or(0, |t| t.0))
                    .i64(at.0);
            }
            Command::ReleaseHold {
                jurisdiction,
                call_id,
                hold_id,
                principal,
                agency,
                at,
            } => {
                w.u8(9)
                    .u8(jurisdiction.index())
                    .str(call_id.as_str())
                    .u64(*hold_id)
                    .str(principal)
                    .str(agency)
                    .i64(at.0);
            }
            Command::RecordAccess(a) => {
                w.u8(10)
                    .u8(a.jurisdiction.index())
                    .str(a.call_id.as_str())
                    .str(&a.principal)
                    .str(&a.case_number)
                    .str(&a.reason)
                    .bool(a.elevated)
                    .bool(a.denial.is_some())
                    .str(a.denial.as_deref().unwrap_or(""))
                    .u64(a.quota.calls_per_hour)
                    .u64(a.quota.bytes_per_hour)
                    .i64(a.at.0);
            }
            Command::KeysShredded { node_id, calls, at } => {
                w.u8(11).u64(*node_id);
                write_calls(&mut w, calls);
                w.i64(at.0);
            }
            Command::Session(request) => {
                w.u8(17)
                    .u64(request.session)
                    .u64(request.seq)
                    .u64(request.acked_below)
                    .blob(&request.command.encode());
            }
            Command::OpenSession => {
                w.u8(18);
            }
            Command::Retention(command) => command.encode_into(&mut w),
            Command::ChunksCollected { shards, calls, at } => {
                w.u8(12).u32(shards.len() as u32);
                for shard in shards {
                    w.str(shard);
                }
                write_calls(&mut w, calls);
                w.i64(at.0);
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != COMMAND_VERSION {
            return Err(r.unsupported(version, COMMAND_VERSION));
        }
        let command = match r.u8()? {
            1 => {
                let jurisdiction = read_jurisdiction(&mut r)?;
                let versioned = VersionedPolicy::decode(&r.blob("policy", MAX_EMBEDDED_RECORD)?)?;
                Command::PutPolicy {
                    jurisdiction,
                    policy: versioned.policy,
                    expected_version: versioned.version,
                    principal: r.str("principal", MAX_PRINCIPAL)?,
                    at: UnixMillis(r.i64()?),
                }
            }
            2 => {
                let call = CallRecord::decode(&r.blob("call", MAX_EMBEDDED_RECORD)?)?;
                let wrapped_key = r.blob("wrapped_key", MAX_WRAPPED_KEY)?;
                let count = r.u32()? as usize;
                if count > MAX_CHUNKS_PER_CALL {
                    return Err(r.invalid("chunk_ids", format!("{count} chunks")));
                }
                let mut chunk_ids = Vec::with_capacity(count.min(1024));
                for _ in 0..count {
                    chunk_ids.push(r.bytes32()?);
                }
                Command::CommitCall {
                    call,
                    wrapped_key,
                    chunk_ids,
                    principal: r.str("principal", MAX_PRINCIPAL)?,
                    at: UnixMillis(r.i64()?),
                }
            }
            3 => Command::RegisterPrivileged {
                entry: RegistryEntry::decode(&r.blob("entry", MAX_EMBEDDED_RECORD)?)?,
                fingerprint: r.bytes32()?,
            },
            4 => {
                let count = r.u32()? as usize;
                if count > MAX_BATCH {
                    return Err(r.invalid("batch", format!("{count} commands")));
                }
                let mut commands = Vec::with_capacity(count);
                for _ in 0..count {
                    let bytes = r.blob("batch", MAX_EMBEDDED_RECORD)?;
                    if tag_of(&bytes) == Some(BATCH_TAG) {
                        return Err(r.invalid("batch", "nested batch"));
                    }
                    commands.push(Command::decode(&bytes)?);
                }
                Command::Batch(commands)
            }
            5 => {
                let jurisdiction = read_jurisdiction(&mut r)?;
                let text = r.str("number", 16)?;
                let number = normalize(&text)
                    .ok()
                    .filter(|n| n.as_str() == text)
                    .ok_or_else(|| r.invalid("number", "not canonical E.164"))?;
                Command::RegisterSensitive {
                    jurisdiction,
                    number,
                    fingerprint: r.bytes32()?,
                    reason: r.str("reason", MAX_TEXT)?,
                    principal: r.str("principal", MAX_PRINCIPAL)?,
                    at: UnixMillis(r.i64()?),
                }
            }
            6 => {
                let jurisdiction = read_jurisdiction(&mut r)?;
                let text = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
                let call_id =
                    CallId::new(&text).map_err(|e| r.invalid("call_id", e.to_string()))?;
                Command::FlagPrivileged {
                    jurisdiction,
                    call_id,
                    reason: r.str("reason", MAX_TEXT)?,
                    evidence: r.str("evidence", MAX_TEXT)?,
                    principal: r.str("principal", MAX_PRINCIPAL)?,
                    at: UnixMillis(r.i64()?),
                }
            }
            7 => {
                let jurisdiction = read_jurisdiction(&mut r)?;
                let as_of = UnixMillis(r.i64()?);
                let count = r.u32()? as usize;
                if count > MAX_EXPIRE_BATCH {
                    return Err(r.invalid("calls", format!("{count} calls")));
                }
                let mut calls = Vec::with_capacity(count);
                for _ in 0..count {
                    calls.push(read_call_id(&mut r)?);
                }
                Command::Expire {
                    jurisdiction,
                    as_of,
                    calls,
                }
            }
            8 => Command::PlaceHold {
                jurisdiction: read_jurisdiction(&mut r)?,
                call_id: read_call_id(&mut r)?,
                issuer: r.str("issuer", MAX_PRINCIPAL)?,
                agency: r.str("agency", MAX_PRINCIPAL)?,
                case_number: r.str("case_number", MAX_HOLD_TEXT_BYTES)?,
                reason: r.str("reason", MAX_TEXT)?,
                review_date: {
                    let present = r.bool("review_date")?;
                    let at = UnixMillis(r.i64()?);
                    present.then_some(at)
                },
                at: UnixMillis(r.i64()?),
            },
            9 => Command::ReleaseHold {
                jurisdiction: read_jurisdiction(&mut r)?,
                call_id: read_call_id(&mut r)?,
                hold_id: r.u64()?,
                principal: r.str("principal", MAX_PRINCIPAL)?,
                agency: r.str("agency", MAX_PRINCIPAL)?,
                at: UnixMillis(r.i64()?),
            },
            10 => Command::RecordAccess(AccessRequest {
                jurisdiction: read_jurisdiction(&mut r)?,
                call_id: read_call_id(&mut r)?,
                principal: r.str("principal", MAX_PRINCIPAL)?,
                case_number: r.str("case_number", MAX_HOLD_TEXT_BYTES)?,
                reason: r.str("reason", MAX_TEXT)?,
                elevated: r.bool("elevated")?,
                denial: {
                    let present = r.bool("denial")?;
                    let text = r.str("denial", MAX_TEXT)?;
                    present.then_some(text)
                },
                quota: AccessQuota {
                    calls_per_hour: r.u64()?,
                    bytes_per_hour: r.u64()?,
                },
                at: UnixMillis(r.i64()?),
            }),
            11 => Command::KeysShredded {
                node_id: r.u64()?,
                calls: read_calls(&mut r)?,
                at: UnixMillis(r.i64()?),
            },
            12 => {
                let count = r.u32()? as usize;
                if count > MAX_SHARDS {
                    return Err(r.invalid("shards", format!("{count} shards")));
                }
                let mut shards = Vec::with_capacity(count);
                for _ in 0..count {
                    shards.push(r.str("shard", MAX_SHARD_ID)?);
                }
                Command::ChunksCollected {
                    shards,
                    calls: read_calls(&mut r)?,
                    at: UnixMillis(r.i64()?),
                }
            }
            17 => {
                let (session, seq, acked_below) = (r.u64()?, r.u64()?, r.u64()?);
                let inner = r.blob("session command", MAX_EMBEDDED_RECORD)?;
                // Refused by its tag before it is decoded: a command that carries commands
                // decoded first would let one crafted entry recurse until every replica's stack
                // overflows.
                if matches!(inner.get(1), Some(4 | 17 | 18)) {
                    return Err(r.invalid("session command", "a batch or session command"));
                }
                let command = Command::decode(&inner)?;
                Command::Session(SessionRequest {
                    session,
                    seq,
                    acked_below,
                    command: Box::new(command),
                })
            }
            18 => Command::OpenSession,
            tag if crate::retention_command::RetentionCommand::TAGS.contains(&tag) => {
                Command::Retention(crate::retention_command::RetentionCommand::decode_fields(
                    tag, &mut r,
                )?)
            }
            16 => Command::RecordAuthFailures(crate::auth_failures::AuthFailureReport::decode(
                &r.blob("auth failures", crate::auth_failures::MAX_REPORT_BYTES)?,
            )?),
            tag => return Err(r.invalid("command", format!("unknown tag {tag}"))),
        };
        r.finish()?;
        Ok(command)
    }
}

/// The tag of `Command::Batch` and of `CommandResult::Batch`.
const BATCH_TAG: u8 = 4;
const BATCH_RESULT_TAG: u8 = 5;

/// The tag of encoded command or result bytes: the byte after the version byte, in every
/// version. A batch's elements are refused by it before they are decoded, so no input makes
/// decoding recurse: thousands of batches nested in one log entry would otherwise overflow the
/// stack of every replica that applies it.
fn tag_of(bytes: &[u8]) -> Option<u8> {
    bytes.get(1).copied()
}

/// Longest hold case number, in bytes (the core limit is in characters).
const MAX_HOLD_TEXT_BYTES: usize = callvault_core::call::MAX_HOLD_TEXT * 4;

fn read_call_id(r: &mut Reader<'_>) -> Result<CallId, DecodeError> {
    let text = r.str("call_id", callvault_core::call::MAX_CALL_ID_LEN)?;
    CallId::new(&text).map_err(|e| r.invalid("call_id", e.to_string()))
}

fn write_calls(w: &mut Writer, calls: &[(Jurisdiction, CallId)]) {
    w.u32(calls.len() as u32);
    for (jurisdiction, call_id) in calls {
        w.u8(jurisdiction.index()).str(call_id.as_str());
    }
}

fn read_calls(r: &mut Reader<'_>) -> Result<Vec<(Jurisdiction, CallId)>, DecodeError> {
    let count = r.u32()? as usize;
    if count > MAX_RECEIPT_BATCH {
        return Err(r.invalid("calls", format!("{count} calls")));
    }
    let mut calls = Vec::with_capacity(count);
    for _ in 0..count {
        calls.push((read_jurisdiction(r)?, read_call_id(r)?));
    }
    Ok(calls)
}

fn read_jurisdiction(r: &mut Reader<'_>) -> Result<Jurisdiction, DecodeError> {
    let index = r.u8()?;
    Jurisdiction::from_index(index)
        .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))
}

impl Command {
    /// A short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::PutPolicy { .. } => "put_policy",
            Command::CommitCall { .. } => "commit_call",
            Command::RegisterPrivileged { .. } => "register_privileged",
            Command::RegisterSensitive { .. } => "register_sensitive",
            Command::FlagPrivileged { .. } => "flag_privileged",
            Command::RecordAuthFailures(_) => "record_auth_failures",
            Command::Batch(_) => "batch",
            Command::Expire { .. } => "expire",
            Command::PlaceHold { .. } => "place_hold",
            Command::ReleaseHold { .. } => "release_hold",
            Command::RecordAccess(_) => "record_access",
            Command::KeysShredded { .. } => "keys_shredded",
            Command::ChunksCollected { .. } => "chunks_collected",
            Command::Session(request) => request.command.kind(),
            Command::OpenSession => "open_session",
            Command::Retention(command) => command.kind(),
        }
    }

    /// Checks what `apply` cannot decide differently on any replica but must refuse: a commit
    /// whose lifecycle is not one ingest can propose.
    pub fn check_shape(&self) -> Result<(), Refusal> {
        if let Command::CommitCall {
            call, chunk_ids, ..
        } = self
        {
            match call.lifecycle {
                Lifecycle::Live if chunk_ids.len() == call.chunk_count as usize => {}
                Lifecycle::Live => {
                    return Err(Refusal::Invalid(
                        "chunk id count differs from chunk_count".into(),
                    ));
                }
                Lifecycle::Blocked if chunk_ids.is_empty() && call.byte_length == 0 => {}
                Lifecycle::Blocked => {
                    return Err(Refusal::Invalid("a blocked call carries no audio".into()));
                }
                _ => {
                    return Err(Refusal::Invalid(
                        "a commit is either recorded or blocked".into(),
                    ));
                }
            }
            if !call.holds.is_empty() {
                return Err(Refusal::Invalid("a new call carries no holds".into()));
            }
        }
        Ok(())
    }
}

// 2: call commits name their log position.
const RESULT_VERSION: u8 = 2;

impl VersionedRecord for CommandResult {
    const NAME: &'static str = "command result";
    const CURRENT_VERSION: u8 = RESULT_VERSION;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(RESULT_VERSION);
        match self {
            CommandResult::Empty => {
                w.u8(0);
            }
            CommandResult::PolicyPut { version } => {
                w.u8(1).u32(*version);
            }
            CommandResult::CallCommitted {
                outcome,
                policy_version,
                duplicate,
                committed_at,
            } => {
                w.u8(2)
                    .u8(match outcome {
                        CommitOutcome::Recorded => 0,
                        CommitOutcome::PurgedAtCommit => 1,
                        CommitOutcome::Blocked => 2,
                    })
                    .u32(*policy_version)
                    .bool(*duplicate)
                    .u64(committed_at.term)
                    .u64(committed_at.index);
            }
            CommandResult::NumberRegistered { purged } => {
                w.u8(3).u64(*purged);
            }
            CommandResult::Refused(refusal) => {
                w.u8(4);
                match refusal {
                    Refusal::PolicyVersionMismatch { current } => w.u8(0).u32(*current),
                    Refusal::InvalidPolicy(reason) => w.u8(1).str(reason),
                    Refusal::NoPolicy => w.u8(2),
                    Refusal::CallIdConflict => w.u8(3),
                    Refusal::CallIdPurged => w.u8(4),
                    Refusal::Invalid(reason) => w.u8(5).str(reason),
                    Refusal::NoSuchCall => w.u8(6),
                    Refusal::HoldNotFound => w.u8(7),
                    Refusal::NotIssuer => w.u8(8),
                    Refusal::NotLive => w.u8(9),
                    Refusal::TooManyHolds => w.u8(10),
                    Refusal::ReviewDate(reason) => w.u8(11).str(reason),
                    Refusal::SessionUnknown => w.u8(12),
                    Refusal::AheadOfClusterTime { cluster_time } => w
                        .u8(30)
                        .bool(cluster_time.is_some())
                        .i64(cluster_time.map_or(0, |t| t.0)),
                    Refusal::NoClusterTime => w.u8(31),
                    Refusal::CallIdRetired => w.u8(32),
                    Refusal::Approval(reason) => w.u8(33).str(reason),
                    Refusal::NoSuchChange => w.u8(34),
                    Refusal::ChangeClosed => w.u8(35),
                    Refusal::NotAllowed(reason) => w.u8(36).str(reason),
                };
            }
            CommandResult::SensitiveRegistered => {
                w.u8(6);
            }
            CommandResult::CallFlagged { purged } => {
                w.u8(7).bool(*purged);
            }
            CommandResult::Expired { expired, skipped } => {
                w.u8(8).u32(*expired).u32(*skipped);
            }
            CommandResult::HoldPlaced { hold_id } => {
                w.u8(9).u64(*hold_id);
            }
            CommandResult::HoldReleased { purged } => {
                w.u8(10).bool(*purged);
            }
            CommandResult::AccessDecided { decision, record } => {
                w.u8(11);
                match decision {
                    AccessDecision::Allowed { sealed } => w.u8(0).bool(*sealed),
                    AccessDecision::Refused(reason) => w.u8(1).str(reason),
                    AccessDecision::NotFound => w.u8(2),
                    AccessDecision::SealedNeedsElevation => w.u8(3),
                    AccessDecision::QuotaExceeded => w.u8(4),
                    AccessDecision::PastDeadline => w.u8(30),
                };
                w.u64(*record);
            }
            CommandResult::ReceiptsRecorded { completed } => {
                w.u8(12).u32(*completed);
            }
            CommandResult::SessionOpened { session } => {
                w.u8(13).u64(*session);
            }
            CommandResult::Retention(result) => result.encode_into(&mut w),
            CommandResult::Batch(results) => {
                w.u8(5).u32(results.len() as u32);
                for result in results {
                    w.blob(&result.encode());
                }
            }
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != RESULT_VERSION {
            return Err(r.unsupported(version, RESULT_VERSION));
        }
        let result = match r.u8()? {
            0 => CommandResult::Empty,
            1 => CommandResult::PolicyPut { version: r.u32()? },
            2 => {
                let outcome = match r.u8()? {
                    0 => CommitOutcome::Recorded,
                    1 => CommitOutcome::PurgedAtCommit,
                    2 => CommitOutcome::Blocked,
                    t => return Err(r.invalid("outcome", format!("unknown tag {t}"))),
                };
                CommandResult::CallCommitted {
                    outcome,
                    policy_version: r.u32()?,
                    duplicate: r.bool("duplicate")?,
                    committed_at: crate::records::LogPosition {
                        term: r.u64()?,
                        index: r.u64()?,
                    },
                }
            }
            3 => CommandResult::NumberRegistered { purged: r.u64()? },
            4 => CommandResult::Refused(match r.u8()? {
                0 => Refusal::PolicyVersionMismatch { current: r.u32()? },
                1 => Refusal::InvalidPolicy(r.str("reason", 1024)?),
                2 => Refusal::NoPolicy,
                3 => Refusal::CallIdConflict,
                4 => Refusal::CallIdPurged,
                5 => Refusal::Invalid(r.str("reason", 1024)?),
                6 => Refusal::NoSuchCall,
                7 => Refusal::HoldNotFound,
                8 => Refusal::NotIssuer,
                9 => Refusal::NotLive,
                10 => Refusal::TooManyHolds,
                11 => Refusal::ReviewDate(r.str("reason", 1024)?),
                12 => Refusal::SessionUnknown,
                30 => {
                    let present = r.bool("cluster_time")?;
                    let time = UnixMillis(r.i64()?);
                    Refusal::AheadOfClusterTime {
                        cluster_time: present.then_some(time),
                    }
                }
                31 => Refusal::NoClusterTime,
                32 => Refusal::CallIdRetired,
                33 => Refusal::Approval(r.str("reason", 1024)?),
                34 => Refusal::NoSuchChange,
                35 => Refusal::ChangeClosed,
                36 => Refusal::NotAllowed(r.str("reason", 1024)?),
                t => return Err(r.invalid("refusal", format!("unknown tag {t}"))),
            }),
            5 => {
                let count = r.u32()? as usize;
                if count > MAX_BATCH {
                    return Err(r.invalid("batch", format!("{count} results")));
                }
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    let bytes = r.blob("batch", 64 * 1024)?;
                    if tag_of(&bytes) == Some(BATCH_RESULT_TAG) {
                        return Err(r.invalid("batch", "nested batch"));
                    }
                    results.push(CommandResult::decode(&bytes)?);
                }
                CommandResult::Batch(results)
            }
            6 => CommandResult::SensitiveRegistered,
            7 => CommandResult::CallFlagged {
                purged: r.bool("purged")?,
            },
            8 => CommandResult::Expired {
                expired: r.u32()?,
                skipped: r.u32()?,
            },
            9 => CommandResult::HoldPlaced { hold_id: r.u64()? },
            10 => CommandResult::HoldReleased {
                purged: r.bool("purged")?,
            },
            11 => {
                let decision = match r.u8()? {
                    0 => AccessDecision::Allowed {
                        sealed: r.bool("sealed")?,
                    },
                    1 => AccessDecision::Refused(r.str("reason", MAX_TEXT)?),
                    2 => AccessDecision::NotFound,
                    3 => AccessDecision::SealedNeedsElevation,
                    4 => AccessDecision::QuotaExceeded,
                    30 => AccessDecision::PastDeadline,
                    t => return Err(r.invalid("decision", format!("unknown tag {t}"))),
                };
                CommandResult::AccessDecided {
                    decision,
                    record: r.u64()?,
                }
            }
            12 => CommandResult::ReceiptsRecorded {
                completed: r.u32()?,
            },
            13 => CommandResult::SessionOpened { session: r.u64()? },
            tag if crate::retention_command::RetentionCommand::TAGS.contains(&tag) => {
                CommandResult::Retention(crate::retention_command::RetentionResult::decode_fields(
                    tag, &mut r,
                )?)
            }
            t => return Err(r.invalid("result", format!("unknown tag {t}"))),
        };
        r.finish()?;
        Ok(result)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use callvault_core::call::{CallId, Direction};
    use callvault_core::policy::PrivilegedRetention;
    use callvault_core::{PrivilegeKind, normalize};
    use proptest::prelude::*;

    pub(crate) fn policy(days: u32) -> RetentionPolicy {
        RetentionPolicy {
            recording_retention_days: days,
            call_detail_retention_days: days * 2,
            privileged_retention: PrivilegedRetention::CallDetail,
            hold_requires_review_date: false,
            hold_max_review_days: 365,
            sweep_interval_seconds: 30,
            source: "test".into(),
            shortening_notice_seconds: 0,
        }
    }

    pub(crate) fn call(id: &str, fingerprint: u8, started_at: i64) -> CallRecord {
        CallRecord {
            call_id: CallId::new(id).unwrap(),
            jurisdiction: Jurisdiction::Tx,
            facility_id: "fac-1".into(),
            inmate_id: format!("inm-{}", fingerprint % 4),
            number_fingerprint: [fingerprint; 32],
            direction: Direction::Outbound,
            started_at: UnixMillis(started_at),
            ended_at: UnixMillis(started_at + 60_000),
            byte_length: 480_000,
            chunk_count: 2,
            plaintext_digest: [fingerprint ^ 0x5a; 32],
            committed_under_policy: 0,
            sealed: false,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        }
    }

    pub(crate) fn commit(id: &str, fingerprint: u8, started_at: i64) -> Command {
        Command::CommitCall {
            call: call(id, fingerprint, started_at),
            wrapped_key: vec![1; 72],
            chunk_ids: vec![[2; 32], [3; 32]],
            principal: "platform-a".into(),
            at: UnixMillis(started_at + 61_000),
        }
    }

    pub(crate) fn register(number: &str, fingerprint: u8, at: i64) -> Command {
        Command::RegisterPrivileged {
            entry: RegistryEntry {
                jurisdiction: Jurisdiction::Tx,
                number: normalize(number).unwrap(),
                kind: PrivilegeKind::Attorney,
                registrant: "tx-registry".into(),
                evidence: "TX bar 1".into(),
                registered_at: UnixMillis(at),
            },
            fingerprint: [fingerprint; 32],
        }
    }

    #[test]
    fn auth_failure_reports_are_tag_16_and_bounded() {
        let command = Command::RecordAuthFailures(crate::auth_failures::tests::sample());
        let bytes = command.encode();
        assert_eq!(bytes[1], 16, "tag 16 is the auth-failure report");
        assert_eq!(command.kind(), "record_auth_failures");
        // A blob longer than a report may be is refused before the report is decoded.
        let mut w = Writer::with_version(COMMAND_VERSION);
        w.u8(16)
            .blob(&vec![1; crate::auth_failures::MAX_REPORT_BYTES + 1]);
        assert!(Command::decode(&w.finish()).is_err());
    }

    #[test]
    fn nested_batches_do_not_decode() {
        let nested = Command::Batch(vec![Command::Batch(vec![])]);
        assert!(Command::decode(&nested.encode()).is_err());
    }

    /// `depth` batches of one element nested in each other around `innermost`, written outside
    /// in (each header holds the length of everything inside it).
    fn nested(version: u8, tag: u8, innermost: &[u8], depth: usize) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(innermost.len() + 10 * depth);
        for level in (0..depth).rev() {
            let inner = innermost.len() + 10 * level;
            bytes.extend_from_slice(&[version, tag]);
            bytes.extend_from_slice(&1u32.to_le_bytes());
            bytes.extend_from_slice(&(inner as u32).to_le_bytes());
        }
        bytes.extend_from_slice(innermost);
        bytes
    }

    /// Found by the `command` fuzz target's regression input: 6,500 batches nested in one
    /// 64 KiB entry overflowed the stack (a replica's apply thread, every replica at once). A
    /// batch's elements are refused by their tag now, before they are decoded: no recursion.
    #[test]
    fn deeply_nested_batches_are_refused_without_recursing() {
        let commands = nested(
            COMMAND_VERSION,
            4,
            &Command::Batch(vec![]).encode(),
            100_000,
        );
        let results = nested(
            RESULT_VERSION,
            5,
            &CommandResult::Batch(vec![]).encode(),
            6_000,
        );
        let small_stack = std::thread::Builder::new().stack_size(128 * 1024);
        let decoded = small_stack
            .spawn(move || {
                (
                    Command::decode(&commands).is_err(),
                    CommandResult::decode(&results).is_err(),
                )
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(decoded, (true, true));
    }

    #[test]
    fn sessions_nested_in_batches_in_sessions_are_refused_without_recursing() {
        // Session(Batch(Session(Batch(...)))): each level is refused by its tag, so no depth
        // reaches the decoder.
        let mut bytes = commit("c-1", 1, 0).encode();
        for level in 0..10_000 {
            let mut w = Writer::with_version(COMMAND_VERSION);
            if level % 2 == 0 {
                w.u8(17).u64(1).u64(1).u64(1).blob(&bytes);
            } else {
                w.u8(4).u32(1).blob(&bytes);
            }
            bytes = w.finish();
        }
        assert!(Command::decode(&bytes).is_err());
    }

    #[test]
    fn a_session_carries_one_plain_command() {
        for inner in [
            Command::Batch(vec![]),
            Command::OpenSession,
            Command::Session(SessionRequest {
                session: 1,
                seq: 1,
                acked_below: 1,
                command: Box::new(commit("c-1", 1, 0)),
            }),
        ] {
            let wrapped = Command::Session(SessionRequest {
                session: 1,
                seq: 2,
                acked_below: 1,
                command: Box::new(inner),
            });
            assert!(Command::decode(&wrapped.encode()).is_err());
        }
    }

    #[test]
    fn commands_and_results_round_trip() {
        let commands = [
            Command::PutPolicy {
                jurisdiction: Jurisdiction::Tx,
                policy: policy(30),
                expected_version: 2,
                principal: "operator".into(),
                at: UnixMillis(9),
            },
            commit("c-1", 1, 1000),
            register("(512) 555-0100", 1, 5),
            Command::Batch(vec![commit("c-2", 2, 0), register("(512) 555-0101", 3, 6)]),
            Command::RegisterSensitive {
                jurisdiction: Jurisdiction::Ca,
                number: normalize("+1 415 555 0100").unwrap(),
                fingerprint: [4; 32],
                reason: "victim advocate".into(),
                principal: "ca-registry".into(),
                at: UnixMillis(7),
            },
            Command::FlagPrivileged {
                jurisdiction: Jurisdiction::Tx,
                call_id: CallId::new("c-9").unwrap(),
                reason: "attorney heard".into(),
                evidence: "review 12".into(),
                principal: "tx-registry".into(),
                at: UnixMillis(8),
            },
            Command::RecordAuthFailures(crate::auth_failures::tests::sample()),
            Command::Batch(vec![
                commit("c-3", 3, 0),
                Command::RecordAuthFailures(crate::auth_failures::tests::sample()),
            ]),
        ];
        let lifecycle = [
            Command::Expire {
                jurisdiction: Jurisdiction::Tx,
                as_of: UnixMillis(1_000),
                calls: vec![CallId::new("c-1").unwrap(), CallId::new("c-2").unwrap()],
            },
            Command::PlaceHold {
                jurisdiction: Jurisdiction::Tx,
                call_id: CallId::new("c-1").unwrap(),
                issuer: "tx-da".into(),
                agency: "tx-da-office".into(),
                case_number: "2026-CR-17".into(),
                reason: "trial".into(),
                review_date: Some(UnixMillis(99)),
                at: UnixMillis(5),
            },
            Command::ReleaseHold {
                jurisdiction: Jurisdiction::Tx,
                call_id: CallId::new("c-1").unwrap(),
                hold_id: 17,
                principal: "tx-da".into(),
                agency: "tx-da-office".into(),
                at: UnixMillis(6),
            },
            Command::RecordAccess(AccessRequest {
                jurisdiction: Jurisdiction::Ca,
                call_id: CallId::new("c-3").unwrap(),
                principal: "ca-agency".into(),
                case_number: String::new(),
                reason: "review".into(),
                elevated: true,
                denial: Some("a case number is required".into()),
                quota: AccessQuota {
                    calls_per_hour: 10,
                    bytes_per_hour: 1 << 30,
                },
                at: UnixMillis(7),
            }),
            Command::KeysShredded {
                node_id: 3,
                calls: vec![(Jurisdiction::Tx, CallId::new("c-1").unwrap())],
                at: UnixMillis(8),
            },
            Command::ChunksCollected {
                shards: vec!["shard-a".into(), "shard-b".into()],
                calls: vec![(Jurisdiction::Ut, CallId::new("c-4").unwrap())],
                at: UnixMillis(9),
            },
            Command::OpenSession,
            Command::Session(SessionRequest {
                session: 7 << 10,
                seq: 3,
                acked_below: 2,
                command: Box::new(commit("c-5", 5, 0)),
            }),
            Command::Batch(vec![
                Command::OpenSession,
                Command::Session(SessionRequest {
                    session: 1,
                    seq: 1,
                    acked_below: 1,
                    command: Box::new(register("(512) 555-0102", 4, 1)),
                }),
            ]),
        ];
        for c in commands.into_iter().chain(lifecycle) {
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
        let results = [
            CommandResult::Empty,
            CommandResult::PolicyPut { version: 3 },
            CommandResult::CallCommitted {
                outcome: CommitOutcome::PurgedAtCommit,
                policy_version: 2,
                duplicate: true,
                committed_at: crate::records::LogPosition { term: 3, index: 99 },
            },
            CommandResult::NumberRegistered { purged: 50 },
            CommandResult::Refused(Refusal::PolicyVersionMismatch { current: 4 }),
            CommandResult::Refused(Refusal::Invalid("x".into())),
            CommandResult::Refused(Refusal::NoSuchCall),
            CommandResult::SensitiveRegistered,
            CommandResult::CallFlagged { purged: true },
            CommandResult::Expired {
                expired: 3,
                skipped: 1,
            },
            CommandResult::HoldPlaced { hold_id: 42 },
            CommandResult::HoldReleased { purged: true },
            CommandResult::AccessDecided {
                decision: AccessDecision::Allowed { sealed: true },
                record: 9,
            },
            CommandResult::AccessDecided {
                decision: AccessDecision::Refused("no case".into()),
                record: 10,
            },
            CommandResult::AccessDecided {
                decision: AccessDecision::QuotaExceeded,
                record: 11,
            },
            CommandResult::Refused(Refusal::ReviewDate("required".into())),
            CommandResult::Refused(Refusal::NotIssuer),
            CommandResult::ReceiptsRecorded { completed: 2 },
            CommandResult::SessionOpened {
                session: 9 << 10 | 1,
            },
            CommandResult::Refused(Refusal::SessionUnknown),
            CommandResult::Batch(vec![
                CommandResult::PolicyPut { version: 1 },
                CommandResult::Refused(Refusal::NoPolicy),
            ]),
        ];
        for r in results {
            assert_eq!(CommandResult::decode(&r.encode()), Ok(r));
        }
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = Command::decode(&bytes);
            let _ = CommandResult::decode(&bytes);
        }
    }
}
