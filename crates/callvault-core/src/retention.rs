//! Retention deadlines, derived from the policy in force each time they are evaluated.
//!
//! No deadline is stamped on a record: a policy that shortens retention makes calls due at the
//! next sweep, one that lengthens it protects them.

use crate::approval::{Actor, ApprovalRule, PrincipalRole};
use crate::call::{CallRecord, Hold, Lifecycle};
use crate::policy::{PrivilegedRetention, RetentionPolicy};
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

/// Whether a call-detail record may be deleted now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DetailVerdict {
    /// Past its call-detail deadline with no content left: delete it, leaving a tombstone.
    Delete,
    /// Not due yet.
    NotDue {
        /// The call-detail deadline under the policy given.
        deadline: UnixMillis,
    },
    /// The recording is still stored (live, held or kept sealed): it goes first.
    HasContent,
}

/// The call-detail decision for `call` at `as_of` under the policy in force. Deadlines are
/// derived here, like the recording's, so a policy change re-derives them.
pub fn detail_verdict(
    call: &CallRecord,
    policy: &RetentionPolicy,
    as_of: UnixMillis,
) -> DetailVerdict {
    if call.lifecycle.has_content() {
        return DetailVerdict::HasContent;
    }
    let deadline = call_detail_deadline(call.started_at, policy);
    if as_of < deadline {
        DetailVerdict::NotDue { deadline }
    } else {
        DetailVerdict::Delete
    }
}

/// Whether a call with no content left keeps a call-detail record at all under `policy`: a
/// purged or blocked call does only where the policy keeps call details of privileged calls.
pub fn keeps_call_detail(lifecycle: Lifecycle, policy: &RetentionPolicy) -> bool {
    match lifecycle {
        Lifecycle::Purged { .. } | Lifecycle::Blocked => {
            policy.privileged_retention == PrivilegedRetention::CallDetail
        }
        _ => true,
    }
}

/// A call-detail record past its deadline plus one sweep interval: an alarm.
pub fn is_detail_overdue(call: &CallRecord, policy: &RetentionPolicy, now: UnixMillis) -> bool {
    !call.lifecycle.has_content()
        && now
            >= call_detail_deadline(call.started_at, policy)
                .plus_seconds(policy.sweep_interval_seconds)
}

/// A hold whose review date has passed: reported in status and the log, never released
/// silently.
pub fn review_overdue(hold: &Hold, now: UnixMillis) -> bool {
    hold.review_date.is_some_and(|date| date < now)
}

/// The fields of `new` that shorten what `old` keeps: a shorter recording or call-detail
/// retention, keeping nothing of privileged calls where call details were kept, or a shorter
/// notice (which would let the next shortening through sooner).
pub fn shortened_fields(old: &RetentionPolicy, new: &RetentionPolicy) -> Vec<&'static str> {
    let mut fields = Vec::new();
    if new.recording_retention_days < old.recording_retention_days {
        fields.push("recording_retention_days");
    }
    if new.call_detail_retention_days < old.call_detail_retention_days {
        fields.push("call_detail_retention_days");
    }
    if old.privileged_retention == PrivilegedRetention::CallDetail
        && new.privileged_retention == PrivilegedRetention::Nothing
    {
        fields.push("privileged_retention");
    }
    if new.shortening_notice_seconds < old.shortening_notice_seconds {
        fields.push("shortening_notice_seconds");
    }
    fields
}

/// When a new policy version may take effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyChangeRule {
    /// Nothing is shortened: at once.
    Immediate,
    /// It shortens `fields`: after the current policy's notice, counted from `now` in cluster
    /// time, or at once with a second approver (an agency principal of the jurisdiction).
    Pending {
        /// The fields it shortens.
        fields: Vec<&'static str>,
        /// What it needs.
        rule: ApprovalRule,
    },
}

/// The rule for replacing `current` (if any) with `new` at cluster time `now`.
pub fn policy_change_rule(
    current: Option<&RetentionPolicy>,
    new: &RetentionPolicy,
    now: UnixMillis,
) -> PolicyChangeRule {
    let Some(current) = current else {
        // A jurisdiction's first policy deletes nothing: no call could be committed without one.
        return PolicyChangeRule::Immediate;
    };
    let fields = shortened_fields(current, new);
    if fields.is_empty() {
        return PolicyChangeRule::Immediate;
    }
    PolicyChangeRule::Pending {
        fields,
        rule: ApprovalRule {
            approver_roles: vec![PrincipalRole::Agency],
            notice_ends_at: Some(now.plus_seconds(current.shortening_notice_seconds)),
            same_agency: false,
        },
    }
}

/// Who may flag a call privileged, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagRule {
    /// A registry principal: at once.
    Immediate,
    /// An agency principal: a request that takes effect only when a registry principal of the
    /// same jurisdiction approves it (no notice period: a flag is never automatic).
    NeedsApproval(ApprovalRule),
    /// No other role may flag.
    Refused,
}

/// The rule for a flag by `actor`.
pub fn flag_rule(actor: &Actor) -> FlagRule {
    match actor.role {
        PrincipalRole::Registry => FlagRule::Immediate,
        PrincipalRole::Agency => FlagRule::NeedsApproval(ApprovalRule {
            approver_roles: vec![PrincipalRole::Registry],
            notice_ends_at: None,
            same_agency: false,
        }),
        _ => FlagRule::Refused,
    }
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

    fn gone(started: i64, lifecycle: Lifecycle) -> CallRecord {
        let mut call = live_call(started);
        call.lifecycle = lifecycle;
        call
    }

    proptest! {
        /// Invariant 9: a call-detail record is deleted at its own deadline, never before, and
        /// never while the recording is still stored.
        #[test]
        fn call_details_go_at_their_own_deadline(
            started in 0i64..10_000_000_000, rec in 1u32..1000, extra in 0u32..1000,
            offset in -10_000_000_000i64..10_000_000_000, has_content: bool,
        ) {
            let mut p = policy(rec);
            p.call_detail_retention_days = rec + extra;
            let call = if has_content {
                live_call(started)
            } else {
                gone(started, Lifecycle::Expired { at: UnixMillis(started) })
            };
            let deadline = call_detail_deadline(call.started_at, &p);
            let as_of = UnixMillis(deadline.0 + offset);
            let verdict = detail_verdict(&call, &p, as_of);
            let expected = if has_content {
                DetailVerdict::HasContent
            } else if offset < 0 {
                DetailVerdict::NotDue { deadline }
            } else {
                DetailVerdict::Delete
            };
            prop_assert_eq!(verdict, expected);
            prop_assert_eq!(
                is_detail_overdue(&call, &p, as_of),
                !has_content && as_of >= deadline.plus_seconds(p.sweep_interval_seconds)
            );
        }

        /// A change shortens iff some retention (or the notice) gets shorter; only then does it
        /// wait, and for exactly the current notice.
        #[test]
        fn only_shortening_waits_for_notice(
            a in 1u32..100, b in 1u32..100, ca in 0u32..100, cb in 0u32..100,
            na in 0u32..1000, nb in 0u32..1000, now in 0i64..1_000_000_000,
        ) {
            let mut old = policy(a);
            old.call_detail_retention_days = a + ca;
            old.shortening_notice_seconds = na;
            let mut new = policy(b);
            new.call_detail_retention_days = b + cb;
            new.shortening_notice_seconds = nb;
            let shortens = b < a || b + cb < a + ca || nb < na;
            match policy_change_rule(Some(&old), &new, UnixMillis(now)) {
                PolicyChangeRule::Immediate => prop_assert!(!shortens),
                PolicyChangeRule::Pending { fields, rule } => {
                    prop_assert!(shortens && !fields.is_empty());
                    prop_assert_eq!(rule.notice_ends_at, Some(UnixMillis(now).plus_seconds(na)));
                    prop_assert_eq!(rule.approver_roles, vec![PrincipalRole::Agency]);
                }
            }
            prop_assert_eq!(policy_change_rule(None, &new, UnixMillis(now)), PolicyChangeRule::Immediate);
        }
    }

    #[test]
    fn dropping_privileged_call_details_is_a_shortening() {
        let mut old = policy(30);
        old.privileged_retention = PrivilegedRetention::CallDetail;
        let new = policy(30);
        assert_eq!(shortened_fields(&old, &new), ["privileged_retention"]);
        assert!(shortened_fields(&new, &old).is_empty());
        assert!(keeps_call_detail(Lifecycle::Blocked, &old));
        assert!(!keeps_call_detail(Lifecycle::Blocked, &new));
        assert!(keeps_call_detail(
            Lifecycle::Expired { at: UnixMillis(0) },
            &new
        ));
    }

    #[test]
    fn only_the_registry_flags_at_once() {
        use crate::approval::tests::actor;
        let j = [crate::Jurisdiction::Tx];
        assert_eq!(
            flag_rule(&actor("r", PrincipalRole::Registry, &j)),
            FlagRule::Immediate
        );
        let FlagRule::NeedsApproval(rule) = flag_rule(&actor("a", PrincipalRole::Agency, &j))
        else {
            panic!("an agency's flag needs approval");
        };
        assert_eq!(rule.approver_roles, [PrincipalRole::Registry]);
        assert_eq!(rule.notice_ends_at, None);
        for role in [
            PrincipalRole::Operator,
            PrincipalRole::Auditor,
            PrincipalRole::Platform,
        ] {
            assert_eq!(flag_rule(&actor("x", role, &j)), FlagRule::Refused);
        }
    }

    #[test]
    fn a_passed_review_date_is_overdue_and_none_never_is() {
        let mut h = hold(1, "da", false);
        assert!(!review_overdue(&h, UnixMillis(i64::MAX)));
        h.review_date = Some(UnixMillis(10));
        assert!(!review_overdue(&h, UnixMillis(10)));
        assert!(review_overdue(&h, UnixMillis(11)));
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
