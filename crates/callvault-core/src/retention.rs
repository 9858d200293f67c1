//! Retention deadlines, derived from the policy in force each time they are evaluated.
//!
//! No deadline is stamped on a record: a policy that shortens retention makes calls due at the
//! next sweep, one that lengthens it protects them.

use crate::call::{CallRecord, Lifecycle};
use crate::policy::RetentionPolicy;
use crate::time::UnixMillis;

/// When a recording that started at `started_at` is due under `policy`.
pub fn recording_deadline(started_at: UnixMillis, policy: &RetentionPolicy) -> UnixMillis {
    started_at.plus_days(policy.recording_retention_days)
}

/// When a call-detail record that started at `started_at` is due under `policy`.
pub fn call_detail_deadline(started_at: UnixMillis, policy: &RetentionPolicy) -> UnixMillis {
    started_at.plus_days(policy.call_detail_retention_days)
}

/// Whether a call may be expired now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpiryVerdict {
    /// Due and unheld: expire it.
    Expire,
    /// Not due yet.
    NotDue {
        /// The deadline under the policy given.
        deadline: UnixMillis,
    },
    /// Due or not, a hold keeps it.
    Held,
    /// Nothing left to expire (already expired, purged, blocked, or privileged under seal).
    NotLive,
}

/// The expiry decision for `call` at `as_of` under the policy in force.
pub fn expiry_verdict(
    call: &CallRecord,
    policy: &RetentionPolicy,
    as_of: UnixMillis,
) -> ExpiryVerdict {
    if call.lifecycle != Lifecycle::Live {
        return ExpiryVerdict::NotLive;
    }
    if !call.holds.is_empty() {
        return ExpiryVerdict::Held;
    }
    let deadline = recording_deadline(call.started_at, policy);
    if as_of < deadline {
        ExpiryVerdict::NotDue { deadline }
    } else {
        ExpiryVerdict::Expire
    }
}

/// A live, unheld recording past its deadline plus one sweep interval: the sweeper should have
/// expired it. Any such call is an alarm.
pub fn is_overdue(call: &CallRecord, policy: &RetentionPolicy, now: UnixMillis) -> bool {
    call.lifecycle == Lifecycle::Live
        && call.holds.is_empty()
        && now
            >= recording_deadline(call.started_at, policy)
                .plus_seconds(policy.sweep_interval_seconds)
}

/// Checks a hold's review date against the policy: required when the policy says so, not in the
/// past, and no further than `hold_max_review_days` after `at`.
pub fn check_review_date(
    policy: &RetentionPolicy,
    at: UnixMillis,
    review_date: Option<UnixMillis>,
) -> Result<(), String> {
    match review_date {
        None if policy.hold_requires_review_date => {
            Err("the jurisdiction's policy requires a review date for every hold".into())
        }
        None => Ok(()),
        Some(date) if date < at => Err("the review date is in the past".into()),
        Some(date) if date > at.plus_days(policy.hold_max_review_days) => Err(format!(
            "the review date is more than {} days away (the policy's limit)",
            policy.hold_max_review_days
        )),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::tests::{hold, live_call, policy};
    use crate::call::{CallEvent, TransitionError};
    use crate::time::MILLIS_PER_DAY;
    use proptest::prelude::*;

    proptest! {
        /// Invariant 3: never expire before the deadline.
        #[test]
        fn never_expires_before_the_deadline(
            started in 0i64..10_000_000_000, days in 1u32..3650, offset in -10_000_000_000i64..10_000_000_000,
        ) {
            let call = live_call(started);
            let p = policy(days);
            let as_of = UnixMillis(started + i64::from(days) * MILLIS_PER_DAY + offset);
            let verdict = expiry_verdict(&call, &p, as_of);
            if offset < 0 {
                prop_assert_eq!(verdict, ExpiryVerdict::NotDue { deadline: recording_deadline(call.started_at, &p) });
            } else {
                prop_assert_eq!(verdict, ExpiryVerdict::Expire);
            }
        }

        /// Invariant 3: never expire while held, however late.
        #[test]
        fn never_expires_while_held(started in 0i64..1_000_000, late in 0i64..i64::MAX / 4, holds in 1u64..5) {
            let mut call = live_call(started);
            for id in 0..holds {
                call = call.apply(&CallEvent::PlaceHold(hold(id, "da", false))).unwrap();
            }
            let as_of = UnixMillis(late);
            prop_assert_eq!(expiry_verdict(&call, &policy(1), as_of), ExpiryVerdict::Held);
            prop_assert_eq!(
                call.apply(&CallEvent::Expire { as_of, policy: policy(1) }),
                Err(TransitionError::Held)
            );
            prop_assert!(!is_overdue(&call, &policy(1), as_of));
        }

        /// A policy change re-derives deadlines instead of keeping stamped ones.
        #[test]
        fn a_policy_change_rederives_the_deadline(
            started in 0i64..1_000_000_000, old_days in 1u32..3650, new_days in 1u32..3650,
        ) {
            let call = live_call(started);
            let (old, new) = (policy(old_days), policy(new_days));
            // The moment the old policy made it due.
            let at_old_deadline = recording_deadline(call.started_at, &old);
            let verdict = expiry_verdict(&call, &new, at_old_deadline);
            if new_days <= old_days {
                prop_assert_eq!(verdict, ExpiryVerdict::Expire);
            } else {
                prop_assert_eq!(verdict, ExpiryVerdict::NotDue { deadline: recording_deadline(call.started_at, &new) });
            }
        }

        /// Overdue means past the deadline by more than one sweep interval.
        #[test]
        fn overdue_starts_one_interval_after_the_deadline(started in 0i64..1_000_000, days in 1u32..100) {
            let call = live_call(started);
            let p = policy(days);
            let deadline = recording_deadline(call.started_at, &p);
            prop_assert!(!is_overdue(&call, &p, deadline));
            prop_assert!(!is_overdue(&call, &p, deadline.plus_seconds(p.sweep_interval_seconds - 1)));
            prop_assert!(is_overdue(&call, &p, deadline.plus_seconds(p.sweep_interval_seconds)));
        }
    }

    proptest! {
        /// A review date is accepted exactly inside [at, at + max days], and absence only when
        /// the policy does not require one.
        #[test]
        fn review_dates_stay_inside_the_policy_window(
            at in 0i64..10_000_000_000, offset in -10_000_000_000i64..10_000_000_000,
            max_days in 1u32..1000, required: bool,
        ) {
            let mut p = policy(30);
            p.hold_max_review_days = max_days;
            p.hold_requires_review_date = required;
            let at = UnixMillis(at);
            let date = UnixMillis(at.0 + offset);
            let inside = offset >= 0 && offset <= i64::from(max_days) * MILLIS_PER_DAY;
            prop_assert_eq!(check_review_date(&p, at, Some(date)).is_ok(), inside);
            prop_assert_eq!(check_review_date(&p, at, None).is_ok(), !required);
        }
    }

    #[test]
    fn deadlines_count_whole_days_from_the_start() {
        let p = policy(30);
        assert_eq!(
            recording_deadline(UnixMillis(1_000), &p),
            UnixMillis(1_000 + 30 * MILLIS_PER_DAY)
        );
        let mut q = policy(30);
        q.call_detail_retention_days = 90;
        assert_eq!(
            call_detail_deadline(UnixMillis(0), &q),
            UnixMillis(90 * MILLIS_PER_DAY)
        );
    }
}
