//! Time as callvault carries it: milliseconds since the Unix epoch, UTC, inside commands.
//! Nothing in core or in the state machine reads a clock; the proposer stamps the time.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Milliseconds in a day; retention periods are whole days.
pub const MILLIS_PER_DAY: i64 = 86_400_000;

/// A point in time: milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct UnixMillis(pub i64);

impl UnixMillis {
    /// This time plus whole days, saturating at the ends of the range so a huge retention never
    /// wraps into the past.
    pub fn plus_days(self, days: u32) -> UnixMillis {
        UnixMillis(
            self.0
                .saturating_add(i64::from(days).saturating_mul(MILLIS_PER_DAY)),
        )
    }

    /// A protobuf timestamp (seconds and nanoseconds since the epoch) in milliseconds; `None`
    /// when the nanoseconds are outside `0..1e9` or the time does not fit in milliseconds.
    pub fn from_timestamp(seconds: i64, nanos: i32) -> Option<UnixMillis> {
        if !(0..1_000_000_000).contains(&nanos) {
            return None;
        }
        seconds
            .checked_mul(1000)?
            .checked_add(i64::from(nanos / 1_000_000))
            .map(UnixMillis)
    }

    /// This time plus whole seconds, saturating.
    pub fn plus_seconds(self, seconds: u32) -> UnixMillis {
        UnixMillis(self.0.saturating_add(i64::from(seconds) * 1000))
    }
}

impl fmt::Display for UnixMillis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_instead_of_wrapping() {
        assert_eq!(UnixMillis(i64::MAX - 1).plus_days(1), UnixMillis(i64::MAX));
        assert_eq!(UnixMillis(0).plus_days(2), UnixMillis(2 * MILLIS_PER_DAY));
        assert_eq!(UnixMillis(5).plus_seconds(30), UnixMillis(30_005));
    }

    #[test]
    fn timestamps_convert_only_in_range() {
        assert_eq!(
            UnixMillis::from_timestamp(1_700_000_000, 999_999_999),
            Some(UnixMillis(1_700_000_000_999))
        );
        assert_eq!(UnixMillis::from_timestamp(-1, 0), Some(UnixMillis(-1000)));
        assert_eq!(UnixMillis::from_timestamp(0, -1), None);
        assert_eq!(UnixMillis::from_timestamp(0, 1_000_000_000), None);
        assert_eq!(UnixMillis::from_timestamp(i64::MAX / 1000 + 1, 0), None);
    }
}
