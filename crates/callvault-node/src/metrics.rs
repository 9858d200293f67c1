//! The stateless tier's OpenTelemetry metrics, on the global meter `callvault-node`.
//!
//! Instruments are created on first use from the global meter provider, which `serve` sets (see
//! `telemetry`) before it starts any role; without one they are no-ops.
//!
//! | instrument | kind, unit | attributes | recorded by |
//! | --- | --- | --- | --- |
//! | `callvault.ingest.calls` | counter | `outcome` | `RecordCall`, once per call: `recorded`, `privileged`, `rejected`, `retry` (a call id committed before, sent again), or the gRPC code of a failure (`invalid_argument`, `unavailable`, …) |
//! | `callvault.ingest.decisions` | counter | `jurisdiction`, `decision` | `RecordCall`, once per new decision: `recorded`, `privileged` (not recorded: a privileged number, at ingest or at commit), `rejected` (refused by policy, e.g. no recording notice) |
//! | `callvault.ingest.bytes` | counter, By | `jurisdiction` | `RecordCall`: audio bytes received from platforms |
//! | `callvault.access.quota_denials` | counter | `jurisdiction`, `principal` | content access refused by a playback quota: [`quota_denied`] |

use std::sync::OnceLock;

use callvault_core::Jurisdiction;
use callvault_proto::v1 as pb;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use tonic::{Response, Status};

struct Instruments {
    calls: Counter<u64>,
    decisions: Counter<u64>,
    bytes: Counter<u64>,
    quota_denials: Counter<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter("callvault-node");
        Instruments {
            calls: meter
                .u64_counter("callvault.ingest.calls")
                .with_description("RecordCall streams answered, by outcome")
                .build(),
            decisions: meter
                .u64_counter("callvault.ingest.decisions")
                .with_description(
                    "New ingest decisions, by jurisdiction: recorded, privileged, rejected",
                )
                .build(),
            bytes: meter
                .u64_counter("callvault.ingest.bytes")
                .with_unit("By")
                .with_description("Audio bytes received from call platforms")
                .build(),
            quota_denials: meter
                .u64_counter("callvault.access.quota_denials")
                .with_description("Content accesses refused by a playback quota")
                .build(),
        }
    })
}

/// What a finished `RecordCall` amounted to, for metrics and its span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// A new decision.
    Decided(&'static str),
    /// A call id already committed before this stream, sent again: the same answer, no new
    /// decision.
    Retry,
    /// A failure, by gRPC code.
    Failed(tonic::Code),
}

impl CallOutcome {
    /// The outcome of an answer; `retry` when the call was already committed before this stream.
    pub fn of(answered: &Result<Response<pb::RecordCallResponse>, Status>, retry: bool) -> Self {
        match answered {
            Err(status) => CallOutcome::Failed(status.code()),
            Ok(_) if retry => CallOutcome::Retry,
            Ok(response) => match pb::Decision::try_from(response.get_ref().decision) {
                Ok(pb::Decision::Recorded) => CallOutcome::Decided("recorded"),
                Ok(pb::Decision::NotRecordedPrivileged) => CallOutcome::Decided("privileged"),
                Ok(pb::Decision::Rejected) => CallOutcome::Decided("rejected"),
                _ => CallOutcome::Failed(tonic::Code::Internal),
            },
        }
    }

    /// The `outcome` attribute of `callvault.ingest.calls`.
    pub fn label(self) -> String {
        match self {
            CallOutcome::Decided(decision) => decision.to_string(),
            CallOutcome::Retry => "retry".to_string(),
            CallOutcome::Failed(code) => code_label(code),
        }
    }
}

/// A gRPC code in snake case (`InvalidArgument` → `invalid_argument`).
fn code_label(code: tonic::Code) -> String {
    let mut label = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            label.push('_');
        }
        label.push(c.to_ascii_lowercase());
    }
    label
}

/// Counts one answered `RecordCall`; `jurisdiction` is known once its `CallStart` validated.
pub fn call_answered(jurisdiction: Option<Jurisdiction>, outcome: CallOutcome) {
    let m = instruments();
    m.calls.add(1, &[KeyValue::new("outcome", outcome.label())]);
    if let (CallOutcome::Decided(decision), Some(jurisdiction)) = (outcome, jurisdiction) {
        m.decisions.add(
            1,
            &[
                KeyValue::new("jurisdiction", jurisdiction.code()),
                KeyValue::new("decision", decision),
            ],
        );
    }
}

/// Counts audio bytes received for a call of `jurisdiction`.
pub fn audio_received(jurisdiction: Jurisdiction, bytes: usize) {
    instruments().bytes.add(
        bytes as u64,
        &[KeyValue::new("jurisdiction", jurisdiction.code())],
    );
}

/// For the content-access path, each time a playback quota refuses a request: the caller's
/// principal name and the jurisdiction it asked about. A burst is what an insider pulling
/// recordings in bulk looks like.
pub fn quota_denied(jurisdiction: Jurisdiction, principal: &str) {
    instruments().quota_denials.add(
        1,
        &[
            KeyValue::new("jurisdiction", jurisdiction.code()),
            KeyValue::new("principal", principal.to_string()),
        ],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(decision: pb::Decision) -> Result<Response<pb::RecordCallResponse>, Status> {
        Ok(Response::new(pb::RecordCallResponse {
            decision: decision as i32,
            reason: String::new(),
            receipt: None,
        }))
    }

    #[test]
    fn outcomes_name_decisions_retries_and_failures() {
        assert_eq!(
            CallOutcome::of(&answer(pb::Decision::Recorded), false),
            CallOutcome::Decided("recorded")
        );
        assert_eq!(
            CallOutcome::of(&answer(pb::Decision::Recorded), true),
            CallOutcome::Retry
        );
        assert_eq!(
            CallOutcome::of(&answer(pb::Decision::NotRecordedPrivileged), false),
            CallOutcome::Decided("privileged")
        );
        // A call id committed before this stream gets the same answer again: no new decision.
        assert_eq!(
            CallOutcome::of(&answer(pb::Decision::NotRecordedPrivileged), true),
            CallOutcome::Retry
        );
        assert_eq!(
            CallOutcome::of(&answer(pb::Decision::Rejected), false),
            CallOutcome::Decided("rejected")
        );
        let failed = CallOutcome::of(&Err(Status::invalid_argument("x")), false);
        assert_eq!(failed, CallOutcome::Failed(tonic::Code::InvalidArgument));
        assert_eq!(failed.label(), "invalid_argument");
        assert_eq!(
            CallOutcome::Failed(tonic::Code::Unavailable).label(),
            "unavailable"
        );
    }
}
