//! The apply of a proposal in its trace: `raft.apply` as a child of the leader's `meta.propose`.
//!
//! openraft applies entries on its own state-machine task, with no link to the proposal that
//! produced them, and the log index of a proposal is known only once it is committed. So the
//! state machine notes when each apply call ran ([`ApplyTimes`], in memory, on every member; it
//! never touches replicated state, so `apply` stays deterministic), and the leader's proposer,
//! which learns the index from `client_write` right after the apply, records the `raft.apply`
//! span under its proposal's span with the apply's real start and end times
//! ([`record_apply_span`]). A batch entry serves many proposals: each gets an apply span over the
//! same apply call, with the batch size as an attribute.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::SystemTime;

use opentelemetry::KeyValue;
use opentelemetry::trace::{Span as _, SpanKind, TraceContextExt, Tracer};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Apply calls remembered. The leader reads an entry's times right after `client_write` returns,
/// so only the most recent few matter; older ones are forgotten.
const REMEMBERED: usize = 1024;

/// One apply call: the log indexes it applied (inclusive) and when it ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyCall {
    /// First index applied.
    pub first: u64,
    /// Last index applied.
    pub last: u64,
    /// When the apply call started.
    pub started: SystemTime,
    /// When its atomic write finished.
    pub finished: SystemTime,
}

/// When recent apply calls ran, by log index (bounded; see [`REMEMBERED`]).
#[derive(Debug, Default)]
pub struct ApplyTimes(Mutex<VecDeque<ApplyCall>>);

impl ApplyTimes {
    /// Notes an apply call.
    pub fn record(&self, call: ApplyCall) {
        let mut calls = self.0.lock().expect("apply times lock");
        if calls.len() == REMEMBERED {
            calls.pop_front();
        }
        calls.push_back(call);
    }

    /// The apply call that applied `index`, if it is still remembered.
    pub fn find(&self, index: u64) -> Option<ApplyCall> {
        let calls = self.0.lock().expect("apply times lock");
        calls
            .iter()
            .rev()
            .find(|c| c.first <= index && index <= c.last)
            .copied()
    }
}

/// Records a finished `raft.apply` span under `parent` (a proposal's span) with the times of
/// the apply call that applied `index`. Nothing is recorded when `parent` is not part of a
/// trace (tracing is off) or the apply call was forgotten.
pub fn record_apply_span(
    parent: &tracing::Span,
    times: &ApplyTimes,
    term: u64,
    index: u64,
    batch_size: usize,
) {
    let parent = parent.context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let Some(call) = times.find(index) else {
        return;
    };
    let tracer = opentelemetry::global::tracer("callvault-meta");
    let mut span = tracer
        .span_builder("raft.apply")
        .with_kind(SpanKind::Internal)
        .with_start_time(call.started)
        .with_attributes([
            KeyValue::new("raft.term", term as i64),
            KeyValue::new("raft.index", index as i64),
            KeyValue::new("raft.apply.first_index", call.first as i64),
            KeyValue::new("raft.apply.last_index", call.last as i64),
            KeyValue::new("meta.batch.size", batch_size as i64),
        ])
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(call.finished);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn call(first: u64, last: u64) -> ApplyCall {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(first);
        ApplyCall {
            first,
            last,
            started: at,
            finished: at + Duration::from_millis(1),
        }
    }

    #[test]
    fn finds_the_apply_call_of_an_index_and_forgets_old_ones() {
        let times = ApplyTimes::default();
        times.record(call(1, 3));
        times.record(call(4, 4));
        assert_eq!(times.find(2), Some(call(1, 3)));
        assert_eq!(times.find(4), Some(call(4, 4)));
        assert_eq!(times.find(5), None);
        for i in 0..REMEMBERED as u64 {
            times.record(call(10 + i, 10 + i));
        }
        assert_eq!(times.find(2), None, "the oldest calls are forgotten");
        assert!(times.find(10 + REMEMBERED as u64 - 1).is_some());
    }
}
