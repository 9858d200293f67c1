//! The privilege decision: whether a call may be recorded at all.
//!
//! It is made twice with the same function: at ingest from a linearizable read of the registry,
//! before any audio byte is stored, and again in `apply` at the commit index, so a number
//! registered while the call streamed turns the commit into a purge.

use serde::{Deserialize, Serialize};

use crate::jurisdiction::Jurisdiction;
use crate::phone::E164;
use crate::policy::{PrivilegedRetention, RetentionPolicy};
use crate::time::UnixMillis;

/// Why a number is privileged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PrivilegeKind {
    /// An attorney.
    Attorney,
    /// Clergy.
    Clergy,
    /// A physician or other medical provider.
    Physician,
    /// Privileged for another reason, named in the evidence.
    Other,
}

/// A privileged number in a jurisdiction's registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RegistryEntry {
    /// The jurisdiction whose calls it covers.
    pub jurisdiction: Jurisdiction,
    /// The number, canonical.
    pub number: E164,
    /// Why it is privileged.
    pub kind: PrivilegeKind,
    /// The principal that registered it.
    pub registrant: String,
    /// Evidence, e.g. a bar number.
    pub evidence: String,
    /// When it was registered.
    pub registered_at: UnixMillis,
}

/// How a number stands in a jurisdiction's registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberStanding {
    /// Privileged: never recorded.
    Privileged(PrivilegeKind),
    /// Sensitive: recorded but sealed.
    Sensitive,
    /// Neither.
    Ordinary,
}

/// What ingest does with a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IngestDecision {
    /// Store the audio; `sealed` recordings need an elevated role to read.
    Record {
        /// Whether the number is sensitive.
        sealed: bool,
    },
    /// Privileged: store no audio; keep what the policy says.
    NotRecordedPrivileged {
        /// What the policy keeps of the call.
        keep: PrivilegedRetention,
    },
    /// Refused: the recording notice was not played and accepted.
    RejectedNoNotice,
}

/// The privilege decision for a call. Privilege is checked first: a privileged call is never
/// recorded, whatever else is true of it.
pub fn decide_ingest(
    standing: NumberStanding,
    notice_accepted: bool,
    policy: &RetentionPolicy,
) -> IngestDecision {
    match standing {
        NumberStanding::Privileged(_) => IngestDecision::NotRecordedPrivileged {
            keep: policy.privileged_retention,
        },
        _ if !notice_accepted => IngestDecision::RejectedNoNotice,
        NumberStanding::Sensitive => IngestDecision::Record { sealed: true },
        NumberStanding::Ordinary => IngestDecision::Record { sealed: false },
    }
}

/// The keyed hash that indexes calls by dialed number without storing the number. The key is the
/// cluster's index key; the jurisdiction is bound in so equal numbers of different states do not
/// link.
pub fn number_fingerprint(
    index_key: &[u8; 32],
    jurisdiction: Jurisdiction,
    number: &E164,
) -> [u8; 32] {
    let mut hasher = blake3::Hasher::new_keyed(index_key);
    hasher.update(b"callvault.number.v1\0");
    hasher.update(jurisdiction.code().as_bytes());
    hasher.update(b"\0");
    hasher.update(number.as_str().as_bytes());
    *hasher.finalize().as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tests::policy;
    use crate::phone::normalize;
    use proptest::prelude::*;

    fn arb_standing() -> impl Strategy<Value = NumberStanding> {
        prop_oneof![
            Just(NumberStanding::Privileged(PrivilegeKind::Attorney)),
            Just(NumberStanding::Privileged(PrivilegeKind::Clergy)),
            Just(NumberStanding::Sensitive),
            Just(NumberStanding::Ordinary),
        ]
    }

    proptest! {
        /// Invariant 1: a privileged call never reaches "recorded".
        #[test]
        fn a_privileged_call_is_never_recorded(notice in any::<bool>(), days in 1u32..100, keep_cdr in any::<bool>()) {
            let mut p = policy(days);
            p.privileged_retention = if keep_cdr { PrivilegedRetention::CallDetail } else { PrivilegedRetention::Nothing };
            let decision = decide_ingest(NumberStanding::Privileged(PrivilegeKind::Attorney), notice, &p);
            prop_assert_eq!(decision, IngestDecision::NotRecordedPrivileged { keep: p.privileged_retention });
        }

        /// Invariant 7: same inputs, same decision.
        #[test]
        fn the_decision_is_deterministic(standing in arb_standing(), notice in any::<bool>()) {
            let p = policy(30);
            prop_assert_eq!(decide_ingest(standing, notice, &p), decide_ingest(standing, notice, &p));
        }

        #[test]
        fn only_notice_accepted_non_privileged_calls_are_recorded(standing in arb_standing(), notice in any::<bool>()) {
            let recorded = matches!(decide_ingest(standing, notice, &policy(30)), IngestDecision::Record { .. });
            prop_assert_eq!(recorded, notice && !matches!(standing, NumberStanding::Privileged(_)));
        }
    }

    #[test]
    fn fingerprints_bind_key_jurisdiction_and_number() {
        let number = normalize("(512) 555-0100").unwrap();
        let same = normalize("+1 512 555 0100").unwrap();
        let other = normalize("(512) 555-0101").unwrap();
        let key = [1u8; 32];
        let base = number_fingerprint(&key, Jurisdiction::Tx, &number);
        assert_eq!(base, number_fingerprint(&key, Jurisdiction::Tx, &same));
        assert_ne!(base, number_fingerprint(&key, Jurisdiction::Tx, &other));
        assert_ne!(base, number_fingerprint(&key, Jurisdiction::Ok, &number));
        assert_ne!(
            base,
            number_fingerprint(&[2u8; 32], Jurisdiction::Tx, &number)
        );
    }
}
