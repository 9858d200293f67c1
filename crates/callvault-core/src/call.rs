//! A call as the metadata store keeps it, and the transitions of its life:
//! recorded → held → expired / purged, or blocked as privileged at ingest.
//!
//! Transitions are pure: [`CallRecord::apply`] takes the record and an event and returns the next
//! record or why the event does not apply. The state machine stores what it returns.

use serde::{Deserialize, Serialize};

use crate::jurisdiction::Jurisdiction;
use crate::policy::RetentionPolicy;
use crate::retention::{self, ExpiryVerdict};
use crate::time::UnixMillis;

/// Longest call id, in bytes.
pub const MAX_CALL_ID_LEN: usize = 128;
/// Longest facility or inmate id, in bytes.
pub const MAX_PARTY_ID_LEN: usize = 64;
/// Most holds one call may carry at once.
pub const MAX_HOLDS_PER_CALL: usize = 32;
/// Longest free-text field of a hold (case number, reason, issuer), in characters.
pub const MAX_HOLD_TEXT: usize = 256;

/// A platform's identifier for a call: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CallId(String);

/// An identifier that is not acceptable, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {reason}")]
pub struct InvalidId {
    /// Which identifier.
    pub what: &'static str,
    /// Why it is refused.
    pub reason: &'static str,
}

fn check_id(what: &'static str, text: &str, max: usize) -> Result<(), InvalidId> {
    if text.is_empty() {
        return Err(InvalidId {
            what,
            reason: "empty",
        });
    }
    if text.len() > max {
        return Err(InvalidId {
            what,
            reason: "too long",
        });
    }
    if !text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
    {
        return Err(InvalidId {
            what,
            reason: "only A-Z, a-z, 0-9, '.', '_', ':' and '-' are allowed",
        });
    }
    Ok(())
}

impl CallId {
    /// Checks and wraps a call id.
    pub fn new(text: &str) -> Result<Self, InvalidId> {
        check_id("call id", text, MAX_CALL_ID_LEN)?;
        Ok(CallId(text.to_string()))
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Checks a facility or inmate id: same alphabet as call ids, at most 64 bytes.
pub fn check_party_id(what: &'static str, text: &str) -> Result<(), InvalidId> {
    check_id(what, text, MAX_PARTY_ID_LEN)
}

/// Which way the call went, from the incarcerated person's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Direction {
    /// Dialed out from the facility.
    Outbound,
    /// Placed into the facility.
    Inbound,
}

/// Why a recording was crypto-shredded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PurgeReason {
    /// The number was registered privileged after the call was recorded.
    NumberRegistered,
    /// A reviewer flagged this call privileged.
    Flagged,
    /// The number was registered while the call streamed, so the commit itself became a purge.
    RegisteredDuringIngest,
}

/// Where a call is in its life. Holds are kept beside the state, so "held" is a live recording
/// with holds (see [`CallRecord::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Lifecycle {
    /// Audio stored; readable by the jurisdiction's agency.
    Live,
    /// Found privileged while a court-ordered sealed hold protects it: kept, but nobody at the
    /// agency may read it; purged when the last sealed hold is released.
    PrivilegedUnderSeal {
        /// When it was found privileged.
        since: UnixMillis,
        /// Why it is privileged.
        reason: PurgeReason,
    },
    /// Deleted at its retention deadline.
    Expired {
        /// The `as_of` of the sweep that expired it.
        at: UnixMillis,
    },
    /// Crypto-shredded because it was found privileged.
    Purged {
        /// When the purge applied.
        at: UnixMillis,
        /// Why.
        reason: PurgeReason,
    },
    /// Refused at ingest as privileged; no audio was ever stored.
    Blocked,
}

impl Lifecycle {
    /// Whether the recording's audio is still stored.
    pub fn has_content(self) -> bool {
        matches!(
            self,
            Lifecycle::Live | Lifecycle::PrivilegedUnderSeal { .. }
        )
    }
}

/// The status a state sees for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallStatus {
    /// Audio stored and readable.
    Stored,
    /// Audio stored, under at least one hold.
    Held,
    /// Deleted at its deadline.
    Expired,
    /// Crypto-shredded as privileged (or kept sealed by court order until then).
    Purged,
    /// Refused at ingest as privileged.
    Blocked,
}

/// A named legal hold on a call.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Hold {
    /// Unique within the call; assigned by the state machine.
    pub id: u64,
    /// The principal that placed it; only it (or its agency) may release it.
    pub issuer: String,
    /// The issuer's agency, which may also release it.
    pub agency: String,
    /// The court or agency case it is for.
    pub case_number: String,
    /// Why, for people.
    pub reason: String,
    /// When it was placed.
    pub placed_at: UnixMillis,
    /// When it must be reviewed.
    pub review_date: Option<UnixMillis>,
    /// A court-ordered sealed hold: it keeps even a privileged recording (unreadable) until it is
    /// released.
    pub court_sealed: bool,
}

/// A call as the metadata store keeps it. The dialed number is only present as a keyed hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CallRecord {
    /// The platform's id.
    pub call_id: CallId,
    /// Whose call it is.
    pub jurisdiction: Jurisdiction,
    /// Facility the call was placed from.
    pub facility_id: String,
    /// The incarcerated person.
    pub inmate_id: String,
    /// Keyed hash of the normalized dialed number ([`crate::privilege::number_fingerprint`]).
    pub number_fingerprint: [u8; 32],
    /// Which way the call went.
    pub direction: Direction,
    /// When the call connected.
    pub started_at: UnixMillis,
    /// When it ended.
    pub ended_at: UnixMillis,
    /// Plaintext audio bytes (0 when no audio was kept).
    pub byte_length: u64,
    /// Number of stored chunks (0 when no audio was kept).
    pub chunk_count: u32,
    /// BLAKE3 of the plaintext audio; identifies the content for idempotent retries.
    pub plaintext_digest: [u8; 32],
    /// Policy version in force at commit.
    pub committed_under_policy: u32,
    /// A call to a sensitive number: readable only with an elevated role.
    pub sealed: bool,
    /// Where it is in its life.
    pub lifecycle: Lifecycle,
    /// Active holds.
    pub holds: Vec<Hold>,
}

/// Something that happens to a call after it is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallEvent {
    /// Place a hold.
    PlaceHold(Hold),
    /// Release a hold by its id, on behalf of `by` of agency `agency`.
    ReleaseHold {
        /// The hold to release.
        hold_id: u64,
        /// The principal asking.
        by: String,
        /// The principal's agency.
        agency: String,
        /// When.
        at: UnixMillis,
    },
    /// Expire at a sweep stamped `as_of`, under the policy in force.
    Expire {
        /// The sweep's time.
        as_of: UnixMillis,
        /// The policy in force for the call's jurisdiction.
        policy: RetentionPolicy,
    },
    /// Crypto-shred because the call was found privileged.
    Purge {
        /// When.
        at: UnixMillis,
        /// Why.
        reason: PurgeReason,
    },
}

/// Why an event does not apply to a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    /// The call has no content any more (expired, purged, blocked).
    #[error("the call is not live")]
    NotLive,
    /// Expiry before the deadline.
    #[error("not due until {deadline}")]
    NotDue {
        /// The deadline under the policy in force.
        deadline: UnixMillis,
    },
    /// Expiry while held.
    #[error("the call is held")]
    Held,
    /// No hold with that id.
    #[error("no such hold")]
    HoldNotFound,
    /// Only the issuer or its agency may release a hold.
    #[error("only the hold's issuer or its agency may release it")]
    NotIssuer,
    /// Too many holds.
    #[error("a call carries at most {MAX_HOLDS_PER_CALL} holds")]
    TooManyHolds,
    /// A hold id used twice.
    #[error("hold id already in use")]
    DuplicateHold,
}

impl CallRecord {
    /// The status a state sees.
    pub fn status(&self) -> CallStatus {
        match self.lifecycle {
            Lifecycle::Live if self.holds.is_empty() => CallStatus::Stored,
            Lifecycle::Live => CallStatus::Held,
            Lifecycle::PrivilegedUnderSeal { .. } | Lifecycle::Purged { .. } => CallStatus::Purged,
            Lifecycle::Expired { .. } => CallStatus::Expired,
            Lifecycle::Blocked => CallStatus::Blocked,
        }
    }

    /// Whether `other` is a retry of this call: the same audio and the same call. A retry with
    /// the same content gets the same receipt; anything else under the same id is a conflict.
    pub fn same_content(&self, other: &CallRecord) -> bool {
        self.plaintext_digest == other.plaintext_digest
            && self.byte_length == other.byte_length
            && self.chunk_count == other.chunk_count
            && self.number_fingerprint == other.number_fingerprint
            && self.started_at == other.started_at
            && self.facility_id == other.facility_id
            && self.inmate_id == other.inmate_id
    }

    /// Whether the agency may read the audio: live and not privileged.
    pub fn content_readable(&self) -> bool {
        self.lifecycle == Lifecycle::Live
    }

    /// The next record after `event`, or why the event does not apply.
    pub fn apply(&self, event: &CallEvent) -> Result<CallRecord, TransitionError> {
        let mut next = self.clone();
        match event {
            CallEvent::PlaceHold(hold) => {
                if !self.lifecycle.has_content() {
                    return Err(TransitionError::NotLive);
                }
                if self.holds.iter().any(|h| h.id == hold.id) {
                    return Err(TransitionError::DuplicateHold);
                }
                if self.holds.len() >= MAX_HOLDS_PER_CALL {
                    return Err(TransitionError::TooManyHolds);
                }
                next.holds.push(hold.clone());
            }
            CallEvent::ReleaseHold {
                hold_id,
                by,
                agency,
                at,
            } => {
                let position = self
                    .holds
                    .iter()
                    .position(|h| h.id == *hold_id)
                    .ok_or(TransitionError::HoldNotFound)?;
                let hold = &self.holds[position];
                if hold.issuer != *by && hold.agency != *agency {
                    return Err(TransitionError::NotIssuer);
                }
                next.holds.remove(position);
                // A privileged recording kept only by a sealed hold is purged when the last
                // sealed hold goes.
                if let Lifecycle::PrivilegedUnderSeal { reason, .. } = self.lifecycle
                    && !next.holds.iter().any(|h| h.court_sealed)
                {
                    next.lifecycle = Lifecycle::Purged { at: *at, reason };
                    next.holds.clear();
                }
            }
            CallEvent::Expire { as_of, policy } => {
                match retention::expiry_verdict(self, policy, *as_of) {
                    ExpiryVerdict::Expire => {
                        next.lifecycle = Lifecycle::Expired { at: *as_of };
                    }
                    ExpiryVerdict::NotDue { deadline } => {
                        return Err(TransitionError::NotDue { deadline });
                    }
                    ExpiryVerdict::Held => return Err(TransitionError::Held),
                    ExpiryVerdict::NotLive => return Err(TransitionError::NotLive),
                }
            }
            CallEvent::Purge { at, reason } => match self.lifecycle {
                // Privilege beats an ordinary hold; only a court-ordered sealed hold keeps it.
                Lifecycle::Live if self.holds.iter().any(|h| h.court_sealed) => {
                    next.lifecycle = Lifecycle::PrivilegedUnderSeal {
                        since: *at,
                        reason: *reason,
                    };
                    next.holds.retain(|h| h.court_sealed);
                }
                Lifecycle::Live => {
                    next.lifecycle = Lifecycle::Purged {
                        at: *at,
                        reason: *reason,
                    };
                    next.holds.clear();
                }
                _ => return Err(TransitionError::NotLive),
            },
        }
        Ok(next)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::policy::PrivilegedRetention;
    use proptest::prelude::*;

    pub(crate) fn policy(days: u32) -> RetentionPolicy {
        RetentionPolicy {
            recording_retention_days: days,
            call_detail_retention_days: days,
            privileged_retention: PrivilegedRetention::Nothing,
            hold_requires_review_date: false,
            hold_max_review_days: 365,
            sweep_interval_seconds: 30,
            source: String::new(),
            shortening_notice_seconds: 0,
        }
    }

    pub(crate) fn live_call(started_at: i64) -> CallRecord {
        CallRecord {
            call_id: CallId::new("call-1").unwrap(),
            jurisdiction: Jurisdiction::Tx,
            facility_id: "fac-1".into(),
            inmate_id: "inm-1".into(),
            number_fingerprint: [7; 32],
            direction: Direction::Outbound,
            started_at: UnixMillis(started_at),
            ended_at: UnixMillis(started_at + 60_000),
            byte_length: 480_000,
            chunk_count: 3,
            plaintext_digest: [9; 32],
            committed_under_policy: 1,
            sealed: false,
            lifecycle: Lifecycle::Live,
            holds: Vec::new(),
        }
    }

    pub(crate) fn hold(id: u64, issuer: &str, sealed: bool) -> Hold {
        Hold {
            id,
            issuer: issuer.into(),
            agency: format!("{issuer}-agency"),
            case_number: "2026-CR-1".into(),
            reason: "trial".into(),
            placed_at: UnixMillis(0),
            review_date: None,
            court_sealed: sealed,
        }
    }

    #[test]
    fn ids_are_checked() {
        assert!(CallId::new("abc-123_X.y:z").is_ok());
        assert!(CallId::new("").is_err());
        assert!(CallId::new("a b").is_err());
        assert!(CallId::new("../etc").is_err());
        assert!(CallId::new(&"a".repeat(129)).is_err());
        assert!(check_party_id("inmate id", &"a".repeat(65)).is_err());
    }

    #[test]
    fn only_the_issuer_or_its_agency_releases_a_hold() {
        let call = live_call(0)
            .apply(&CallEvent::PlaceHold(hold(1, "da-travis", false)))
            .unwrap();
        let release = |by: &str, agency: &str| CallEvent::ReleaseHold {
            hold_id: 1,
            by: by.into(),
            agency: agency.into(),
            at: UnixMillis(5),
        };
        assert_eq!(
            call.apply(&release("someone", "other")),
            Err(TransitionError::NotIssuer)
        );
        assert!(
            call.apply(&release("da-travis", "x"))
                .unwrap()
                .holds
                .is_empty()
        );
        assert!(
            call.apply(&release("colleague", "da-travis-agency"))
                .unwrap()
                .holds
                .is_empty()
        );
    }

    #[test]
    fn privilege_beats_an_ordinary_hold_but_not_a_sealed_one() {
        let purge = CallEvent::Purge {
            at: UnixMillis(10),
            reason: PurgeReason::Flagged,
        };
        let ordinary = live_call(0)
            .apply(&CallEvent::PlaceHold(hold(1, "da", false)))
            .unwrap();
        let purged = ordinary.apply(&purge).unwrap();
        assert_eq!(purged.status(), CallStatus::Purged);
        assert!(!purged.lifecycle.has_content());

        let sealed = ordinary
            .apply(&CallEvent::PlaceHold(hold(2, "court", true)))
            .unwrap();
        let kept = sealed.apply(&purge).unwrap();
        assert!(kept.lifecycle.has_content());
        assert!(!kept.content_readable(), "nobody at the agency reads it");
        assert_eq!(kept.holds.len(), 1, "ordinary holds no longer matter");
        let released = kept
            .apply(&CallEvent::ReleaseHold {
                hold_id: 2,
                by: "court".into(),
                agency: "court-agency".into(),
                at: UnixMillis(20),
            })
            .unwrap();
        assert_eq!(
            released.lifecycle,
            Lifecycle::Purged {
                at: UnixMillis(20),
                reason: PurgeReason::Flagged
            }
        );
    }

    fn arb_event() -> impl Strategy<Value = CallEvent> {
        prop_oneof![
            (0u64..4, any::<bool>()).prop_map(|(id, sealed)| CallEvent::PlaceHold(hold(
                id,
                if id % 2 == 0 { "a" } else { "b" },
                sealed
            ))),
            (
                0u64..4,
                prop_oneof![Just("a"), Just("b")],
                0i64..2_000_000_000
            )
                .prop_map(|(hold_id, by, at)| CallEvent::ReleaseHold {
                    hold_id,
                    by: by.into(),
                    agency: "none".into(),
                    at: UnixMillis(at),
                }),
            (0i64..2_000_000_000, 1u32..30).prop_map(|(as_of, days)| CallEvent::Expire {
                as_of: UnixMillis(as_of),
                policy: policy(days),
            }),
            (0i64..2_000_000_000).prop_map(|at| CallEvent::Purge {
                at: UnixMillis(at),
                reason: PurgeReason::NumberRegistered,
            }),
        ]
    }

    proptest! {
        /// Invariant 3: none is deleted before its deadline, none while held; and a terminal
        /// state is never left.
        #[test]
        fn any_event_sequence_keeps_the_lifecycle_rules(
            started in 0i64..1_000_000_000,
            events in proptest::collection::vec(arb_event(), 0..24),
        ) {
            let mut call = live_call(started);
            for event in &events {
                let before = call.clone();
                let Ok(next) = call.apply(event) else { continue };
                if let Lifecycle::Expired { at } = next.lifecycle
                    && before.lifecycle == Lifecycle::Live
                {
                    let CallEvent::Expire { policy, .. } = event else {
                        panic!("only Expire expires");
                    };
                    prop_assert!(at >= retention::recording_deadline(before.started_at, policy));
                    prop_assert!(before.holds.is_empty());
                }
                if !before.lifecycle.has_content() {
                    prop_assert_eq!(before.lifecycle, next.lifecycle, "terminal states are final");
                }
                if next.lifecycle == Lifecycle::Blocked {
                    prop_assert_eq!(before.lifecycle, Lifecycle::Blocked);
                }
                call = next;
            }
        }

        /// Invariant 7: the same event on the same record gives the same result.
        #[test]
        fn transitions_are_deterministic(started in 0i64..1_000_000, event in arb_event()) {
            let call = live_call(started);
            prop_assert_eq!(call.apply(&event), call.apply(&event));
        }

        /// A blocked call never becomes readable, whatever happens to it.
        #[test]
        fn a_blocked_call_never_becomes_recorded(events in proptest::collection::vec(arb_event(), 0..16)) {
            let mut call = live_call(0);
            call.lifecycle = Lifecycle::Blocked;
            for event in &events {
                if let Ok(next) = call.apply(event) { call = next; }
                prop_assert!(!call.content_readable());
                prop_assert_eq!(call.status(), CallStatus::Blocked);
            }
        }
    }
}
