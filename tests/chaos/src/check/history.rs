//! Checks of the recorded history alone (so `callvault-chaos check` can run them on a file):
//! linearizability per key, acknowledged calls, privilege at ingest, and deadlines.

use std::collections::{BTreeMap, BTreeSet};

use super::Checked;
use super::linear::{Timed, Verdict, check};
use super::models::{Call, PolicyVersion, RegistryEntry, call_op, policy_op, registry_op};
use crate::history::{Completed, Kind, Op, Out};
use crate::workload::{CA, CA_SWEEP_SECONDS, DAY, TX};

/// How late, past deadline plus one sweep interval, a read may still see a recording before it
/// counts as overdue: the sweep's commit and the read's own round trip on a loaded machine.
pub const DEADLINE_SLACK_MS: i64 = 10_000;

fn describe(c: &Completed) -> String {
    let ret = c
        .ret
        .map_or("∞".to_string(), |r| format!("{:.3}", r as f64 / 1e9));
    format!(
        "#{} p{} n{} [{:.3}s..{ret}s] {:?} {:?} -> {:?}",
        c.id,
        c.process,
        c.node,
        c.call as f64 / 1e9,
        c.kind,
        c.op,
        c.out
    )
}

/// Checks one key's operations against `model`; an anomaly describes the stuck point.
fn check_key<M: super::linear::Model>(
    key: &str,
    model: &M,
    ops: Vec<(&Completed, M::Op)>,
) -> Option<String> {
    let (completed, model_ops): (Vec<&Completed>, Vec<M::Op>) = ops.into_iter().unzip();
    let timed: Vec<Timed<M::Op>> = completed
        .iter()
        .zip(model_ops)
        .map(|(c, op)| Timed {
            call: c.call,
            ret: c.ret,
            op,
        })
        .collect();
    match check(model, &timed) {
        Verdict::Linearizable => None,
        Verdict::Unknown => Some(format!("{key}: the search gave up (too many orderings)")),
        Verdict::Violation { longest, stuck } => {
            let tail: Vec<String> = longest
                .iter()
                .rev()
                .take(6)
                .rev()
                .map(|&i| format!("    {}", describe(completed[i])))
                .collect();
            let stuck: Vec<String> = stuck
                .iter()
                .map(|&i| format!("    {}", describe(completed[i])))
                .collect();
            Some(format!(
                "{key}: not linearizable; {} of {} operations placed, ending with\n{}\n  none of these can come next:\n{}",
                longest.len(),
                completed.len(),
                tail.join("\n"),
                stuck.join("\n")
            ))
        }
    }
}

/// Texas calls of the history: call id → (number, audio digest).
fn tx_calls(history: &[Completed]) -> BTreeMap<String, (String, String)> {
    history
        .iter()
        .filter_map(|c| match &c.op {
            Op::Ingest {
                jurisdiction,
                call,
                number,
                digest,
                ..
            } if jurisdiction == TX => Some((call.clone(), (number.clone(), digest.clone()))),
            _ => None,
        })
        .collect()
}

/// Linearizability of the registry (per number), of every Texas call, and of Texas's policy
/// version.
pub fn linearizability(history: &[Completed]) -> Vec<Checked> {
    let calls = tx_calls(history);
    let numbers: BTreeSet<String> = history
        .iter()
        .filter_map(|c| match &c.op {
            Op::Register { number, .. } | Op::Ingest { number, .. } => Some(number.clone()),
            _ => None,
        })
        .collect();
    let mut registry = Vec::new();
    for number in &numbers {
        let ops: Vec<_> = history
            .iter()
            .filter_map(|c| registry_op(c, TX, number).map(|op| (c, op)))
            .collect();
        registry.extend(check_key(
            &format!("registry {TX} {number}"),
            &RegistryEntry,
            ops,
        ));
    }
    // Index each call's operations, and registrations by number, once.
    let mut by_call: BTreeMap<&str, Vec<&Completed>> = BTreeMap::new();
    let mut by_number: BTreeMap<&str, Vec<&Completed>> = BTreeMap::new();
    for c in history {
        match &c.op {
            Op::Register {
                jurisdiction,
                number,
            } if jurisdiction == TX => by_number.entry(number).or_default().push(c),
            Op::Ingest {
                jurisdiction, call, ..
            }
            | Op::PlaceHold { jurisdiction, call }
            | Op::ReleaseHold {
                jurisdiction, call, ..
            }
            | Op::Status { jurisdiction, call }
            | Op::Playback { jurisdiction, call }
                if jurisdiction == TX =>
            {
                by_call.entry(call).or_default().push(c)
            }
            _ => {}
        }
    }
    let mut call_anomalies = Vec::new();
    for (id, (number, digest)) in &calls {
        let mut ops: Vec<&Completed> = by_call.get(id.as_str()).cloned().unwrap_or_default();
        ops.extend(by_number.get(number.as_str()).cloned().unwrap_or_default());
        let ops: Vec<_> = ops
            .into_iter()
            .filter_map(|c| call_op(c, TX, id, number).map(|op| (c, op)))
            .collect();
        let model = Call {
            digest: digest.clone(),
        };
        call_anomalies.extend(check_key(&format!("call {TX}/{id}"), &model, ops));
    }
    let policy_ops: Vec<_> = history
        .iter()
        .filter_map(|c| policy_op(c, TX).map(|op| (c, op)))
        .collect();
    let policy_count = policy_ops.len();
    let policy = check_key(
        &format!("policy {TX}"),
        &PolicyVersion { initial: 1 },
        policy_ops,
    );
    vec![
        Checked::new(
            "linearizable registry",
            format!("{} numbers", numbers.len()),
            registry,
        ),
        Checked::new(
            "linearizable calls",
            format!("{} calls", calls.len()),
            call_anomalies,
        ),
        Checked::new(
            "linearizable policy versions",
            format!("{policy_count} operations"),
            policy.into_iter().collect(),
        ),
    ]
}

/// Every acknowledged recording is still there at the end (the final reads, invoked after
/// `final_from`): stored or held, purged only if its number's registration may have applied,
/// expired only at its deadline. Returns the check and how many calls it covered.
pub fn acknowledged_calls(history: &[Completed], final_from: u64) -> (Checked, usize) {
    let registered: BTreeSet<&str> = history
        .iter()
        .filter(|c| matches!(c.kind, Kind::Ok | Kind::Info))
        .filter_map(|c| match &c.op {
            Op::Register { number, .. } => Some(number.as_str()),
            _ => None,
        })
        .collect();
    let mut anomalies = Vec::new();
    let mut checked = 0;
    for c in history {
        let (
            Op::Ingest {
                jurisdiction,
                call,
                number,
                started_at,
                ..
            },
            Some(Out::Recorded { .. }),
        ) = (&c.op, &c.out)
        else {
            continue;
        };
        let finals: Vec<&Completed> = history
            .iter()
            .filter(|f| f.call >= final_from && f.kind == Kind::Ok)
            .filter(|f| matches!(&f.op, Op::Status { call: id, .. } if id == call))
            .collect();
        let Some(Out::Status { state, .. }) = finals.last().and_then(|f| f.out.clone()) else {
            anomalies.push(format!(
                "{jurisdiction}/{call} was acknowledged (#{}) but the final status read failed or found nothing",
                c.id
            ));
            continue;
        };
        checked += 1;
        let due_ms = (started_at + DAY) * 1000;
        let ok = match state.as_str() {
            "stored" | "held" => true,
            "purged" => registered.contains(number.as_str()),
            "expired" => {
                jurisdiction == CA && finals.last().is_some_and(|f| f.ret_wall_ms >= due_ms)
            }
            _ => false,
        };
        if !ok {
            anomalies.push(format!(
                "{jurisdiction}/{call} was acknowledged (#{}) and is {state} at the end",
                c.id
            ));
        }
    }
    (
        Checked::new(
            "no acknowledged call lost",
            format!("{checked} acknowledged calls"),
            anomalies,
        ),
        checked,
    )
}

/// Invariant 1 from the history: an ingest invoked after a registration of its number was
/// acknowledged must be refused at ingest, before any audio is read. (The disk scan checks the
/// bytes themselves.)
pub fn privileged_at_ingest(history: &[Completed]) -> Checked {
    let mut registered_at: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for c in history {
        if let (
            Op::Register {
                jurisdiction,
                number,
            },
            Kind::Ok,
            Some(ret),
        ) = (&c.op, c.kind, c.ret)
        {
            let at = registered_at.entry((jurisdiction, number)).or_insert(ret);
            *at = (*at).min(ret);
        }
    }
    let mut anomalies = Vec::new();
    let mut covered = 0;
    for c in history {
        let Op::Ingest {
            jurisdiction,
            call,
            number,
            ..
        } = &c.op
        else {
            continue;
        };
        let Some(&at) = registered_at.get(&(jurisdiction.as_str(), number.as_str())) else {
            continue;
        };
        if c.call <= at || c.kind != Kind::Ok {
            continue;
        }
        covered += 1;
        if c.out != Some(Out::NotRecorded { at_ingest: true }) {
            anomalies.push(format!(
                "{jurisdiction}/{call} to {number}, registered before the ingest began, was answered {:?}: its audio was read and stored (#{})",
                c.out, c.id
            ));
        }
    }
    Checked::new(
        "privileged at ingest: refused before any audio",
        format!("{covered} ingests to registered numbers"),
        anomalies,
    )
}

/// How long a gap between acknowledged writes must be to count as a stretch in which the cluster
/// could not commit (no quorum): neither an expiry nor a clock attestation can commit then, so
/// those stretches do not count toward a sweep's lateness.
pub const STALLED_GAP_MS: i64 = 2_000;

/// Invariant 3 and 10 for the California calls: none expired before its deadline, none
/// expired while a hold was known to be on it, and none readable past its deadline plus one
/// sweep interval (plus [`DEADLINE_SLACK_MS`]) unless a hold may be on it. Lateness counts
/// from the deadline or from the last release of a hold that may have kept it past the
/// deadline, whichever is later, and leaves out the stretches in which the cluster could not
/// commit anything (a sweep cannot be late for a quorum that does not exist).
pub fn deadlines(history: &[Completed]) -> Checked {
    let mut anomalies = Vec::new();
    let mut covered = 0;
    let stalls = stalled_stretches(history);
    for ingest in history {
        let (
            Op::Ingest {
                jurisdiction,
                call,
                started_at,
                ..
            },
            Some(Out::Recorded { .. }),
        ) = (&ingest.op, &ingest.out)
        else {
            continue;
        };
        if jurisdiction != CA {
            continue;
        }
        covered += 1;
        let due = (started_at + DAY) * 1000;
        check_deadline(history, call, due, &stalls, &mut anomalies);
    }
    Checked::new(
        "deadlines: none expired early or while held, none readable late",
        format!("{covered} acknowledged calls with deadlines in the run"),
        anomalies,
    )
}

/// One hold placement that may have applied: from its invocation (or, once acknowledged, its
/// completion) until a release of its id may have (invoked) or surely has (acknowledged) taken
/// effect.
struct Held {
    invoked: u64,
    acked: Option<u64>,
    surely_until: u64,
    maybe_until: u64,
    /// Wall time of the first acknowledged release: the latest the hold can have lasted.
    released_wall_ms: Option<i64>,
}

fn holds_on(ops: &[&Completed]) -> Vec<Held> {
    let releases = |hold: &str, kinds: &[Kind]| {
        ops.iter()
            .filter(|r| matches!(&r.op, Op::ReleaseHold { hold: h, .. } if h == hold))
            .filter(|r| kinds.contains(&r.kind))
            .copied()
            .collect::<Vec<&Completed>>()
    };
    ops.iter()
        .filter(|c| matches!(c.op, Op::PlaceHold { .. }) && c.kind != Kind::Fail)
        .map(|place| {
            let id = match &place.out {
                Some(Out::HoldPlaced { hold }) => Some(hold.as_str()),
                _ => None,
            };
            let any = id
                .map(|h| releases(h, &[Kind::Ok, Kind::Info]))
                .unwrap_or_default();
            let acked = id.map(|h| releases(h, &[Kind::Ok])).unwrap_or_default();
            let first_acked = acked
                .iter()
                .filter(|r| r.ret.is_some())
                .min_by_key(|r| r.ret);
            Held {
                invoked: place.call,
                acked: place.ret.filter(|_| place.kind == Kind::Ok),
                surely_until: any.iter().map(|r| r.call).min().unwrap_or(u64::MAX),
                maybe_until: first_acked.and_then(|r| r.ret).unwrap_or(u64::MAX),
                released_wall_ms: first_acked.map(|r| r.ret_wall_ms),
            }
        })
        .collect()
}

/// The deadline checks of one California call due at `due` (wall milliseconds).
fn check_deadline(
    history: &[Completed],
    call: &str,
    due: i64,
    stalls: &[(i64, i64)],
    anomalies: &mut Vec<String>,
) {
    let interval_ms = i64::from(CA_SWEEP_SECONDS) * 1000;
    let on_call = |c: &&Completed| match &c.op {
        Op::Status { call: id, .. }
        | Op::Playback { call: id, .. }
        | Op::PlaceHold { call: id, .. }
        | Op::ReleaseHold { call: id, .. } => id == call,
        _ => false,
    };
    let ops: Vec<&Completed> = history.iter().filter(on_call).collect();
    let holds = holds_on(&ops);
    let maybe_held = |from: u64, to: u64| {
        holds
            .iter()
            .any(|h| h.invoked <= to && from <= h.maybe_until)
    };
    let surely_held = |from: u64, to: u64| {
        holds
            .iter()
            .any(|h| h.acked.is_some_and(|a| a <= from) && h.surely_until >= to)
    };
    for c in ops.iter().filter(|c| c.kind == Kind::Ok) {
        let expired = matches!(&c.out, Some(Out::Status { state, .. }) if state == "expired");
        let readable = matches!(&c.out, Some(Out::Status { state, .. }) if state == "stored")
            || matches!(c.out, Some(Out::Audio { .. }));
        let ret = c.ret.unwrap_or(u64::MAX);
        if expired && c.ret_wall_ms < due {
            anomalies.push(format!(
                "{CA}/{call} seen expired {:.1}s before its deadline: {}",
                (due - c.ret_wall_ms) as f64 / 1000.0,
                describe(c)
            ));
        }
        if expired && surely_held(c.call, ret) {
            anomalies.push(format!(
                "{CA}/{call} seen expired while held: {}",
                describe(c)
            ));
        }
        // A hold released after the deadline keeps the call until its release: the sweep's
        // interval runs from there.
        let sweepable_from = holds
            .iter()
            .filter(|h| h.invoked <= c.call)
            .filter_map(|h| h.released_wall_ms)
            .filter(|&released| released <= c.call_wall_ms)
            .fold(due, i64::max);
        let stalled = stalled_within(stalls, sweepable_from, c.call_wall_ms);
        let late = c.call_wall_ms - (sweepable_from + interval_ms) - stalled;
        if readable && late > DEADLINE_SLACK_MS && !maybe_held(c.call, ret) {
            anomalies.push(format!(
                "{CA}/{call} still readable {:.1}s past its deadline plus one sweep interval \
                 (after {:.1}s in which the cluster committed nothing): {}",
                late as f64 / 1000.0,
                stalled as f64 / 1000.0,
                describe(c)
            ));
        }
    }
}

/// The stretches (wall milliseconds) between consecutive acknowledged writes longer than
/// [`STALLED_GAP_MS`].
fn stalled_stretches(history: &[Completed]) -> Vec<(i64, i64)> {
    let mut acks: Vec<i64> = history
        .iter()
        .filter(|c| c.kind == Kind::Ok && c.op.is_write() && c.ret.is_some())
        .map(|c| c.ret_wall_ms)
        .collect();
    acks.sort_unstable();
    acks.windows(2)
        .filter(|w| w[1] - w[0] > STALLED_GAP_MS)
        .map(|w| (w[0], w[1]))
        .collect()
}

/// How much of `from..to` falls in `stalls`.
fn stalled_within(stalls: &[(i64, i64)], from: i64, to: i64) -> i64 {
    stalls
        .iter()
        .map(|&(a, b)| (b.min(to) - a.max(from)).max(0))
        .sum()
}

/// The cluster keeps making progress: no stretch of the run longer than [`STALL_LIMIT_S`] without
/// an acknowledged write. Every fault leaves a majority that can commit, or lasts far shorter.
pub fn progress(history: &[Completed], until: u64) -> Checked {
    let mut acks: Vec<u64> = history
        .iter()
        .filter(|c| c.kind == Kind::Ok && c.op.is_write() && c.call < until)
        .filter_map(|c| c.ret)
        .collect();
    acks.sort_unstable();
    let start = history.iter().map(|c| c.call).min().unwrap_or_default();
    let mut anomalies = Vec::new();
    let mut last = start;
    for &t in acks.iter().chain(std::iter::once(&until)) {
        let gap = t.saturating_sub(last) as f64 / 1e9;
        if gap > STALL_LIMIT_S {
            anomalies.push(format!(
                "no write was acknowledged for {gap:.0} s (from {:.0} s to {:.0} s into the run)",
                last as f64 / 1e9,
                t as f64 / 1e9
            ));
        }
        last = last.max(t);
    }
    Checked::new(
        "progress: no long stall",
        format!("{} acknowledged writes", acks.len()),
        anomalies,
    )
}

/// The longest the cluster may go without acknowledging a write.
pub const STALL_LIMIT_S: f64 = 60.0;

#[cfg(test)]
mod tests {
    use super::*;

    /// The run starts at wall time `T0` ms; the California call `c1` is due at `T0 + 10 s`.
    const T0: i64 = 1_000_000_000_000;
    const DUE_S: i64 = 10;

    struct Run(Vec<Completed>);

    impl Run {
        fn new() -> Self {
            let started_at = T0 / 1000 + DUE_S - DAY;
            let mut run = Run(Vec::new());
            let ingest = Op::Ingest {
                jurisdiction: CA.into(),
                call: "c1".into(),
                number: "+15125550100".into(),
                digest: "00".into(),
                started_at,
                retry: false,
            };
            run.ok(0.0, ingest, Out::Recorded { term: 1, index: 1 });
            run
        }

        /// An acknowledged operation invoked `at_s` into the run, completing 50 ms later.
        fn ok(&mut self, at_s: f64, op: Op, out: Out) {
            let call_ms = (at_s * 1000.0) as i64;
            self.0.push(Completed {
                id: self.0.len() as u64,
                process: 0,
                node: 1,
                op,
                call: call_ms as u64 * 1_000_000,
                ret: Some((call_ms + 50) as u64 * 1_000_000),
                call_wall_ms: T0 + call_ms,
                ret_wall_ms: T0 + call_ms + 50,
                kind: Kind::Ok,
                out: Some(out),
            });
        }

        /// An acknowledged write (a registration) every `every_s` seconds in `from_s..to_s`.
        fn writes(&mut self, from_s: f64, to_s: f64, every_s: f64) {
            let mut at = from_s;
            while at < to_s {
                let op = Op::Register {
                    jurisdiction: CA.into(),
                    number: "+15125550199".into(),
                };
                self.ok(at, op, Out::Registered { purged: 0 });
                at += every_s;
            }
        }

        fn status(&mut self, at_s: f64, state: &str) {
            let op = Op::Status {
                jurisdiction: CA.into(),
                call: "c1".into(),
            };
            let out = Out::Status {
                state: state.into(),
                holds: 0,
            };
            self.ok(at_s, op, out);
        }

        fn hold(&mut self, placed_s: f64, released_s: f64) {
            let place = Op::PlaceHold {
                jurisdiction: CA.into(),
                call: "c1".into(),
            };
            self.ok(placed_s, place, Out::HoldPlaced { hold: "7".into() });
            let release = Op::ReleaseHold {
                jurisdiction: CA.into(),
                call: "c1".into(),
                hold: "7".into(),
            };
            self.ok(released_s, release, Out::Released);
        }

        fn anomalies(&self) -> Vec<String> {
            deadlines(&self.0).anomalies
        }
    }

    #[test]
    fn a_recording_stored_long_past_its_deadline_while_the_cluster_commits_is_an_anomaly() {
        let mut run = Run::new();
        run.writes(0.0, 40.0, 0.5);
        run.status(DUE_S as f64 + 14.0, "stored");
        assert_eq!(run.anomalies().len(), 1, "{:?}", run.anomalies());
    }

    #[test]
    fn a_stretch_without_any_commit_does_not_count_toward_lateness() {
        let mut run = Run::new();
        run.writes(0.0, 8.0, 0.5);
        run.writes(20.0, 40.0, 0.5);
        run.status(DUE_S as f64 + 14.0, "stored");
        assert!(run.anomalies().is_empty(), "{:?}", run.anomalies());
        // The stall covers only 12 s of the 30 s it is late.
        run.status(DUE_S as f64 + 30.0, "stored");
        assert_eq!(run.anomalies().len(), 1, "{:?}", run.anomalies());
    }

    #[test]
    fn lateness_counts_from_a_release_after_the_deadline() {
        let mut run = Run::new();
        run.writes(0.0, 60.0, 0.5);
        run.hold(5.0, 30.0);
        run.status(31.5, "stored");
        assert!(run.anomalies().is_empty(), "{:?}", run.anomalies());
        run.status(45.0, "stored");
        assert_eq!(run.anomalies().len(), 1, "{:?}", run.anomalies());
    }

    #[test]
    fn expired_before_the_deadline_or_while_surely_held_is_an_anomaly() {
        let mut run = Run::new();
        run.writes(0.0, 40.0, 0.5);
        run.status(DUE_S as f64 - 3.0, "expired");
        assert_eq!(run.anomalies().len(), 1, "{:?}", run.anomalies());
        let mut run = Run::new();
        run.writes(0.0, 40.0, 0.5);
        run.hold(5.0, 30.0);
        run.status(20.0, "expired");
        assert_eq!(run.anomalies().len(), 1, "{:?}", run.anomalies());
    }
}
