//! Stored encodings of the domain records, one module per version. Adding a field means a new
//! version module and a migration from the previous one in `decode`; old versions stay readable.

use crate::call::{
    CallId, CallRecord, Direction, Hold, Lifecycle, MAX_CALL_ID_LEN, MAX_HOLD_TEXT,
    MAX_HOLDS_PER_CALL, MAX_PARTY_ID_LEN, PurgeReason,
};
use crate::codec::{DecodeError, Reader, VersionedRecord, Writer};
use crate::jurisdiction::Jurisdiction;
use crate::phone::{E164, normalize};
use crate::policy::{
    DEFAULT_SHORTENING_NOTICE_SECONDS, MAX_SOURCE_CHARS, PrivilegedRetention, RetentionPolicy,
    VersionedPolicy,
};
use crate::privilege::{PrivilegeKind, RegistryEntry};
use crate::time::UnixMillis;

/// Longest evidence or registrant text in a registry entry, in bytes.
pub const MAX_REGISTRY_TEXT: usize = 512;

fn jurisdiction(r: &Reader<'_>, index: u8) -> Result<Jurisdiction, DecodeError> {
    Jurisdiction::from_index(index)
        .ok_or_else(|| r.invalid("jurisdiction", format!("unknown index {index}")))
}

impl VersionedRecord for CallRecord {
    const NAME: &'static str = "call record";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        call_v1::encode(self)
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, reader) = Reader::open(Self::NAME, bytes)?;
        match version {
            1 => call_v1::decode(reader),
            other => Err(reader.unsupported(other, Self::CURRENT_VERSION)),
        }
    }
}

mod call_v1 {
    use super::*;

    pub(super) fn encode(call: &CallRecord) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.str(call.call_id.as_str())
            .u8(call.jurisdiction.index())
            .str(&call.facility_id)
            .str(&call.inmate_id)
            .bytes32(&call.number_fingerprint)
            .u8(match call.direction {
                Direction::Outbound => 0,
                Direction::Inbound => 1,
            })
            .i64(call.started_at.0)
            .i64(call.ended_at.0)
            .u64(call.byte_length)
            .u32(call.chunk_count)
            .bytes32(&call.plaintext_digest)
            .u32(call.committed_under_policy)
            .bool(call.sealed);
        match call.lifecycle {
            Lifecycle::Live => w.u8(0),
            Lifecycle::PrivilegedUnderSeal { since, reason } => {
                w.u8(1).i64(since.0).u8(purge_reason_tag(reason))
            }
            Lifecycle::Expired { at } => w.u8(2).i64(at.0),
            Lifecycle::Purged { at, reason } => w.u8(3).i64(at.0).u8(purge_reason_tag(reason)),
            Lifecycle::Blocked => w.u8(4),
        };
        w.u8(call.holds.len() as u8);
        for hold in &call.holds {
            w.u64(hold.id)
                .str(&hold.issuer)
                .str(&hold.agency)
                .str(&hold.case_number)
                .str(&hold.reason)
                .i64(hold.placed_at.0)
                .bool(hold.review_date.is_some())
                .i64(hold.review_date.map_or(0, |d| d.0))
                .bool(hold.court_sealed);
        }
        w.finish()
    }

    fn purge_reason_tag(reason: PurgeReason) -> u8 {
        match reason {
            PurgeReason::NumberRegistered => 0,
            PurgeReason::Flagged => 1,
            PurgeReason::RegisteredDuringIngest => 2,
        }
    }

    fn purge_reason(r: &mut Reader<'_>) -> Result<PurgeReason, DecodeError> {
        match r.u8()? {
            0 => Ok(PurgeReason::NumberRegistered),
            1 => Ok(PurgeReason::Flagged),
            2 => Ok(PurgeReason::RegisteredDuringIngest),
            t => Err(r.invalid("purge reason", format!("unknown tag {t}"))),
        }
    }

    pub(super) fn decode(mut r: Reader<'_>) -> Result<CallRecord, DecodeError> {
        let call_id = r.str("call_id", MAX_CALL_ID_LEN)?;
        let call_id = CallId::new(&call_id).map_err(|e| r.invalid("call_id", e.to_string()))?;
        let index = r.u8()?;
        let jurisdiction = jurisdiction(&r, index)?;
        let facility_id = r.str("facility_id", MAX_PARTY_ID_LEN)?;
        let inmate_id = r.str("inmate_id", MAX_PARTY_ID_LEN)?;
        let number_fingerprint = r.bytes32()?;
        let direction = match r.u8()? {
            0 => Direction::Outbound,
            1 => Direction::Inbound,
            t => return Err(r.invalid("direction", format!("unknown tag {t}"))),
        };
        let started_at = UnixMillis(r.i64()?);
        let ended_at = UnixMillis(r.i64()?);
        let byte_length = r.u64()?;
        let chunk_count = r.u32()?;
        let plaintext_digest = r.bytes32()?;
        let committed_under_policy = r.u32()?;
        let sealed = r.bool("sealed")?;
        let lifecycle = match r.u8()? {
            0 => Lifecycle::Live,
            1 => Lifecycle::PrivilegedUnderSeal {
                since: UnixMillis(r.i64()?),
                reason: purge_reason(&mut r)?,
            },
            2 => Lifecycle::Expired {
                at: UnixMillis(r.i64()?),
            },
            3 => Lifecycle::Purged {
                at: UnixMillis(r.i64()?),
                reason: purge_reason(&mut r)?,
            },
            4 => Lifecycle::Blocked,
            t => return Err(r.invalid("lifecycle", format!("unknown tag {t}"))),
        };
        let hold_count = usize::from(r.u8()?);
        if hold_count > MAX_HOLDS_PER_CALL {
            return Err(r.invalid("holds", format!("{hold_count} holds")));
        }
        let mut holds = Vec::with_capacity(hold_count);
        for _ in 0..hold_count {
            let id = r.u64()?;
            let issuer = r.str("hold.issuer", MAX_HOLD_TEXT * 4)?;
            let agency = r.str("hold.agency", MAX_HOLD_TEXT * 4)?;
            let case_number = r.str("hold.case_number", MAX_HOLD_TEXT * 4)?;
            let reason = r.str("hold.reason", MAX_HOLD_TEXT * 4)?;
            let placed_at = UnixMillis(r.i64()?);
            let has_review = r.bool("hold.review_date")?;
            let review = r.i64()?;
            let court_sealed = r.bool("hold.court_sealed")?;
            holds.push(Hold {
                id,
                issuer,
                agency,
                case_number,
                reason,
                placed_at,
                review_date: has_review.then_some(UnixMillis(review)),
                court_sealed,
            });
        }
        r.finish()?;
        Ok(CallRecord {
            call_id,
            jurisdiction,
            facility_id,
            inmate_id,
            number_fingerprint,
            direction,
            started_at,
            ended_at,
            byte_length,
            chunk_count,
            plaintext_digest,
            committed_under_policy,
            sealed,
            lifecycle,
            holds,
        })
    }
}

impl VersionedRecord for VersionedPolicy {
    const NAME: &'static str = "policy record";
    const CURRENT_VERSION: u8 = 2;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(2);
        policy_v1::write_fields(&mut w, self);
        w.u32(self.policy.shortening_notice_seconds);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        let policy = match version {
            // Version 1 had no notice period: it reads as the default.
            1 => policy_v1::read_fields(&mut r, DEFAULT_SHORTENING_NOTICE_SECONDS)?,
            2 => {
                let mut policy = policy_v1::read_fields(&mut r, 0)?;
                policy.policy.shortening_notice_seconds = r.u32()?;
                policy
            }
            other => return Err(r.unsupported(other, Self::CURRENT_VERSION)),
        };
        r.finish()?;
        Ok(policy)
    }
}

/// The fields of version 1, which version 2 starts with.
mod policy_v1 {
    use super::*;

    pub(super) fn write_fields(w: &mut Writer, v: &VersionedPolicy) {
        let p = &v.policy;
        w.u32(v.version)
            .u32(p.recording_retention_days)
            .u32(p.call_detail_retention_days)
            .u8(match p.privileged_retention {
                PrivilegedRetention::Nothing => 0,
                PrivilegedRetention::CallDetail => 1,
            })
            .bool(p.hold_requires_review_date)
            .u32(p.hold_max_review_days)
            .u32(p.sweep_interval_seconds)
            .str(&p.source);
    }

    pub(super) fn read_fields(
        r: &mut Reader<'_>,
        shortening_notice_seconds: u32,
    ) -> Result<VersionedPolicy, DecodeError> {
        let policy_version = r.u32()?;
        let recording_retention_days = r.u32()?;
        let call_detail_retention_days = r.u32()?;
        let privileged_retention = match r.u8()? {
            0 => PrivilegedRetention::Nothing,
            1 => PrivilegedRetention::CallDetail,
            t => return Err(r.invalid("privileged_retention", format!("unknown tag {t}"))),
        };
        let hold_requires_review_date = r.bool("hold_requires_review_date")?;
        let hold_max_review_days = r.u32()?;
        let sweep_interval_seconds = r.u32()?;
        let source = r.str("source", MAX_SOURCE_CHARS * 4)?;
        Ok(VersionedPolicy {
            version: policy_version,
            policy: RetentionPolicy {
                recording_retention_days,
                call_detail_retention_days,
                privileged_retention,
                hold_requires_review_date,
                hold_max_review_days,
                sweep_interval_seconds,
                source,
                shortening_notice_seconds,
            },
        })
    }
}

impl VersionedRecord for RegistryEntry {
    const NAME: &'static str = "registry entry";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u8(self.jurisdiction.index())
            .str(self.number.as_str())
            .u8(match self.kind {
                PrivilegeKind::Attorney => 0,
                PrivilegeKind::Clergy => 1,
                PrivilegeKind::Physician => 2,
                PrivilegeKind::Other => 3,
            })
            .str(&self.registrant)
            .str(&self.evidence)
            .i64(self.registered_at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, Self::CURRENT_VERSION));
        }
        let index = r.u8()?;
        let jurisdiction = jurisdiction(&r, index)?;
        let text = r.str("number", 16)?;
        let number: E164 = normalize(&text)
            .ok()
            .filter(|n| n.as_str() == text)
            .ok_or_else(|| r.invalid("number", "not canonical E.164"))?;
        let kind = match r.u8()? {
            0 => PrivilegeKind::Attorney,
            1 => PrivilegeKind::Clergy,
            2 => PrivilegeKind::Physician,
            3 => PrivilegeKind::Other,
            t => return Err(r.invalid("kind", format!("unknown tag {t}"))),
        };
        let registrant = r.str("registrant", MAX_REGISTRY_TEXT)?;
        let evidence = r.str("evidence", MAX_REGISTRY_TEXT)?;
        let registered_at = UnixMillis(r.i64()?);
        r.finish()?;
        Ok(RegistryEntry {
            jurisdiction,
            number,
            kind,
            registrant,
            evidence,
            registered_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tests::{hold, live_call};
    use proptest::prelude::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn unhex(text: &str) -> Vec<u8> {
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
            .collect()
    }

    fn sample_call() -> CallRecord {
        let mut call = live_call(1_700_000_000_000);
        call.holds.push(hold(3, "da", true));
        call.holds[0].review_date = Some(UnixMillis(1_800_000_000_000));
        call
    }

    fn sample_policy() -> VersionedPolicy {
        let mut policy = crate::call::tests::policy(90);
        policy.shortening_notice_seconds = 10_000;
        VersionedPolicy { version: 4, policy }
    }

    fn sample_entry() -> RegistryEntry {
        RegistryEntry {
            jurisdiction: Jurisdiction::Tx,
            number: normalize("(512) 555-0100").unwrap(),
            kind: PrivilegeKind::Attorney,
            registrant: "tx-registry".into(),
            evidence: "TX bar 24012345".into(),
            registered_at: UnixMillis(1),
        }
    }

    // Version 1 bytes, frozen. If one of these fails, the encoding changed: add a version
    // module with a migration instead of editing v1.
    const CALL_V1: &str = "01060063616c6c2d313005006661632d310500696e6d2d310707070707070707070707070707070707070707070707070707070707070707000068e5cf8b0100006052e6cf8b010000005307000000000003000000090909090909090909090909090909090909090909090909090909090909090901000000000001030000000000000002006461090064612d6167656e63790900323032362d43522d310500747269616c00000000000000000100505c18a301000001";
    const POLICY_V1: &str = "01040000005a0000005a00000000006d0100001e0000000000";
    const POLICY_V2: &str = "02040000005a0000005a00000000006d0100001e000000000010270000";
    const REGISTRY_V1: &str = "01300c002b3135313235353530313030000b0074782d72656769737472790f005458206261722032343031323334350100000000000000";

    #[test]
    fn version_1_golden_bytes_decode_and_encode() {
        assert_eq!(hex(&sample_call().encode()), CALL_V1);
        assert_eq!(CallRecord::decode(&unhex(CALL_V1)), Ok(sample_call()));
        // Version 1 reads with the default notice; version 2 is what is written now.
        let mut v1 = sample_policy();
        v1.policy.shortening_notice_seconds = DEFAULT_SHORTENING_NOTICE_SECONDS;
        assert_eq!(VersionedPolicy::decode(&unhex(POLICY_V1)), Ok(v1));
        assert_eq!(hex(&sample_policy().encode()), POLICY_V2);
        assert_eq!(
            VersionedPolicy::decode(&unhex(POLICY_V2)),
            Ok(sample_policy())
        );
        assert_eq!(hex(&sample_entry().encode()), REGISTRY_V1);
        assert_eq!(
            RegistryEntry::decode(&unhex(REGISTRY_V1)),
            Ok(sample_entry())
        );
    }

    #[test]
    fn every_record_round_trips_in_the_current_version() {
        let call = sample_call();
        assert_eq!(CallRecord::decode(&call.encode()), Ok(call.clone()));
        for lifecycle in [
            Lifecycle::Blocked,
            Lifecycle::Expired { at: UnixMillis(5) },
            Lifecycle::Purged {
                at: UnixMillis(6),
                reason: PurgeReason::RegisteredDuringIngest,
            },
            Lifecycle::PrivilegedUnderSeal {
                since: UnixMillis(7),
                reason: PurgeReason::Flagged,
            },
        ] {
            let mut c = call.clone();
            c.lifecycle = lifecycle;
            assert_eq!(CallRecord::decode(&c.encode()), Ok(c));
        }

        let policy = sample_policy();
        assert_eq!(VersionedPolicy::decode(&policy.encode()), Ok(policy));
        let entry = sample_entry();
        assert_eq!(RegistryEntry::decode(&entry.encode()), Ok(entry));
    }

    #[test]
    fn unknown_versions_and_damage_are_errors() {
        let mut bytes = sample_call().encode();
        bytes[0] = 2;
        assert!(matches!(
            CallRecord::decode(&bytes),
            Err(DecodeError::UnsupportedVersion {
                version: 2,
                newest: 1,
                ..
            })
        ));
        let bytes = sample_call().encode();
        assert!(matches!(
            CallRecord::decode(&bytes[..bytes.len() - 1]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            CallRecord::decode(&long),
            Err(DecodeError::TrailingBytes { extra: 1, .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = CallRecord::decode(&bytes);
            let _ = VersionedPolicy::decode(&bytes);
            let _ = RegistryEntry::decode(&bytes);
        }

        #[test]
        fn flipping_any_byte_never_panics(index in 0usize..200, value in any::<u8>()) {
            let mut bytes = sample_call().encode();
            let i = index % bytes.len();
            bytes[i] = value;
            let _ = CallRecord::decode(&bytes);
        }
    }
}
