//! What is left of a call once its record is gone: a tombstone that refuses the id forever and
//! names nothing but a keyed hash of it, the outcome and the time (invariant 9).

use crate::call::CallId;
use crate::codec::{DecodeError, Reader, VersionedRecord, Writer};
use crate::jurisdiction::Jurisdiction;
use crate::time::UnixMillis;

/// The keyed hash a tombstone is filed under. The key is the cluster's index key, held by the
/// nodes that need it and never stored beside the tombstones, so a copy of the metadata store
/// cannot be used to test guesses of call ids.
pub fn call_id_hash(key: &[u8; 32], jurisdiction: Jurisdiction, call_id: &CallId) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(b"callvault call tombstone v1\0");
    hasher.update(&[jurisdiction.index()]);
    hasher.update(call_id.as_str().as_bytes());
    *hasher.finalize().as_bytes()
}

/// A check value of the index key, stored so a replica holding a different key notices before it
/// files tombstones no other replica can find. Reveals nothing of the key.
pub fn key_check(key: &[u8; 32]) -> [u8; 32] {
    *blake3::Hasher::new_keyed(key)
        .update(b"callvault tombstone key check v1")
        .finalize()
        .as_bytes()
}

/// How a call's record ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TombstoneOutcome {
    /// Its call-detail deadline passed (after the recording expired).
    Expired,
    /// Found privileged: nothing is kept beyond the tombstone.
    Purged,
    /// Refused at ingest as privileged, with no call-detail record kept.
    Refused,
}

/// A call's tombstone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CallTombstone {
    /// How the record ended.
    pub outcome: TombstoneOutcome,
    /// When (the command's or the sweep's time).
    pub at: UnixMillis,
}

impl VersionedRecord for CallTombstone {
    const NAME: &'static str = "call tombstone";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u8(match self.outcome {
            TombstoneOutcome::Expired => 0,
            TombstoneOutcome::Purged => 1,
            TombstoneOutcome::Refused => 2,
        })
        .i64(self.at.0);
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, Self::CURRENT_VERSION));
        }
        let outcome = match r.u8()? {
            0 => TombstoneOutcome::Expired,
            1 => TombstoneOutcome::Purged,
            2 => TombstoneOutcome::Refused,
            t => return Err(r.invalid("outcome", format!("unknown tag {t}"))),
        };
        let at = UnixMillis(r.i64()?);
        r.finish()?;
        Ok(CallTombstone { outcome, at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn golden_bytes_and_the_hash_names_nothing() {
        let t = CallTombstone {
            outcome: TombstoneOutcome::Purged,
            at: UnixMillis(258),
        };
        assert_eq!(t.encode(), [1, 1, 2, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(CallTombstone::decode(&t.encode()), Ok(t));
        assert!(CallTombstone::decode(&[1, 3, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
        let id = CallId::new("TX-0000001").unwrap();
        let h = call_id_hash(&[1; 32], Jurisdiction::Tx, &id);
        assert!(!h.windows(4).any(|w| w == b"TX-0"));
        assert_ne!(h, call_id_hash(&[2; 32], Jurisdiction::Tx, &id), "keyed");
        assert_ne!(
            h,
            call_id_hash(&[1; 32], Jurisdiction::Ca, &id),
            "per jurisdiction"
        );
        assert_ne!(key_check(&[1; 32]), key_check(&[2; 32]));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = CallTombstone::decode(&bytes);
        }
    }
}
