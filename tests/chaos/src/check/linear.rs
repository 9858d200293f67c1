//! A linearizability checker: Wing and Gong's search with Lowe's memoization (the algorithm of
//! Knossos' `linear` checker and of porcupine, without P-compositionality, which the callers
//! get by checking one key at a time).
//!
//! Written here rather than taken from `porcupine-rs` (0.3) because its `Model` is static (no
//! per-key parameters, such as a call's audio digest or the number it dialed, unless every
//! operation carries them), allows one successor state per step (an unknown outcome needs two:
//! it took effect, or it did not), and it brings criterion, crossbeam, regex and a second `rand`
//! as normal dependencies. The search below is short and its failure report names the
//! operations that could not be placed.
//!
//! An operation with an unknown outcome has no return time: it may be linearized anywhere after
//! its invocation, and its model step offers both "took effect" and "did not".

use std::collections::HashSet;
use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification.
pub trait Model {
    /// The state the operations act on.
    type State: Clone + Eq + Hash + Debug;
    /// An operation with its observed output.
    type Op: Debug;
    /// The state before any operation.
    fn init(&self) -> Self::State;
    /// The states `op` may lead to from `state` given what it returned; empty if it cannot have
    /// returned that from `state`.
    fn step(&self, state: &Self::State, op: &Self::Op) -> Vec<Self::State>;
}

/// One operation of a history.
#[derive(Debug, Clone)]
pub struct Timed<O> {
    /// Invocation time.
    pub call: u64,
    /// Completion time; `None` when unknown (it may take effect any time after `call`).
    pub ret: Option<u64>,
    pub op: O,
}

/// The verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// Not linearizable: the longest linearizable prefix found (indexes into the history) and
    /// the operations none of which could come next.
    Violation {
        longest: Vec<usize>,
        stuck: Vec<usize>,
    },
    /// The search gave up after its budget of explored configurations.
    Unknown,
}

/// Most configurations explored before giving up.
const BUDGET: usize = 2_000_000;

/// Checks `history` against `model`.
pub fn check<M: Model>(model: &M, history: &[Timed<M::Op>]) -> Verdict {
    let n = history.len();
    if n == 0 {
        return Verdict::Linearizable;
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by_key(|&i| history[i].call);
    // A configuration: which operations are linearized, and the model's state.
    let mut seen: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, M::State, Vec<usize>)> =
        vec![(vec![0; n.div_ceil(64)], model.init(), Vec::new())];
    let mut longest: (Vec<usize>, Vec<usize>) = (Vec::new(), Vec::new());
    let mut explored = 0usize;
    while let Some((done, state, path)) = stack.pop() {
        if path.len() == n {
            return Verdict::Linearizable;
        }
        explored += 1;
        if explored > BUDGET {
            return Verdict::Unknown;
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // Every pending operation must be linearized before the earliest pending return.
        let horizon = (0..n)
            .filter(|&i| !is_done(i))
            .filter_map(|i| history[i].ret)
            .min()
            .unwrap_or(u64::MAX);
        let candidates: Vec<usize> = order
            .iter()
            .copied()
            .filter(|&i| !is_done(i) && history[i].call <= horizon)
            .collect();
        let mut legal = false;
        for &i in &candidates {
            for next in model.step(&state, &history[i].op) {
                legal = true;
                let mut next_done = done.clone();
                next_done[i / 64] |= 1 << (i % 64);
                if seen.insert((next_done.clone(), next.clone())) {
                    let mut next_path = path.clone();
                    next_path.push(i);
                    stack.push((next_done, next, next_path));
                }
            }
        }
        if !legal && path.len() >= longest.0.len() {
            longest = (path, candidates);
        }
    }
    Verdict::Violation {
        longest: longest.0,
        stuck: longest.1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compare-and-set register of versions, as `PutPolicy` is.
    struct Versions;

    #[derive(Debug)]
    enum V {
        Read(u32),
        Cas { expected: u32, ok: bool },
        CasUnknown { expected: u32 },
    }

    impl Model for Versions {
        type State = u32;
        type Op = V;
        fn init(&self) -> u32 {
            1
        }
        fn step(&self, s: &u32, op: &V) -> Vec<u32> {
            match *op {
                V::Read(v) => (v == *s).then_some(*s).into_iter().collect(),
                V::Cas { expected, ok: true } => {
                    (expected == *s).then_some(s + 1).into_iter().collect()
                }
                V::Cas {
                    expected,
                    ok: false,
                } => (expected != *s).then_some(*s).into_iter().collect(),
                V::CasUnknown { expected } if expected == *s => vec![*s, s + 1],
                V::CasUnknown { .. } => vec![*s],
            }
        }
    }

    fn op(call: u64, ret: Option<u64>, op: V) -> Timed<V> {
        Timed { call, ret, op }
    }

    #[test]
    fn concurrent_operations_may_take_effect_in_either_order() {
        let h = vec![
            op(
                0,
                Some(10),
                V::Cas {
                    expected: 1,
                    ok: true,
                },
            ),
            op(1, Some(9), V::Read(2)),
            op(2, Some(8), V::Read(1)),
        ];
        assert_eq!(check(&Versions, &h), Verdict::Linearizable);
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_a_violation() {
        let h = vec![
            op(
                0,
                Some(5),
                V::Cas {
                    expected: 1,
                    ok: true,
                },
            ),
            op(6, Some(7), V::Read(1)),
        ];
        assert!(matches!(check(&Versions, &h), Verdict::Violation { .. }));
    }

    #[test]
    fn a_write_that_failed_but_took_effect_is_a_violation() {
        // The retry of a successful put saw its own effect as a conflict: the version moved, yet
        // no put succeeded.
        let h = vec![
            op(
                0,
                Some(5),
                V::Cas {
                    expected: 1,
                    ok: false,
                },
            ),
            op(6, Some(7), V::Read(2)),
        ];
        assert!(matches!(check(&Versions, &h), Verdict::Violation { .. }));
    }

    #[test]
    fn an_unknown_outcome_may_or_may_not_have_taken_effect() {
        let took = vec![
            op(0, None, V::CasUnknown { expected: 1 }),
            op(6, Some(7), V::Read(2)),
        ];
        assert_eq!(check(&Versions, &took), Verdict::Linearizable);
        let did_not = vec![
            op(0, None, V::CasUnknown { expected: 1 }),
            op(6, Some(7), V::Read(1)),
            op(8, Some(9), V::Read(2)),
        ];
        assert_eq!(check(&Versions, &did_not), Verdict::Linearizable);
        // But once seen, its effect cannot be undone.
        let undone = vec![
            op(0, None, V::CasUnknown { expected: 1 }),
            op(6, Some(7), V::Read(2)),
            op(8, Some(9), V::Read(1)),
        ];
        assert!(matches!(
            check(&Versions, &undone),
            Verdict::Violation { .. }
        ));
    }
}
