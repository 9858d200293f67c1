//! Every versioned record: whatever decodes re-encodes to bytes that decode to the same value.

use std::fmt::Debug;

use callvault_core::codec::VersionedRecord;

/// Decodes `bytes` as an `R`; when that works, the value must survive a round trip, and the
/// encoding must be a function of the value.
pub fn round_trip<R: VersionedRecord + PartialEq + Debug>(bytes: &[u8]) {
    let Ok(value) = R::decode(bytes) else {
        return;
    };
    let encoded = value.encode();
    let back = R::decode(&encoded).unwrap_or_else(|e| {
        panic!(
            "{}: {value:?} re-encodes to bytes that do not decode: {e}",
            R::NAME
        )
    });
    assert_eq!(back, value, "{}: the round trip changed the value", R::NAME);
    assert_eq!(
        back.encode(),
        encoded,
        "{}: one value, two encodings",
        R::NAME
    );
}

/// [`round_trip`], and the bytes must be the canonical encoding: for records whose bytes are
/// hashed (audit entries are Merkle leaves), one value must have exactly one encoding.
pub fn canonical<R: VersionedRecord + PartialEq + Debug>(bytes: &[u8]) {
    round_trip::<R>(bytes);
    if let Ok(value) = R::decode(bytes) {
        assert_eq!(
            value.encode(),
            bytes,
            "{}: decoded from bytes that are not its encoding",
            R::NAME
        );
    }
}

/// A record type and its check.
pub struct Record {
    /// `VersionedRecord::NAME`.
    pub name: &'static str,
    /// [`round_trip`] or [`canonical`] for that type.
    pub check: fn(&[u8]),
}

macro_rules! records {
    ($($check:ident $ty:ty),* $(,)?) => {
        /// Every record with a versioned encoding, stored or replicated. The `records` target's
        /// first input byte picks one, so the list only grows at its end (corpus files keep
        /// their meaning). A new record is one line here.
        pub const RECORDS: &[Record] = &[$(Record {
            name: <$ty as VersionedRecord>::NAME,
            check: $check::<$ty>,
        }),*];
    };
}

records! {
    round_trip callvault_meta::Command,
    round_trip callvault_meta::CommandResult,
    round_trip callvault_core::CallRecord,
    round_trip callvault_core::VersionedPolicy,
    round_trip callvault_core::RegistryEntry,
    canonical callvault_audit::AuditEntry,
    round_trip callvault_meta::records::Counters,
    round_trip callvault_meta::records::SensitiveEntry,
    round_trip callvault_meta::records::LogPosition,
    round_trip callvault_meta::records::ShredRecord,
    round_trip callvault_meta::records::QuotaUse,
    round_trip callvault_meta::auth_failures::AuthFailureReport,
    round_trip callvault_core::tombstone::CallTombstone,
    round_trip callvault_meta::records::SessionRecord,
    round_trip callvault_meta::principal_proof::PrincipalProof,
    round_trip callvault_meta::principal_proof::ProofRefusal,
    round_trip callvault_meta::metadata::MetadataRead,
    round_trip callvault_meta::custody::KeyRelease,
    round_trip callvault_meta::custody::AccessGrant,
    round_trip callvault_meta::records::ClockTime,
    round_trip callvault_meta::records::PurgeProgress,
    round_trip callvault_meta::records::ReceiptWaiver,
    round_trip callvault_meta::approvals::PendingChange,
    round_trip callvault_meta::metadata::MetadataUse,
}

/// The `command` target: a Raft log entry's command, as every replica decodes it.
pub fn command(bytes: &[u8]) {
    round_trip::<callvault_meta::Command>(bytes);
    if let Ok(command) = callvault_meta::Command::decode(bytes) {
        // The shape check `apply` runs first answers every command without panicking.
        let _ = command.check_shape();
        let _ = command.kind();
    }
}

/// The `records` target: the first byte picks the record type, the rest are its bytes.
pub fn any_record(input: &[u8]) {
    let Some((&which, bytes)) = input.split_first() else {
        return;
    };
    if let Some(record) = RECORDS.get(usize::from(which)) {
        (record.check)(bytes);
    }
}
