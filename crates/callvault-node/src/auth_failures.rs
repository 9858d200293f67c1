//! Failed authentications on this node's public APIs, on their way to the audit log.
//!
//! The authenticator is a synchronous interceptor on every public request, so it only counts:
//! [`AuthFailureLog::record`] adds one failure to the current window's tally for the caller's IP
//! address, under a mutex, in constant time and bounded memory. A background task
//! ([`spawn_reporter`]) closes the window every `auth_failure_window_seconds` and proposes it as
//! one `RecordAuthFailures` command through the metadata store, which appends one audit entry per
//! source. However many requests a client sprays, it costs the Raft group one small command per
//! window per node and the log at most [`MAX_SOURCES_PER_REPORT`] + 2 entries.
//!
//! Bounds: at most [`MAX_SOURCES_PER_REPORT`] addresses are tallied per window (failures from
//! further addresses are one count); at most [`MAX_TRACKED_TOKENS`] token-hash prefixes per
//! address; at most [`MAX_PENDING_REPORTS`] closed windows wait while the metadata store is
//! unreachable, and older ones are dropped and counted in the next report. Tokens are never kept:
//! only the first 4 bytes of the BLAKE3 hash of an unknown token.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use callvault_core::UnixMillis;
use callvault_meta::Command;
use callvault_meta::auth_failures::{
    AuthFailureReport, FailureKind, MAX_SOURCES_PER_REPORT, SourceFailures, TOKEN_PREFIX_LEN,
};
use callvault_meta::client::MetaClient;
use tokio::sync::watch;

/// The default window: one report per minute per node.
pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
/// Distinct token-hash prefixes counted per source and window.
pub const MAX_TRACKED_TOKENS: usize = 16;
/// Closed windows kept while the metadata store cannot take them.
pub const MAX_PENDING_REPORTS: usize = 8;
/// How long one proposal of a report may take before the reporter tries again next window.
const PROPOSE_TIMEOUT: Duration = Duration::from_secs(10);

struct Tally {
    failures: SourceFailures,
    tokens: Vec<[u8; TOKEN_PREFIX_LEN]>,
}

struct Window {
    started: UnixMillis,
    sources: BTreeMap<Option<IpAddr>, Tally>,
    other_failures: u64,
}

impl Window {
    fn new(started: UnixMillis) -> Self {
        Window {
            started,
            sources: BTreeMap::new(),
            other_failures: 0,
        }
    }
}

/// The current window's failed authentications. Cheap to clone; clones share the window.
#[derive(Clone)]
pub struct AuthFailureLog {
    window: Arc<Mutex<Window>>,
}

impl std::fmt::Debug for AuthFailureLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthFailureLog").finish_non_exhaustive()
    }
}

impl AuthFailureLog {
    /// An empty log whose first window opens at `now`.
    pub fn new(now: UnixMillis) -> Self {
        AuthFailureLog {
            window: Arc::new(Mutex::new(Window::new(now))),
        }
    }

    /// Counts one failure from `peer` at `at`; `token_hash` is the BLAKE3 hash of an unknown
    /// token (only its first bytes are kept).
    pub fn record(
        &self,
        peer: Option<IpAddr>,
        kind: FailureKind,
        token_hash: Option<&[u8; 32]>,
        at: UnixMillis,
    ) {
        let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
        let room = window.sources.len() < MAX_SOURCES_PER_REPORT;
        if !room && !window.sources.contains_key(&peer) {
            window.other_failures = window.other_failures.saturating_add(1);
            return;
        }
        let tally = window.sources.entry(peer).or_insert_with(|| Tally {
            failures: SourceFailures {
                peer,
                missing: 0,
                malformed: 0,
                unknown: 0,
                first_at: at,
                last_at: at,
                token_hash_prefix: None,
                distinct_tokens: 0,
            },
            tokens: Vec::new(),
        });
        let f = &mut tally.failures;
        match kind {
            FailureKind::MissingToken => f.missing = f.missing.saturating_add(1),
            FailureKind::MalformedToken => f.malformed = f.malformed.saturating_add(1),
            FailureKind::UnknownToken => f.unknown = f.unknown.saturating_add(1),
        }
        f.first_at = f.first_at.min(at);
        f.last_at = f.last_at.max(at);
        if let Some(hash) = token_hash {
            let mut prefix = [0u8; TOKEN_PREFIX_LEN];
            prefix.copy_from_slice(&hash[..TOKEN_PREFIX_LEN]);
            f.token_hash_prefix.get_or_insert(prefix);
            if tally.tokens.len() < MAX_TRACKED_TOKENS && !tally.tokens.contains(&prefix) {
                tally.tokens.push(prefix);
                tally.failures.distinct_tokens = tally.tokens.len() as u32;
            }
        }
    }

    /// Closes the current window at `now` and opens the next; the closed window's report, if it
    /// counted any failure.
    pub fn take(&self, node_id: u64, now: UnixMillis) -> Option<AuthFailureReport> {
        let closed = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *window, Window::new(now))
        };
        let report = AuthFailureReport {
            node_id,
            window_start: closed.started,
            window_end: now,
            sources: closed.sources.into_values().map(|t| t.failures).collect(),
            other_failures: closed.other_failures,
            reports_lost: 0,
        };
        (!report.is_empty()).then_some(report)
    }
}

/// Reports closed windows through the metadata store until `stop` turns true. A report the store
/// does not take (no leader, unreachable) is retried at the next window, behind at most
/// [`MAX_PENDING_REPORTS`] - 1 others.
pub fn spawn_reporter(
    log: AuthFailureLog,
    meta: MetaClient,
    node_id: u64,
    window: Duration,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut pending: VecDeque<AuthFailureReport> = VecDeque::new();
        let mut lost = 0u64;
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + window, window);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = stop.wait_for(|s| *s) => break,
            }
            if let Some(report) = log.take(node_id, crate::ingest::now()) {
                if pending.len() == MAX_PENDING_REPORTS {
                    pending.pop_front();
                    lost += 1;
                }
                pending.push_back(report);
            }
            while let Some(next) = pending.front() {
                let mut report = next.clone();
                report.reports_lost = lost;
                let command = Command::RecordAuthFailures(report);
                match tokio::time::timeout(PROPOSE_TIMEOUT, meta.propose(&command)).await {
                    Ok(Ok(_)) => {
                        pending.pop_front();
                        lost = 0;
                    }
                    Ok(Err(status)) => {
                        tracing::warn!(%status, pending = pending.len(), "cannot log failed authentications yet");
                        break;
                    }
                    Err(_) => {
                        tracing::warn!(
                            pending = pending.len(),
                            "logging failed authentications timed out"
                        );
                        break;
                    }
                }
            }
        }
        let unreported: u64 = pending
            .iter()
            .flat_map(|r| r.sources.iter().map(SourceFailures::total))
            .sum();
        if unreported > 0 || lost > 0 {
            tracing::warn!(
                unreported,
                reports_lost = lost,
                "stopping with failed authentications not yet in the audit log"
            );
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use callvault_core::codec::VersionedRecord as _;

    fn ip(text: &str) -> Option<IpAddr> {
        Some(text.parse().unwrap())
    }

    #[test]
    fn failures_coalesce_per_source_and_window() {
        let log = AuthFailureLog::new(UnixMillis(1_000));
        let spray = |i: u32| *blake3::hash(&i.to_le_bytes()).as_bytes();
        for i in 0..10_000u32 {
            log.record(
                ip("198.51.100.7"),
                FailureKind::UnknownToken,
                Some(&spray(i)),
                UnixMillis(2_000 + i64::from(i)),
            );
        }
        log.record(
            ip("198.51.100.8"),
            FailureKind::MissingToken,
            None,
            UnixMillis(1_500),
        );
        log.record(None, FailureKind::MalformedToken, None, UnixMillis(1_600));
        let report = log.take(4, UnixMillis(61_000)).unwrap();
        assert_eq!(
            (report.node_id, report.window_start, report.window_end),
            (4, UnixMillis(1_000), UnixMillis(61_000))
        );
        assert_eq!(
            report.sources.len(),
            3,
            "one tally per source, not per request"
        );
        let sprayer = report
            .sources
            .iter()
            .find(|s| s.peer == ip("198.51.100.7"))
            .unwrap();
        assert_eq!(sprayer.unknown, 10_000);
        assert_eq!(sprayer.distinct_tokens, MAX_TRACKED_TOKENS as u32);
        assert_eq!(
            sprayer.token_hash_prefix,
            Some(spray(0)[..4].try_into().unwrap())
        );
        assert_eq!(
            (sprayer.first_at, sprayer.last_at),
            (UnixMillis(2_000), UnixMillis(11_999))
        );
        // The report is small whatever was sprayed, and the next window starts empty.
        assert!(Command::RecordAuthFailures(report).encode().len() < 300);
        assert_eq!(log.take(4, UnixMillis(121_000)), None);
    }

    #[test]
    fn sources_beyond_the_limit_are_one_count() {
        let log = AuthFailureLog::new(UnixMillis(0));
        for i in 0..(MAX_SOURCES_PER_REPORT as u32 + 500) {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            log.record(Some(peer), FailureKind::UnknownToken, None, UnixMillis(1));
            // A known source keeps counting after the table is full.
            log.record(
                ip("10.0.0.0"),
                FailureKind::MissingToken,
                None,
                UnixMillis(1),
            );
        }
        let report = log.take(1, UnixMillis(60_000)).unwrap();
        assert_eq!(report.sources.len(), MAX_SOURCES_PER_REPORT);
        assert_eq!(report.other_failures, 500);
        let first = report
            .sources
            .iter()
            .find(|s| s.peer == ip("10.0.0.0"))
            .unwrap();
        assert_eq!(first.missing, MAX_SOURCES_PER_REPORT as u32 + 500);
        let bytes = Command::RecordAuthFailures(report).encode();
        assert!(
            bytes.len() <= callvault_meta::auth_failures::MAX_REPORT_BYTES + 16,
            "{} bytes",
            bytes.len()
        );
    }
}
