//! The metadata store's OpenTelemetry metrics, on the global meter `callvault-meta`.
//!
//! Instruments are created on first use from the global meter provider, which the binary sets
//! before it starts any role; without one (unit tests, OTLP export off) they are no-ops.
//!
//! | instrument | kind, unit | attributes | recorded by |
//! | --- | --- | --- | --- |
//! | `callvault.meta.commit.duration` | histogram, s | | the leader's proposer: a proposal's arrival to its apply |
//! | `callvault.raft.term` | gauge | | the Raft metrics watcher ([`watch_raft`]) |
//! | `callvault.raft.leader` | gauge (node id, 0: none) | | the watcher |
//! | `callvault.raft.is_leader` | gauge (0/1) | | the watcher |
//! | `callvault.raft.leader_changes` | counter | | the watcher, each time a different leader follows a known one |
//! | `callvault.raft.applied_index` | gauge | | the watcher |
//! | `callvault.raft.log.entries` | gauge | | the watcher: entries in the log (last index − purged index) |
//! | `callvault.raft.log.size` | gauge, By | | the watcher: the log store's on-disk size |
//! | `callvault.raft.snapshot.index` | gauge | | the watcher |
//! | `callvault.raft.snapshot.size` | gauge, By | | the watcher: the current snapshot file |
//! | `callvault.retention.sweep.lag` | gauge, s | | the sweeper: [`sweep_lag`] |
//! | `callvault.retention.overdue` | gauge | `jurisdiction` | the sweeper: [`overdue_recordings`] |
//! | `callvault.purge.duration` | histogram, s | `reason` | purge completion: [`purge_completed`] |
//! | `callvault.purge.pending` | gauge | | the purge tracker: [`pending_purges`] |
//! | `callvault.clock.offset` | gauge, ms | `node` | each meta node: [`voter_clock`], a voter's attestation minus the cluster time |
//! | `callvault.clock.suspect` | gauge (0/1) | `node` | [`voter_clock`]: 1 while a voter's clock is off by more than the bound (it does not lead sweeps) |
//! | `callvault.retention.details_overdue` | gauge | `jurisdiction` | the sweeper: call-detail records past their deadline plus one interval |
//! | `callvault.retention.holds_past_review` | gauge | `jurisdiction` | the sweeper: holds whose review date passed |

use std::sync::OnceLock;
use std::time::Duration;

use callvault_core::Jurisdiction;
use openraft::ServerState;
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

use crate::log_store::LogStore;
use crate::state_machine::StateMachineStore;
use crate::types::NodeId;

/// Bucket bounds (seconds) for commit and purge latencies: 1 ms to 60 s.
const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

struct Instruments {
    commit_duration: Histogram<f64>,
    term: Gauge<u64>,
    leader: Gauge<u64>,
    is_leader: Gauge<u64>,
    leader_changes: Counter<u64>,
    applied_index: Gauge<u64>,
    log_entries: Gauge<u64>,
    log_size: Gauge<u64>,
    snapshot_index: Gauge<u64>,
    snapshot_size: Gauge<u64>,
    sweep_lag: Gauge<f64>,
    overdue: Gauge<u64>,
    purge_duration: Histogram<f64>,
    pending_purges: Gauge<u64>,
    clock_offset: Gauge<i64>,
    clock_suspect: Gauge<u64>,
    details_overdue: Gauge<u64>,
    holds_past_review: Gauge<u64>,
}

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter: Meter = opentelemetry::global::meter("callvault-meta");
        Instruments {
            commit_duration: meter
                .f64_histogram("callvault.meta.commit.duration")
                .with_unit("s")
                .with_description(
                    "Time from a proposal's arrival at the leader to its apply (queue, batch \
                     append, replication to a quorum, apply)",
                )
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            term: meter
                .u64_gauge("callvault.raft.term")
                .with_description("This member's current Raft term")
                .build(),
            leader: meter
                .u64_gauge("callvault.raft.leader")
                .with_description("The leader this member knows (node id; 0 when none)")
                .build(),
            is_leader: meter
                .u64_gauge("callvault.raft.is_leader")
                .with_description("1 while this member is the leader, else 0")
                .build(),
            leader_changes: meter
                .u64_counter("callvault.raft.leader_changes")
                .with_description("Times the leader known to this member changed")
                .build(),
            applied_index: meter
                .u64_gauge("callvault.raft.applied_index")
                .with_description("Index of the last entry applied to this member's state")
                .build(),
            log_entries: meter
                .u64_gauge("callvault.raft.log.entries")
                .with_description("Entries in this member's Raft log (not yet purged)")
                .build(),
            log_size: meter
                .u64_gauge("callvault.raft.log.size")
                .with_unit("By")
                .with_description("On-disk size of this member's Raft log store")
                .build(),
            snapshot_index: meter
                .u64_gauge("callvault.raft.snapshot.index")
                .with_description("Last log index covered by this member's snapshot")
                .build(),
            snapshot_size: meter
                .u64_gauge("callvault.raft.snapshot.size")
                .with_unit("By")
                .with_description("Size of this member's current snapshot file")
                .build(),
            sweep_lag: meter
                .f64_gauge("callvault.retention.sweep.lag")
                .with_unit("s")
                .with_description(
                    "How far the retention sweeper is behind: now minus the earliest deadline \
                     still due (0 when nothing is due)",
                )
                .build(),
            overdue: meter
                .u64_gauge("callvault.retention.overdue")
                .with_description("Live recordings past their deadline, per jurisdiction")
                .build(),
            purge_duration: meter
                .f64_histogram("callvault.purge.duration")
                .with_unit("s")
                .with_description(
                    "Time from the command that purged a call to the purge's completion on \
                     every replica",
                )
                .with_boundaries(LATENCY_BOUNDS.to_vec())
                .build(),
            pending_purges: meter
                .u64_gauge("callvault.purge.pending")
                .with_description("Purges started and not yet complete on every replica")
                .build(),
            clock_offset: meter
                .i64_gauge("callvault.clock.offset")
                .with_unit("ms")
                .with_description("A voter's latest clock attestation minus the cluster time")
                .build(),
            clock_suspect: meter
                .u64_gauge("callvault.clock.suspect")
                .with_description(
                    "1 while a voter's clock is off the cluster time by more than the bound",
                )
                .build(),
            details_overdue: meter
                .u64_gauge("callvault.retention.details_overdue")
                .with_description("Call-detail records past their deadline, per jurisdiction")
                .build(),
            holds_past_review: meter
                .u64_gauge("callvault.retention.holds_past_review")
                .with_description("Holds whose review date has passed, per jurisdiction")
                .build(),
        }
    })
}

/// Records one proposal's commit latency (the leader's proposer calls this).
pub fn commit_latency(latency: Duration) {
    instruments()
        .commit_duration
        .record(latency.as_secs_f64(), &[]);
}

/// For the retention sweeper, after each sweep: how far it is behind (now minus the earliest
/// deadline still due; zero when nothing is due).
pub fn sweep_lag(lag: Duration) {
    instruments().sweep_lag.record(lag.as_secs_f64(), &[]);
}

/// For the retention sweeper (or the status reader), after each sweep, once per jurisdiction:
/// live recordings past their deadline. Anything above zero is an alarm.
pub fn overdue_recordings(jurisdiction: Jurisdiction, count: u64) {
    instruments()
        .overdue
        .record(count, &[KeyValue::new("jurisdiction", jurisdiction.code())]);
}

/// For the purge tracker, when a purge completes on every replica: its latency from the command
/// that started it, and why it happened (`"privilege"`, `"expiry"`, `"flag"`).
pub fn purge_completed(reason: &'static str, latency: Duration) {
    instruments()
        .purge_duration
        .record(latency.as_secs_f64(), &[KeyValue::new("reason", reason)]);
}

/// For the purge tracker, whenever the number changes: purges started and not yet complete.
pub fn pending_purges(count: u64) {
    instruments().pending_purges.record(count, &[]);
}

/// For each meta node, after each attestation: a voter's clock against the cluster's (`None`
/// when it never attested) and whether it is off by more than the bound.
pub fn voter_clock(node_id: NodeId, offset_ms: Option<i64>, suspect: bool) {
    let m = instruments();
    let node = [KeyValue::new("node", node_id as i64)];
    if let Some(offset) = offset_ms {
        m.clock_offset.record(offset, &node);
    }
    m.clock_suspect.record(u64::from(suspect), &node);
}

/// For the sweeper, once per jurisdiction: call-detail records past their deadline plus one
/// sweep interval, and holds past their review date.
pub fn retention_alarms(jurisdiction: Jurisdiction, details_overdue: u64, holds_past_review: u64) {
    let m = instruments();
    let j = [KeyValue::new("jurisdiction", jurisdiction.code())];
    m.details_overdue.record(details_overdue, &j);
    m.holds_past_review.record(holds_past_review, &j);
}

/// How often the watcher re-reads on-disk sizes when nothing else changed.
const SIZE_INTERVAL: Duration = Duration::from_secs(15);

/// Records Raft's state (term, leader, leader changes, indexes, log and snapshot sizes) from
/// openraft's metrics channel until Raft shuts down. The task holds the stores, so it stops as
/// soon as openraft reports `Shutdown` or drops the channel.
pub fn watch_raft(
    node_id: NodeId,
    mut raft_metrics: tokio::sync::watch::Receiver<
        openraft::RaftMetrics<NodeId, crate::member::MetaMember>,
    >,
    log: LogStore,
    state_machine: StateMachineStore,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let m = instruments();
        // The last leader seen; a change is a different leader after a known one (an election
        // with no leader yet is not a change, and neither is the first leader after start-up).
        let mut known_leader: Option<NodeId> = None;
        let mut sizes = tokio::time::interval(SIZE_INTERVAL);
        loop {
            let current = raft_metrics.borrow_and_update().clone();
            if current.state == ServerState::Shutdown {
                return;
            }
            m.term.record(current.current_term, &[]);
            m.leader.record(current.current_leader.unwrap_or(0), &[]);
            m.is_leader
                .record(u64::from(current.current_leader == Some(node_id)), &[]);
            if let Some(leader) = current.current_leader {
                if known_leader.is_some_and(|known| known != leader) {
                    m.leader_changes.add(1, &[]);
                }
                known_leader = Some(leader);
            }
            m.applied_index
                .record(current.last_applied.map_or(0, |l| l.index), &[]);
            let last = current.last_log_index.unwrap_or(0);
            let purged = current.purged.map_or(0, |l| l.index);
            m.log_entries.record(last.saturating_sub(purged), &[]);
            m.snapshot_index
                .record(current.snapshot.map_or(0, |l| l.index), &[]);
            tokio::select! {
                changed = raft_metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                _ = sizes.tick() => {
                    m.log_size.record(log.approximate_size(), &[]);
                    if let Some(bytes) = state_machine.current_snapshot_bytes() {
                        m.snapshot_size.record(bytes, &[]);
                    }
                }
            }
        }
    })
}
