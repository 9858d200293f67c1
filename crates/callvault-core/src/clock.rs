//! Cluster time: the time no single node's clock can push.
//!
//! Every metadata voter attests its wall clock through the Raft log at a steady pace. The
//! cluster time is the median of the voters' latest attestations — precisely, the latest time
//! that a majority of the voters have each attested to reaching — and it never moves back. One
//! voter (any minority) whose clock jumps a year ahead moves the median not at all; a voter that
//! stops attesting holds it back only if a majority has stopped, and then nothing expires, which
//! is the safe side.
//!
//! Everything here is a pure function of the attestations kept by the state machine, so `apply`
//! stays clock-free and every replica computes the same time.

use std::collections::BTreeMap;

use crate::time::UnixMillis;

/// The voters' latest attestations, by node id.
pub type Attestations = BTreeMap<u64, UnixMillis>;

/// The cluster time `voters` attest to, given each one's latest attestation, or `None` while
/// fewer than a majority of them have attested. For an odd number of voters this is the median;
/// for an even number, the lower median (the earlier of the two middle values).
pub fn attested_time(attestations: &Attestations, voters: &[u64]) -> Option<UnixMillis> {
    if voters.is_empty() {
        return None;
    }
    let mut times: Vec<UnixMillis> = voters
        .iter()
        .filter_map(|v| attestations.get(v).copied())
        .collect();
    let majority = voters.len() / 2 + 1;
    if times.len() < majority {
        return None;
    }
    // The majority-th largest: `majority` voters attested at or after it.
    times.sort_unstable_by(|a, b| b.cmp(a));
    Some(times[majority - 1])
}

/// The next cluster time: what the voters attest to now, but never earlier than `previous`.
pub fn advance(
    previous: Option<UnixMillis>,
    attestations: &Attestations,
    voters: &[u64],
) -> Option<UnixMillis> {
    match (previous, attested_time(attestations, voters)) {
        (Some(before), Some(now)) => Some(before.max(now)),
        (before, now) => before.or(now),
    }
}

/// How one voter's clock compares with the cluster's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoterClock {
    /// The voter.
    pub node_id: u64,
    /// Its latest attestation, if it ever attested.
    pub attested: Option<UnixMillis>,
    /// Its latest attestation minus the cluster time, in milliseconds (positive: ahead).
    pub offset_ms: Option<i64>,
    /// Off by more than the bound (or never attested while the cluster has a time): reported,
    /// and it does not lead sweeps.
    pub suspect: bool,
}

/// Each voter's offset from `cluster_time`, flagged when it exceeds `bound_ms` either way.
/// Attestations arrive at a steady pace, so a voter's latest one trails the others by at most
/// that pace; the bound must be well above it.
pub fn voter_clocks(
    attestations: &Attestations,
    voters: &[u64],
    cluster_time: Option<UnixMillis>,
    bound_ms: i64,
) -> Vec<VoterClock> {
    voters
        .iter()
        .map(|&node_id| {
            let attested = attestations.get(&node_id).copied();
            let offset_ms = attested
                .zip(cluster_time)
                .map(|(own, cluster)| own.0.saturating_sub(cluster.0));
            let suspect = match (offset_ms, cluster_time) {
                (Some(offset), _) => offset.saturating_abs() > bound_ms,
                (None, Some(_)) => true,
                (None, None) => false,
            };
            VoterClock {
                node_id,
                attested,
                offset_ms,
                suspect,
            }
        })
        .collect()
}

/// Who leads sweeps: the Raft leader while its clock is within the bound, otherwise the voter
/// with the lowest id whose clock is. `None` when no voter qualifies (nothing is swept).
pub fn sweep_leader(raft_leader: Option<u64>, clocks: &[VoterClock]) -> Option<u64> {
    let trusted = |id: u64| clocks.iter().any(|c| c.node_id == id && !c.suspect);
    match raft_leader {
        Some(leader) if trusted(leader) => Some(leader),
        _ => clocks
            .iter()
            .filter(|c| !c.suspect)
            .map(|c| c.node_id)
            .min(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn attest(pairs: &[(u64, i64)]) -> Attestations {
        pairs.iter().map(|(n, t)| (*n, UnixMillis(*t))).collect()
    }

    #[test]
    fn the_median_of_three_ignores_one_clock_a_year_ahead() {
        let year = 365 * 86_400_000;
        let a = attest(&[(1, 1_000 + year), (2, 1_000), (3, 1_010)]);
        assert_eq!(attested_time(&a, &[1, 2, 3]), Some(UnixMillis(1_010)));
        let clocks = voter_clocks(&a, &[1, 2, 3], Some(UnixMillis(1_010)), 30_000);
        assert!(clocks[0].suspect && !clocks[1].suspect && !clocks[2].suspect);
        assert_eq!(
            sweep_leader(Some(1), &clocks),
            Some(2),
            "the skewed leader loses sweeps"
        );
        assert_eq!(sweep_leader(Some(3), &clocks), Some(3));
    }

    #[test]
    fn no_time_until_a_majority_attested_and_removed_voters_do_not_count() {
        let a = attest(&[(1, 5_000), (9, 9_000_000)]);
        assert_eq!(attested_time(&a, &[1, 2, 3]), None);
        assert_eq!(attested_time(&a, &[1]), Some(UnixMillis(5_000)));
        assert_eq!(attested_time(&a, &[]), None);
        let a = attest(&[(1, 5_000), (2, 6_000), (9, 9_000_000)]);
        assert_eq!(attested_time(&a, &[1, 2, 3]), Some(UnixMillis(5_000)));
        let clocks = voter_clocks(&a, &[1, 2, 3], Some(UnixMillis(5_000)), 1_000);
        assert!(clocks[2].suspect, "a voter that never attested is reported");
    }

    #[test]
    fn cluster_time_never_moves_back() {
        let a = attest(&[(1, 100), (2, 100), (3, 100)]);
        assert_eq!(
            advance(Some(UnixMillis(500)), &a, &[1, 2, 3]),
            Some(UnixMillis(500))
        );
        assert_eq!(advance(None, &a, &[1, 2, 3]), Some(UnixMillis(100)));
        assert_eq!(
            advance(Some(UnixMillis(7)), &Attestations::new(), &[1]),
            Some(UnixMillis(7))
        );
    }

    proptest! {
        /// Invariant 10: however far a minority of voters push their clocks, the cluster time is
        /// no later than the latest time an honest voter attested.
        #[test]
        fn a_minority_cannot_push_the_cluster_time(
            honest in proptest::collection::vec(0i64..1_000_000, 1..6),
            liars in proptest::collection::vec(any::<i64>(), 0..6),
        ) {
            let voters_len = honest.len() + liars.len();
            prop_assume!(liars.len() < voters_len - liars.len());
            let mut a = Attestations::new();
            let mut voters = Vec::new();
            for (i, t) in honest.iter().chain(&liars).enumerate() {
                a.insert(i as u64, UnixMillis(*t));
                voters.push(i as u64);
            }
            let time = attested_time(&a, &voters).expect("all attested");
            let latest_honest = *honest.iter().max().unwrap();
            let earliest_honest = *honest.iter().min().unwrap();
            prop_assert!(time.0 <= latest_honest, "pushed forward: {time:?} > {latest_honest}");
            prop_assert!(time.0 >= earliest_honest, "pulled back: {time:?} < {earliest_honest}");
        }

        /// The cluster time is what a majority has reached: at least a majority attested at or
        /// after it.
        #[test]
        fn a_majority_attested_at_or_after_the_cluster_time(
            times in proptest::collection::vec(any::<i64>(), 1..8),
        ) {
            let a: Attestations = times.iter().enumerate().map(|(i, t)| (i as u64, UnixMillis(*t))).collect();
            let voters: Vec<u64> = (0..times.len() as u64).collect();
            let time = attested_time(&a, &voters).unwrap();
            let at_or_after = times.iter().filter(|t| **t >= time.0).count();
            prop_assert!(at_or_after > times.len() / 2);
        }
    }
}
