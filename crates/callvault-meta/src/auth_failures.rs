//! Failed authentications on the public APIs, as one node reports them through Raft.
//!
//! A node does not propose one command per failed request: a client spraying tokens would then
//! flood the Raft group and the audit log. It counts failures per source address over a window
//! (a minute by default) and proposes one [`AuthFailureReport`] per window, which `apply` turns
//! into one audit entry per source. A report names at most [`MAX_SOURCES_PER_REPORT`] sources;
//! failures from further sources in the same window are one count, so a report and the entries it
//! makes stay small whatever a client sends.
//!
//! No token is ever in a report: at most the first [`TOKEN_PREFIX_LEN`] bytes of the BLAKE3 hash
//! of one unknown token per source, enough to tell one sprayed token from many.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use callvault_core::UnixMillis;
use callvault_core::codec::{DecodeError, Reader, VersionedRecord, Writer};

/// Most sources one report names.
pub const MAX_SOURCES_PER_REPORT: usize = 256;
/// Bytes of a token's BLAKE3 hash a report may carry.
pub const TOKEN_PREFIX_LEN: usize = 4;
/// Largest encoded report: what [`MAX_SOURCES_PER_REPORT`] sources need, rounded up. The command
/// decoder refuses longer blobs before decoding them.
pub const MAX_REPORT_BYTES: usize = 64 + MAX_SOURCES_PER_REPORT * 64;

/// The principal audit entries of failed authentications name: the caller proved no identity.
pub const UNAUTHENTICATED: &str = "unauthenticated";

/// Why a request was not authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No `authorization` header.
    MissingToken,
    /// A header that is not `Bearer <token>`.
    MalformedToken,
    /// A token no principal has.
    UnknownToken,
}

/// One source's failures within a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFailures {
    /// The peer address (`None`: the transport did not say).
    pub peer: Option<IpAddr>,
    /// Requests without a token.
    pub missing: u32,
    /// Requests with a malformed `authorization` header.
    pub malformed: u32,
    /// Requests with a token no principal has.
    pub unknown: u32,
    /// The first failure's time.
    pub first_at: UnixMillis,
    /// The last failure's time.
    pub last_at: UnixMillis,
    /// The first [`TOKEN_PREFIX_LEN`] bytes of the BLAKE3 hash of the first unknown token.
    pub token_hash_prefix: Option<[u8; TOKEN_PREFIX_LEN]>,
    /// Distinct unknown tokens seen (the reporting node stops counting at a small bound).
    pub distinct_tokens: u32,
}

impl SourceFailures {
    /// All failures of this source.
    pub fn total(&self) -> u64 {
        u64::from(self.missing) + u64::from(self.malformed) + u64::from(self.unknown)
    }
}

/// One node's failed authentications over one window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthFailureReport {
    /// The reporting node.
    pub node_id: u64,
    /// When the window opened.
    pub window_start: UnixMillis,
    /// When it closed: the time of the command and of its entries.
    pub window_end: UnixMillis,
    /// Failures per source, at most [`MAX_SOURCES_PER_REPORT`].
    pub sources: Vec<SourceFailures>,
    /// Failures from sources beyond the first [`MAX_SOURCES_PER_REPORT`] of the window.
    pub other_failures: u64,
    /// Earlier reports this node dropped because the metadata store could not take them.
    pub reports_lost: u64,
}

fn encode_peer(w: &mut Writer, peer: Option<IpAddr>) {
    match peer {
        None => {
            w.u8(0);
        }
        Some(IpAddr::V4(v4)) => {
            w.u8(4).u32(u32::from(v4));
        }
        Some(IpAddr::V6(v6)) => {
            let bits = u128::from(v6);
            w.u8(6).u64((bits >> 64) as u64).u64(bits as u64);
        }
    }
}

fn decode_peer(r: &mut Reader<'_>) -> Result<Option<IpAddr>, DecodeError> {
    Ok(match r.u8()? {
        0 => None,
        4 => Some(IpAddr::V4(Ipv4Addr::from(r.u32()?))),
        6 => {
            let high = u128::from(r.u64()?);
            let low = u128::from(r.u64()?);
            Some(IpAddr::V6(Ipv6Addr::from((high << 64) | low)))
        }
        tag => return Err(r.invalid("peer", format!("unknown address family {tag}"))),
    })
}

impl VersionedRecord for AuthFailureReport {
    const NAME: &'static str = "auth failure report";
    const CURRENT_VERSION: u8 = 1;

    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_version(1);
        w.u64(self.node_id)
            .i64(self.window_start.0)
            .i64(self.window_end.0)
            .u64(self.other_failures)
            .u64(self.reports_lost)
            .u32(self.sources.len() as u32);
        for s in &self.sources {
            encode_peer(&mut w, s.peer);
            w.u32(s.missing)
                .u32(s.malformed)
                .u32(s.unknown)
                .i64(s.first_at.0)
                .i64(s.last_at.0);
            match s.token_hash_prefix {
                Some(prefix) => w.bool(true).u32(u32::from_be_bytes(prefix)),
                None => w.bool(false),
            };
            w.u32(s.distinct_tokens);
        }
        w.finish()
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let (version, mut r) = Reader::open(Self::NAME, bytes)?;
        if version != 1 {
            return Err(r.unsupported(version, 1));
        }
        if bytes.len() > MAX_REPORT_BYTES {
            return Err(r.invalid("report", format!("{} bytes", bytes.len())));
        }
        let node_id = r.u64()?;
        let window_start = UnixMillis(r.i64()?);
        let window_end = UnixMillis(r.i64()?);
        let other_failures = r.u64()?;
        let reports_lost = r.u64()?;
        let count = r.u32()? as usize;
        if count > MAX_SOURCES_PER_REPORT {
            return Err(r.invalid("sources", format!("{count} sources")));
        }
        let mut sources = Vec::with_capacity(count);
        for _ in 0..count {
            let peer = decode_peer(&mut r)?;
            let missing = r.u32()?;
            let malformed = r.u32()?;
            let unknown = r.u32()?;
            let first_at = UnixMillis(r.i64()?);
            let last_at = UnixMillis(r.i64()?);
            let token_hash_prefix = if r.bool("token_hash_prefix")? {
                Some(r.u32()?.to_be_bytes())
            } else {
                None
            };
            sources.push(SourceFailures {
                peer,
                missing,
                malformed,
                unknown,
                first_at,
                last_at,
                token_hash_prefix,
                distinct_tokens: r.u32()?,
            });
        }
        r.finish()?;
        Ok(AuthFailureReport {
            node_id,
            window_start,
            window_end,
            sources,
            other_failures,
            reports_lost,
        })
    }
}

impl AuthFailureReport {
    /// Whether the report records anything at all.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty() && self.other_failures == 0 && self.reports_lost == 0
    }
}

// The report's audit entries and their append: the store half.
#[cfg(feature = "store")]
mod entries;
#[cfg(feature = "store")]
pub use entries::apply;

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> AuthFailureReport {
        AuthFailureReport {
            node_id: 3,
            window_start: UnixMillis(1_764_000_000_000),
            window_end: UnixMillis(1_764_000_060_000),
            sources: vec![
                SourceFailures {
                    peer: Some("203.0.113.9".parse().unwrap()),
                    missing: 1,
                    malformed: 2,
                    unknown: 4000,
                    first_at: UnixMillis(1_764_000_000_100),
                    last_at: UnixMillis(1_764_000_059_900),
                    token_hash_prefix: Some([0xde, 0xad, 0xbe, 0xef]),
                    distinct_tokens: 16,
                },
                SourceFailures {
                    peer: Some("2001:db8::7".parse().unwrap()),
                    missing: 0,
                    malformed: 0,
                    unknown: 1,
                    first_at: UnixMillis(1_764_000_010_000),
                    last_at: UnixMillis(1_764_000_010_000),
                    token_hash_prefix: None,
                    distinct_tokens: 1,
                },
                SourceFailures {
                    peer: None,
                    missing: 5,
                    malformed: 0,
                    unknown: 0,
                    first_at: UnixMillis(1),
                    last_at: UnixMillis(2),
                    token_hash_prefix: None,
                    distinct_tokens: 0,
                },
            ],
            other_failures: 77,
            reports_lost: 2,
        }
    }

    #[test]
    fn reports_round_trip_and_make_one_entry_per_source() {
        let report = sample();
        assert_eq!(
            AuthFailureReport::decode(&report.encode()),
            Ok(report.clone())
        );
        let events = report.events();
        let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
        assert_eq!(
            subjects,
            [
                "peer:203.0.113.9",
                "peer:2001:db8::7",
                "peer:unknown",
                "peer:other",
                "node:3"
            ]
        );
        assert_eq!(events[0].outcome, "4003 failed authentications");
        assert!(events.iter().all(|e| e.time == report.window_end
            && e.principal == UNAUTHENTICATED
            && e.jurisdiction.is_none()));
        let prefix = events[0]
            .details
            .iter()
            .find(|(k, _)| *k == "token_blake3_prefix")
            .map(|(_, v)| v.as_str());
        assert_eq!(prefix, Some("deadbeef"));
    }

    #[test]
    fn the_largest_report_fits_its_bound_and_a_larger_one_is_refused() {
        let mut report = sample();
        let template = report.sources[1].clone();
        report.sources = (0..MAX_SOURCES_PER_REPORT)
            .map(|i| SourceFailures {
                peer: Some(IpAddr::V6(Ipv6Addr::from(i as u128 + (1 << 100)))),
                token_hash_prefix: Some([1, 2, 3, 4]),
                ..template.clone()
            })
            .collect();
        let bytes = report.encode();
        assert!(bytes.len() <= MAX_REPORT_BYTES, "{} bytes", bytes.len());
        assert_eq!(AuthFailureReport::decode(&bytes), Ok(report.clone()));
        report.sources.push(template);
        assert!(matches!(
            AuthFailureReport::decode(&report.encode()),
            Err(DecodeError::Invalid { .. })
        ));
    }

    #[test]
    fn malformed_reports_are_refused() {
        let good = sample().encode();
        for n in 0..good.len() {
            assert!(AuthFailureReport::decode(&good[..n]).is_err(), "prefix {n}");
        }
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(AuthFailureReport::decode(&trailing).is_err());
        let mut version = good.clone();
        version[0] = 2;
        assert!(matches!(
            AuthFailureReport::decode(&version),
            Err(DecodeError::UnsupportedVersion { .. })
        ));
        // The first source's address family byte sits after the fixed header.
        let family_at = 1 + 8 + 8 + 8 + 8 + 8 + 4;
        let mut family = good.clone();
        assert_eq!(family[family_at], 4);
        family[family_at] = 5;
        assert!(matches!(
            AuthFailureReport::decode(&family),
            Err(DecodeError::Invalid { field: "peer", .. })
        ));
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            if let Ok(report) = AuthFailureReport::decode(&bytes) {
                prop_assert_eq!(report.encode(), bytes);
            }
        }
    }
}
