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
}
