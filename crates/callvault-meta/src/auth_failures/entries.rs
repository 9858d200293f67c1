//! The audit entries of a failure report, appended by `apply`.

use callvault_audit::AuditEvent;

use super::{AuthFailureReport, MAX_SOURCES_PER_REPORT, UNAUTHENTICATED};
use crate::audit_log::{self, AuditError, Event};
use crate::txn::Txn;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl AuthFailureReport {
    fn window_details(&self) -> Vec<(&'static str, String)> {
        vec![
            ("node", self.node_id.to_string()),
            ("window_start_ms", self.window_start.0.to_string()),
            ("window_end_ms", self.window_end.0.to_string()),
        ]
    }

    /// The audit events of the report, in the order `apply` appends them: one per source, then
    /// one for the sources over the limit, then one for lost reports.
    pub fn events(&self) -> Vec<Event> {
        let mut events = Vec::with_capacity(self.sources.len() + 2);
        let event = |subject: String, outcome: String, details| Event {
            event: AuditEvent::AuthenticationFailure,
            time: self.window_end,
            principal: UNAUTHENTICATED.to_string(),
            jurisdiction: None,
            subject,
            outcome,
            details,
        };
        for s in &self.sources {
            let mut details = self.window_details();
            details.extend([
                ("missing_token", s.missing.to_string()),
                ("malformed_token", s.malformed.to_string()),
                ("unknown_token", s.unknown.to_string()),
                ("first_ms", s.first_at.0.to_string()),
                ("last_ms", s.last_at.0.to_string()),
                ("distinct_tokens", s.distinct_tokens.to_string()),
            ]);
            if let Some(prefix) = s.token_hash_prefix {
                details.push(("token_blake3_prefix", hex(&prefix)));
            }
            let subject = match s.peer {
                Some(ip) => format!("peer:{ip}"),
                None => "peer:unknown".to_string(),
            };
            events.push(event(
                subject,
                format!("{} failed authentications", s.total()),
                details,
            ));
        }
        if self.other_failures > 0 {
            events.push(event(
                "peer:other".to_string(),
                format!(
                    "{} failed authentications from sources beyond the first {MAX_SOURCES_PER_REPORT}",
                    self.other_failures
                ),
                self.window_details(),
            ));
        }
        if self.reports_lost > 0 {
            events.push(event(
                format!("node:{}", self.node_id),
                format!(
                    "{} earlier failure reports lost: the metadata store was unreachable",
                    self.reports_lost
                ),
                self.window_details(),
            ));
        }
        events
    }
}

/// Appends the report's entries (see [`AuthFailureReport::events`]).
pub fn apply(txn: &mut Txn<'_>, report: &AuthFailureReport) -> Result<(), AuditError> {
    for event in report.events() {
        audit_log::append(txn, event)?;
    }
    Ok(())
}
