//! What a load run did: outcomes per call, grouped failures, throughput and ack latency.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::json;

/// What became of one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallOutcome {
    /// `DECISION_RECORDED` with a receipt matching the call.
    Recorded,
    /// `DECISION_NOT_RECORDED_PRIVILEGED`.
    NotRecorded,
    /// `DECISION_REJECTED`, with the node's reason.
    Rejected(String),
    /// The RPC failed (gRPC code name), or its answer did not make sense (`BAD_RESPONSE`).
    Failed {
        /// e.g. `UNAVAILABLE`.
        code: String,
        /// The status message.
        message: String,
    },
}

/// One call's result as the run collects it.
#[derive(Debug, Clone)]
pub struct CallResult {
    /// The call id.
    pub call_id: String,
    /// Whether it dialed a registered attorney.
    pub attorney: bool,
    /// Audio bytes of the call.
    pub byte_length: u64,
    /// What the node answered.
    pub outcome: CallOutcome,
    /// From queuing `CallEnd` (or opening the stream, if the node answered before) to the
    /// answer; `None` when the RPC failed.
    pub ack_latency: Option<Duration>,
}

/// How many failures of one kind, and the first one's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// How many.
    pub count: u64,
    /// The first message seen.
    pub first_message: String,
}

/// The summary of a load run.
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// The run id, the middle part of every call id.
    pub run_id: String,
    /// Calls streamed.
    pub sent: u64,
    /// Calls the node recorded.
    pub recorded: u64,
    /// Calls refused as privileged.
    pub not_recorded: u64,
    /// Calls that dialed a registered attorney.
    pub attorney_calls: u64,
    /// Calls refused by policy.
    pub rejected: Option<Tally>,
    /// Failed calls by gRPC code.
    pub failed: BTreeMap<String, Tally>,
    /// Attorney calls the node RECORDED: privilege violations.
    pub violations: Vec<String>,
    /// Audio bytes of recorded calls.
    pub recorded_bytes: u64,
    /// Wall time of the streaming phase.
    pub wall: Duration,
    /// Ack latency of every answered call.
    pub latencies: Vec<Duration>,
}

impl LoadReport {
    /// An empty report for a run.
    pub fn new(run_id: &str) -> LoadReport {
        LoadReport {
            run_id: run_id.to_string(),
            ..LoadReport::default()
        }
    }

    /// Counts one call.
    pub fn add(&mut self, result: CallResult) {
        self.sent += 1;
        self.attorney_calls += u64::from(result.attorney);
        if let Some(latency) = result.ack_latency {
            self.latencies.push(latency);
        }
        match result.outcome {
            CallOutcome::Recorded => {
                self.recorded += 1;
                self.recorded_bytes += result.byte_length;
                if result.attorney {
                    self.violations.push(result.call_id);
                }
            }
            CallOutcome::NotRecorded => self.not_recorded += 1,
            CallOutcome::Failed { code, message } => {
                self.failed
                    .entry(code)
                    .and_modify(|t| t.count += 1)
                    .or_insert(Tally {
                        count: 1,
                        first_message: message,
                    });
            }
            CallOutcome::Rejected(reason) => match &mut self.rejected {
                Some(t) => t.count += 1,
                None => {
                    self.rejected = Some(Tally {
                        count: 1,
                        first_message: reason,
                    })
                }
            },
        }
    }

    /// Failed calls, all codes together.
    pub fn failed_count(&self) -> u64 {
        self.failed.values().map(|t| t.count).sum()
    }

    /// Refused calls.
    pub fn rejected_count(&self) -> u64 {
        self.rejected.as_ref().map_or(0, |t| t.count)
    }

    /// Whether the run passed: no failure and no attorney call recorded.
    pub fn passed(&self) -> bool {
        self.failed.is_empty() && self.violations.is_empty()
    }

    /// Calls per second over the wall time.
    pub fn calls_per_second(&self) -> f64 {
        per_second(self.sent as f64, self.wall)
    }

    /// Recorded audio in MB (10^6 bytes) per second over the wall time.
    pub fn audio_mb_per_second(&self) -> f64 {
        per_second(self.recorded_bytes as f64 / 1e6, self.wall)
    }

    /// Ack latency percentiles: p50, p99, max.
    pub fn latency(&self) -> Option<(Duration, Duration, Duration)> {
        let mut sorted = self.latencies.clone();
        sorted.sort_unstable();
        Some((
            percentile(&sorted, 0.50)?,
            percentile(&sorted, 0.99)?,
            *sorted.last()?,
        ))
    }

    /// The report as one JSON object.
    pub fn to_json(&self) -> serde_json::Value {
        let tally_json = |t: &Tally| json!({"count": t.count, "first_message": t.first_message});
        let failed: serde_json::Map<_, _> = self
            .failed
            .iter()
            .map(|(code, t)| (code.clone(), tally_json(t)))
            .collect();
        let latency = self.latency().map(|(p50, p99, max)| {
            json!({"p50_ms": millis(p50), "p99_ms": millis(p99), "max_ms": millis(max)})
        });
        json!({
            "run_id": self.run_id,
            "sent": self.sent,
            "recorded": self.recorded,
            "not_recorded_privileged": self.not_recorded,
            "attorney_calls": self.attorney_calls,
            "rejected": self.rejected_count(),
            "rejected_first_reason": self.rejected.as_ref().map(|t| t.first_message.clone()),
            "failed": self.failed_count(),
            "failed_by_code": failed,
            "privilege_violations": self.violations,
            "recorded_bytes": self.recorded_bytes,
            "wall_seconds": self.wall.as_secs_f64(),
            "calls_per_second": self.calls_per_second(),
            "audio_mb_per_second": self.audio_mb_per_second(),
            "ack_latency": latency,
            "passed": self.passed(),
        })
    }

    /// The report for people, one fact a line.
    pub fn to_text(&self) -> String {
        let mut out = format!("run {}\n", self.run_id);
        let mut line = |name: &str, value: String| out.push_str(&format!("{name:<26} {value}\n"));
        line("calls sent", self.sent.to_string());
        line("recorded", self.recorded.to_string());
        line(
            "not recorded (privileged)",
            format!(
                "{} ({} calls dialed a registered attorney)",
                self.not_recorded, self.attorney_calls
            ),
        );
        line(
            "rejected",
            match &self.rejected {
                Some(t) => format!("{} (first: {})", t.count, t.first_message),
                None => "0".to_string(),
            },
        );
        line("failed", self.failed_count().to_string());
        for (code, t) in &self.failed {
            line(
                &format!("  {code}"),
                format!("{} (first: {})", t.count, t.first_message),
            );
        }
        line("wall time", format!("{:.2} s", self.wall.as_secs_f64()));
        line("calls/s", format!("{:.1}", self.calls_per_second()));
        line(
            "audio MB/s (recorded)",
            format!("{:.2}", self.audio_mb_per_second()),
        );
        line(
            "ack latency",
            match self.latency() {
                Some((p50, p99, max)) => format!(
                    "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                    millis(p50),
                    millis(p99),
                    millis(max)
                ),
                None => "-".to_string(),
            },
        );
        out
    }
}

/// The nearest-rank percentile of sorted values; `None` when there are none.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

fn per_second(amount: f64, wall: Duration) -> f64 {
    if wall.is_zero() {
        0.0
    } else {
        amount / wall.as_secs_f64()
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(attorney: bool, outcome: CallOutcome, latency_ms: Option<u64>) -> CallResult {
        CallResult {
            call_id: "c".to_string(),
            attorney,
            byte_length: 2_000_000,
            outcome,
            ack_latency: latency_ms.map(Duration::from_millis),
        }
    }

    fn failed(code: &str, message: &str) -> CallOutcome {
        CallOutcome::Failed {
            code: code.to_string(),
            message: message.to_string(),
        }
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let sorted: Vec<_> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&sorted, 0.99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&sorted, 1.0), Some(Duration::from_millis(100)));
        assert_eq!(
            percentile(&sorted[..1], 0.99),
            Some(Duration::from_millis(1))
        );
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn outcomes_are_counted_and_failures_grouped_by_code() {
        let mut report = LoadReport::new("r");
        report.add(result(false, CallOutcome::Recorded, Some(10)));
        report.add(result(true, CallOutcome::NotRecorded, Some(2)));
        report.add(result(
            false,
            CallOutcome::Rejected("no notice".into()),
            Some(3),
        ));
        report.add(result(false, failed("UNAVAILABLE", "first"), None));
        report.add(result(false, failed("UNAVAILABLE", "second"), None));
        report.add(result(false, failed("INTERNAL", "boom"), None));
        report.wall = Duration::from_secs(2);
        assert_eq!(report.sent, 6);
        assert_eq!((report.recorded, report.not_recorded), (1, 1));
        assert_eq!((report.rejected_count(), report.failed_count()), (1, 3));
        assert_eq!(report.failed["UNAVAILABLE"].count, 2);
        assert_eq!(report.failed["UNAVAILABLE"].first_message, "first");
        assert_eq!(report.audio_mb_per_second(), 1.0);
        assert_eq!(report.calls_per_second(), 3.0);
        assert!(!report.passed());
        let json = report.to_json();
        assert_eq!(json["failed_by_code"]["INTERNAL"]["count"], 1);
        assert_eq!(json["ack_latency"]["max_ms"], 10.0);
        assert!(report.to_text().contains("UNAVAILABLE"));
    }

    #[test]
    fn a_recorded_attorney_call_is_a_violation() {
        let mut report = LoadReport::new("r");
        report.add(result(true, CallOutcome::NotRecorded, Some(1)));
        assert!(report.passed());
        report.add(result(true, CallOutcome::Recorded, Some(1)));
        assert_eq!(report.violations, vec!["c".to_string()]);
        assert!(!report.passed());
    }
}
