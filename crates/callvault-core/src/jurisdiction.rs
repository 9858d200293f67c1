//! Jurisdictions: every US state, the District of Columbia, the territories, and the Federal
//! Bureau of Prisons, named by codes of the form `US-TX` and `US-BOP`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// What kind of government a jurisdiction is; the default policy file must cover every state,
/// DC and the federal prisons system, while territories are optional.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JurisdictionKind {
    /// One of the 50 states.
    State,
    /// The District of Columbia.
    District,
    /// A US territory (Puerto Rico, Guam, ...).
    Territory,
    /// The Federal Bureau of Prisons.
    Federal,
}

macro_rules! jurisdictions {
    ($( $variant:ident => $code:literal, $name:literal, $kind:ident; )*) => {
        /// A jurisdiction whose calls callvault stores. Anything not listed here is an error.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Jurisdiction {
            $(
                #[doc = $name]
                $variant,
            )*
        }

        impl Jurisdiction {
            /// Every jurisdiction, in the order of their stored index. Append-only: new entries go at
            /// the end, because [`Jurisdiction::index`] is written into keys on disk.
            pub const ALL: &'static [Jurisdiction] = &[$(Jurisdiction::$variant),*];

            /// The canonical code, e.g. `US-TX`.
            pub const fn code(self) -> &'static str {
                match self { $(Jurisdiction::$variant => $code,)* }
            }

            /// The jurisdiction's name for people, e.g. `Texas`.
            pub const fn name(self) -> &'static str {
                match self { $(Jurisdiction::$variant => $name,)* }
            }

            /// Whether this is a state, DC, a territory, or the federal prisons system.
            pub const fn kind(self) -> JurisdictionKind {
                match self { $(Jurisdiction::$variant => JurisdictionKind::$kind,)* }
            }

            /// Parses a canonical code. Exact match only: `us-tx`, ` US-TX` and `TX` are errors,
            /// because a code that is guessed at could file a call under the wrong state.
            pub fn from_code(code: &str) -> Result<Self, UnknownJurisdiction> {
                match code {
                    $($code => Ok(Jurisdiction::$variant),)*
                    _ => Err(UnknownJurisdiction(code.chars().take(32).collect())),
                }
            }
        }
    };
}

jurisdictions! {
    Al => "US-AL", "Alabama", State;
    Ak => "US-AK", "Alaska", State;
    As => "US-AS", "American Samoa", Territory;
    Az => "US-AZ", "Arizona", State;
    Ar => "US-AR", "Arkansas", State;
    Bop => "US-BOP", "Federal Bureau of Prisons", Federal;
    Ca => "US-CA", "California", State;
    Co => "US-CO", "Colorado", State;
    Ct => "US-CT", "Connecticut", State;
    De => "US-DE", "Delaware", State;
    Dc => "US-DC", "District of Columbia", District;
    Fl => "US-FL", "Florida", State;
    Ga => "US-GA", "Georgia", State;
    Gu => "US-GU", "Guam", Territory;
    Hi => "US-HI", "Hawaii", State;
    Id => "US-ID", "Idaho", State;
    Il => "US-IL", "Illinois", State;
    In => "US-IN", "Indiana", State;
    Ia => "US-IA", "Iowa", State;
    Ks => "US-KS", "Kansas", State;
    Ky => "US-KY", "Kentucky", State;
    La => "US-LA", "Louisiana", State;
    Me => "US-ME", "Maine", State;
    Md => "US-MD", "Maryland", State;
    Ma => "US-MA", "Massachusetts", State;
    Mi => "US-MI", "Michigan", State;
    Mn => "US-MN", "Minnesota", State;
    Ms => "US-MS", "Mississippi", State;
    Mo => "US-MO", "Missouri", State;
    Mp => "US-MP", "Northern Mariana Islands", Territory;
    Mt => "US-MT", "Montana", State;
    Ne => "US-NE", "Nebraska", State;
    Nv => "US-NV", "Nevada", State;
    Nh => "US-NH", "New Hampshire", State;
    Nj => "US-NJ", "New Jersey", State;
    Nm => "US-NM", "New Mexico", State;
    Ny => "US-NY", "New York", State;
    Nc => "US-NC", "North Carolina", State;
    Nd => "US-ND", "North Dakota", State;
    Oh => "US-OH", "Ohio", State;
    Ok => "US-OK", "Oklahoma", State;
    Or => "US-OR", "Oregon", State;
    Pa => "US-PA", "Pennsylvania", State;
    Pr => "US-PR", "Puerto Rico", Territory;
    Ri => "US-RI", "Rhode Island", State;
    Sc => "US-SC", "South Carolina", State;
    Sd => "US-SD", "South Dakota", State;
    Tn => "US-TN", "Tennessee", State;
    Tx => "US-TX", "Texas", State;
    Um => "US-UM", "U.S. Minor Outlying Islands", Territory;
    Ut => "US-UT", "Utah", State;
    Vt => "US-VT", "Vermont", State;
    Vi => "US-VI", "U.S. Virgin Islands", Territory;
    Va => "US-VA", "Virginia", State;
    Wa => "US-WA", "Washington", State;
    Wv => "US-WV", "West Virginia", State;
    Wi => "US-WI", "Wisconsin", State;
    Wy => "US-WY", "Wyoming", State;
}

impl Jurisdiction {
    /// A stable small number for compact keys: the position in [`Jurisdiction::ALL`], pinned by
    /// a test.
    pub fn index(self) -> u8 {
        Self::ALL
            .iter()
            .position(|j| *j == self)
            .expect("every variant is in ALL") as u8
    }

    /// The inverse of [`Jurisdiction::index`].
    pub fn from_index(index: u8) -> Option<Self> {
        Self::ALL.get(usize::from(index)).copied()
    }

    /// Whether a complete policy file must name this jurisdiction.
    pub fn requires_policy(self) -> bool {
        self.kind() != JurisdictionKind::Territory
    }
}

/// A code that names no jurisdiction callvault knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown jurisdiction {0:?}: expected a code such as \"US-TX\", \"US-DC\" or \"US-BOP\"")]
pub struct UnknownJurisdiction(pub String);

impl FromStr for Jurisdiction {
    type Err = UnknownJurisdiction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::from_code(s)
    }
}

impl fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl Serialize for Jurisdiction {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code())
    }
}

impl<'de> Deserialize<'de> for Jurisdiction {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Jurisdiction::from_code(&code).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn covers_every_state_dc_territories_and_bop() {
        let count = |kind| {
            Jurisdiction::ALL
                .iter()
                .filter(|j| j.kind() == kind)
                .count()
        };
        assert_eq!(count(JurisdictionKind::State), 50);
        assert_eq!(count(JurisdictionKind::District), 1);
        assert_eq!(count(JurisdictionKind::Federal), 1);
        assert_eq!(count(JurisdictionKind::Territory), 6);
    }

    #[test]
    fn codes_round_trip_and_indexes_are_stable() {
        for (i, j) in Jurisdiction::ALL.iter().enumerate() {
            assert_eq!(Jurisdiction::from_code(j.code()), Ok(*j));
            assert_eq!(usize::from(j.index()), i);
            assert_eq!(Jurisdiction::from_index(j.index()), Some(*j));
        }
        // Stored keys use the index: pin a few so a reordering is caught.
        assert_eq!(Jurisdiction::Al.index(), 0);
        assert_eq!(Jurisdiction::Bop.index(), 5);
        assert_eq!(Jurisdiction::Tx.index(), 48);
        assert_eq!(Jurisdiction::Wy.index(), 57);
    }

    #[test]
    fn near_misses_are_errors() {
        for bad in [
            "", "TX", "us-tx", "US-tx", " US-TX", "US-TX ", "US-XX", "USA-TX", "US_TX",
        ] {
            assert!(Jurisdiction::from_code(bad).is_err(), "{bad:?} accepted");
        }
    }

    proptest! {
        #[test]
        fn parsing_any_string_either_round_trips_or_errors(s in ".{0,12}") {
            match Jurisdiction::from_code(&s) {
                Ok(j) => prop_assert_eq!(j.code(), s.as_str()),
                Err(e) => prop_assert!(e.to_string().contains("unknown jurisdiction")),
            }
        }
    }
}
