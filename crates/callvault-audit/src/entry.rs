//! Audit entries and their canonical bytes. The bytes [`VersionedRecord::encode`] writes are the
//! Merkle leaf: an auditor re-hashes them, so the encoding is versioned, hand-written with core's
//! codec, and canonical (every entry has exactly one encoding and every accepted encoding
//! re-encodes to itself).
//!
//! # What an entry must never hold
//!
//! The log is read by auditors and agencies and kept forever, so an entry must never contain
//! audio, key material (data keys, wrapped keys, HMAC keys), or a dialed number in clear: name a
//! call by its call id and a number by its keyed fingerprint. The type has no field for any of
//! them; `subject`, `outcome` and `details` are short bounded text, and callers must keep them
//! free of such data because the type cannot tell.

use std::collections::BTreeMap;

use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};
use callvault_core::{Jurisdiction, UnixMillis};

use crate::hash::{Hash, leaf_hash};

/// Longest principal, in bytes.
pub const MAX_PRINCIPAL: usize = 256;
/// Longest subject (a call id, a number fingerprint, a hold id, ...), in bytes.
pub const MAX_SUBJECT: usize = 256;
/// Longest outcome text, in bytes.
pub const MAX_OUTCOME: usize = 512;
/// Most detail fields per entry.
pub const MAX_DETAILS: usize = 32;
/// Longest detail key, in bytes.
pub const MAX_DETAIL_KEY: usize = 64;
/// Longest detail value, in bytes.
pub const MAX_DETAIL_VALUE: usize = 1024;
/// Largest encoded entry; what the limits above allow, rounded up. Decoding refuses anything
/// longer before reading a field.
pub const MAX_ENTRY_BYTES: usize = 40 * 1024;

/// Which replica a purge receipt comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PurgeReplica {
    /// A metadata replica compacted the wrapped key away and truncated its Raft log past it.
    Meta,
    /// A blob replica dropped the call's chunks.
    Blob,
}

/// Whether a content access was allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccessDecision {
    /// Allowed: logged before the first byte leaves.
    Allowed,
    /// Denied.
    Denied,
}

/// What happened. Each event has a stable one-byte code in the stored encoding and a stable
/// dotted name for the API; both are pinned by tests and new events take new codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditEvent {
    /// A call's recording was committed.
    CallRecorded,
    /// A call to a privileged number was not recorded.
    CallRefusedPrivileged,
    /// A call was rejected (invalid number, unknown jurisdiction, ...).
    CallRejected,
    /// A privileged number was registered.
    NumberRegistered,
    /// A sensitive (non-attorney) number was registered.
    SensitiveNumberRegistered,
    /// A recorded call was flagged as privileged.
    CallFlagged,
    /// A privilege purge started.
    PurgeStarted,
    /// One replica finished its part of a purge.
    PurgeReceipt(PurgeReplica),
    /// A recording expired under its retention policy.
    Expiry,
    /// A hold was placed.
    HoldPlaced,
    /// A hold was released by its issuer.
    HoldReleased,
    /// A jurisdiction's retention policy changed.
    PolicyChanged,
    /// Someone asked for a recording's content.
    ContentAccess(AccessDecision),
    /// A caller failed to authenticate.
    AuthenticationFailure,
    /// A request was refused by a rate limit or quota.
    QuotaDenied,
    /// The cluster's membership changed.
    MembershipChanged,
    /// A call-detail record was deleted at its own deadline; a tombstone remains.
    CallDetailDeleted,
    /// A change that needs a second principal or a notice period was proposed.
    ChangeProposed,
    /// A second principal approved a pending change.
    ChangeApproved,
    /// A pending change took effect (approved, or its notice elapsed).
    ChangeEffected,
    /// A pending change was withdrawn or superseded.
    ChangeCancelled,
    /// Shred receipts of a departing member were waived: its volume must be destroyed.
    ReceiptsWaived,
}

impl AuditEvent {
    /// Every event, in code order.
    pub const ALL: [AuditEvent; 24] = [
        AuditEvent::CallRecorded,
        AuditEvent::CallRefusedPrivileged,
        AuditEvent::CallRejected,
        AuditEvent::NumberRegistered,
        AuditEvent::SensitiveNumberRegistered,
        AuditEvent::CallFlagged,
        AuditEvent::PurgeStarted,
        AuditEvent::PurgeReceipt(PurgeReplica::Meta),
        AuditEvent::PurgeReceipt(PurgeReplica::Blob),
        AuditEvent::Expiry,
        AuditEvent::HoldPlaced,
        AuditEvent::HoldReleased,
        AuditEvent::PolicyChanged,
        AuditEvent::ContentAccess(AccessDecision::Allowed),
        AuditEvent::ContentAccess(AccessDecision::Denied),
        AuditEvent::AuthenticationFailure,
        AuditEvent::QuotaDenied,
        AuditEvent::MembershipChanged,
        AuditEvent::CallDetailDeleted,
        AuditEvent::ChangeProposed,
        AuditEvent::ChangeApproved,
        AuditEvent::ChangeEffected,
        AuditEvent::ChangeCancelled,
        AuditEvent::ReceiptsWaived,
    ];

    /// The stored code. Never reuse or renumber one: old leaves must still decode.
    pub const fn code(self) -> u8 {
        match self {
            AuditEvent::CallRecorded => 1,
            AuditEvent::CallRefusedPrivileged => 2,
            AuditEvent::CallRejected => 3,
            AuditEvent::NumberRegistered => 4,
            AuditEvent::SensitiveNumberRegistered => 5,
            AuditEvent::CallFlagged => 6,
            AuditEvent::PurgeStarted => 7,
            AuditEvent::PurgeReceipt(PurgeReplica::Meta) => 8,
            AuditEvent::PurgeReceipt(PurgeReplica::Blob) => 9,
            AuditEvent::Expiry => 10,
            AuditEvent::HoldPlaced => 11,
            AuditEvent::HoldReleased => 12,
            AuditEvent::PolicyChanged => 13,
            AuditEvent::ContentAccess(AccessDecision::Allowed) => 14,
            AuditEvent::ContentAccess(AccessDecision::Denied) => 15,
            AuditEvent::AuthenticationFailure => 16,
            AuditEvent::QuotaDenied => 17,
            AuditEvent::MembershipChanged => 18,
            // Retention's events take 40–49 (trust 60–69, others 19–39).
            AuditEvent::CallDetailDeleted => 40,
            AuditEvent::ChangeProposed => 41,
            AuditEvent::ChangeApproved => 42,
            AuditEvent::ChangeEffected => 43,
            AuditEvent::ChangeCancelled => 44,
            AuditEvent::ReceiptsWaived => 45,
        }
    }

    /// The event for a stored code.
    pub fn from_code(code: u8) -> Option<AuditEvent> {
        Self::ALL.iter().copied().find(|e| e.code() == code)
    }

    /// The name the audit API shows, e.g. `content.access.denied`.
    pub const fn name(self) -> &'static str {
        match self {
            AuditEvent::CallRecorded => "call.recorded",
            AuditEvent::CallRefusedPrivileged => "call.refused_privileged",
            AuditEvent::CallRejected => "call.rejected",
            AuditEvent::NumberRegistered => "registry.number_registered",
            AuditEvent::SensitiveNumberRegistered => "registry.sensitive_number_registered",
            AuditEvent::CallFlagged => "call.flagged",
            AuditEvent::PurgeStarted => "purge.started",
            AuditEvent::PurgeReceipt(PurgeReplica::Meta) => "purge.receipt.meta",
            AuditEvent::PurgeReceipt(PurgeReplica::Blob) => "purge.receipt.blob",
            AuditEvent::Expiry => "call.expired",
            AuditEvent::HoldPlaced => "hold.placed",
            AuditEvent::HoldReleased => "hold.released",
            AuditEvent::PolicyChanged => "policy.changed",
            AuditEvent::ContentAccess(AccessDecision::Allowed) => "content.access.allowed",
            AuditEvent::ContentAccess(AccessDecision::Denied) => "content.access.denied",
            AuditEvent::AuthenticationFailure => "auth.failure",
            AuditEvent::QuotaDenied => "quota.denied",
            AuditEvent::MembershipChanged => "cluster.membership_changed",
            AuditEvent::CallDetailDeleted => "call.detail_deleted",
            AuditEvent::ChangeProposed => "change.proposed",
            AuditEvent::ChangeApproved => "change.approved",
            AuditEvent::ChangeEffected => "change.effected",
            AuditEvent::ChangeCancelled => "change.cancelled",
            AuditEvent::ReceiptsWaived => "purge.receipts_waived",
        }
    }

    /// The event with an API name.
    pub fn from_name(name: &str) -> Option<AuditEvent> {
        Self::ALL.iter().copied().find(|e| e.name() == name)
    }
}

/// Why an entry's fields are not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// A field is longer than its limit.
    #[error("{field} is {len} bytes, over the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A field that must not be empty is.
    #[error("{field} is empty")]
    Empty {
        /// The field.
        field: &'static str,
    },
    /// Control characters (newlines included) are refused so no rendering of the log can be
    /// forged by a crafted field.
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// The field.
        field: &'static str,
    },
    /// More detail fields than [`MAX_DETAILS`].
    #[error("{count} detail fields, over the limit of {MAX_DETAILS}")]
    TooManyDetails {
        /// How many.
        count: usize,
    },
    /// A detail key outside `[a-z0-9_.-]`.
    #[error("detail key {key:?} must be lower-case ASCII letters, digits, '_', '.' or '-'")]
    BadDetailKey {
        /// The key (truncated).
        key: String,
    },
}

impl EntryError {
    fn field(&self) -> &'static str {
        match self {
            EntryError::TooLong { field, .. }
            | EntryError::Empty { field }
            | EntryError::ControlCharacter { field } => field,
            EntryError::TooManyDetails { .. } => "details",
            EntryError::BadDetailKey { .. } => "detail key",
        }
    }
}

/// One event in the audit log. Build with [`AuditEntry::builder`]; every entry that exists has
/// passed the field limits, so it always encodes and its encoding always decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    sequence: u64,
    time: UnixMillis,
    principal: String,
    jurisdiction: Option<Jurisdiction>,
    event: AuditEvent,
    subject: String,
    outcome: String,
    details: BTreeMap<String, String>,
}

/// Collects an entry's fields; [`AuditEntryBuilder::build`] checks them.
#[derive(Debug, Clone)]
pub struct AuditEntryBuilder {
    entry: AuditEntry,
}

impl AuditEntryBuilder {
    /// The jurisdiction the event belongs to (none for cluster-wide events).
    pub fn jurisdiction(mut self, jurisdiction: Jurisdiction) -> Self {
        self.entry.jurisdiction = Some(jurisdiction);
        self
    }

    /// What the event happened to: a call id, a number's fingerprint, a hold id.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.entry.subject = subject.into();
        self
    }

    /// The result: `ok`, `allowed`, `denied: <reason>`, ...
    pub fn outcome(mut self, outcome: impl Into<String>) -> Self {
        self.entry.outcome = outcome.into();
        self
    }

    /// One extra field (case number, reason, hold id, policy version, replica id, ...). A
    /// repeated key replaces the earlier value.
    pub fn detail(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.entry.details.insert(key.into(), value.into());
        self
    }

    /// The entry, if every field is within its limits.
    pub fn build(self) -> Result<AuditEntry, EntryError> {
        self.entry.check()?;
        Ok(self.entry)
    }
}

fn check_text(field: &'static str, value: &str, max: usize) -> Result<(), EntryError> {
    if value.len() > max {
        return Err(EntryError::TooLong {
            field,
            len: value.len(),
            max,
        });
    }
    if value.chars().any(char::is_control) {
        return Err(EntryError::ControlCharacter { field });
    }
    Ok(())
}

impl AuditEntry {
    /// Starts an entry. `sequence` is the entry's index in the log, `time` the time carried by
    /// the command that produced it (never a replica's clock), `principal` who acted.
    pub fn builder(
        sequence: u64,
        time: UnixMillis,
        event: AuditEvent,
        principal: impl Into<String>,
    ) -> AuditEntryBuilder {
        AuditEntryBuilder {
            entry: AuditEntry {
                sequence,
                time,
                principal: principal.into(),
                jurisdiction: None,
                event,
                subject: String::new(),
                outcome: String::new(),
                details: BTreeMap::new(),
            },
        }
    }

    fn check(&self) -> Result<(), EntryError> {
        if self.principal.is_empty() {
            return Err(EntryError::Empty { field: "principal" });
        }
        check_text("principal", &self.principal, MAX_PRINCIPAL)?;
        check_text("subject", &self.subject, MAX_SUBJECT)?;
        check_text("outcome", &self.outcome, MAX_OUTCOME)?;
        if self.details.len() > MAX_DETAILS {
            return Err(EntryError::TooManyDetails {
                count: self.details.len(),
            });
        }
        for (key, value) in &self.details {
            if key.is_empty() {
                return Err(EntryError::Empty {
                    field: "detail key",
                });
            }
            check_text("detail key", key, MAX_DETAIL_KEY)?;
            let allowed = |c: char| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-')
            };
            if !key.chars().all(allowed) {
                return Err(EntryError::BadDetailKey {
                    key: key.chars().take(MAX_DETAIL_KEY).collect(),
                });
            }
            check_text("detail value", value, MAX_DETAIL_VALUE)?;
        }
        Ok(())
    }

    /// The entry's index in the log.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }
    /// The time the command carried.
    pub fn time(&self) -> UnixMillis {
        self.time
    }
    /// Who acted.
    pub fn principal(&self) -> &str {
        &self.principal
    }
    /// The jurisdiction, if the event belongs to one.
    pub fn jurisdiction(&self) -> Option<Jurisdiction> {
        self.jurisdiction
    }
    /// What happened.
    pub fn event(&self) -> AuditEvent {
        self.event
    }
    /// What it happened to.
    pub fn subject(&self) -> &str {
        &self.subject
    }
    /// The result.
    pub fn outcome(&self) -> &str {
        &self.outcome
    }
    /// Extra fields, sorted by key.
    pub fn details(&self) -> &BTreeMap<String, String> {
        &self.details
    }

    /// The Merkle leaf hash of this entry: `H(0x00 || encode())`.
    pub fn leaf_hash(&self) -> Hash {
        leaf_hash(&self.encode())
    }
}

impl VersionedRecord for AuditEntry {
    const NAME: &'static str = "audit entry";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        v1::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, reader) = Reader::open(Self::NAME, bytes)?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(reader.invalid(
                "entry",
                format!("{} bytes, over the limit {MAX_ENTRY_BYTES}", bytes.len()),
            ));
        }
        match version {
            1 => v1::decode(reader),
            other => Err(reader.unsupported(other, Self::CURRENT_VERSION)),
        }
    }
}

/// Version 1: sequence u64, time i64, principal, jurisdiction (presence byte then index), event
/// code, subject, outcome, detail count u8, then (key, value) pairs in strictly increasing key
/// order. Integers little-endian; strings u16 length then UTF-8.
mod v1 {
    use super::*;

    pub(super) fn encode(e: &AuditEntry) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u64(e.sequence).i64(e.time.0).str(&e.principal);
        match e.jurisdiction {
            Some(j) => w.bool(true).u8(j.index()),
            None => w.bool(false),
        };
        w.u8(e.event.code()).str(&e.subject).str(&e.outcome);
        w.u8(u8::try_from(e.details.len()).expect("at most MAX_DETAILS details"));
        for (key, value) in &e.details {
            w.str(key).str(value);
        }
        w.finish()
    }

    pub(super) fn decode(mut r: Reader<'_>) -> Result<AuditEntry, DecodeError> {
        let sequence = r.u64()?;
        let time = UnixMillis(r.i64()?);
        let principal = r.str("principal", MAX_PRINCIPAL)?;
        let jurisdiction = if r.bool("jurisdiction")? {
            let index = r.u8()?;
            Some(
                Jurisdiction::from_index(index)
                    .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))?,
            )
        } else {
            None
        };
        let code = r.u8()?;
        let event = AuditEvent::from_code(code)
            .ok_or_else(|| r.invalid("event", format!("unknown code {code}")))?;
        let subject = r.str("subject", MAX_SUBJECT)?;
        let outcome = r.str("outcome", MAX_OUTCOME)?;
        let count = usize::from(r.u8()?);
        if count > MAX_DETAILS {
            return Err(r.invalid("details", format!("{count} over the limit {MAX_DETAILS}")));
        }
        let mut details = BTreeMap::new();
        let mut previous: Option<String> = None;
        for _ in 0..count {
            let key = r.str("detail key", MAX_DETAIL_KEY)?;
            let value = r.str("detail value", MAX_DETAIL_VALUE)?;
            // Sorted and unique keys keep the encoding canonical: one entry, one leaf.
            if previous.as_ref().is_some_and(|p| *p >= key) {
                return Err(r.invalid("details", "keys not in strictly increasing order"));
            }
            previous = Some(key.clone());
            details.insert(key, value);
        }
        let entry = AuditEntry {
            sequence,
            time,
            principal,
            jurisdiction,
            event,
            subject,
            outcome,
            details,
        };
        entry
            .check()
            .map_err(|e| r.invalid(e.field(), e.to_string()))?;
        r.finish()?;
        Ok(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample(sequence: u64) -> AuditEntry {
        AuditEntry::builder(
            sequence,
            UnixMillis(1_764_000_000_000),
            AuditEvent::ContentAccess(AccessDecision::Allowed),
            "investigator:tx-ag-0042",
        )
        .jurisdiction(Jurisdiction::Tx)
        .subject("tx-huntsville-2026-11-24-000123")
        .outcome("allowed")
        .detail("case_number", "2026-CR-00917")
        .detail("reason", "subpoena review")
        .build()
        .unwrap()
    }

    #[test]
    fn event_codes_and_names_are_stable_and_unique() {
        for (i, e) in AuditEvent::ALL.iter().enumerate() {
            // 1..=18 in order, then retention's from 40.
            let expected = if i < 18 { i + 1 } else { i - 18 + 40 };
            assert_eq!(usize::from(e.code()), expected, "{e:?}");
            assert_eq!(AuditEvent::from_code(e.code()), Some(*e));
            assert_eq!(AuditEvent::from_name(e.name()), Some(*e));
        }
        let mut names: Vec<_> = AuditEvent::ALL.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), AuditEvent::ALL.len());
        assert_eq!(AuditEvent::from_code(0), None);
        assert_eq!(AuditEvent::from_code(19), None);
        assert_eq!(AuditEvent::PurgeReceipt(PurgeReplica::Blob).code(), 9);
        assert_eq!(AuditEvent::MembershipChanged.code(), 18);
    }

    #[test]
    fn golden_bytes_of_version_1() {
        // Pinned: these bytes are Merkle leaves already handed to auditors. If this test fails,
        // the encoding changed: add a version instead.
        let bytes = sample(7).encode();
        let mut expect = vec![1u8];
        expect.extend_from_slice(&7u64.to_le_bytes());
        expect.extend_from_slice(&1_764_000_000_000i64.to_le_bytes());
        let push_str = |v: &mut Vec<u8>, s: &str| {
            v.extend_from_slice(&(s.len() as u16).to_le_bytes());
            v.extend_from_slice(s.as_bytes());
        };
        push_str(&mut expect, "investigator:tx-ag-0042");
        expect.extend_from_slice(&[1, Jurisdiction::Tx.index(), 14]);
        push_str(&mut expect, "tx-huntsville-2026-11-24-000123");
        push_str(&mut expect, "allowed");
        expect.push(2);
        push_str(&mut expect, "case_number");
        push_str(&mut expect, "2026-CR-00917");
        push_str(&mut expect, "reason");
        push_str(&mut expect, "subpoena review");
        assert_eq!(bytes, expect);
        assert_eq!(
            sample(7).leaf_hash().to_hex(),
            "ea2b5a6958b999eb526cb69cedb0c3fc70023feafd94ca400d1e761b749af068",
            "leaf hash of the golden entry"
        );
    }

    #[test]
    fn limits_are_enforced_when_building() {
        let b = || AuditEntry::builder(0, UnixMillis(0), AuditEvent::Expiry, "system:sweeper");
        assert!(b().build().is_ok());
        assert_eq!(
            AuditEntry::builder(0, UnixMillis(0), AuditEvent::Expiry, "").build(),
            Err(EntryError::Empty { field: "principal" })
        );
        assert!(matches!(
            b().subject("x".repeat(MAX_SUBJECT + 1)).build(),
            Err(EntryError::TooLong {
                field: "subject",
                ..
            })
        ));
        assert_eq!(
            b().outcome("ok\nforged line").build(),
            Err(EntryError::ControlCharacter { field: "outcome" })
        );
        assert!(matches!(
            b().detail("Case Number", "1").build(),
            Err(EntryError::BadDetailKey { .. })
        ));
        let many = (0..=MAX_DETAILS).fold(b(), |b, i| b.detail(format!("k{i}"), "v"));
        assert_eq!(
            many.build(),
            Err(EntryError::TooManyDetails {
                count: MAX_DETAILS + 1
            })
        );
    }

    #[test]
    fn the_largest_entry_fits_the_decode_bound() {
        let mut b = AuditEntry::builder(
            u64::MAX,
            UnixMillis(i64::MIN),
            AuditEvent::PolicyChanged,
            "p".repeat(MAX_PRINCIPAL),
        )
        .jurisdiction(Jurisdiction::Wy)
        .subject("s".repeat(MAX_SUBJECT))
        .outcome("o".repeat(MAX_OUTCOME));
        for i in 0..MAX_DETAILS {
            let key = format!("{i:0>width$}", width = MAX_DETAIL_KEY);
            b = b.detail(key, "v".repeat(MAX_DETAIL_VALUE));
        }
        let entry = b.build().unwrap();
        let bytes = entry.encode();
        assert!(bytes.len() <= MAX_ENTRY_BYTES, "{} bytes", bytes.len());
        assert_eq!(AuditEntry::decode(&bytes).unwrap(), entry);
    }

    #[test]
    fn non_canonical_and_corrupt_bytes_are_refused() {
        let good = sample(1).encode();
        // Unknown version.
        let mut v = good.clone();
        v[0] = 2;
        assert!(matches!(
            AuditEntry::decode(&v),
            Err(DecodeError::UnsupportedVersion { version: 2, .. })
        ));
        // Trailing byte.
        let mut t = good.clone();
        t.push(0);
        assert!(matches!(
            AuditEntry::decode(&t),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
        // Truncated at every length.
        for n in 0..good.len() {
            assert!(
                AuditEntry::decode(&good[..n]).is_err(),
                "prefix of {n} bytes"
            );
        }
        // Detail keys out of order: swap the two (key, value) pairs.
        let e = sample(1);
        let mut w = Writer::with_version(1);
        w.u64(1).i64(e.time().0).str(e.principal());
        w.bool(true).u8(Jurisdiction::Tx.index()).u8(14);
        w.str(e.subject()).str(e.outcome()).u8(2);
        w.str("reason").str("subpoena review");
        w.str("case_number").str("2026-CR-00917");
        assert!(matches!(
            AuditEntry::decode(&w.finish()),
            Err(DecodeError::Invalid {
                field: "details",
                ..
            })
        ));
        // A presence byte of 2, an unknown event code, an unknown jurisdiction.
        let j_offset = 1 + 8 + 8 + 2 + e.principal().len();
        for (offset, byte) in [(j_offset, 2u8), (j_offset + 1, 200), (j_offset + 2, 0)] {
            let mut bad = good.clone();
            bad[offset] = byte;
            assert!(
                matches!(AuditEntry::decode(&bad), Err(DecodeError::Invalid { .. })),
                "byte {byte} at {offset}"
            );
        }
        // Oversized input is refused before any field is read.
        let mut huge = good.clone();
        huge.resize(MAX_ENTRY_BYTES + 1, 0);
        assert!(matches!(
            AuditEntry::decode(&huge),
            Err(DecodeError::Invalid { field: "entry", .. })
        ));
    }

    fn arb_event() -> impl Strategy<Value = AuditEvent> {
        (0..AuditEvent::ALL.len()).prop_map(|i| AuditEvent::ALL[i])
    }

    prop_compose! {
        pub(crate) fn arb_entry()(
            sequence in any::<u64>(),
            time in any::<i64>(),
            principal in "[a-z:0-9-]{1,40}",
            jurisdiction in proptest::option::of(0..Jurisdiction::ALL.len()),
            event in arb_event(),
            subject in "[ -~]{0,60}",
            outcome in "\\PC{0,40}",
            details in proptest::collection::btree_map("[a-z0-9_.-]{1,20}", "\\PC{0,30}", 0..6),
        ) -> AuditEntry {
            let mut b = AuditEntry::builder(sequence, UnixMillis(time), event, principal)
                .subject(subject)
                .outcome(outcome);
            if let Some(j) = jurisdiction {
                b = b.jurisdiction(Jurisdiction::ALL[j]);
            }
            for (k, v) in details {
                b = b.detail(k, v);
            }
            b.build().unwrap()
        }
    }

    proptest! {
        #[test]
        fn entries_round_trip(entry in arb_entry()) {
            let bytes = entry.encode();
            prop_assert_eq!(AuditEntry::decode(&bytes).unwrap(), entry);
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics_and_accepts_only_canonical_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..400)
        ) {
            if let Ok(entry) = AuditEntry::decode(&bytes) {
                prop_assert_eq!(entry.encode(), bytes);
            }
        }

        #[test]
        fn mutating_a_valid_encoding_never_panics(
            entry in arb_entry(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        ) {
            let mut bytes = entry.encode();
            for (at, value) in flips {
                let i = at.index(bytes.len());
                bytes[i] = value;
            }
            if let Ok(decoded) = AuditEntry::decode(&bytes) {
                // Whatever decodes is canonical: it re-encodes to the very same leaf.
                prop_assert_eq!(decoded.encode(), bytes);
            }
        }
    }
}
