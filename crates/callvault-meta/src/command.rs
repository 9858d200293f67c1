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
        committed_at: crate::apply::LogPosition,
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
                    let command = Command::decode(&r.blob("batch", MAX_EMBEDDED_RECORD)?)?;
                    if matches!(command, Command::Batch(_)) {
                        return Err(r.invalid("batch", "nested batch"));
                    }
                    commands.push(command);
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
            16 => Command::RecordAuthFailures(crate::auth_failures::AuthFailureReport::decode(
                &r.blob("auth failures", crate::auth_failures::MAX_REPORT_BYTES)?,
            )?),
            tag => return Err(r.invalid("command", format!("unknown tag {tag}"))),
        };
        r.finish()?;
        Ok(command)
    }
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
        }
    }

    /// Checks what `apply` cannot decide differently on any replica but must refuse: a commit
    /// whose lifecycle is not one ingest can propose.
    pub(crate) fn check_shape(&self) -> Result<(), Refusal> {
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
                };
            }
            CommandResult::SensitiveRegistered => {
                w.u8(6);
            }
            CommandResult::CallFlagged { purged } => {
                w.u8(7).bool(*purged);
            }
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
                    committed_at: crate::apply::LogPosition {
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
                t => return Err(r.invalid("refusal", format!("unknown tag {t}"))),
            }),
            5 => {
                let count = r.u32()? as usize;
                if count > MAX_BATCH {
                    return Err(r.invalid("batch", format!("{count} results")));
                }
                let mut results = Vec::with_capacity(count);
                for _ in 0..count {
                    results.push(CommandResult::decode(&r.blob("batch", 64 * 1024)?)?);
                }
                CommandResult::Batch(results)
            }
            6 => CommandResult::SensitiveRegistered,
            7 => CommandResult::CallFlagged {
                purged: r.bool("purged")?,
            },
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
        for c in commands {
            assert_eq!(Command::decode(&c.encode()), Ok(c));
        }
        let results = [
            CommandResult::Empty,
            CommandResult::PolicyPut { version: 3 },
            CommandResult::CallCommitted {
                outcome: CommitOutcome::PurgedAtCommit,
                policy_version: 2,
                duplicate: true,
                committed_at: crate::apply::LogPosition { term: 3, index: 99 },
            },
            CommandResult::NumberRegistered { purged: 50 },
            CommandResult::Refused(Refusal::PolicyVersionMismatch { current: 4 }),
            CommandResult::Refused(Refusal::Invalid("x".into())),
            CommandResult::Refused(Refusal::NoSuchCall),
            CommandResult::SensitiveRegistered,
            CommandResult::CallFlagged { purged: true },
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
